"""Service settings, read once from the environment into one typed object per service.

Secrets may also come from files: the Vault agent writes each one to
`/vault/secrets/<field name>` (e.g. `/vault/secrets/async_database_url`); an
environment variable of the same name wins over the file.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

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
            return cls(**overrides)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'_'.join(str(p) for p in err['loc']).upper() or '?'}: {err['msg']}" for err in exc.errors()
            )
            raise SettingsError(f"{cls.__name__}: {problems}") from None

    @classmethod
    def load_or_exit(cls):
        """For a service's main(): a settings problem ends the process with one clear line, exit code 2."""
        try:
            return cls.from_env()
        except SettingsError as exc:
            print(f"configuration error: {exc}", file=sys.stderr)
            raise SystemExit(2) from None


class DatabaseSettings(_Base):
    async_database_url: SecretStr = Field(description="libpq URL of the Hasura database (Postgres/YugabyteDB YSQL)")
    db_pool_min_size: int = Field(1, ge=1)
    db_pool_max_size: int = Field(10, ge=1)
    db_connect_timeout_seconds: float = Field(5.0, gt=0)


class KafkaSettings(_Base):
    kafka_bootstrap_servers: str = Field(min_length=1)
    kafka_security_protocol: Literal["PLAINTEXT", "SASL_PLAINTEXT", "SASL_SSL", "SSL"] = "SASL_PLAINTEXT"
    kafka_sasl_mechanism: Literal["SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN"] = "SCRAM-SHA-256"
    kafka_username: str | None = None
    kafka_password: SecretStr | None = None
    async_requests_topic: str = REQUESTS_TOPIC
    async_responses_topic: str = RESPONSES_TOPIC
    async_dlq_topic: str = DLQ_TOPIC

    def client_config(self) -> dict[str, str]:
        """librdkafka settings shared by every producer and consumer."""
        config = {"bootstrap.servers": self.kafka_bootstrap_servers, "security.protocol": self.kafka_security_protocol}
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


class PublisherSettings(DatabaseSettings, KafkaSettings):
    async_action_secret: SecretStr = Field(min_length=16)
    publisher_host: str = "0.0.0.0"
    publisher_port: int = Field(8080, ge=1, le=65535)
    # how long the action waits for Kafka's ack before answering with the row still `pending`
    publish_wait_seconds: float = Field(2.0, gt=0)
    # producer gives up on a message after this; the outbox relay takes over
    publish_timeout_seconds: float = Field(10.0, gt=0)
    relay_interval_seconds: float = Field(1.0, gt=0)
    # a pending row younger than this is still in some publisher's hands: the relay leaves it alone
    relay_grace_seconds: float = Field(15.0, ge=0)
    relay_batch_size: int = Field(100, ge=1, le=10_000)
    max_payload_bytes: int = Field(256 * 1024, ge=1024)
    default_expires_in_seconds: int = Field(3600, ge=60)
    max_expires_in_seconds: int = Field(7 * 24 * 3600, ge=60)


class WriterSettings(DatabaseSettings, KafkaSettings):
    writer_group_id: str = "graphql-async-response-writer"
    # prefix of the transactional.id; the pod name makes it unique per replica
    writer_transactional_id_prefix: str = "graphql-async-response-writer"
    writer_instance_id: str = Field(default_factory=lambda: os.environ.get("HOSTNAME", "local"))
    writer_batch_size: int = Field(1000, ge=1, le=50_000)
    writer_batch_wait_seconds: float = Field(0.5, gt=0)
    writer_retry_max_seconds: float = Field(30.0, gt=0)
    health_port: int = Field(8081, ge=0, le=65535)


class CleanupSettings(DatabaseSettings):
    cleanup_batch_size: int = Field(1000, ge=1, le=100_000)
    cleanup_time_budget_seconds: float = Field(240.0, gt=0)


class BootstrapSettings(DatabaseSettings):
    hasura_endpoint: str = "http://hasura.graphql.svc.cluster.local:8080"
    hasura_admin_secret: SecretStr
    hasura_source: str = "default"
    action_handler_url: str = (
        "http://graphql-async-request-publisher.graphql.svc.cluster.local:8080/action/publish_async_request"
    )
    action_timeout_seconds: int = Field(30, ge=1, le=600)
    hasura_retry_seconds: float = Field(120.0, ge=0)
