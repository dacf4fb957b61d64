"""The whole flow on real PostgreSQL and Kafka: action call -> row -> request on Kafka -> worker -> writer -> row."""

from __future__ import annotations

import json
import uuid

from confluent_kafka import Producer

from tests.conftest import ACTION_SECRET
from tests.support.kafka_admin import read_all, wait_until
from tests.support.services import action_body, call_action, running_publisher, running_writer


def fetch_row(db, request_id: str) -> dict | None:
    cur = db.execute("SELECT * FROM graphql.client_async_messages WHERE request_id = %s", (request_id,))
    row = cur.fetchone()
    return dict(zip([c.name for c in cur.description], row, strict=False)) if row else None


def test_happy_path_end_to_end(kafka, db, publisher_settings, writer_settings, topics):
    request_id = f"req-{uuid.uuid4().hex}"
    correlation = {"CF-Connecting-IP": "203.0.113.7", "CF-Ray": "8a1b2c3d4e5f-AMS", "X-Request-Id": "corr-1"}
    with running_publisher(publisher_settings) as (url, _app):
        response = call_action(url, ACTION_SECRET, action_body({
            "request_id": request_id, "handler": "billing-worker", "operation": "invoice.create",
            "payload": {"invoice_id": "inv_123", "amount": 42.5}, "metadata": {"tenant": "acme"},
            "priority": "high", "expires_in_seconds": 3600,
        }, role="user", user_id="user-123"), headers=correlation)
    assert response.status_code == 200, response.text
    output = response.json()
    assert output["request_id"] == request_id and output["client_id"] == "user-123"
    assert output["status"] == "published" and output["duplicate"] is False

    row = fetch_row(db, request_id)
    assert row["status"] == "published" and row["published_at"] is not None
    assert row["correlation"] == {"cf-connecting-ip": "203.0.113.7", "cf-ray": "8a1b2c3d4e5f-AMS",
                                  "x-request-id": "corr-1"}

    # the request envelope on Kafka, exactly the documented shape, keyed by request_id
    # other tests' pending rows in the shared database may be relayed to this topic too: pick ours by key
    [msg] = [m for m in read_all(kafka.client_config(), topics.requests, expect=1)
             if m.key() == request_id.encode()]
    assert msg.key() == request_id.encode()
    envelope = json.loads(msg.value())
    assert set(envelope) == {"spec_version", "request_id", "client_id", "route", "payload", "options",
                             "metadata", "submitted_at"}
    assert envelope["spec_version"] == "async.request.v1"
    assert envelope["route"] == {"handler": "billing-worker", "operation": "invoice.create"}
    assert envelope["payload"] == {"invoice_id": "inv_123", "amount": 42.5}
    assert envelope["options"]["priority"] == "high"
    assert envelope["options"]["reply_topic"] == topics.responses
    assert envelope["options"]["expires_at"].endswith("Z") and envelope["submitted_at"].endswith("Z")
    assert envelope["metadata"] == {"tenant": "acme"}
    headers = dict(msg.headers())
    assert headers["cf-ray"] == b"8a1b2c3d4e5f-AMS" and headers["x-request-id"] == b"corr-1"

    # a worker answers on the reply topic
    worker = Producer(kafka.client_config())
    worker.produce(envelope["options"]["reply_topic"], key=request_id, value=json.dumps({
        "spec_version": "async.response.v1", "request_id": request_id, "status": "completed",
        "result": {"invoice_number": "INV-0001"}, "completed_at": "2026-03-07T22:51:00Z"}))
    worker.flush(10)

    with running_writer(writer_settings) as (writer, failure):
        done = wait_until(lambda: (r := fetch_row(db, request_id)) and r["status"] == "completed" and r,
                          what="row completed")
        assert not failure
    assert done["response"] == {"invoice_number": "INV-0001"}
    assert done["error"] is None
    assert done["completed_at"].isoformat() == "2026-03-07T22:51:00+00:00"
