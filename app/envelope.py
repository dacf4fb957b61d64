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

from app import bounded_json
from app.bounded_json import JsonRefused

REQUEST_SPEC = "async.request.v1"
RESPONSE_SPEC = "async.response.v1"
PRIORITIES = ("low", "normal", "high")
# handler/operation names: what a worker registers under; no spaces, no control characters.
# Always used with fullmatch: `$` would also match before a trailing newline.
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
REQUEST_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
MAX_USER_ID_CHARS = 128
# a detail in an error or DLQ header quotes at most this much of a message's own text
DETAIL_QUOTE_CHARS = 64
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
        if not NAME_PATTERN.fullmatch(value):
            raise ValueError("must be 1-128 characters of letters, digits, '.', '_', ':' or '-'")
        return value

    @field_validator("request_id", "client_id")
    @classmethod
    def _identifier(cls, value: str | None) -> str | None:
        if value is not None and not REQUEST_ID_PATTERN.fullmatch(value):
            raise ValueError("must be 1-128 characters of letters, digits, '.', '_', ':' or '-'")
        return value


@dataclass(frozen=True)
class PublishLimits:
    max_payload_bytes: int
    default_expires_in_seconds: int
    max_expires_in_seconds: int
    min_expires_in_seconds: int = 60
    # the whole request message (value + headers) in UTF-8 bytes; below the producer's message.max.bytes
    max_envelope_bytes: int = 512 * 1024
    max_body_bytes: int = 2 * 1024 * 1024
    max_json_depth: int = 64


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
    # a value with control characters is dropped, not stored: it is a hint for logs, never worth a refusal
    return {name: lowered[name][:512] for name in CORRELATION_HEADERS
            if lowered.get(name) and lowered[name][:512].isprintable()}


def parse_action_body(raw: bytes, limits: PublishLimits) -> Any:
    """Decode the action's POST body within the limits, or raise ActionRefusal."""
    try:
        return bounded_json.loads(raw, max_bytes=limits.max_body_bytes, max_depth=limits.max_json_depth)
    except JsonRefused as exc:
        if exc.reason == "too_large":
            raise ActionRefusal(413, "payload-too-large", f"body is {exc.detail}") from None
        raise ActionRefusal(400, "invalid-body", f"body is not acceptable JSON ({exc.reason}): {exc.detail}") from None


def brief(value: Any) -> str:
    """A bounded quote of a caller's value for error messages and DLQ details."""
    text = repr(value)
    return text if len(text) <= DETAIL_QUOTE_CHARS else f"{text[:DETAIL_QUOTE_CHARS]}... ({len(text)} chars)"


def parse_action_call(
    body: Any, headers: dict[str, str], limits: PublishLimits, action_name: str, *, reply_topic: str,
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

    problem = bounded_json.unstorable_text(parsed.payload) or bounded_json.unstorable_text(parsed.metadata)
    if problem:
        raise ActionRefusal(400, "invalid-input", f"payload and metadata may not contain {problem}")
    payload_size = bounded_json.utf8_size(parsed.payload)
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
    request = AsyncRequest(
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
    size = envelope_size(request, reply_topic, payload_size)
    if size > limits.max_envelope_bytes:
        raise ActionRefusal(
            413, "payload-too-large",
            f"the request message would be {size} bytes; the limit is {limits.max_envelope_bytes}",
        )
    return request


def valid_user_id(value: Any) -> str | None:
    """The session's x-hasura-user-id when it is usable as a client id: 1-128 printable characters."""
    if isinstance(value, str) and 0 < len(value) <= MAX_USER_ID_CHARS and value.isprintable() \
            and value == value.strip():
        return value
    return None


def resolve_client_id(session: dict[str, Any], input_client_id: str | None) -> str:
    """Role rules: a `user` is always its own client; a `service` names the client it acts for."""
    role = session.get("x-hasura-role")
    raw_user_id = session.get("x-hasura-user-id")
    user_id = valid_user_id(raw_user_id)
    if raw_user_id not in (None, "") and user_id is None:
        raise ActionRefusal(400, "invalid-session", f"x-hasura-user-id must be 1-{MAX_USER_ID_CHARS} printable "
                                                    "characters without leading or trailing spaces")
    if role == "user":
        if not user_id:
            raise ActionRefusal(403, "missing-user-id", "role user needs the session variable x-hasura-user-id")
        if input_client_id is not None:
            raise ActionRefusal(403, "client-id-not-allowed", "role user may not set client_id")
        return user_id
    if role == "service":
        client_id = input_client_id or user_id
        if not client_id:
            raise ActionRefusal(400, "invalid-input", "role service must set client_id (or x-hasura-user-id)")
        return client_id
    raise ActionRefusal(403, "role-not-allowed", f"role {brief(role)} may not publish async requests")


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


_SIZING_TIME = datetime(2000, 1, 1, tzinfo=UTC)  # every timestamp encodes to the same length


def envelope_size(request: AsyncRequest, reply_topic: str, payload_bytes: int) -> int:
    """UTF-8 bytes the request will take on Kafka (value, key and headers), known before it is stored.
    `payload_bytes` is the payload's compact UTF-8 size, already measured for the payload limit: the
    envelope is encoded around a `null` payload instead of encoding the payload a second time."""
    value = encode(request_envelope(
        request_id=request.request_id, client_id=request.client_id, handler=request.handler,
        operation=request.operation, payload=None, metadata=request.metadata,
        priority=request.priority, reply_topic=reply_topic, expires_at=_SIZING_TIME, submitted_at=_SIZING_TIME))
    headers = sum(len(k) + len(v) for k, v in kafka_headers(request.correlation))
    return len(value) - len(b"null") + payload_bytes + len(request.request_id.encode()) + headers


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


@dataclass(frozen=True)
class ResponseLimits:
    """Bounds on one response message; the broker's max message size bounds it anyway (1 MB by default)."""

    max_bytes: int = 1024 * 1024
    max_depth: int = 64


COMPLETED_AT_EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
COMPLETED_AT_LATEST = datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)


def parse_response(value: bytes | None, now: datetime | None = None,
                   limits: ResponseLimits = ResponseLimits()) -> ResponseOutcome | InvalidResponse:  # noqa: B008
    """Classify one message from graphql.async.responses.v1; never raises for any input."""
    if value is None:
        return InvalidResponse("empty_message", "message has no value (tombstone)")
    try:
        doc = bounded_json.loads(value, max_bytes=limits.max_bytes, max_depth=limits.max_depth)
    except JsonRefused as exc:
        return InvalidResponse(exc.reason, exc.detail)
    if not isinstance(doc, dict):
        return InvalidResponse("not_an_object", f"expected a JSON object, got {type(doc).__name__}")
    request_id = doc.get("request_id")
    if not isinstance(request_id, str) or not REQUEST_ID_PATTERN.fullmatch(request_id):
        return InvalidResponse("missing_request_id", "request_id missing or not a valid identifier")
    if doc.get("spec_version") != RESPONSE_SPEC:
        return InvalidResponse("unknown_spec_version", f"spec_version {brief(doc.get('spec_version'))}", request_id)
    status = doc.get("status")
    if status not in ("completed", "failed"):
        return InvalidResponse("invalid_status", f"status {brief(status)} is not completed|failed", request_id)
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
            raw = doc["completed_at"]
            if not isinstance(raw, str) or len(raw) > 64:
                raise ValueError(raw)
            completed_at = datetime.fromisoformat(raw.replace("Z", "+00:00"))
        except ValueError:
            return InvalidResponse("invalid_completed_at", f"completed_at {brief(doc['completed_at'])}", request_id)
        if completed_at.tzinfo is None:
            return InvalidResponse("invalid_completed_at", "completed_at needs a time zone", request_id)
        try:
            in_range = COMPLETED_AT_EARLIEST <= completed_at.astimezone(UTC) <= COMPLETED_AT_LATEST
        except OverflowError:  # year 1 at +14:00 is in year 0, which Python cannot hold
            in_range = False
        if not in_range:  # PostgreSQL would store it (as BC, or year 10000) where Python readers fail on it
            return InvalidResponse("invalid_completed_at", "completed_at is before 1970 or after 9999", request_id)
    problem = bounded_json.may_hold_unstorable_text(value) and (
        bounded_json.unstorable_text(doc.get("result")) or bounded_json.unstorable_text(error))
    if problem:
        # PostgreSQL jsonb cannot store it: this message can never be written
        return InvalidResponse("unstorable_result", f"result contains {problem}", request_id)
    return ResponseOutcome(request_id, status, doc.get("result"), error, completed_at)

