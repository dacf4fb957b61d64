"""The GraphQL entrypoint stack: read typed config, build the components, export what other teams use."""

import dataclasses
from pathlib import Path

import pulumi

from app.settings import ACTION_NAME, TABLE
from components.async_flow import AsyncFlow, AsyncFlowArgs, kafka_ca_reads
from components.config import load_stack_config
from components.hasura import Hasura, HasuraArgs
from components.images import ServiceImages, ServiceImagesArgs
from components.kafka import KafkaAccess, KafkaAccessArgs
from components.kafka_access import ServicePrincipals
from components.network_policy import NetworkPolicies, NetworkPoliciesArgs
from components.no_kubelet import register as no_kubelet
from components.public_ingress import PublicEdge, PublicEdgeArgs, TunnelConnector, TunnelConnectorArgs
from components.vault_access import VaultAccess, VaultAccessArgs
from components.verify import DeploymentVerification, DeploymentVerificationArgs

ROOT = Path(__file__).parent
HASURA_ENV = (ROOT / "config" / "hasura" / "hasura.env").read_text()

cfg = load_stack_config()
no_kubelet(cfg.kubelet)  # the local rehearsal's bare API server only: no readiness waits that need a kubelet
ns, mount, principals = cfg.namespace, cfg.vault.kv_mount, ServicePrincipals()
hasura_args = HasuraArgs(namespace=ns, config=cfg.hasura, env_file=HASURA_ENV, kv_mount=mount)
edge = PublicEdge("public-edge", PublicEdgeArgs(cloudflare=cfg.cloudflare, hostname=cfg.public_hostname,
                                                origin=hasura_args.url)) if cfg.cloudflare.enabled else None
kafka = KafkaAccess("kafka", KafkaAccessArgs(cfg.kafka, cfg.kafka_admin_password, principals, kv_mount=mount))
vault = VaultAccess("vault", VaultAccessArgs(
    namespace=ns, vault=cfg.vault, database_url=cfg.database_url, database_role_admin_url=cfg.database_role_admin_url,
    tunnel_token=edge.tunnel_token if edge else cfg.local_tunnel_token, kafka_ca_entry=cfg.kafka.ca_entry,
    kafka_credentials=kafka.credentials, extra_reads={"hasura": hasura_args.vault_reads, **kafka_ca_reads(cfg.kafka)},
    database_port=cfg.network.database_port, workers=cfg.kafka.workers))
connector = TunnelConnector("tunnel-connector", TunnelConnectorArgs(ns, cfg.vault, cfg.cloudflare),
                            opts=pulumi.ResourceOptions(depends_on=[vault]))
hasura = Hasura("hasura", hasura_args, opts=pulumi.ResourceOptions(depends_on=[vault]))
images = ServiceImages("images", ServiceImagesArgs(config=cfg.images, context=ROOT / "app", project_root=ROOT))
flow = AsyncFlow("async-flow", AsyncFlowArgs(
    namespace=ns, config=cfg.async_flow, kafka=cfg.kafka, topics=kafka.topic_names, images=images.digests,
    kv_mount=mount, hasura_url=hasura.url, hasura=cfg.hasura, app_dir=ROOT / "app", principals=principals,
    database_roles_version=vault.database_roles_version),
    opts=pulumi.ResourceOptions(depends_on=[vault, kafka, hasura]))

# default deny in and out, then exactly the drawing's flows
NetworkPolicies("network", NetworkPoliciesArgs(ns, cfg.network, cfg.vault.address, cfg.kafka.bootstrap_servers))
if edge and cfg.verify.enabled:  # the last step of an `up`: does the public endpoint answer as promised?
    DeploymentVerification("verify", DeploymentVerificationArgs(
        graphql_url=cfg.graphql_url, image_digests=images.digests, hasura_config=hasura.config_checksum, kv_mount=mount,
        tunnel_rules=edge.tunnel_config.config, tunnel_connector=connector.fingerprint, config=cfg.verify),
        opts=pulumi.ResourceOptions(depends_on=[edge, connector, hasura, flow]))  # cloudflared up first

# what other teams read (docs/consumers.md: their stability promise)
for output, value in {
    "graphql_url": cfg.graphql_url, "graphql_websocket_url": cfg.websocket_url, "namespace": ns,
    "topics": dataclasses.asdict(kafka.topic_names), "table": TABLE, "action": ACTION_NAME,
    "vault_paths": vault.paths, "kafka_principals": kafka.principal_names, "image_digests": images.digests,
    "tunnel_id": edge.tunnel.id if edge else "cloudflare disabled in this stack"}.items():
    pulumi.export(output, value)
