"""Prometheus metrics of the real services on real PostgreSQL and Kafka, read over HTTP from /metrics:
each count moves by what the test did; the backlog, lag and health gauges show what the database and the
broker hold. The cleanup's figures go through a real Pushgateway."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from psycopg.types.json import Jsonb
from pydantic import SecretStr

from app.writer import LagMonitor, serve_health
from scripts.local_prometheus import Pushgateway
from scripts.servers import REPO, free_port
from tests.conftest import ACTION_SECRET
from tests.support.kafka_admin import wait_until
from tests.support.services import action_body, call_action, running_publisher, running_writer
from tests.test_writer import insert_rows, produce, response
from tests.test_writer_faults import _set_topic_config

VALID = {"handler": "billing-worker", "operation": "invoice.create", "payload": {"n": 1}}


def scrape(url: str) -> dict[tuple[str, frozenset], float]:
    """(sample name, its labels) -> value, from the text a Prometheus server would scrape."""
    answer = httpx.get(url, timeout=5)
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/plain")
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(answer.text) for s in family.samples}


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def delta(before: dict, after: dict, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def no_ids_in_labels(samples: dict, *ids: str) -> None:
    for name, labels in samples:
        for _, label_value in labels:
            assert not any(i in label_value for i in ids), (name, labels)


# ------------------------------------------------------------------ publisher


@pytest.fixture
def metered_publisher(publisher_settings):
    port = free_port()
    settings = publisher_settings.model_copy(update={"metrics_port": port, "outbox_scan_interval_seconds": 0.2,
                                                     "publisher_host": "127.0.0.1"})
    with running_publisher(settings) as (url, app):
        yield url, f"http://127.0.0.1:{port}/metrics", app


def test_publisher_counts_answers_by_outcome_and_code(metered_publisher):
    url, metrics_url, _ = metered_publisher
    before = scrape(metrics_url)
    request_id = f"req-{uuid.uuid4().hex}"
    body = action_body({**VALID, "request_id": request_id}, user_id="client-metrics")
    assert call_action(url, ACTION_SECRET, body).json()["duplicate"] is False
    assert call_action(url, ACTION_SECRET, body).json()["duplicate"] is True
    assert call_action(url, None, body).status_code == 401
    assert call_action(url, "x" * 30, body).status_code == 401
    assert call_action(url, ACTION_SECRET, action_body({**VALID, "priority": "urgent"})).status_code == 400
    after = scrape(metrics_url)

    requests = "graphql_async_publisher_requests_total"
    assert delta(before, after, requests, outcome="accepted", code="") == 1
    assert delta(before, after, requests, outcome="replay", code="") == 1
    assert delta(before, after, requests, outcome="refused", code="unauthorized") == 2
    assert delta(before, after, requests, outcome="refused", code="invalid-input") == 1
    assert delta(before, after, requests, outcome="unavailable", code="") == 0
    latency = "graphql_async_publisher_request_duration_seconds_count"
    assert delta(before, after, latency, outcome="accepted") == 1
    assert delta(before, after, latency, outcome="refused") == 3
    # the accepted call waited for Kafka's ack: it took longer than nothing, and less than the publish wait
    assert 0 < delta(before, after, "graphql_async_publisher_request_duration_seconds_sum", outcome="accepted") < 2
    no_ids_in_labels(after, request_id, "client-metrics")


def test_publisher_counts_unavailable_answers_when_the_database_is_away(publisher_settings):
    port = free_port()
    dead_db = f"postgresql://nobody@127.0.0.1:{free_port()}/none"
    settings = publisher_settings.model_copy(update={
        "metrics_port": port, "publisher_host": "127.0.0.1", "db_connect_timeout_seconds": 0.5,
        "async_database_url": SecretStr(dead_db)})
    with running_publisher(settings) as (url, _app):
        answer = call_action(url, ACTION_SECRET, action_body(VALID))
        samples = scrape(f"http://127.0.0.1:{port}/metrics")
    assert answer.status_code == 503 and answer.json()["extensions"]["code"] == "unavailable"
    assert value(samples, "graphql_async_publisher_requests_total", outcome="unavailable", code="") == 1
    assert value(samples, "graphql_async_publisher_requests_total", outcome="accepted", code="") == 0


def insert_pending(db, request_id: str, age_seconds: int, payload: dict | None = None) -> None:
    db.execute("INSERT INTO graphql.client_async_messages (request_id, client_id, handler, operation, payload, "
               "created_at, expires_at) VALUES (%s, 'c', 'h', 'op', %s, now() - make_interval(secs => %s), "
               "now() + interval '1 hour')", (request_id, Jsonb(payload or {}), age_seconds))


def test_outbox_backlog_and_the_age_of_its_oldest_row(db, publisher_settings):
    """With the relay holding back (grace of an hour), a row pending for 10 minutes is backlog: the gauges show the
    same count the database does, and an age of at least those 10 minutes."""
    port = free_port()
    settings = publisher_settings.model_copy(update={"metrics_port": port, "publisher_host": "127.0.0.1",
                                                     "outbox_scan_interval_seconds": 0.2,
                                                     "relay_grace_seconds": 3600})
    request_id = f"req-{uuid.uuid4().hex}"
    insert_pending(db, request_id, age_seconds=600)
    try:
        with running_publisher(settings):
            metrics_url = f"http://127.0.0.1:{port}/metrics"
            started = time.time()
            wait_until(lambda: value(scrape(metrics_url), "graphql_async_outbox_last_scan_timestamp_seconds")
                       >= started, timeout=15, what="an outbox scan")
            samples = scrape(metrics_url)
            expected = db.execute("SELECT count(*) FROM graphql.client_async_messages WHERE status = 'pending' "
                                  "AND expires_at > now()").fetchone()[0]
            assert expected >= 1
            assert value(samples, "graphql_async_outbox_backlog_rows") == expected
            assert value(samples, "graphql_async_outbox_oldest_pending_age_seconds") >= 600
    finally:
        db.execute("DELETE FROM graphql.client_async_messages WHERE request_id = %s", (request_id,))


def test_relay_publishes_and_parks_are_counted(db, metered_publisher):
    """A row the action could not hand over is published by the relay; one Kafka refuses for good is parked."""
    _, metrics_url, _ = metered_publisher
    before = scrape(metrics_url)
    ok, too_big = f"req-{uuid.uuid4().hex}", f"req-{uuid.uuid4().hex}"
    insert_pending(db, ok, age_seconds=60)
    insert_pending(db, too_big, age_seconds=60, payload={"x": "a" * 1_100_000})  # over the producer's 1,000,000

    def status(request_id: str) -> str:
        return db.execute("SELECT status FROM graphql.client_async_messages WHERE request_id = %s",
                          (request_id,)).fetchone()[0]

    wait_until(lambda: status(ok) == "published" and status(too_big) == "failed", timeout=30, what="relay pass")
    after = scrape(metrics_url)
    assert delta(before, after, "graphql_async_publisher_relay_published_total") >= 1
    assert delta(before, after, "graphql_async_publisher_relay_parked_total") == 1
    assert delta(before, after, "graphql_async_publisher_kafka_delivery_failures_total", path="relay",
                 error="MSG_SIZE_TOO_LARGE") == 1


# ------------------------------------------------------------------ writer


def test_writer_counts_fates_batches_and_reports_lag_and_health(kafka, db, writer_settings, topics):
    applied, duplicate = f"req-{uuid.uuid4().hex}", f"req-{uuid.uuid4().hex}"
    insert_rows(db, [applied, duplicate])
    produce(kafka, topics.responses, [
        (applied, response(applied)), (duplicate, response(duplicate)), (duplicate, response(duplicate, "failed")),
        ("junk", b"not json"), (nobody := f"req-{uuid.uuid4().hex}", response(nobody)),
    ])
    # before any writer ran, the group has committed nothing: the lag is every message on the topic
    monitor = LagMonitor(kafka.client_config(), writer_settings.writer_group_id, topics.responses, 1.0, None)
    try:
        # the group's coordinator may need a moment after the topic's creation (NOT_COORDINATOR): poll
        assert wait_until(lambda: sum(monitor.sample().values()), what="lag measured") == 5
    finally:
        monitor.close()

    settings = writer_settings.model_copy(update={"writer_lag_interval_seconds": 0.2})
    with running_writer(settings) as (writer, failure):
        port = free_port()
        server = serve_health(writer, port)
        try:
            metrics_url = f"http://127.0.0.1:{port}/metrics"
            fates = "graphql_async_writer_responses_total"
            wait_until(lambda: sum(v for (n, _), v in scrape(metrics_url).items() if n == fates) == 5, timeout=30,
                       what="five responses counted")
            wait_until(lambda: any(n == "graphql_async_writer_consumer_lag_messages" for n, _ in scrape(metrics_url))
                       and sum(v for (n, _), v in scrape(metrics_url).items()
                               if n == "graphql_async_writer_consumer_lag_messages") == 0,
                       timeout=30, what="lag back to 0 once committed")
            samples = scrape(metrics_url)
        finally:
            server.shutdown()
            server.server_close()
        assert not failure
    assert value(samples, fates, fate="applied", reason="") == 2
    assert value(samples, fates, fate="duplicate", reason="") == 1
    assert value(samples, fates, fate="dead_lettered", reason="invalid_json") == 1
    assert value(samples, fates, fate="dead_lettered", reason="unknown_request") == 1
    assert value(samples, "graphql_async_writer_batch_messages_sum") == 5
    assert value(samples, "graphql_async_writer_batch_duration_seconds_count") >= 1
    assert value(samples, "graphql_async_writer_healthy") == 1
    assert value(samples, "graphql_async_writer_last_commit_timestamp_seconds") > time.time() - 60
    lag = "graphql_async_writer_consumer_lag_messages"
    partitions = {dict(labels)["partition"] for n, labels in samples if n == lag}
    assert partitions == {"0", "1", "2"}  # every partition of the topic, the group's committed offsets
    no_ids_in_labels(samples, applied, duplicate)


def test_writer_without_its_database_rewinds_goes_unhealthy_and_its_lag_stays(kafka, db, writer_settings, topics):
    dead_db = f"postgresql://nobody@127.0.0.1:{free_port()}/none"
    settings = writer_settings.model_copy(update={
        "writer_lag_interval_seconds": 0.2, "writer_stall_seconds": 1.0, "db_connect_timeout_seconds": 0.5,
        "async_database_url": SecretStr(dead_db)})
    produce(kafka, topics.responses, [(r, response(r)) for r in (f"req-{uuid.uuid4().hex}" for _ in range(3))])
    with running_writer(settings) as (writer, _failure):
        port = free_port()
        server = serve_health(writer, port)
        try:
            metrics_url = f"http://127.0.0.1:{port}/metrics"
            rewinds = "graphql_async_writer_batch_rewinds_total"
            wait_until(lambda: value(scrape(metrics_url), rewinds, cause="database_unavailable") >= 2, timeout=30,
                       what="batches rewound for want of the database")
            wait_until(lambda: value(scrape(metrics_url), "graphql_async_writer_healthy") == 0, timeout=30,
                       what="the writer turns unhealthy")
            wait_until(lambda: sum(v for (n, _), v in scrape(metrics_url).items()
                                   if n == "graphql_async_writer_consumer_lag_messages") == 3,
                       timeout=30, what="the lag of three waiting messages")
            samples = scrape(metrics_url)
            assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 503
        finally:
            server.shutdown()
            server.server_close()
    assert value(samples, rewinds, cause="database_unavailable") >= 2
    assert sum(v for (n, _), v in samples.items() if n == "graphql_async_writer_responses_total") == 0


def test_writer_counts_aborted_transactions(kafka, db, writer_settings, topics):
    """A DLQ copy the broker refuses (the topic takes 20 KB, the writer allows more) fails each transaction:
    each is aborted and the batch rewound, and both are counted."""
    _set_topic_config(kafka, topics.dlq, "max.message.bytes", "20000")
    produce(kafka, topics.responses, [("poison", b'{"junk": "' + b"q" * 50_000 + b'"}')])
    settings = writer_settings.model_copy(update={"writer_retry_max_seconds": 0.5})
    with running_writer(settings) as (writer, _failure):
        port = free_port()
        server = serve_health(writer, port)
        try:
            metrics_url = f"http://127.0.0.1:{port}/metrics"
            wait_until(lambda: value(scrape(metrics_url), "graphql_async_writer_transaction_aborts_total") >= 2,
                       timeout=60, what="aborted transactions counted")
            samples = scrape(metrics_url)
        finally:
            server.shutdown()
            server.server_close()
    assert value(samples, "graphql_async_writer_batch_rewinds_total", cause="kafka_transaction") >= 2
    # nothing committed, so nothing is counted as dead-lettered: the counts follow commits, not attempts
    assert sum(v for (n, _), v in samples.items() if n == "graphql_async_writer_responses_total") == 0


# ------------------------------------------------------------------ cleanup


@pytest.fixture
def pushgateway(tmp_path):
    gateway = Pushgateway(tmp_path / "pushgateway")
    gateway.start()
    yield gateway
    gateway.stop()


def run_cleanup_job(database_url: str, pushgateway_url: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ASYNC_", "CLEANUP_"))}
    env |= {"ASYNC_SECRETS_DIR": "/nonexistent", "ASYNC_DATABASE_URL": database_url, "CLEANUP_BATCH_SIZE": "100",
            "CLEANUP_TIME_BUDGET_SECONDS": "2", "CLEANUP_PUSHGATEWAY_URL": pushgateway_url}
    return subprocess.run([sys.executable, "-m", "app.cleanup"], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=60)


def test_cleanup_pushes_its_run_and_a_failed_run_keeps_the_last_success(pg, db, pushgateway):
    db.execute("DELETE FROM graphql.client_async_messages WHERE expires_at < now()")
    db.execute("INSERT INTO graphql.client_async_messages (request_id, client_id, handler, operation, expires_at) "
               "SELECT %s || g, 'c', 'h', 'op', now() - interval '1 minute' FROM generate_series(1, 250) g",
               (f"exp-{uuid.uuid4().hex[:8]}-",))
    started = time.time()
    done = run_cleanup_job(pg.url, pushgateway.url)
    assert done.returncode == 0, done.stdout + done.stderr
    samples = scrape(f"{pushgateway.url}/metrics")
    job = {"job": "graphql-async-cleanup", "instance": ""}
    assert value(samples, "graphql_async_cleanup_last_run_deleted_rows", **job) == 250
    assert value(samples, "graphql_async_cleanup_last_run_batches", **job) == 3  # 100 + 100 + 50
    assert value(samples, "graphql_async_cleanup_last_run_incomplete", **job) == 0
    assert value(samples, "graphql_async_cleanup_last_run_duration_seconds", **job) > 0
    success = value(samples, "graphql_async_cleanup_last_success_timestamp_seconds", **job)
    assert started - 1 <= success <= time.time() + 1

    failed = run_cleanup_job(f"postgresql://nobody@127.0.0.1:{free_port()}/none", pushgateway.url)
    assert failed.returncode == 0  # the database away is waited out to the time budget, not a crash
    after = scrape(f"{pushgateway.url}/metrics")
    assert value(after, "graphql_async_cleanup_last_failure_timestamp_seconds", **job) >= success
    assert value(after, "graphql_async_cleanup_last_success_timestamp_seconds", **job) == success
    assert "admin-secret" not in done.stdout + failed.stdout
