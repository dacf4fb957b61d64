"""Pure contract code, no servers: request envelope shape, response classification, role rules."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from app.envelope import (
    ActionRefusal,
    InvalidResponse,
    PublishLimits,
    ResponseOutcome,
    correlation_from_headers,
    parse_action_call,
    parse_response,
    request_envelope,
    resolve_client_id,
)

LIMITS = PublishLimits(max_payload_bytes=1024, default_expires_in_seconds=3600, max_expires_in_seconds=86400)


def test_request_envelope_is_exactly_the_documented_shape():
    envelope = request_envelope(
        request_id="req-123", client_id="user-123", handler="billing-worker", operation="invoice.create",
        payload={"invoice_id": "inv_123", "amount": 42.5}, metadata={"tenant": "acme"}, priority="normal",
        reply_topic="graphql.async.responses.v1",
        expires_at=datetime(2026, 3, 7, 23, 50, tzinfo=UTC),
        submitted_at=datetime(2026, 3, 7, 22, 50, tzinfo=UTC))
    assert envelope == {
        "spec_version": "async.request.v1", "request_id": "req-123", "client_id": "user-123",
        "route": {"handler": "billing-worker", "operation": "invoice.create"},
        "payload": {"invoice_id": "inv_123", "amount": 42.5},
        "options": {"priority": "normal", "reply_topic": "graphql.async.responses.v1",
                    "expires_at": "2026-03-07T23:50:00Z"},
        "metadata": {"tenant": "acme"}, "submitted_at": "2026-03-07T22:50:00Z"}


def test_user_role_is_always_its_own_client():
    assert resolve_client_id({"x-hasura-role": "user", "x-hasura-user-id": "u1"}, None) == "u1"
    with pytest.raises(ActionRefusal) as refused:
        resolve_client_id({"x-hasura-role": "user", "x-hasura-user-id": "u1"}, "u1")
    assert refused.value.code == "client-id-not-allowed" and refused.value.status == 403
    assert resolve_client_id({"x-hasura-role": "service"}, "tenant-9") == "tenant-9"
    with pytest.raises(ActionRefusal):
        resolve_client_id({"x-hasura-role": "admin"}, "x")


def test_session_variable_names_are_case_insensitive():
    body = {"action": {"name": "publish_async_request"}, "input": {"input": {"handler": "h", "operation": "o"}},
            "session_variables": {"X-Hasura-Role": "user", "X-Hasura-User-Id": "u7"}}
    assert parse_action_call(body, {}, LIMITS, "publish_async_request",
                             reply_topic="graphql.async.responses.v1").client_id == "u7"


def test_envelope_size_is_exactly_what_kafka_gets():
    """The size checked at the door equals value + key + headers of the message the publisher sends."""
    from datetime import UTC, datetime

    from app import bounded_json
    from app.envelope import AsyncRequest, envelope_size, request_message

    request = AsyncRequest("req-1", "c-\u00e9", "h", "o", {"e": "\U0001F600" * 50, "n": [1.5, None, "\u00fc"]},
                           {"t": "\u00e5"}, "normal", 3600, {"cf-ray": "r1"})
    now = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
    row = {"request_id": request.request_id, "client_id": request.client_id, "handler": request.handler,
           "operation": request.operation, "payload": request.payload, "metadata": request.metadata,
           "priority": request.priority, "expires_at": now, "created_at": now, "correlation": request.correlation}
    value, headers = request_message(row, "graphql.async.responses.v1")
    sent = len(value) + len(b"req-1") + sum(len(k) + len(v) for k, v in headers)
    assert envelope_size(request, "graphql.async.responses.v1", bounded_json.utf8_size(request.payload)) == sent


def test_correlation_headers_are_picked_case_insensitively_and_bounded():
    got = correlation_from_headers({"CF-Ray": "r", "x-forwarded-for": "1.2.3.4, 5.6.7.8", "Cookie": "no",
                                    "X-Request-Id": "x" * 2000})
    assert got == {"cf-ray": "r", "x-forwarded-for": "1.2.3.4, 5.6.7.8", "x-request-id": "x" * 512}


@pytest.mark.parametrize(("value", "reason"), [
    (b"\xff\xfe", "invalid_json"),
    (b"null", "not_an_object"),
    (json.dumps({"spec_version": "async.response.v1", "request_id": "has space", "status": "completed"}).encode(),
     "missing_request_id"),
    (json.dumps({"spec_version": "async.response.v1", "request_id": "r", "status": "completed",
                 "completed_at": "2026-03-07T22:50:00"}).encode(), "invalid_completed_at"),
    (json.dumps({"spec_version": "async.response.v1", "request_id": "r", "status": "failed",
                 "error": {"code": "E", "message": 5}}).encode(), "invalid_error"),
    # found by a live probe: PostgreSQL stored these as 0001 BC and year 10000, which Python readers cannot hold
    *((json.dumps({"spec_version": "async.response.v1", "request_id": "r", "status": "completed",
                   "completed_at": at}).encode(), "invalid_completed_at")
      for at in ("0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00", "1969-12-31T23:59:59Z")),
])
def test_invalid_responses_are_classified(value, reason):
    verdict = parse_response(value)
    assert isinstance(verdict, InvalidResponse) and verdict.dlq_reason == reason


def test_valid_responses():
    now = datetime(2026, 1, 1, tzinfo=UTC)
    ok = parse_response(json.dumps({"spec_version": "async.response.v1", "request_id": "r1", "status": "completed",
                                    "result": [1, 2]}).encode(), now=now)
    assert ok == ResponseOutcome("r1", "completed", [1, 2], None, now)
    failed = parse_response(json.dumps({"spec_version": "async.response.v1", "request_id": "r2", "status": "failed",
                                        "error": {"code": "E1", "message": "m", "extra": 1},
                                        "completed_at": "2026-02-01T00:00:00Z"}).encode())
    assert failed.error == {"code": "E1", "message": "m"}
    assert failed.completed_at == datetime(2026, 2, 1, tzinfo=UTC)
