"""Public ingress: Cloudflare Tunnel is the only way in, and it only carries /v1/graphql.

Two components, because the tunnel token must reach Vault between them:
  PublicEdge      - Cloudflare: tunnel, its ingress rules, proxied DNS, WebSockets on, no caching
  TunnelConnector - Kubernetes: SecretStore SA, SecretStore, ExternalSecret for the token, cloudflared
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_cloudflare as cloudflare
import pulumi_kubernetes as k8s

from components.config import CloudflareConfig, VaultConfig
from components.k8s import (
    IMAGE_PULL_POLICY,
    VAULT_AUDIENCE,
    Resources,
    child,
    container_security,
    disruption_budget,
    labels,
    pod_security,
    selector,
    spread,
)
from components.vault_access import EXTERNAL_SECRETS_ROLE, TUNNEL_TOKEN

CLOUDFLARED = "cloudflared"  # the connector Deployment, its pods' app.kubernetes.io/name
CLOUDFLARED_UID = 65532  # the nonroot user of cloudflared's distroless image
METRICS_PORT = 2000
TOKEN_DIR = "/etc/cloudflared/tunnel-token"
# Hasura's one admin API under the public prefix (POST v1/graphql/explain, admin only: hasura/graphql-engine
# server/src-lib/Hasura/Server/App.hs), with any run of slashes before it and anything after it
ADMIN_UNDER_PUBLIC_PATH = r"^/v1/graphql/+explain"


def tunnel_ingress(hostname: str, cf: CloudflareConfig, origin: str) -> list[dict]:
    """The tunnel's rules: GraphQL (HTTP + WebSocket) to Hasura, everything else answered 404 at the edge.

    cloudflared takes the first rule that matches, so the admin path under /v1/graphql/* is answered 404 before
    the GraphQL rule could carry it. The origin timeouts keep subscriptions open: the config check makes
    Hasura's WebSocket keep-alive shorter than keep_alive_timeout, so an idle subscription is never taken for
    an idle connection."""
    return [
        {"hostname": hostname, "path": ADMIN_UNDER_PUBLIC_PATH, "service": "http_status:404"},
        {"hostname": hostname, "path": cf.public_path_regex, "service": origin,
         "origin_request": {"connect_timeout": cf.origin_connect_timeout_seconds,
                            "keep_alive_timeout": cf.origin_keep_alive_timeout_seconds,
                            "tcp_keep_alive": cf.origin_tcp_keep_alive_seconds, "http_host_header": hostname}},
        {"service": "http_status:404"},
    ]


def graphql_cache_expression(hostname: str) -> str:
    return f'(http.host eq "{hostname}" and starts_with(http.request.uri.path, "/v1/graphql"))'


@dataclass
class PublicEdgeArgs:
    cloudflare: CloudflareConfig
    hostname: str
    origin: str  # in-cluster Hasura URL


class PublicEdge(pulumi.ComponentResource):
    def __init__(self, name: str, args: PublicEdgeArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("graphql:index:PublicEdge", name, None, opts)
        cf = args.cloudflare
        self.tunnel = cloudflare.ZeroTrustTunnelCloudflared(
            "tunnel", account_id=cf.account_id, name=cf.tunnel_name, config_src="cloudflare", opts=child(self))
        self.tunnel_config = cloudflare.ZeroTrustTunnelCloudflaredConfig(
            "tunnel-ingress", account_id=cf.account_id, tunnel_id=self.tunnel.id,
            config={"ingresses": tunnel_ingress(args.hostname, cf, args.origin)},
            opts=child(self))
        self.dns = cloudflare.DnsRecord(
            "graphql-cname", zone_id=cf.zone_id, name=args.hostname, type="CNAME",
            content=self.tunnel.id.apply(lambda tunnel_id: f"{tunnel_id}.cfargotunnel.com"),
            proxied=True, ttl=1, comment="GraphQL entrypoint via Cloudflare Tunnel (managed by Pulumi)",
            opts=child(self))
        # subscriptions need WebSocket upgrades through the proxy
        self.websockets = cloudflare.ZoneSetting(
            "websockets", zone_id=cf.zone_id, setting_id="websockets", value="on", opts=child(self))
        # GraphQL answers are per user and per query: never cache them at the edge
        self.cache_bypass = cloudflare.Ruleset(
            "graphql-cache-bypass", zone_id=cf.zone_id, kind="zone", phase="http_request_cache_settings",
            name="graphql-entrypoint cache bypass",
            rules=[{"action": "set_cache_settings", "expression": graphql_cache_expression(args.hostname),
                    "description": "bypass cache for /v1/graphql", "enabled": True,
                    "action_parameters": {"cache": False}}],
            opts=child(self))
        self.tunnel_token = pulumi.Output.secret(cloudflare.get_zero_trust_tunnel_cloudflared_token_output(
            account_id=cf.account_id, tunnel_id=self.tunnel.id,
            opts=pulumi.InvokeOutputOptions(parent=self)).token)
        self.register_outputs({"tunnel_id": self.tunnel.id, "hostname": args.hostname})


@dataclass
class TunnelConnectorArgs:
    namespace: str
    vault: VaultConfig  # address, KV mount, Kubernetes auth mount, the token entry's key
    cloudflare: CloudflareConfig  # cloudflared image and replicas
    vault_role: str = EXTERNAL_SECRETS_ROLE
    token_entry: str = TUNNEL_TOKEN
    service_account: str = "cloudflare-tunnel-secretstore"
    token_secret: str = "cloudflare-tunnel-token"


class TunnelConnector(pulumi.ComponentResource):
    def __init__(self, name: str, args: TunnelConnectorArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("graphql:index:TunnelConnector", name, None, opts)
        ns = args.namespace
        self.service_account = k8s.core.v1.ServiceAccount(
            "secretstore-sa", metadata={"name": args.service_account, "namespace": ns,
                                        "labels": labels(args.service_account, "ingress")},
            opts=child(self))
        self.secret_store = k8s.apiextensions.CustomResource(
            "secretstore", api_version="external-secrets.io/v1", kind="SecretStore",
            metadata={"name": "vault-graphql", "namespace": ns, "labels": labels("vault-graphql", "ingress")},
            spec={"provider": {"vault": {
                "server": args.vault.address, "path": args.vault.kv_mount, "version": "v2",
                "auth": {"kubernetes": {"mountPath": args.vault.kubernetes_auth_path, "role": args.vault_role,
                                        # ESO requests a token for Vault's audience, as the agents get
                                        "serviceAccountRef": {"name": args.service_account,
                                                              "audiences": [VAULT_AUDIENCE]}}}}}},
            opts=child(self, depends_on=[self.service_account]))
        self.external_secret = k8s.apiextensions.CustomResource(
            "tunnel-token", api_version="external-secrets.io/v1", kind="ExternalSecret",
            metadata={"name": args.token_secret, "namespace": ns, "labels": labels(args.token_secret, "ingress")},
            spec={"refreshInterval": args.vault.tunnel_token_refresh_interval,
                  "secretStoreRef": {"name": "vault-graphql", "kind": "SecretStore"},
                  "target": {"name": args.token_secret, "creationPolicy": "Owner"},
                  "data": [{"secretKey": "token",
                            "remoteRef": {"key": args.token_entry, "property": args.vault.tunnel_token_key}}]},
            opts=child(self, depends_on=[self.secret_store]))
        app = CLOUDFLARED
        # what the post-deploy verification re-runs on (components/verify.py): the connector the edge answers through
        self.fingerprint = {"cloudflared": args.cloudflare.cloudflared_image,
                            "replicas": args.cloudflare.cloudflared_replicas}
        self.deployment = k8s.apps.v1.Deployment(
            "cloudflared",
            metadata={"name": app, "namespace": ns, "labels": labels(app, "ingress")},
            spec={
                "replicas": args.cloudflare.cloudflared_replicas,
                "selector": {"matchLabels": selector(app)},
                "template": {
                    "metadata": {"labels": labels(app, "ingress")},
                    "spec": {
                        "securityContext": pod_security(CLOUDFLARED_UID),
                        "automountServiceAccountToken": False,
                        "containers": [{
                            "name": "cloudflared",
                            "image": args.cloudflare.cloudflared_image,
                            "imagePullPolicy": IMAGE_PULL_POLICY,
                            # a file, not an env var every child inherits and /proc/<pid>/environ shows
                            # (--token-file since cloudflared 2025.4.0: cmd/cloudflared/tunnel/subcommands.go)
                            "args": ["tunnel", "--no-autoupdate", "--metrics", f"0.0.0.0:{METRICS_PORT}", "run",
                                     "--token-file", f"{TOKEN_DIR}/token"],
                            "ports": [{"name": "metrics", "containerPort": METRICS_PORT}],
                            # /ready: at least one edge connection (take it out of rotation, not restart it);
                            # /healthcheck: the process answers (metrics/metrics.go)
                            "readinessProbe": {"httpGet": {"path": "/ready", "port": METRICS_PORT},
                                               "periodSeconds": 5, "failureThreshold": 3},
                            "livenessProbe": {"httpGet": {"path": "/healthcheck", "port": METRICS_PORT},
                                              "initialDelaySeconds": 10, "periodSeconds": 10,
                                              "failureThreshold": 3},
                            "resources": Resources("20m", "64Mi", "500m", "256Mi").spec(),
                            "securityContext": container_security(CLOUDFLARED_UID),
                            "volumeMounts": [{"name": "tunnel-token", "mountPath": TOKEN_DIR, "readOnly": True}],
                        }],
                        # a reference to the ExternalSecret's Secret, never the token itself
                        "volumes": [{"name": "tunnel-token", "secret": {
                            "secretName": args.token_secret, "defaultMode": 0o440,
                            "items": [{"key": "token", "path": "token"}]}}],
                        **spread(app),
                    },
                },
            },
            opts=child(self, depends_on=[self.external_secret]))
        self.budget = disruption_budget("cloudflared-pdb", app, ns, "ingress", args.cloudflare.cloudflared_replicas,
                                        self)
        self.register_outputs({"deployment": self.deployment.metadata["name"]})
