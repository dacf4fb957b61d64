"""Session-wide real servers: PostgreSQL and a KRaft Kafka broker with SASL/SCRAM and ACLs."""

from __future__ import annotations

import os
import sys
import tempfile
import uuid
from pathlib import Path

import psycopg
import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
# pytest prunes all but the newest three numbered temp dirs under one root: a second checkout's test run
# would delete this run's live servers' data, so each checkout gets its own root
os.environ.setdefault("PYTEST_DEBUG_TEMPROOT", str(Path(tempfile.gettempdir()) / f"pytest-{REPO.name}"))
TEST_TEMP_ROOT = Path(os.environ["PYTEST_DEBUG_TEMPROOT"])
TEST_TEMP_ROOT.mkdir(exist_ok=True)

from app.db import apply_schema  # noqa: E402
from app.settings import PublisherSettings, WriterSettings  # noqa: E402
from components.kafka_access import AsyncTopics  # noqa: E402
from scripts.servers import KafkaBroker, PostgresServer  # noqa: E402

ACTION_SECRET = "test-action-secret-0123456789"


@pytest.fixture(scope="session")
def pg(tmp_path_factory):
    server = PostgresServer(tmp_path_factory.mktemp("pg") / "data", owned_root=TEST_TEMP_ROOT)
    server.start()
    with psycopg.connect(server.url) as conn:
        apply_schema(conn)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def kafka(tmp_path_factory):
    from tests.support.kafka_admin import warm_up

    broker = KafkaBroker(tmp_path_factory.mktemp("kafka"))
    broker.start()
    warm_up(broker.client_config())
    yield broker
    broker.stop()


@pytest.fixture
def db(pg):
    with psycopg.connect(pg.url, autocommit=True) as conn:
        yield conn


@pytest.fixture
def topics(kafka) -> AsyncTopics:
    """Fresh topics per test, so no test reads another's messages."""
    from confluent_kafka.admin import AdminClient

    from tests.support.kafka_admin import create_topics

    suffix = uuid.uuid4().hex[:8]
    names = AsyncTopics(f"t{suffix}.requests", f"t{suffix}.responses", f"t{suffix}.dlq")
    create_topics(AdminClient(kafka.client_config()), {names.requests: 3, names.responses: 3, names.dlq: 1})
    return names


def _kafka_env(kafka, topics: AsyncTopics) -> dict:
    return {
        "kafka_bootstrap_servers": kafka.bootstrap, "kafka_security_protocol": "SASL_PLAINTEXT",
        "kafka_sasl_mechanism": "SCRAM-SHA-256", "kafka_username": "admin", "kafka_password": "admin-secret",
        "async_requests_topic": topics.requests, "async_responses_topic": topics.responses,
        "async_dlq_topic": topics.dlq,
    }


@pytest.fixture
def publisher_settings(pg, kafka, topics) -> PublisherSettings:
    return PublisherSettings(async_database_url=pg.url, async_action_secret=ACTION_SECRET,
                             relay_grace_seconds=3, relay_interval_seconds=0.2, publish_timeout_seconds=2,
                             publish_wait_seconds=2, metrics_port=0, **_kafka_env(kafka, topics))


@pytest.fixture
def writer_settings(pg, kafka, topics) -> WriterSettings:
    suffix = uuid.uuid4().hex[:8]
    return WriterSettings(async_database_url=pg.url, writer_group_id=f"graphql-async-response-writer-{suffix}",
                          writer_instance_id=suffix, writer_batch_wait_seconds=0.2, writer_retry_max_seconds=2,
                          health_port=0, **_kafka_env(kafka, topics))


@pytest.fixture
def reachable_tmp(tmp_path):
    """tmp_path opened (o+x) up to this session's temp root, all folders the tests made: a local run started on
    it runs PostgreSQL as the `postgres` OS user, and never opens up folders it did not create itself."""
    for folder in [tmp_path, *tmp_path.parents]:
        if folder == TEST_TEMP_ROOT:
            break
        folder.chmod(folder.stat().st_mode | 0o001)
    return tmp_path
