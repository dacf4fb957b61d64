"""Pure contract code: the action input, the request envelope, the response envelope.

No I/O here, so every rule is testable without servers.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

REQUEST_SPEC = "async.request.v1"
RESPONSE_SPEC = "async.response.v1"
PRIORITIES = ("low", "normal", "high")
# handler/operation names: what a worker registers under; no spaces, no control characters
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
REQUEST_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
CORRELATION_HEADERS = ("cf-connecting-ip", "cf-ray", "x-forwarded-for", "x-request-id")


class ActionRefusal(Exception):
    """A refusal answered to Hasura as an action error: HTTP 4xx, message and extensions.code."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message

    def body(self) -> dict[str, Any]:
        return {"message": self.message, "extensions": {"code": self.code}}


class PublishInput(BaseModel):
    """The `input` argument of `publish_async_request`."""

    model_config = ConfigDict(extra="forbid", strict=True)

    request_id: str | None = None
    client_id: str | None = None
    handler: str
    operation: str
    payload: Any = Field(default_factory=dict)
    metadata: dict[str, Any] = Field(default_factory=dict)
    priority: Literal["low", "normal", "high"] = "normal"
    expires_in_seconds: int | None = None

    @field_validator("handler", "operation")
    @classmethod
    def _name(cls, value: str) -> str:
        if not NAME_PATTERN.match(value):
            raise ValueError("must be 1-128 characters of letters, digits, '.', '_', ':' or '-'")
        return value

    @field_validator("request_id", "client_id")
    @classmethod
    def _identifier(cls, value: str | None) -> str | None:
        if value is not None and not REQUEST_ID_PATTERN.match(value):
            raise ValueError("must be 1-128 characters of letters, digits, '.', '_', ':' or '-'")
        return value


@dataclass(frozen=True)
class PublishLimits:
    max_payload_bytes: int
    default_expires_in_seconds: int
    max_expires_in_seconds: int
    min_expires_in_seconds: int = 60


@dataclass(frozen=True)
class AsyncRequest:
    """A validated request, ready to be stored and published."""

    request_id: str
    client_id: str
    handler: str
    operation: str
    payload: Any
    metadata: dict[str, Any]
    priority: str
    expires_in_seconds: int
    correlation: dict[str, str]


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "input"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)


def correlation_from_headers(headers: dict[str, str]) -> dict[str, str]:
    """Cloudflare/proxy headers Hasura forwarded, kept for logs and carried with the envelope."""
    lowered = {k.lower(): v for k, v in headers.items()}
    return {name: lowered[name][:512] for name in CORRELATION_HEADERS if lowered.get(name)}


def parse_action_call(
    body: Any, headers: dict[str, str], limits: PublishLimits, action_name: str
) -> AsyncRequest:
    """Turn Hasura's action POST body into an AsyncRequest, or raise ActionRefusal."""
    if not isinstance(body, dict):
        raise ActionRefusal(400, "invalid-body", "the action body must be a JSON object")
    action = body.get("action")
    if not isinstance(action, dict) or action.get("name") != action_name:
        raise ActionRefusal(400, "unknown-action", f"this handler serves only the action {action_name}")
    session = body.get("session_variables")
    if not isinstance(session, dict):
        raise ActionRefusal(400, "invalid-body", "session_variables missing")
    session = {str(k).lower(): v for k, v in session.items()}
    args = body.get("input")
    if not isinstance(args, dict) or "input" not in args:
        raise ActionRefusal(400, "invalid-input", "the action argument `input` is missing")
    raw = args["input"]
    if not isinstance(raw, dict):
        raise ActionRefusal(400, "invalid-input", "`input` must be a JSON object")
    try:
        parsed = PublishInput.model_validate(raw)
    except ValidationError as exc:
        raise ActionRefusal(400, "invalid-input", _describe(exc)) from None

    if _has_nul(parsed.payload) or _has_nul(parsed.metadata):
        raise ActionRefusal(400, "invalid-input", "payload and metadata may not contain NUL characters")
    payload_size = len(json.dumps(parsed.payload, separators=(",", ":")).encode())
    if payload_size > limits.max_payload_bytes:
        raise ActionRefusal(
            413, "payload-too-large",
            f"payload is {payload_size} bytes; the limit is {limits.max_payload_bytes}",
        )
    expires = parsed.expires_in_seconds
    if expires is None:
        expires = limits.default_expires_in_seconds
    if not limits.min_expires_in_seconds <= expires <= limits.max_expires_in_seconds:
        raise ActionRefusal(
            400, "invalid-input",
            f"expires_in_seconds must be between {limits.min_expires_in_seconds} and {limits.max_expires_in_seconds}",
        )

    client_id = resolve_client_id(session, parsed.client_id)
    return AsyncRequest(
        request_id=parsed.request_id or str(uuid.uuid4()),
        client_id=client_id,
        handler=parsed.handler,
        operation=parsed.operation,
        payload=parsed.payload,
        metadata=parsed.metadata,
        priority=parsed.priority,
        expires_in_seconds=expires,
        correlation=correlation_from_headers(headers),
    )


def resolve_client_id(session: dict[str, Any], input_client_id: str | None) -> str:
    """Role rules: a `user` is always its own client; a `service` names the client it acts for."""
    role = session.get("x-hasura-role")
    if role == "user":
        user_id = session.get("x-hasura-user-id")
        if not user_id:
            raise ActionRefusal(403, "missing-user-id", "role user needs the session variable x-hasura-user-id")
        if input_client_id is not None:
            raise ActionRefusal(403, "client-id-not-allowed", "role user may not set client_id")
        return str(user_id)
    if role == "service":
        client_id = input_client_id or session.get("x-hasura-user-id")
        if not client_id:
            raise ActionRefusal(400, "invalid-input", "role service must set client_id (or x-hasura-user-id)")
        return str(client_id)
    raise ActionRefusal(403, "role-not-allowed", f"role {role!r} may not publish async requests")


def isoformat(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def request_envelope(
    *, request_id: str, client_id: str, handler: str, operation: str, payload: Any, metadata: dict[str, Any],
    priority: str, reply_topic: str, expires_at: datetime, submitted_at: datetime,
) -> dict[str, Any]:
    """The exact message on graphql.async.requests.v1 (DESIGN.md section 4)."""
    return {
        "spec_version": REQUEST_SPEC,
        "request_id": request_id,
        "client_id": client_id,
        "route": {"handler": handler, "operation": operation},
        "payload": payload,
        "options": {"priority": priority, "reply_topic": reply_topic, "expires_at": isoformat(expires_at)},
        "metadata": metadata,
        "submitted_at": isoformat(submitted_at),
    }


def envelope_from_row(row: dict[str, Any], reply_topic: str) -> dict[str, Any]:
    """Rebuild a request envelope from its stored row (the outbox relay publishes this)."""
    return request_envelope(
        request_id=row["request_id"], client_id=row["client_id"], handler=row["handler"],
        operation=row["operation"], payload=row["payload"], metadata=row["metadata"], priority=row["priority"],
        reply_topic=reply_topic, expires_at=row["expires_at"], submitted_at=row["created_at"],
    )


def encode(envelope: dict[str, Any]) -> bytes:
    return json.dumps(envelope, separators=(",", ":"), ensure_ascii=False).encode()


def kafka_headers(correlation: dict[str, str], spec: str = REQUEST_SPEC) -> list[tuple[str, bytes]]:
    return [("spec_version", spec.encode()), *((k, v.encode()) for k, v in sorted(correlation.items()))]


def request_message(row: dict[str, Any], reply_topic: str) -> tuple[bytes, list[tuple[str, bytes]]]:
    """Value and headers of a stored request on Kafka: the action and the relay send exactly the same bytes."""
    return encode(envelope_from_row(row, reply_topic)), kafka_headers(row["correlation"])


# --------------------------------------------------------------------------- responses


@dataclass(frozen=True)
class ResponseOutcome:
    """A valid response: the terminal state to write into the row."""

    request_id: str
    status: Literal["completed", "failed"]
    result: Any
    error: dict[str, Any] | None
    completed_at: datetime


@dataclass(frozen=True)
class InvalidResponse:
    """A permanently invalid message: it goes to the DLQ with this reason."""

    dlq_reason: str
    detail: str
    request_id: str | None = None


def parse_response(value: bytes | None, now: datetime | None = None) -> ResponseOutcome | InvalidResponse:
    """Classify one message from graphql.async.responses.v1."""
    if value is None:
        return InvalidResponse("empty_message", "message has no value (tombstone)")
    try:
        doc = json.loads(value)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return InvalidResponse("invalid_json", str(exc)[:200])
    if not isinstance(doc, dict):
        return InvalidResponse("not_an_object", f"expected a JSON object, got {type(doc).__name__}")
    request_id = doc.get("request_id")
    if not isinstance(request_id, str) or not REQUEST_ID_PATTERN.match(request_id):
        return InvalidResponse("missing_request_id", "request_id missing or not a valid identifier")
    if doc.get("spec_version") != RESPONSE_SPEC:
        return InvalidResponse("unknown_spec_version", f"spec_version {doc.get('spec_version')!r}", request_id)
    status = doc.get("status")
    if status not in ("completed", "failed"):
        return InvalidResponse("invalid_status", f"status {status!r} is not completed|failed", request_id)
    error = doc.get("error")
    if status == "failed":
        well_formed = isinstance(error, dict) and all(isinstance(error.get(k), str) for k in ("code", "message"))
        if not well_formed:
            return InvalidResponse("invalid_error", "a failed response needs error {code, message}", request_id)
        error = {"code": error["code"], "message": error["message"]}
    else:
        error = None
    completed_at = now or datetime.now(UTC)
    if "completed_at" in doc:
        try:
            completed_at = datetime.fromisoformat(str(doc["completed_at"]).replace("Z", "+00:00"))
        except ValueError:
            return InvalidResponse("invalid_completed_at", f"completed_at {doc['completed_at']!r}", request_id)
        if completed_at.tzinfo is None:
            return InvalidResponse("invalid_completed_at", "completed_at needs a time zone", request_id)
    if _has_nul(doc.get("result")) or _has_nul(error):
        # PostgreSQL jsonb cannot store NUL characters: this message can never be written
        return InvalidResponse("unstorable_result", "result contains a NUL character", request_id)
    return ResponseOutcome(request_id, status, doc.get("result"), error, completed_at)


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(v) for v in value)
    return False

