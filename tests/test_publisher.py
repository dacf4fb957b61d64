"""The action handler on real PostgreSQL and Kafka: refusals, role rules, idempotency, broker outage."""

from __future__ import annotations

import json
import uuid

import pytest

from tests.conftest import ACTION_SECRET
from tests.support.kafka_admin import read_all, wait_until
from tests.support.services import action_body, call_action, running_publisher

VALID = {"handler": "billing-worker", "operation": "invoice.create", "payload": {"n": 1}}


def rid() -> str:
    return f"req-{uuid.uuid4().hex}"


def row_count(db, request_id: str) -> int:
    return db.execute("SELECT count(*) FROM graphql.client_async_messages WHERE request_id = %s",
                      (request_id,)).fetchone()[0]


def requests_for(kafka, topic: str, request_id: str, expect: int = 1, timeout: float = 5.0) -> list:
    return [m for m in read_all(kafka.client_config(), topic, expect=expect, timeout=timeout)
            if m.key() == request_id.encode()]


@pytest.fixture
def publisher(publisher_settings):
    with running_publisher(publisher_settings) as (url, app):
        yield url, app


REFUSALS = [
    # (description, secret, body, status, code)
    ("no secret", None, action_body(VALID), 401, "unauthorized"),
    ("wrong secret", "x" * 30, action_body(VALID), 401, "unauthorized"),
    ("other action", ACTION_SECRET, {**action_body(VALID), "action": {"name": "drop_tables"}}, 400,
     "unknown-action"),
    ("bad handler name", ACTION_SECRET, action_body({**VALID, "handler": "billing worker; rm"}), 400,
     "invalid-input"),
    ("empty operation", ACTION_SECRET, action_body({**VALID, "operation": ""}), 400, "invalid-input"),
    ("unknown field", ACTION_SECRET, action_body({**VALID, "sneaky": 1}), 400, "invalid-input"),
    ("bad priority", ACTION_SECRET, action_body({**VALID, "priority": "urgent"}), 400, "invalid-input"),
    ("expiry too short", ACTION_SECRET, action_body({**VALID, "expires_in_seconds": 5}), 400, "invalid-input"),
    ("expiry too long", ACTION_SECRET, action_body({**VALID, "expires_in_seconds": 10**9}), 400, "invalid-input"),
    ("expiry not int", ACTION_SECRET, action_body({**VALID, "expires_in_seconds": "3600"}), 400, "invalid-input"),
    ("metadata not object", ACTION_SECRET, action_body({**VALID, "metadata": ["a"]}), 400, "invalid-input"),
    ("payload too large", ACTION_SECRET, action_body({**VALID, "payload": {"x": "a" * 300_000}}), 413,
     "payload-too-large"),
    ("NUL in payload", ACTION_SECRET, action_body({**VALID, "payload": {"x": "a\x00b"}}), 400, "invalid-input"),
    ("user sets client_id", ACTION_SECRET, action_body({**VALID, "client_id": "someone-else"}), 403,
     "client-id-not-allowed"),
    ("user without user id", ACTION_SECRET, action_body(VALID, user_id=None), 403, "missing-user-id"),
    ("anonymous role", ACTION_SECRET, action_body(VALID, role="anonymous"), 403, "role-not-allowed"),
    ("service without client", ACTION_SECRET, action_body(VALID, role="service", user_id=None), 400,
     "invalid-input"),
    ("input not object", ACTION_SECRET, {**action_body(VALID), "input": {"input": "text"}}, 400, "invalid-input"),
]


@pytest.mark.parametrize(("why", "secret", "body", "status", "code"), REFUSALS, ids=[r[0] for r in REFUSALS])
def test_refusals_are_hasura_action_errors_and_store_nothing(publisher, db, kafka, publisher_settings,
                                                             why, secret, body, status, code):
    url, _ = publisher
    request_id = rid()
    body["input"]["input"] = {**body["input"]["input"], "request_id": request_id} \
        if isinstance(body["input"].get("input"), dict) else body["input"]["input"]
    response = call_action(url, secret, body)
    assert response.status_code == status, response.text
    answer = response.json()
    assert answer["extensions"]["code"] == code and answer["message"]
    assert row_count(db, request_id) == 0


def test_body_that_is_not_json_is_refused(publisher):
    import httpx

    url, _ = publisher
    response = httpx.post(f"{url}/action/publish_async_request", content=b"{not json",
                          headers={"X-Async-Action-Secret": ACTION_SECRET})
    assert response.status_code == 400 and response.json()["extensions"]["code"] == "invalid-body"


def test_service_sets_client_id_and_defaults_apply(publisher, db):
    url, _ = publisher
    request_id = rid()
    response = call_action(url, ACTION_SECRET, action_body({**VALID, "request_id": request_id,
                                                            "client_id": "tenant-42"}, role="service",
                                                           user_id=None))
    assert response.status_code == 200, response.text
    row = db.execute("SELECT client_id, priority, metadata, expires_at - created_at FROM "
                     "graphql.client_async_messages WHERE request_id = %s", (request_id,)).fetchone()
    assert row[0] == "tenant-42" and row[1] == "normal" and row[2] == {}
    assert row[3].total_seconds() == 3600


def test_generated_request_id_when_none_given(publisher, db):
    url, _ = publisher
    response = call_action(url, ACTION_SECRET, action_body(VALID, user_id="user-gen"))
    assert response.status_code == 200
    generated = response.json()["request_id"]
    assert uuid.UUID(generated) and row_count(db, generated) == 1


def test_replay_returns_stored_record_and_publishes_once(publisher, db, kafka, topics):
    url, _ = publisher
    request_id = rid()
    first = call_action(url, ACTION_SECRET, action_body({**VALID, "request_id": request_id}, user_id="user-7"))
    again = call_action(url, ACTION_SECRET, action_body({**VALID, "request_id": request_id,
                                                         "payload": {"changed": True}}, user_id="user-7"))
    assert first.status_code == again.status_code == 200
    assert first.json()["duplicate"] is False and again.json()["duplicate"] is True
    assert again.json()["created_at"] == first.json()["created_at"]
    assert row_count(db, request_id) == 1
    published = requests_for(kafka, topics.requests, request_id, expect=1)
    assert len(published) == 1
    assert json.loads(published[0].value())["payload"] == {"n": 1}


def test_request_id_of_another_client_is_refused(publisher, db):
    url, _ = publisher
    request_id = rid()
    assert call_action(url, ACTION_SECRET, action_body({**VALID, "request_id": request_id},
                                                       user_id="alice")).status_code == 200
    stolen = call_action(url, ACTION_SECRET, action_body({**VALID, "request_id": request_id}, user_id="mallory"))
    assert stolen.status_code == 409 and stolen.json()["extensions"]["code"] == "request-id-conflict"
    owner = db.execute("SELECT client_id FROM graphql.client_async_messages WHERE request_id = %s",
                       (request_id,)).fetchone()[0]
    assert owner == "alice"


def test_broker_outage_loses_nothing_and_relay_publishes_once(kafka, db, publisher_settings, topics):
    """Kafka is down when the action is called: the row stays pending, the relay publishes it after Kafka returns."""
    request_ids = [rid() for _ in range(3)]
    with running_publisher(publisher_settings) as (url, _app):
        kafka.stop()
        try:
            for request_id in request_ids:
                response = call_action(url, ACTION_SECRET, action_body({**VALID, "request_id": request_id}))
                assert response.status_code == 200, response.text
                assert response.json()["status"] == "pending"
            statuses = {r[0] for r in db.execute(
                "SELECT status FROM graphql.client_async_messages WHERE request_id = ANY(%s)", (request_ids,))}
            assert statuses == {"pending"}
        finally:
            kafka.start()
        wait_until(lambda: db.execute(
            "SELECT count(*) FROM graphql.client_async_messages WHERE request_id = ANY(%s) AND status = 'published'",
            (request_ids,)).fetchone()[0] == 3, timeout=60, what="relay publishes after the outage")
    published = [m for m in read_all(kafka.client_config(), topics.requests, expect=3, timeout=10)
                 if m.key().decode() in request_ids]
    assert sorted(m.key().decode() for m in published) == sorted(request_ids)


def test_database_outage_answers_unavailable_then_recovers(pg, db, publisher_settings):
    with running_publisher(publisher_settings) as (url, _app):
        pg.stop()
        try:
            down = call_action(url, ACTION_SECRET, action_body({**VALID, "request_id": rid()}))
            assert down.status_code == 503 and down.json()["extensions"]["code"] == "unavailable"
        finally:
            pg.start()
        request_id = rid()
        up = wait_until(lambda: (r := call_action(url, ACTION_SECRET, action_body(
            {**VALID, "request_id": request_id}))).status_code == 200 and r, timeout=30, what="publisher recovers")
        assert up.json()["status"] == "published"


def test_health_endpoints(publisher):
    import httpx

    url, _ = publisher
    assert httpx.get(f"{url}/healthz").status_code == 200
    assert httpx.get(f"{url}/readyz").json() == {"status": "ready"}


def test_no_publish_wait_answers_from_the_committed_row_and_still_publishes(publisher_settings, db, kafka, topics):
    settings = publisher_settings.model_copy(update={"publish_wait_seconds": 0})
    with running_publisher(settings) as (url, _app):
        request_id = rid()
        response = call_action(url, ACTION_SECRET, action_body({**VALID, "request_id": request_id}, user_id="u-0"))
        assert response.status_code == 200 and response.json()["status"] == "pending"  # did not wait for Kafka
        assert len(requests_for(kafka, topics.requests, request_id, expect=1)) == 1  # but it was sent
        wait_until(lambda: db.execute("SELECT status FROM graphql.client_async_messages WHERE request_id = %s",
                                      (request_id,)).fetchone()[0] == "published", what="the row marked published")
