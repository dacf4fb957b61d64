"""Stack configuration: read once from Pulumi config into typed, validated objects.

Every key lives under the project namespace (`graphql-entrypoint:<key>`). A missing or malformed
key fails the whole program with one message naming the key and the stack, before any resource
is declared. Components receive these objects; none of them reads `pulumi.Config` itself.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
from typing import Literal
from urllib.parse import urlsplit

import pulumi
from pulumi.runtime import config as runtime_config
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator
from pydantic.alias_generators import to_camel

from app.hasura.connection_template import (
    OPERATION_TYPES,
    RequestContext,
    Route,
    TemplateError,
    check_names,
    evaluate,
    parse,
)
from app.hasura.source import (
    ISOLATION_LEVELS,
    PoolSettings,
    RoutingCase,
    SourceSettings,
    connection_set_url_env,
    mutation_probes,
    replica_url_env,
)
from components.kafka_access import ServicePrincipals, WorkerPrincipal

PROJECT = "graphql-entrypoint"
PINNED_IMAGE = re.compile(r"^[a-z0-9./_-]+(:[\w.-]+)?@sha256:[0-9a-f]{64}$")
DNS_NAME = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")
# the settings the program itself does not own: the admin secret and database URL are injected already
VAULT_ENV = re.compile(r"^HASURA_GRAPHQL_(JWT_SECRETS?|AUTH_HOOK|[A-Z0-9_]*REDIS[A-Z0-9_]*)$")
K8S_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
KV_ENTRY = r"^[a-z0-9][a-z0-9-]{0,126}$"
# a Vault mount or auth path: plain segments, nothing a policy's path glob (+ *) or HCL quoting would read
VAULT_PATH = r"^[A-Za-z0-9_-]{1,64}(/[A-Za-z0-9_-]{1,64}){0,4}$"
# Kafka's legal topic names (Topic.java: [a-zA-Z0-9._-], at most 249, not . or ..)
KAFKA_TOPIC = r"^[A-Za-z0-9._-]{1,249}$"
# namespaces this program must never take over: a default-deny NetworkPolicy there cuts off the cluster's own pods
RESERVED_NAMESPACES = frozenset({"default", "kube-system", "kube-public", "kube-node-lease"})
# a Kubernetes label key ([prefix/]name) and value, as the API server validates them
LABEL_KEY = re.compile(r"([a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?")
LABEL_VALUE = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?")
# a CronJob schedule: five fields (minute hour day-of-month month day-of-week) or one of the macros
CRON_SCHEDULE = r"^(@(yearly|annually|monthly|weekly|daily|midnight|hourly)|[0-9*/,A-Za-z-]+( [0-9*/,A-Za-z?-]+){4})$"
# Cloudflare closes a proxied WebSocket that has been idle for 100 s, whatever the tunnel says
CLOUDFLARE_WEBSOCKET_IDLE_SECONDS = 100


def _labels(value: dict[str, str]) -> dict[str, str]:
    for key, label in value.items():
        if not LABEL_KEY.fullmatch(key) or not LABEL_VALUE.fullmatch(label):
            raise ValueError(f"{key!r}: {label!r} is not a Kubernetes label (key [prefix/]name, value up to 63 of "
                             "A-Z a-z 0-9 - _ .)")
    return value


class ConfigError(Exception):
    """A stack configuration problem; the message names the key and the stack."""


class _Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)


def _pinned(value: str) -> str:
    if not PINNED_IMAGE.fullmatch(value):
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
    # how long cloudflared keeps an idle connection to Hasura, and its TCP keep-alive probes: subscriptions
    # stay open only if Hasura's WebSocket keep-alive (hasura.subscriptions) beats the idle timeout
    origin_keep_alive_timeout_seconds: int = Field(90, ge=10, le=3600)
    origin_tcp_keep_alive_seconds: int = Field(30, ge=5, le=600)
    origin_connect_timeout_seconds: int = Field(10, ge=1, le=120)

    _image = field_validator("cloudflared_image")(_pinned)


class TopicsConfig(_Model):
    requests: str = Field("graphql.async.requests.v1", pattern=KAFKA_TOPIC)
    responses: str = Field("graphql.async.responses.v1", pattern=KAFKA_TOPIC)
    dlq: str = Field("graphql.async.responses.dlq.v1", pattern=KAFKA_TOPIC)

    @model_validator(mode="after")
    def _three_topics(self) -> TopicsConfig:
        names = (self.requests, self.responses, self.dlq)
        if any(name in (".", "..") for name in names):
            raise ValueError("a topic may not be named . or ..")
        # Kafka refuses topics whose names differ only in . and _ (they collide in metric names)
        if len({name.replace(".", "_") for name in names}) != 3:
            raise ValueError("requests, responses and dlq must be three different topics (. and _ count as equal)")
        return self


class WorkerConfig(_Model):
    """Another team's worker service: its own SCRAM user, exactly the ACLs a worker needs (read requests, write
    responses, its own consumer group) and its credentials in Vault, readable by its policy alone."""

    name: str = Field(pattern=r"^[a-z][a-z0-9-]{0,39}$")  # principal graphql-async-worker-<name>
    consumer_group: str | None = Field(None, pattern=r"^[A-Za-z0-9._-]{1,200}$")  # default: the principal's name
    # where the worker runs: a Vault Kubernetes auth role bound to exactly this account (audience vault);
    # without them only the policy is declared, for the team to attach to its own auth
    kubernetes_namespace: str | None = Field(None, pattern=K8S_NAME.pattern)
    service_account: str | None = Field(None, pattern=K8S_NAME.pattern)

    @model_validator(mode="after")
    def _both_or_neither(self) -> WorkerConfig:
        if (self.kubernetes_namespace is None) != (self.service_account is None):
            raise ValueError(f"worker {self.name!r}: kubernetesNamespace and serviceAccount go together")
        if self.kubernetes_namespace in RESERVED_NAMESPACES:
            raise ValueError(f"worker {self.name!r}: kubernetesNamespace {self.kubernetes_namespace!r} is the "
                             "cluster's own; its service accounts would get the worker's Kafka login")
        if self.group.startswith(ServicePrincipals.writer_group):  # the writer's ACL is Prefixed on its group
            raise ValueError(f"worker {self.name!r}: consumerGroup {self.group!r} is the response writer's")
        return self

    @property
    def group(self) -> str:
        """The consumer group it reads with."""
        return WorkerPrincipal(self.name, self.consumer_group).group


class KafkaConfig(_Model):
    bootstrap_servers: list[str] = Field(min_length=1)
    security_protocol: Literal["SASL_PLAINTEXT", "SASL_SSL"] = "SASL_PLAINTEXT"
    sasl_mechanism: Literal["SCRAM-SHA-256", "SCRAM-SHA-512"] = "SCRAM-SHA-256"
    # SASL_SSL: the KV entry (key `value`) holding the PEM of the CA that signed the brokers' certificates; the
    # provider, the publisher and the writer verify the brokers against it (written by whoever runs Kafka)
    ca_entry: str | None = Field(None, pattern=KV_ENTRY)
    admin_username: str = Field(min_length=1)
    # the seed's broker may run without an authorizer: ACLs are declared only when it has one
    authorizer_enabled: bool
    topics: TopicsConfig = TopicsConfig()
    partitions: int = Field(3, ge=1, le=1000)
    replication_factor: int = Field(3, ge=1, le=7)
    retention_ms: int = Field(7 * 24 * 3600 * 1000, ge=60_000, le=2**63 - 1)
    dlq_retention_ms: int = Field(28 * 24 * 3600 * 1000, ge=60_000, le=2**63 - 1)
    min_insync_replicas: int = Field(2, ge=1)
    workers: list[WorkerConfig] = Field(default_factory=list)

    @field_validator("workers")
    @classmethod
    def _unique_workers(cls, workers: list[WorkerConfig]) -> list[WorkerConfig]:
        names = [w.name for w in workers]
        if len(names) != len(set(names)):
            raise ValueError("worker names must be unique")
        groups = [w.group for w in workers]
        if len(groups) != len(set(groups)):  # one team could read, and commit, another's offsets
            raise ValueError("workers' consumer groups must be unique (the default is graphql-async-worker-<name>)")
        return workers

    @field_validator("bootstrap_servers")
    @classmethod
    def _host_port(cls, servers: list[str]) -> list[str]:
        for server in servers:
            if not re.fullmatch(r"[A-Za-z0-9.-]+:\d{1,5}", server) or not 1 <= int(server.rsplit(":", 1)[1]) <= 65535:
                raise ValueError(f"{server!r} is not host:port")
        return servers

    @model_validator(mode="after")
    def _isr(self) -> KafkaConfig:
        if self.min_insync_replicas > self.replication_factor:
            raise ValueError("minInsyncReplicas cannot exceed replicationFactor")
        return self

    @model_validator(mode="after")
    def _tls(self) -> KafkaConfig:
        if self.security_protocol == "SASL_SSL" and not self.ca_entry:
            raise ValueError("securityProtocol SASL_SSL needs caEntry (the KV entry with the brokers' CA)")
        if self.security_protocol != "SASL_SSL" and self.ca_entry:
            raise ValueError("caEntry is only for securityProtocol SASL_SSL")
        return self


class VaultConfig(_Model):
    address: str = Field(pattern=r"^https?://")
    kv_mount: str = Field("secret", pattern=VAULT_PATH)  # pasted into policy paths: no globs, no quotes
    kubernetes_auth_path: str = Field("kubernetes", pattern=VAULT_PATH)
    # the ExternalSecret reads this key of the tunnel token entry (the seed's manual step wrote `vaule`)
    tunnel_token_key: str = Field("value", pattern=r"^[A-Za-z0-9_-]+$")
    # how often External Secrets re-reads the tunnel token (a rotation reaches the Secret within this)
    tunnel_token_refresh_interval: str = Field("1h", pattern=r"^([0-9]+(s|m|h))+$")

    @field_validator("tunnel_token_refresh_interval")
    @classmethod
    def _refreshes(cls, value: str) -> str:
        if not any(int(n) for n in re.findall(r"[0-9]+", value)):
            raise ValueError("must be longer than 0 (External Secrets reads 0 as: never refresh)")
        return value

    @field_validator("address")
    @classmethod
    def _tls_off_cluster(cls, value: str) -> str:
        """Plain HTTP only to an in-cluster Service or loopback (dev's Vault, the rehearsal's OpenBao): Vault
        tokens and secrets never cross a network the cluster does not own in clear text."""
        parts = urlsplit(value)
        try:
            parts.port  # noqa: B018 - urllib checks the port only when asked
        except ValueError:
            raise ValueError("has a port that is not 1-65535") from None
        if parts.username is not None or parts.password is not None:
            raise ValueError("must not carry credentials (user:password@): the address is not a secret")
        if any(c.isspace() for c in value):
            raise ValueError("must not contain whitespace")
        host = parts.hostname or ""
        if value.startswith("http://") and not (host.endswith((".svc", ".svc.cluster.local"))
                                                or host in ("127.0.0.1", "localhost", "::1")):
            raise ValueError("must be https:// outside the cluster (http:// only for an in-cluster "
                             "<service>.<namespace>.svc address or loopback)")
        return value


class PoolConfig(_Model):
    """Hasura's pool per source and per instance. Defaults for many short-lived (serverless) clients: they
    share these few connections instead of opening their own; idle ones are given back within a minute; a
    burst that finds the pool busy fails after 10 s instead of queueing past the action timeout."""

    max_connections: int = Field(20, ge=1, le=1000)
    idle_timeout_seconds: int = Field(60, ge=1, le=86_400)
    pool_timeout_seconds: int | None = Field(10, ge=1, le=3600)  # null: wait as long as it takes (Hasura's default)
    # recycled so new tservers get load. No 0 ("never"): Hasura stores it as an absent key, which its next
    # metadata load reads back as 600 (Connection/Settings.hs parseConnLifeTime), so it never converges
    connection_lifetime_seconds: int = Field(600, ge=1, le=86_400)
    retries: int = Field(1, ge=0, le=10)
    isolation_level: Literal[ISOLATION_LEVELS] = "read-committed"  # type: ignore[valid-type]

    def settings(self) -> PoolSettings:
        return PoolSettings(max_connections=self.max_connections, idle_timeout=self.idle_timeout_seconds,
                            pool_timeout=self.pool_timeout_seconds,
                            connection_lifetime=self.connection_lifetime_seconds, retries=self.retries)


class RoutingCaseConfig(_Model):
    """One request shape and the connection it must reach; checked offline and by the bootstrap."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")
    operation_type: Literal[OPERATION_TYPES]  # type: ignore[valid-type]
    operation_name: str | None = Field(None, max_length=256)  # a GraphQL name, as Hasura's QueryContext reads it
    headers: dict[str, str] = Field(default_factory=dict)
    session: dict[str, str] = Field(default_factory=dict)
    expect: str  # primary | read_replicas | default | connection_set.<member>

    @field_validator("session")
    @classmethod
    def _session(cls, value: dict[str, str]) -> dict[str, str]:
        for key in value:
            if not key.lower().startswith("x-hasura-"):
                raise ValueError(f"session variable {key!r}: Hasura's session variables start with x-hasura-")
        return value

    @field_validator("expect")
    @classmethod
    def _route(cls, value: str) -> str:
        try:
            Route.parse(value)
        except TemplateError as exc:
            raise ValueError(str(exc)) from None
        return value

    @model_validator(mode="after")
    def _hasura_accepts(self) -> RoutingCaseConfig:
        """The bootstrap sends this case to pg_test_connection_template: refuse what Hasura answers 400 for."""
        problems = self.case().request.problems()
        if problems:
            raise ValueError(f"case {self.name!r}: " + "; ".join(problems))
        return self

    def case(self) -> RoutingCase:
        return RoutingCase(name=self.name, expect=Route.parse(self.expect), request=RequestContext(
            # names as written: Hasura passes the client's own spelling (ConnectionTemplate.hs makeRequestContext,
            # CI.original), so "X-Consistency" and "x-consistency" are different keys to a template
            headers=dict(self.headers),
            session={k.lower(): v for k, v in self.session.items()},
            operation_type=self.operation_type, operation_name=self.operation_name))


class RoutingConfig(_Model):
    """Dynamic routing (Hasura Enterprise): named connections and the Kriti template that picks one."""

    # member name -> KV entry holding its database URL (rendered into Hasura's pod, never in config)
    connection_set: dict[str, str] = Field(default_factory=dict)
    template: str = Field(min_length=1, max_length=16_384)
    cases: list[RoutingCaseConfig] = Field(min_length=1)
    _routes_to_replicas: bool = PrivateAttr(False)  # set by the template check, which parses it once

    @field_validator("connection_set")
    @classmethod
    def _members(cls, value: dict[str, str]) -> dict[str, str]:
        for member, entry in value.items():
            if not re.fullmatch(r"[a-z][a-z0-9_]{0,31}", member):
                raise ValueError(f"member {member!r}: lower-case letters, digits and _, at most 32")
            if not re.fullmatch(KV_ENTRY, entry):
                raise ValueError(f"{entry!r} is not a KV entry name")
        return value

    @model_validator(mode="after")
    def _template(self) -> RoutingConfig:
        members = set(self.connection_set)
        try:
            template = parse(self.template)
            check_names(template, members)
        except TemplateError as exc:
            raise ValueError(f"template: {exc}") from None
        names = [c.name for c in self.cases]
        if len(set(names)) != len(names):
            raise ValueError("cases: names must be unique")
        for case in [*(c.case() for c in self.cases), *mutation_probes()]:
            try:
                verdict = case.verdict(evaluate(template, case.request, members))
            except TemplateError as exc:
                verdict = str(exc)
            if verdict:
                raise ValueError(f"case {case.name!r}: the template {verdict}")
        self._routes_to_replicas = (any(names[:1] == ("read_replicas",) for names, _ in template.paths())
                                    or any(c.expect == "read_replicas" for c in self.cases))
        return self

    @property
    def routes_to_replicas(self) -> bool:
        return self._routes_to_replicas


class SubscriptionsConfig(_Model):
    """Hasura's WebSocket and subscription settings (defaults are Hasura's own)."""

    websocket_keep_alive_seconds: int = Field(5, ge=1, le=600)
    websocket_connection_init_timeout_seconds: int = Field(3, ge=1, le=60)
    live_queries_batch_size: int = Field(100, ge=1, le=10_000)
    live_queries_refetch_interval_ms: int = Field(1000, ge=100, le=60_000)
    streaming_batch_size: int = Field(100, ge=1, le=10_000)
    streaming_refetch_interval_ms: int = Field(1000, ge=100, le=60_000)
    close_websockets_on_metadata_change: bool = True
    # the `user` role's row limit, which also caps the batch_size a client asks of the status stream
    user_row_limit: int = Field(100, ge=1, le=10_000)

    def env(self) -> dict[str, str]:
        return {
            "HASURA_GRAPHQL_WEBSOCKET_KEEPALIVE": str(self.websocket_keep_alive_seconds),
            "HASURA_GRAPHQL_WEBSOCKET_CONNECTION_INIT_TIMEOUT": str(self.websocket_connection_init_timeout_seconds),
            "HASURA_GRAPHQL_LIVE_QUERIES_MULTIPLEXED_BATCH_SIZE": str(self.live_queries_batch_size),
            "HASURA_GRAPHQL_LIVE_QUERIES_MULTIPLEXED_REFETCH_INTERVAL": str(self.live_queries_refetch_interval_ms),
            "HASURA_GRAPHQL_STREAMING_QUERIES_MULTIPLEXED_BATCH_SIZE": str(self.streaming_batch_size),
            "HASURA_GRAPHQL_STREAMING_QUERIES_MULTIPLEXED_REFETCH_INTERVAL": str(self.streaming_refetch_interval_ms),
            "HASURA_GRAPHQL_CLOSE_WEBSOCKETS_ON_METADATA_CHANGE": str(self.close_websockets_on_metadata_change).lower(),
        }


class HasuraConfig(_Model):
    image: str
    replicas: int = Field(2, ge=1, le=20)
    source_name: str = Field("default", pattern=r"^[A-Za-z_][A-Za-z0-9_-]{0,62}$")
    # ee: Hasura Enterprise (same image, activated by the license key in this KV entry)
    edition: Literal["ce", "ee"] = "ce"
    ee_license_key_entry: str | None = Field(None, pattern=KV_ENTRY)
    pool: PoolConfig = PoolConfig()
    # KV entries holding read replica URLs (Enterprise): queries and subscriptions may use them, mutations never
    read_replicas: list[str] = Field(default_factory=list, max_length=16)
    routing: RoutingConfig | None = None
    subscriptions: SubscriptionsConfig = SubscriptionsConfig()
    # secret settings managed outside this program (how users authenticate, Enterprise Redis URLs):
    # env var -> KV entry, exported by the Vault agent, never in a ConfigMap
    secret_env_from_vault: dict[str, str] = Field(default_factory=dict)

    _image = field_validator("image")(_pinned)

    @field_validator("secret_env_from_vault")
    @classmethod
    def _secret_vars(cls, value: dict[str, str]) -> dict[str, str]:
        for variable, entry in value.items():
            if not VAULT_ENV.fullmatch(variable):
                raise ValueError(f"{variable!r} is not one of HASURA_GRAPHQL_JWT_SECRET(S), _AUTH_HOOK, *REDIS*")
            if len(f"agent-inject-template-{variable.lower()}") > 63:  # Kubernetes annotation name limit
                raise ValueError(f"{variable!r} is too long for a Vault agent annotation")
            if not re.fullmatch(KV_ENTRY, entry):
                raise ValueError(f"{entry!r} is not a KV entry name")
        return value

    @field_validator("read_replicas")
    @classmethod
    def _replicas(cls, value: list[str]) -> list[str]:
        for entry in value:
            if not re.fullmatch(KV_ENTRY, entry):
                raise ValueError(f"{entry!r} is not a KV entry name")
        if len(set(value)) != len(value):
            raise ValueError("an entry is listed twice")
        return value

    @model_validator(mode="after")
    def _edition(self) -> HasuraConfig:
        enterprise = [key for key, used in (("readReplicas", self.read_replicas), ("routing", self.routing)) if used]
        if self.edition == "ce" and enterprise:
            raise ValueError(f"hasura.{' and hasura.'.join(enterprise)} need Hasura Enterprise: set hasura.edition "
                             "to ee (with hasura.eeLicenseKeyEntry) or remove them")
        if self.edition == "ee" and self.ee_license_key_entry is None:
            raise ValueError("hasura.edition ee needs hasura.eeLicenseKeyEntry (the KV entry with the license key)")
        if self.edition == "ce" and self.ee_license_key_entry is not None:
            raise ValueError("hasura.eeLicenseKeyEntry is only for hasura.edition ee")
        if self.routing and not self.read_replicas and self.routing.routes_to_replicas:
            raise ValueError("hasura.routing routes to read_replicas, but hasura.readReplicas is empty")
        return self

    def replica_env(self) -> dict[str, str]:
        """Read replica URL env var -> KV entry."""
        return {replica_url_env(i): entry for i, entry in enumerate(self.read_replicas, start=1)}

    def source_settings(self) -> SourceSettings:
        """What the bootstrap applies to the source (no URLs: env var names only)."""
        routing = self.routing
        return SourceSettings(
            edition=self.edition, pool=self.pool.settings(), isolation_level=self.pool.isolation_level,
            read_replica_envs=tuple(self.replica_env()),
            connection_set=tuple((m, connection_set_url_env(m)) for m in sorted(routing.connection_set))
            if routing else (),
            template=routing.template if routing else None,
            cases=tuple(c.case() for c in routing.cases) if routing else ())


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


class MetricsConfig(_Model):
    """Scraping and alerting the way clusters with the Prometheus Operator expect (components/monitoring.py)."""

    pod_monitor: bool = False  # PodMonitors for the publisher and the writer, and a NetworkPolicy letting them in
    prometheus_rule: bool = False  # the alerts of config/prometheus/rules.yaml
    # labels the cluster's Prometheus selects PodMonitors and PrometheusRules by (e.g. release: kube-prometheus-stack)
    selector_labels: dict[str, str] = Field(default_factory=dict)
    prometheus_namespace: str = Field("monitoring", pattern=K8S_NAME.pattern)  # where the scrapes come from
    scrape_interval: str = Field("30s", pattern=r"^[1-9][0-9]*(s|m)$")
    # each cleanup run pushes its figures here (a CronJob pod is gone before any scrape); unset: AsyncCleanupNotRun
    # is left out of the PrometheusRule, which could only ever fire
    pushgateway_url: str | None = Field(None, pattern=r"^https?://[^\s@]+$")
    # the alerts' runbook_url is docs/runbook.md#<alert>; with this set, an absolute link under it
    runbook_base_url: str | None = Field(None, pattern=r"^https?://\S+$")

    _selector_labels = field_validator("selector_labels")(_labels)


class AsyncFlowConfig(_Model):
    publisher_replicas: int = Field(2, ge=1, le=50)
    # worker processes per publisher pod (one per core the pod gets; its CPU limit follows)
    publisher_processes: int = Field(1, ge=1, le=16)
    # group commit: calls sharing one INSERT and commit, and how long the first waits for company
    group_commit_max_rows: int = Field(64, ge=1, le=1000)
    group_commit_window_ms: float = Field(0.5, ge=0, le=50)
    # how long the action waits for Kafka's ack before answering (0: answer once committed, status `pending`)
    publish_wait_seconds: float = Field(2.0, ge=0, le=10)
    # acked rows share one `published` UPDATE after this long (bookkeeping; the outbox relay covers a lost mark)
    published_mark_linger_ms: float = Field(20.0, ge=0, le=1000)
    writer_replicas: int = Field(1, ge=1, le=50)
    writer_batch_size: int = Field(1000, ge=1, le=50_000)
    # five cron fields (minute hour day month weekday) as the CronJob controller parses them
    cleanup_schedule: str = Field("*/10 * * * *", pattern=CRON_SCHEDULE)
    cleanup_batch_size: int = Field(250, ge=1, le=100_000)  # smaller commits weigh less on the publisher's p99
    cleanup_time_budget_seconds: int = Field(240, ge=10, le=86_400)
    cleanup_max_rows_per_second: int = Field(17_500, ge=0, le=10_000_000)  # 1M rows in 57 s; 0 = unpaced
    metrics: MetricsConfig = MetricsConfig()


class PeerConfig(_Model):
    """Where a dependency outside the namespace lives, as a NetworkPolicy peer: address blocks (outside the
    cluster), or pods of a namespace (inside it)."""

    cidrs: list[str] = Field(default_factory=list)
    namespace: str | None = Field(None, pattern=K8S_NAME.pattern)
    pod_labels: dict[str, str] = Field(default_factory=dict)

    @field_validator("cidrs")
    @classmethod
    def _cidrs(cls, value: list[str]) -> list[str]:
        for cidr in value:
            if ipaddress.ip_network(cidr).prefixlen == 0:  # a ValueError above names a malformed block
                raise ValueError(f"{cidr} is every address: list the dependency's own ranges")
        return value

    _pod_labels = field_validator("pod_labels")(_labels)

    @model_validator(mode="after")
    def _one_kind(self) -> PeerConfig:
        if bool(self.cidrs) == bool(self.namespace):
            raise ValueError("give either cidrs or namespace (with podLabels)")
        if self.pod_labels and not self.namespace:
            raise ValueError("podLabels need a namespace")
        return self


class ExtraEgressConfig(PeerConfig):
    """A destination Hasura needs beyond the drawing (Enterprise Redis, a JWT issuer's JWK URL), on TCP ports."""

    ports: list[int] = Field(min_length=1)

    @field_validator("ports")
    @classmethod
    def _ports(cls, value: list[int]) -> list[int]:
        if not all(1 <= p <= 65535 for p in value):
            raise ValueError("ports are 1-65535")
        return value


class NetworkConfig(_Model):
    """Where the workloads' dependencies live, for the namespace's NetworkPolicies (components/network_policy.py):
    they differ per cluster, so each stack says."""

    dns: PeerConfig = PeerConfig(namespace="kube-system", pod_labels={"k8s-app": "kube-dns"})
    vault: PeerConfig
    kafka: PeerConfig
    database: PeerConfig
    database_port: int = Field(5432, ge=1, le=65535)  # the URL is a secret: its port is said here
    # cloudflared dials Cloudflare's edge on the internet; these (the cluster's own IPv4 ranges) stay excluded, as do
    # the special-purpose ranges (components/network_policy.py, SPECIAL_PURPOSE_CIDRS) whatever is listed here
    cluster_cidrs: list[str] = Field(default_factory=lambda: ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"])
    # what hasura.secretEnvFromVault's settings make Hasura call (Redis, a JWK URL): nothing unless listed here
    hasura_extra_egress: list[ExtraEgressConfig] = Field(default_factory=list)

    @field_validator("cluster_cidrs")
    @classmethod
    def _cluster(cls, value: list[str]) -> list[str]:
        for cidr in value:
            if ipaddress.ip_network(cidr).prefixlen == 0:
                raise ValueError(f"{cidr} is every address: cloudflared's internet egress would exclude all of it")
            if ipaddress.ip_network(cidr).version == 6:  # an IPv6 except inside 0.0.0.0/0 is refused by the API server
                raise ValueError(f"{cidr} is IPv6: cloudflared's internet egress is IPv4 only (0.0.0.0/0), so IPv6 "
                                 f"ranges need no exclusion; list IPv4 ranges only")
        return value


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
    # false only where the cluster has no kubelet (the `local` rehearsal's bare API server): see components/no_kubelet
    kubelet: bool = True
    cloudflare: CloudflareConfig
    kafka: KafkaConfig
    vault: VaultConfig
    hasura: HasuraConfig
    images: ImagesConfig
    async_flow: AsyncFlowConfig = AsyncFlowConfig()
    verify: VerifyConfig = VerifyConfig()
    network: NetworkConfig
    # secrets: set with `pulumi config set --secret`; kept as Outputs so they stay secret
    database_url: pulumi.Output[str] = Field(exclude=True)
    # a role with CREATEROLE for the bootstrap alone: it creates the services' roles (databaseUrl's must not)
    database_role_admin_url: pulumi.Output[str] = Field(exclude=True)
    kafka_admin_password: pulumi.Output[str] = Field(exclude=True)
    local_tunnel_token: pulumi.Output[str] | None = Field(None, exclude=True)

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True,
                              arbitrary_types_allowed=True)

    @field_validator("namespace")
    @classmethod
    def _namespace(cls, value: str) -> str:
        if not K8S_NAME.fullmatch(value):
            raise ValueError("must be a Kubernetes namespace name")
        if value in RESERVED_NAMESPACES:
            raise ValueError(f"{value!r} is the cluster's own: the program puts a default-deny NetworkPolicy in its "
                             "namespace, which would cut off every other pod there")
        return value

    @field_validator("public_hostname")
    @classmethod
    def _hostname(cls, value: str) -> str:
        if not DNS_NAME.fullmatch(value):
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

    @model_validator(mode="after")
    def _websockets_outlive_idle_timeouts(self) -> StackConfig:
        keep_alive = self.hasura.subscriptions.websocket_keep_alive_seconds
        idle = min(self.cloudflare.origin_keep_alive_timeout_seconds, CLOUDFLARE_WEBSOCKET_IDLE_SECONDS)
        if keep_alive >= idle:
            raise ValueError(
                f"hasura.subscriptions.websocketKeepAliveSeconds ({keep_alive}) must be shorter than the tunnel's "
                f"idle timeout ({idle} s: cloudflare.originKeepAliveTimeoutSeconds, at most Cloudflare's "
                f"{CLOUDFLARE_WEBSOCKET_IDLE_SECONDS} s), or idle subscriptions are cut")
        return self

    @property
    def graphql_url(self) -> str:
        return f"https://{self.public_hostname}/v1/graphql"

    @property
    def websocket_url(self) -> str:
        return f"wss://{self.public_hostname}/v1/graphql"


PLAIN_KEYS = ("namespace", "publicHostname", "kubernetesVersion", "kubelet")
OBJECT_KEYS = ("cloudflare", "kafka", "vault", "hasura", "images", "asyncFlow", "verify", "network")
SECRET_KEYS = ("databaseUrl", "databaseRoleAdminUrl", "kafkaAdminPassword")
KNOWN_KEYS = frozenset({*PLAIN_KEYS, *OBJECT_KEYS, *SECRET_KEYS, "localTunnelToken"})


def unknown_keys() -> list[str]:
    """The project's config keys this program never reads (a typo such as `asyncflow` would silently keep the
    defaults): the engine hands the program every key, through set_all_config or PULUMI_CONFIG."""
    keys = {*runtime_config.CONFIG.get(), *runtime_config.get_config_env()}
    return sorted(key.split(":", 1)[1] for key in keys
                  if key.startswith(f"{PROJECT}:") and key.split(":", 1)[1] not in KNOWN_KEYS)


def load_stack_config() -> StackConfig:
    """Read and validate the whole stack configuration, or raise ConfigError naming key and stack."""
    stack = pulumi.get_stack()
    config = pulumi.Config(PROJECT)
    for key in unknown_keys():
        near = difflib.get_close_matches(key, KNOWN_KEYS, n=1, cutoff=0.6)
        raise ConfigError(f"stack {stack!r}: unknown config key {PROJECT}:{key}"
                          + (f" (did you mean {PROJECT}:{near[0]}?)" if near else ""))
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
            problems.append(f"{PROJECT}:{key}: {err['msg']}" if key else err["msg"].removeprefix("Value error, "))
        raise ConfigError(f"stack {stack!r}: invalid configuration: " + "; ".join(problems)) from None
