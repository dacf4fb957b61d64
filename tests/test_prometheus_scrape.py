"""A real Prometheus server (Debian's 2.42, the rules of config/prometheus/rules.yaml loaded) scrapes the real
publisher and writer processes, on real PostgreSQL and Kafka, while a demo worker answers a steady flow of
requests. Then the writer stops making progress (its database role loses UPDATE), then stops altogether, then
Kafka stalls under the publisher: the queries behind the alerts move as an on-call person would need them to.

Scrapes and rule evaluation every second; every wait polls Prometheus with a deadline. The alerts' own
`for:` durations (minutes) are proven by promtool's unit tests; here their expressions are evaluated by the
real server on the real services' series, and the alerts show up as pending.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import httpx
import pytest
from psycopg import sql

from scripts.local_prometheus import PUBLISHER_JOB, WRITER_JOB, PrometheusServer, ScrapeTarget, wait_for_value
from scripts.servers import free_port, wait_for
from tests.conftest import ACTION_SECRET, REPO
from tests.support.services import action_body, call_action


def env_for(pg_url: str, kafka, topics, **extra: str) -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "ASYNC_", "WRITER_", "METRICS_"))} | {
        "ASYNC_SECRETS_DIR": "/nonexistent", "ASYNC_DATABASE_URL": pg_url,
        "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap, "KAFKA_USERNAME": "admin", "KAFKA_PASSWORD": "admin-secret",
        "ASYNC_REQUESTS_TOPIC": topics.requests, "ASYNC_RESPONSES_TOPIC": topics.responses,
        "ASYNC_DLQ_TOPIC": topics.dlq, **extra}


@contextlib.contextmanager
def process(module: str, env: dict, log: Path):
    with log.open("ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", module], cwd=REPO, env=env, stdout=out,
                                stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@contextlib.contextmanager
def steady_requests(url: str, interval: float = 0.1):
    """A client sending one request every `interval` until the block ends; yields the answers' status counts."""
    stop, answers = threading.Event(), {}

    def send() -> None:
        while not stop.wait(interval):
            body = action_body({"handler": "billing-worker", "operation": "invoice.create", "payload": {"n": 1},
                                "request_id": f"req-{uuid.uuid4().hex}"}, user_id="client-prom")
            try:
                status = call_action(url, ACTION_SECRET, body).json().get("status", "error")
            except (httpx.HTTPError, ValueError):
                status = "error"
            answers[status] = answers.get(status, 0) + 1

    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    try:
        yield answers
    finally:
        stop.set()
        thread.join(30)


@pytest.fixture
def writer_role(pg, db):
    """The writer's own database role (as the stack gives each service one), so it can lose its UPDATE right."""
    name = f"writer_{uuid.uuid4().hex[:8]}"
    db.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD 'writer-local'").format(sql.Identifier(name)))
    db.execute(sql.SQL("GRANT USAGE ON SCHEMA graphql TO {}").format(sql.Identifier(name)))
    db.execute(sql.SQL("GRANT SELECT, UPDATE ON graphql.client_async_messages TO {}").format(sql.Identifier(name)))
    yield name, pg.url.replace("graphql:graphql-local@", f"{name}:writer-local@")
    db.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(name)))
    db.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


def total(result: list[dict]) -> float:
    return sum(r["value"] for r in result)


def test_prometheus_sees_lag_grow_and_the_backlog_age(pg, db, kafka, topics, writer_role, tmp_path):
    role, writer_url = writer_role
    publisher_port, metrics_port, writer_port = free_port(), free_port(), free_port()
    publisher_env = env_for(pg.url, kafka, topics, ASYNC_ACTION_SECRET=ACTION_SECRET, PUBLISHER_HOST="127.0.0.1",
                            PUBLISHER_PORT=str(publisher_port), METRICS_PORT=str(metrics_port),
                            OUTBOX_SCAN_INTERVAL_SECONDS="0.5", PUBLISH_WAIT_SECONDS="1",
                            PUBLISH_TIMEOUT_SECONDS="2", RELAY_GRACE_SECONDS="3")
    writer_env = env_for(writer_url, kafka, topics, HEALTH_PORT=str(writer_port), WRITER_INSTANCE_ID="prom-0",
                         WRITER_GROUP_ID=f"writer-{uuid.uuid4().hex[:8]}", WRITER_LAG_INTERVAL_SECONDS="0.5",
                         WRITER_STALL_SECONDS="3", WRITER_BATCH_WAIT_SECONDS="0.2", WRITER_RETRY_MAX_SECONDS="1")
    prometheus = PrometheusServer(tmp_path / "prometheus", [ScrapeTarget(PUBLISHER_JOB, f"127.0.0.1:{metrics_port}"),
                                                            ScrapeTarget(WRITER_JOB, f"127.0.0.1:{writer_port}")])
    url = f"http://127.0.0.1:{publisher_port}"
    with process("app.publisher", publisher_env, tmp_path / "publisher.log") as publisher, \
            process("app.writer", writer_env, tmp_path / "writer.log") as writer, \
            process("scripts.demo_worker", env_for(pg.url, kafka, topics), tmp_path / "worker.log"):
        wait_for(lambda: httpx.get(f"{url}/readyz", timeout=1).status_code == 200, 60, "publisher", publisher,
                 tmp_path / "publisher.log")
        wait_for(lambda: httpx.get(f"http://127.0.0.1:{writer_port}/healthz", timeout=1).status_code == 200, 60,
                 "writer", writer, tmp_path / "writer.log")
        prometheus.start()
        try:
            with steady_requests(url) as answers:
                # 1. the flow works: both targets up, responses stored, every answer accepted
                wait_for_value(prometheus, 'sum(up{job=~"graphql-async-.*"})', lambda r: total(r) == 2, 60,
                               "both targets up")
                wait_for_value(prometheus, 'sum(graphql_async_writer_responses_total{fate="applied"})',
                               lambda r: total(r) >= 10, 90, "responses stored")
                wait_for_value(prometheus, 'sum(rate(graphql_async_publisher_requests_total{outcome="accepted"}[10s]))',
                               lambda r: total(r) > 0, 60, "accepted requests")

                # 2. the writer stops making progress: the lag grows, the writer turns unhealthy, alerts pending
                db.execute(sql.SQL("REVOKE UPDATE ON graphql.client_async_messages FROM {}")
                           .format(sql.Identifier(role)))
                first = total(wait_for_value(prometheus, "graphql_async:writer_consumer_lag_messages:sum",
                                             lambda r: total(r) >= 5, 90, "lag builds up"))
                wait_for_value(prometheus, "graphql_async:writer_consumer_lag_messages:sum",
                               lambda r: total(r) >= first + 10, 90, "lag keeps growing")
                wait_for_value(prometheus, "deriv(graphql_async:writer_consumer_lag_messages:sum[15s]) > 0",
                               lambda r: len(r) == 1, 60, "the lag's derivative, as AsyncWriterLagGrowing uses it")
                wait_for_value(prometheus, "graphql_async_writer_healthy == 0", lambda r: len(r) == 1, 60,
                               "AsyncWriterUnhealthy's expression")
                rewinds = 'sum(graphql_async_writer_batch_rewinds_total{cause="database_unavailable"})'
                wait_for_value(prometheus, rewinds, lambda r: total(r) >= 1, 60, "rewinds for want of the database")
                wait_for(lambda: prometheus.alerts().get("AsyncWriterUnhealthy") == "pending", 60,
                         "AsyncWriterUnhealthy pending (for: 5m)")

                # 3. the writer stops altogether: its target goes down, AsyncWriterDown's expression holds
                writer.send_signal(signal.SIGTERM)
                writer.wait(30)
                wait_for_value(prometheus, f'absent(up{{job="{WRITER_JOB}"}} == 1)', lambda r: total(r) == 1, 60,
                               "AsyncWriterDown's expression")
                wait_for(lambda: prometheus.alerts().get("AsyncWriterDown") == "pending", 60,
                         "AsyncWriterDown pending (for: 5m)")

                # 4. Kafka stalls under the publisher: requests are accepted as `pending`, the outbox backlog ages
                os.kill(kafka.pid, signal.SIGSTOP)
                try:
                    wait_for_value(prometheus, "graphql_async:outbox_oldest_pending_age_seconds:max",
                                   lambda r: total(r) >= 8, 90, "the oldest unpublished row ages")
                    wait_for_value(prometheus, "max(graphql_async_outbox_backlog_rows)", lambda r: total(r) >= 5, 60,
                                   "the backlog grows")
                    wait_for_value(prometheus, 'sum(graphql_async_publisher_kafka_delivery_failures_total'
                                               '{path="action", error="_MSG_TIMED_OUT"})',
                                   lambda r: total(r) >= 1, 60, "the action's publishes time out")
                finally:
                    os.kill(kafka.pid, signal.SIGCONT)
                # the relay publishes the backlog once Kafka is back: the age falls to 0
                wait_for_value(prometheus, "graphql_async:outbox_oldest_pending_age_seconds:max",
                               lambda r: total(r) < 3, 120, "the backlog drains")
            assert answers.get("pending", 0) >= 1 and answers.get("published", 0) >= 10, answers
            assert "error" not in answers, answers
        finally:
            prometheus.stop()
