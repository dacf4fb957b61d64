"""The GraphQL entrypoint stack: read typed config, build the components, export what other teams use."""

import dataclasses
from pathlib import Path

import pulumi

from components.async_flow import AsyncFlow, AsyncFlowArgs
from components.config import load_stack_config
from components.hasura import Hasura, HasuraArgs
from components.images import ServiceImages, ServiceImagesArgs
from components.kafka import KafkaAccess, KafkaAccessArgs
from components.kafka_access import ServicePrincipals
from components.public_ingress import PublicEdge, PublicEdgeArgs, TunnelConnector, TunnelConnectorArgs
from components.vault_access import EXTERNAL_SECRETS_ROLE, TUNNEL_TOKEN, VaultAccess, VaultAccessArgs
from components.verify import DeploymentVerification, DeploymentVerificationArgs

ROOT = Path(__file__).parent
HASURA_ENV = (ROOT / "config" / "hasura" / "hasura.env").read_text()
ACTION_NAME = "publish_async_request"
TABLE = "graphql.client_async_messages"

cfg = load_stack_config()
ns, mount = cfg.namespace, cfg.vault.kv_mount
principals = ServicePrincipals()
hasura_url = f"http://hasura.{ns}.svc.cluster.local:8080"

edge = PublicEdge("public-edge", PublicEdgeArgs(cloudflare=cfg.cloudflare, hostname=cfg.public_hostname,
                                                origin=hasura_url)) if cfg.cloudflare.enabled else None
tunnel_token = edge.tunnel_token if edge else cfg.local_tunnel_token

kafka = KafkaAccess("kafka", KafkaAccessArgs(config=cfg.kafka, admin_password=cfg.kafka_admin_password,
                                             principals=principals))

hasura_args = HasuraArgs(namespace=ns, config=cfg.hasura, env_file=HASURA_ENV, kv_mount=mount)
vault = VaultAccess("vault", VaultAccessArgs(
    namespace=ns, kv_mount=mount, kubernetes_auth_path=cfg.vault.kubernetes_auth_path,
    database_url=cfg.database_url, tunnel_token=tunnel_token, tunnel_token_key=cfg.vault.tunnel_token_key,
    kafka_credentials=kafka.credentials, extra_reads={"hasura": hasura_args.vault_reads}))

TunnelConnector("tunnel-connector", TunnelConnectorArgs(
    namespace=ns, vault_address=cfg.vault.address, kv_mount=mount,
    kubernetes_auth_path=cfg.vault.kubernetes_auth_path, vault_role=EXTERNAL_SECRETS_ROLE, token_entry=TUNNEL_TOKEN,
    token_key=cfg.vault.tunnel_token_key, image=cfg.cloudflare.cloudflared_image,
    replicas=cfg.cloudflare.cloudflared_replicas), opts=pulumi.ResourceOptions(depends_on=[vault]))

hasura = Hasura("hasura", hasura_args, opts=pulumi.ResourceOptions(depends_on=[vault]))

images = ServiceImages("images", ServiceImagesArgs(registry=cfg.images.registry, platform=cfg.images.platform,
                                                   context=ROOT / "app", project_root=ROOT,
                                                   prebuilt=cfg.images.prebuilt))

flow = AsyncFlow("async-flow", AsyncFlowArgs(
    namespace=ns, config=cfg.async_flow, kafka=cfg.kafka, topics=kafka.topic_names, images=images.digests,
    kv_mount=mount, hasura_url=hasura.url, hasura=cfg.hasura, app_dir=ROOT / "app",
    writer_group=principals.writer_group, writer_transactional_id=principals.writer_transactional_id),
    opts=pulumi.ResourceOptions(depends_on=[vault, kafka, hasura]))

if edge and cfg.verify.enabled:  # the last step of an `up`: does the public endpoint answer as promised?
    DeploymentVerification("verify", DeploymentVerificationArgs(
        graphql_url=cfg.graphql_url, image_digests=images.digests, hasura_config=hasura.config_checksum,
        tunnel_rules=edge.tunnel_config.config, round_trip_seconds=cfg.verify.round_trip_seconds, kv_mount=mount,
        service_token_entry=cfg.verify.service_token_entry),
        opts=pulumi.ResourceOptions(depends_on=[edge, hasura, flow]))

pulumi.export("graphql_url", cfg.graphql_url)
pulumi.export("graphql_websocket_url", cfg.websocket_url)
pulumi.export("namespace", ns)
pulumi.export("topics", dataclasses.asdict(kafka.topic_names))
pulumi.export("table", TABLE)
pulumi.export("action", ACTION_NAME)
pulumi.export("vault_paths", vault.paths)
pulumi.export("kafka_principals", {"publisher": principals.publisher, "writer": principals.writer})
pulumi.export("image_digests", images.digests)
pulumi.export("tunnel_id", edge.tunnel.id if edge else "cloudflare disabled in this stack")
