"""Stack configuration: read once from Pulumi config into typed, validated objects.

Every key lives under the project namespace (`graphql-entrypoint:<key>`). A missing or malformed
key fails the whole program with one message naming the key and the stack, before any resource
is declared. Components receive these objects; none of them reads `pulumi.Config` itself.
"""

from __future__ import annotations

import re
from typing import Literal

import pulumi
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.alias_generators import to_camel

PROJECT = "graphql-entrypoint"
PINNED_IMAGE = re.compile(r"^[a-z0-9./_-]+(:[\w.-]+)?@sha256:[0-9a-f]{64}$")
DNS_NAME = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")
# the settings the program itself does not own: the admin secret and database URL are injected already
VAULT_ENV = re.compile(r"^HASURA_GRAPHQL_(JWT_SECRETS?|AUTH_HOOK|[A-Z0-9_]*REDIS[A-Z0-9_]*)$")
K8S_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


class ConfigError(Exception):
    """A stack configuration problem; the message names the key and the stack."""


class _Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)


def _pinned(value: str) -> str:
    if not PINNED_IMAGE.match(value):
        raise ValueError("must be pinned by digest: <repository>[:tag]@sha256:<64 hex>")
    return value


class CloudflareConfig(_Model):
    # false only where no Cloudflare account is reachable (the `local` rehearsal stack): no tunnel, no DNS;
    # the tunnel token then comes from the secret `localTunnelToken`
    enabled: bool = True
    account_id: str = Field(min_length=1)
    zone_id: str = Field(min_length=1)
    tunnel_name: str = Field(pattern=r"^[a-z0-9-]{1,63}$")
    # the only public path: Hasura's GraphQL endpoint (HTTP and WebSocket)
    public_path_regex: Literal["^/v1/graphql(/.*)?$"] = "^/v1/graphql(/.*)?$"
    cloudflared_image: str = (
        "cloudflare/cloudflared:2025.8.1@sha256:b77d84e8704db38db22c22661cf7e56468c526e3a6a5fe9c8b7c151452fa1472"
    )
    cloudflared_replicas: int = Field(2, ge=1, le=10)

    _image = field_validator("cloudflared_image")(_pinned)


class TopicsConfig(_Model):
    requests: str = "graphql.async.requests.v1"
    responses: str = "graphql.async.responses.v1"
    dlq: str = "graphql.async.responses.dlq.v1"


class KafkaConfig(_Model):
    bootstrap_servers: list[str] = Field(min_length=1)
    security_protocol: Literal["SASL_PLAINTEXT", "SASL_SSL"] = "SASL_PLAINTEXT"
    sasl_mechanism: Literal["SCRAM-SHA-256", "SCRAM-SHA-512"] = "SCRAM-SHA-256"
    admin_username: str = Field(min_length=1)
    # the seed's broker may run without an authorizer: ACLs are declared only when it has one
    authorizer_enabled: bool
    topics: TopicsConfig = TopicsConfig()
    partitions: int = Field(3, ge=1, le=1000)
    replication_factor: int = Field(3, ge=1, le=7)
    retention_ms: int = Field(7 * 24 * 3600 * 1000, ge=60_000)
    dlq_retention_ms: int = Field(28 * 24 * 3600 * 1000, ge=60_000)
    min_insync_replicas: int = Field(2, ge=1)

    @field_validator("bootstrap_servers")
    @classmethod
    def _host_port(cls, servers: list[str]) -> list[str]:
        for server in servers:
            if not re.match(r"^[A-Za-z0-9.-]+:\d{1,5}$", server):
                raise ValueError(f"{server!r} is not host:port")
        return servers

    @model_validator(mode="after")
    def _isr(self) -> KafkaConfig:
        if self.min_insync_replicas > self.replication_factor:
            raise ValueError("minInsyncReplicas cannot exceed replicationFactor")
        return self


class VaultConfig(_Model):
    address: str = Field(pattern=r"^https?://")
    kv_mount: str = "secret"
    kubernetes_auth_path: str = "kubernetes"
    # the ExternalSecret reads this key of the tunnel token entry (the seed's manual step wrote `vaule`)
    tunnel_token_key: str = Field("value", pattern=r"^[A-Za-z0-9_-]+$")


class HasuraConfig(_Model):
    image: str
    replicas: int = Field(2, ge=1, le=20)
    source_name: str = "default"
    # secret settings managed outside this program (how users authenticate, Enterprise Redis URLs):
    # env var -> KV entry, exported by the Vault agent, never in a ConfigMap
    secret_env_from_vault: dict[str, str] = Field(default_factory=dict)

    _image = field_validator("image")(_pinned)

    @field_validator("secret_env_from_vault")
    @classmethod
    def _secret_vars(cls, value: dict[str, str]) -> dict[str, str]:
        for variable, entry in value.items():
            if not VAULT_ENV.match(variable):
                raise ValueError(f"{variable!r} is not one of HASURA_GRAPHQL_JWT_SECRET(S), _AUTH_HOOK, *REDIS*")
            if len(f"agent-inject-template-{variable.lower()}.env") > 63:  # Kubernetes annotation name limit
                raise ValueError(f"{variable!r} is too long for a Vault agent annotation")
            if not re.match(r"^[a-z0-9][a-z0-9-]{0,126}$", entry):
                raise ValueError(f"{entry!r} is not a KV entry name")
        return value


IMAGE_TARGETS = ("publisher", "writer", "cleanup")


class ImagesConfig(_Model):
    registry: str = Field(min_length=1)
    platform: str = "linux/amd64"
    # images built elsewhere (CI, or no Docker daemon here): target -> pinned reference; nothing is built
    prebuilt: dict[str, str] | None = None

    @field_validator("prebuilt")
    @classmethod
    def _prebuilt(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        if value is not None:
            if set(value) != set(IMAGE_TARGETS):
                raise ValueError(f"needs exactly the targets {', '.join(IMAGE_TARGETS)}")
            for ref in value.values():
                _pinned(ref)
        return value


class AsyncFlowConfig(_Model):
    publisher_replicas: int = Field(2, ge=1, le=50)
    writer_replicas: int = Field(1, ge=1, le=50)
    writer_batch_size: int = Field(1000, ge=1, le=50_000)
    cleanup_schedule: str = "*/10 * * * *"
    cleanup_batch_size: int = Field(1000, ge=1, le=100_000)
    cleanup_time_budget_seconds: int = Field(240, ge=10)


class VerifyConfig(_Model):
    """The post-deploy verification (components/verify.py)."""

    enabled: bool = True
    round_trip_seconds: int = Field(60, ge=5, le=900)
    # a KV entry (key `value`) holding a token of role `service`: enables the publish -> completed round trip
    service_token_entry: str | None = Field(None, pattern=r"^[a-z0-9][a-z0-9-]{0,126}$")


class StackConfig(_Model):
    stack: str
    namespace: str
    public_hostname: str
    kubernetes_version: str = Field("1.33.0", pattern=r"^\d+\.\d+\.\d+$")
    cloudflare: CloudflareConfig
    kafka: KafkaConfig
    vault: VaultConfig
    hasura: HasuraConfig
    images: ImagesConfig
    async_flow: AsyncFlowConfig = AsyncFlowConfig()
    verify: VerifyConfig = VerifyConfig()
    # secrets: set with `pulumi config set --secret`; kept as Outputs so they stay secret
    database_url: pulumi.Output[str] = Field(exclude=True)
    kafka_admin_password: pulumi.Output[str] = Field(exclude=True)
    local_tunnel_token: pulumi.Output[str] | None = Field(None, exclude=True)

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True,
                              arbitrary_types_allowed=True)

    @field_validator("namespace")
    @classmethod
    def _namespace(cls, value: str) -> str:
        if not K8S_NAME.match(value):
            raise ValueError("must be a Kubernetes namespace name")
        return value

    @field_validator("public_hostname")
    @classmethod
    def _hostname(cls, value: str) -> str:
        if not DNS_NAME.match(value):
            raise ValueError("must be a DNS hostname such as graphql.example.com")
        return value

    @model_validator(mode="after")
    def _tunnel_token(self) -> StackConfig:
        if not self.cloudflare.enabled and self.local_tunnel_token is None:
            raise ValueError("cloudflare.enabled is false: set the secret localTunnelToken (the token cloudflared "
                             "gets from Vault)")
        if not self.cloudflare.enabled and self.verify.enabled:
            raise ValueError("verify.enabled needs the public edge: set it false where cloudflare.enabled is false")
        if self.cloudflare.enabled and self.local_tunnel_token is not None:
            raise ValueError("localTunnelToken is only for stacks with cloudflare.enabled: false")
        return self

    @property
    def graphql_url(self) -> str:
        return f"https://{self.public_hostname}/v1/graphql"

    @property
    def websocket_url(self) -> str:
        return f"wss://{self.public_hostname}/v1/graphql"


PLAIN_KEYS = ("namespace", "publicHostname", "kubernetesVersion")
OBJECT_KEYS = ("cloudflare", "kafka", "vault", "hasura", "images", "asyncFlow", "verify")
SECRET_KEYS = ("databaseUrl", "kafkaAdminPassword")


def load_stack_config() -> StackConfig:
    """Read and validate the whole stack configuration, or raise ConfigError naming key and stack."""
    stack = pulumi.get_stack()
    config = pulumi.Config(PROJECT)
    raw: dict = {"stack": stack}
    for key in PLAIN_KEYS:
        value = config.get(key)
        if value is not None:
            raw[key] = value
    for key in OBJECT_KEYS:
        try:
            value = config.get_object(key)
        except Exception as exc:  # noqa: BLE001 - pulumi raises its own types for bad JSON
            raise ConfigError(f"stack {stack!r}: config key {PROJECT}:{key} is not a valid object: {exc}") from None
        if value is not None:
            raw[key] = value
    for key in SECRET_KEYS:
        value = config.get_secret(key)
        if value is None:
            raise ConfigError(f"stack {stack!r}: missing secret config {PROJECT}:{key} "
                              f"(set it with `pulumi config set --secret {key} ...`)")
        raw[key] = value
    local_token = config.get_secret("localTunnelToken")
    if local_token is not None:
        raw["localTunnelToken"] = local_token
    try:
        return StackConfig.model_validate(raw)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            key = ".".join(str(p) for p in err["loc"])
            problems.append(f"{PROJECT}:{key}: {err['msg']}")
        raise ConfigError(f"stack {stack!r}: invalid configuration: " + "; ".join(problems)) from None
