"""Service settings, read once from the environment into one typed object per service.

Secrets may also come from files: the Vault agent writes each one to
`/vault/secrets/<field name>` (e.g. `/vault/secrets/async_database_url`); an
environment variable of the same name wins over the file.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from app import logs
from app.hasura.source import SourceSettings

VAULT_SECRETS_DIR = os.environ.get("ASYNC_SECRETS_DIR", "/vault/secrets")

REQUESTS_TOPIC = "graphql.async.requests.v1"
RESPONSES_TOPIC = "graphql.async.responses.v1"
DLQ_TOPIC = "graphql.async.responses.dlq.v1"
TABLE = "graphql.client_async_messages"
ACTION_NAME = "publish_async_request"
ACTION_SECRET_HEADER = "X-Async-Action-Secret"


class SettingsError(RuntimeError):
    """A missing or malformed environment variable, named in the message."""


class _Base(BaseSettings):
    model_config = SettingsConfigDict(
        case_sensitive=False,
        extra="ignore",
        secrets_dir=VAULT_SECRETS_DIR if Path(VAULT_SECRETS_DIR).is_dir() else None,
    )

    @classmethod
    def from_env(cls, **overrides):
        """Read the environment; a missing or bad variable raises SettingsError naming it."""
        try:
            settings = cls(**overrides)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'_'.join(str(p) for p in err['loc']).upper() or '?'}: {err['msg']}" for err in exc.errors()
            )
            raise SettingsError(f"{cls.__name__}: {problems}") from None
        for name in type(settings).model_fields:  # whatever is secret never reaches a log line in plain text
            value = getattr(settings, name)
            if isinstance(value, SecretStr):
                logs.register_secret(value.get_secret_value())
        return settings

    @classmethod
    def load_or_exit(cls):
        """For a service's main(): a settings problem ends the process with one clear line, exit code 2."""
        try:
            return cls.from_env()
        except SettingsError as exc:
            print(f"configuration error: {exc}", file=sys.stderr)
            raise SystemExit(2) from None


def libpq_parsable(value: SecretStr) -> SecretStr:
    """Refuse at start-up, without echoing it, instead of retrying a URL libpq can never parse."""
    from psycopg.conninfo import conninfo_to_dict

    try:
        conninfo_to_dict(value.get_secret_value())
    except Exception:  # noqa: BLE001 - its message quotes the URL, password included
        raise ValueError("not a valid libpq connection string or URL (check %-escapes)") from None
    return value


class DatabaseSettings(_Base):
    async_database_url: SecretStr = Field(description="libpq URL of the Hasura database (Postgres/YugabyteDB YSQL)")
    db_pool_min_size: int = Field(1, ge=1)
    db_pool_max_size: int = Field(10, ge=1)
    db_connect_timeout_seconds: float = Field(5.0, gt=0)

    @field_validator("async_database_url")
    @classmethod
    def _parsable(cls, value: SecretStr) -> SecretStr:
        return libpq_parsable(value)


class KafkaSettings(_Base):
    kafka_bootstrap_servers: str = Field(min_length=1)
    kafka_security_protocol: Literal["PLAINTEXT", "SASL_PLAINTEXT", "SASL_SSL", "SSL"] = "SASL_PLAINTEXT"
    kafka_sasl_mechanism: Literal["SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN"] = "SCRAM-SHA-256"
    kafka_username: str | None = None
    kafka_password: SecretStr | None = None
    # PEM of the CA that signed the brokers' certificates (SASL_SSL): the file the Vault agent renders
    kafka_ssl_ca_location: str | None = None
    async_requests_topic: str = REQUESTS_TOPIC
    async_responses_topic: str = RESPONSES_TOPIC
    async_dlq_topic: str = DLQ_TOPIC

    def client_config(self) -> dict[str, str]:
        """librdkafka settings shared by every producer and consumer."""
        config = {"bootstrap.servers": self.kafka_bootstrap_servers, "security.protocol": self.kafka_security_protocol}
        if self.kafka_security_protocol.endswith("SSL"):
            # librdkafka checks the broker's certificate and hostname (ssl.endpoint.identification.algorithm https,
            # its default) against this CA, not the image's trust store
            if not self.kafka_ssl_ca_location:
                raise SettingsError(
                    f"KafkaSettings: KAFKA_SSL_CA_LOCATION is required with {self.kafka_security_protocol}")
            config |= {"ssl.ca.location": self.kafka_ssl_ca_location, "ssl.endpoint.identification.algorithm": "https"}
        if self.kafka_security_protocol.startswith("SASL"):
            if not self.kafka_username or self.kafka_password is None:
                raise SettingsError(
                    f"KafkaSettings: KAFKA_USERNAME and KAFKA_PASSWORD are required with {self.kafka_security_protocol}"
                )
            config |= {
                "sasl.mechanisms": self.kafka_sasl_mechanism,
                "sasl.username": self.kafka_username,
                "sasl.password": self.kafka_password.get_secret_value(),
            }
        return config


# what a relay pass under way at shutdown gets beyond PUBLISH_TIMEOUT_SECONDS to mark what it sent
RELAY_SETTLE_SECONDS = 5.0
PRODUCER_MAX_MESSAGE_BYTES = 1_000_000  # librdkafka's message.max.bytes; the broker's default is 1,048,588


class PublisherSettings(DatabaseSettings, KafkaSettings):
    async_action_secret: SecretStr = Field(min_length=16)
    publisher_host: str = "0.0.0.0"
    publisher_port: int = Field(8080, ge=1, le=65535)
    # how long an idle HTTP connection stays open: longer than Hasura's client keeps one (http-client reaps idle
    # connections at 30-35 s), so the client always closes first and never reuses one the server just closed
    publisher_keep_alive_seconds: int = Field(65, ge=1, le=3600)
    # how long the action waits for Kafka's ack before answering with the row still `pending`
    # 0: answer as soon as the row is committed (status `pending`; the outbox guarantees the publish), one
    # Kafka round trip less per call
    publish_wait_seconds: float = Field(2.0, ge=0)
    # producer gives up on a message after this; the outbox relay takes over
    publish_timeout_seconds: float = Field(10.0, gt=0)
    relay_interval_seconds: float = Field(1.0, gt=0)
    # a pending row younger than this is still in some publisher's hands: the relay leaves it alone.
    # Must exceed publish_timeout_seconds, or the relay re-sends messages the producer is still delivering.
    relay_grace_seconds: float = Field(15.0, ge=0)
    relay_batch_size: int = Field(100, ge=1, le=10_000)
    # acked rows wait this long to share one `published` UPDATE (bookkeeping: the relay covers a lost mark)
    published_mark_linger_ms: float = Field(20.0, ge=0, le=1000)
    max_payload_bytes: int = Field(256 * 1024, ge=1024)
    # the whole request message (value, key, headers) in UTF-8 bytes, checked before the row is stored
    max_envelope_bytes: int = Field(512 * 1024, ge=4096, le=PRODUCER_MAX_MESSAGE_BYTES - 16 * 1024)
    # the action's HTTP body, refused on Content-Length and while reading
    max_body_bytes: int = Field(2 * 1024 * 1024, ge=4096, le=64 * 1024 * 1024)
    max_json_depth: int = Field(64, ge=4, le=1000)
    # the whole body must arrive within this (Hasura sends it at once; its action timeout is 30 s by default)
    body_read_timeout_seconds: float = Field(30.0, gt=0, le=600)
    default_expires_in_seconds: int = Field(3600, ge=60)
    max_expires_in_seconds: int = Field(7 * 24 * 3600, ge=60)
    # group commit: concurrent calls share one INSERT and one commit (app/group_commit.py)
    group_commit_max_rows: int = Field(64, ge=1, le=1000)
    group_commit_window_ms: float = Field(0.5, ge=0, le=50)
    group_commit_max_in_flight: int = Field(4, ge=1, le=64)
    # uvicorn worker processes: one event loop per core the pod has (each with its own pool and relay)
    publisher_processes: int = Field(1, ge=1, le=64)
    # GET /metrics on its own port (0: none), away from the action port only Hasura may reach
    metrics_port: int = Field(9102, ge=0, le=65535)
    # the outbox backlog gauges come from one cheap query this often, never per request
    outbox_scan_interval_seconds: float = Field(15.0, gt=0)
    # after SIGTERM, open action calls get this long to finish before uvicorn cancels them (a cancelled call's
    # row is committed or not; the client's retry with the same request_id replays it)
    shutdown_drain_seconds: float = Field(10.0, gt=0, le=600)
    # then the whole graceful shutdown (app/shutdown.py); both under the pod's terminationGracePeriodSeconds
    shutdown_timeout_seconds: float = Field(30.0, gt=0, le=600)

    @model_validator(mode="after")
    def _consistent(self) -> PublisherSettings:
        if self.relay_grace_seconds <= self.publish_timeout_seconds + self.published_mark_linger_ms / 1000:
            raise ValueError("RELAY_GRACE_SECONDS must be longer than PUBLISH_TIMEOUT_SECONDS plus "
                             "PUBLISHED_MARK_LINGER_MS, or the relay publishes again what the producer is still "
                             "delivering or the marker is about to mark")
        if self.publish_wait_seconds > self.publish_timeout_seconds:
            raise ValueError("PUBLISH_WAIT_SECONDS may not exceed PUBLISH_TIMEOUT_SECONDS")
        if self.shutdown_timeout_seconds <= self.publish_timeout_seconds + RELAY_SETTLE_SECONDS:
            raise ValueError(f"SHUTDOWN_TIMEOUT_SECONDS must be longer than PUBLISH_TIMEOUT_SECONDS plus "
                             f"{RELAY_SETTLE_SECONDS:g}, or a relay pass under way at shutdown is cut after its "
                             "sends and before its marks, and its rows are published twice")
        if not self.max_payload_bytes < self.max_envelope_bytes <= self.max_body_bytes:
            raise ValueError("need MAX_PAYLOAD_BYTES < MAX_ENVELOPE_BYTES <= MAX_BODY_BYTES")
        return self


class WriterSettings(DatabaseSettings, KafkaSettings):
    writer_group_id: str = "graphql-async-response-writer"
    # transactional.id = prefix + instance id; the instance id must be STABLE across restarts of one replica
    # (the StatefulSet pod name, e.g. ...-writer-0) so a replacement fences its predecessor's open transaction
    writer_transactional_id_prefix: str = "graphql-async-response-writer"
    writer_instance_id: str = Field(default_factory=lambda: os.environ.get("HOSTNAME", "local"),
                                    pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
    writer_batch_size: int = Field(1000, ge=1, le=50_000)
    writer_batch_wait_seconds: float = Field(0.5, gt=0)
    # after a batch's first message, how long to gather more (latency at low rates vs. batch size)
    writer_batch_linger_ms: float = Field(5.0, ge=0, le=1000)
    writer_retry_max_seconds: float = Field(30.0, gt=0)
    # each transactional call (send offsets, commit, abort) waits this long, retried writer_kafka_retries times;
    # the transaction times out after 4x it, and a batch's database write is cancelled after 2x it
    writer_kafka_timeout_seconds: float = Field(30.0, gt=0)
    writer_kafka_retries: int = Field(3, ge=1, le=20)
    # /healthz turns 503 when no batch committed for this long while messages wait
    writer_stall_seconds: float = Field(180.0, gt=0)
    response_max_bytes: int = Field(1024 * 1024, ge=1024)
    response_max_depth: int = Field(64, ge=2, le=1000)
    # a DLQ copy (key + value + headers) never exceeds this; keep it under the DLQ topic's max.message.bytes
    # at least what a copy carries besides its value (key up to 1 KiB, the dlq.* headers), with room; at most
    # what a batch of one fits in the broker's default max.message.bytes (1,048,588) with the producer's framing
    dlq_max_message_bytes: int = Field(PRODUCER_MAX_MESSAGE_BYTES - 1024, ge=32 * 1024, le=1_047_564)
    health_port: int = Field(8081, ge=0, le=65535)  # serves /healthz and /metrics
    # the group's committed offsets and the high watermarks are read this often, apart from the consume loop
    writer_lag_interval_seconds: float = Field(15.0, gt=0)

    @property
    def transactional_id(self) -> str:
        return f"{self.writer_transactional_id_prefix}-{self.writer_instance_id}"


class CleanupSettings(DatabaseSettings):
    cleanup_batch_size: int = Field(250, ge=1, le=100_000)  # smaller commits weigh less on the publisher's p99
    cleanup_time_budget_seconds: float = Field(240.0, gt=0)
    # pace: 1M expired rows in 57 s, leaving the database room for the publisher's inserts (0 = unpaced)
    cleanup_max_rows_per_second: float = Field(17_500, ge=0)
    # a CronJob pod is gone before Prometheus could scrape it: each run pushes its figures here (empty: log only)
    cleanup_pushgateway_url: str | None = Field(None, pattern=r"^https?://[^\s@]+$")


class RoleAdminSettings(_Base):
    """The db-roles Job (app/role_admin.py): the role administrator's URL and the roles' verifiers, nothing else."""

    # libpq URL of a role with CREATEROLE (the owner, Hasura's role, must not have it)
    async_database_role_admin_url: SecretStr
    # JSON {role: SCRAM-SHA-256 verifier} for the services' own database roles (app/db_roles.py)
    async_database_roles: SecretStr
    db_retry_seconds: float = Field(600.0, ge=0)

    @field_validator("async_database_role_admin_url")
    @classmethod
    def _admin_parsable(cls, value: SecretStr) -> SecretStr:
        return libpq_parsable(value)

    @field_validator("async_database_roles")
    @classmethod
    def _verifiers(cls, value: SecretStr) -> SecretStr:
        from app.db_roles import SERVICE_ROLES

        try:
            verifiers = json.loads(value.get_secret_value())
        except ValueError:
            raise ValueError("not JSON {role: SCRAM-SHA-256 verifier}") from None
        missing = sorted({r.role for r in SERVICE_ROLES} - set(verifiers if isinstance(verifiers, dict) else {}))
        if missing:
            raise ValueError(f"no verifier for {', '.join(missing)}")
        return value


class BootstrapSettings(DatabaseSettings):
    hasura_endpoint: str = "http://hasura.graphql.svc.cluster.local:8080"
    hasura_admin_secret: SecretStr
    # the services' own roles exist (the db-roles Job made them): audit the owner first, then grant them their
    # privileges as the owner (app/db_roles.py); false for a database without them (local runs, tests)
    async_service_roles: bool = False
    hasura_source: str = "default"
    action_handler_url: str = (
        "http://graphql-async-request-publisher.graphql.svc.cluster.local:8080/action/publish_async_request"
    )
    action_timeout_seconds: int = Field(30, ge=1, le=600)
    hasura_retry_seconds: float = Field(120.0, ge=0)
    # the source's pool, read replicas and routing as the program wrote them (app/hasura/source.py); empty: defaults
    hasura_source_settings: SourceSettings = Field(default_factory=SourceSettings)
    hasura_user_row_limit: int = Field(100, ge=1, le=10_000)

    @field_validator("hasura_source_settings", mode="before")
    @classmethod
    def _source_settings(cls, value: object) -> object:
        if isinstance(value, str):
            return SourceSettings.from_json(value) if value.strip() else SourceSettings()
        if isinstance(value, dict):  # pydantic-settings decodes JSON-looking env values itself
            return SourceSettings.from_dict(value)
        return value
