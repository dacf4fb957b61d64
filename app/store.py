"""SQL of the publisher and its outbox relay (psycopg 3, async). YugabyteDB YSQL compatible."""

from __future__ import annotations

import json
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from app.envelope import AsyncRequest

ROW_COLUMNS = (
    "request_id, client_id, handler, operation, status, priority, payload, metadata, correlation, "
    "created_at, published_at, expires_at"
)

INSERT_PENDING = f"""
INSERT INTO graphql.client_async_messages
    (request_id, client_id, handler, operation, status, priority, payload, metadata, correlation, expires_at)
VALUES (%s, %s, %s, %s, 'pending', %s, %s, %s, %s, now() + make_interval(secs => %s))
ON CONFLICT (request_id) DO NOTHING
RETURNING {ROW_COLUMNS}
"""

# group commit: many calls' rows in one statement (one commit); a request_id twice in one batch inserts once.
# The batch travels as one jsonb document: one json.dumps in C, where nine arrays cost psycopg a dumper call per
# element (three of them JSON) in Python. The values are the same: a Jsonb parameter is that same json.dumps.
# A JSON null becomes SQL NULL in jsonb_to_recordset: COALESCE keeps a `null` payload the JSON value it was.
INSERT_PENDING_MANY = f"""
INSERT INTO graphql.client_async_messages
    (request_id, client_id, handler, operation, status, priority, payload, metadata, correlation, expires_at)
SELECT r.request_id, r.client_id, r.handler, r.operation, 'pending', r.priority,
       COALESCE(r.payload, 'null'::jsonb), r.metadata, r.correlation, now() + make_interval(secs => r.expires_in)
  FROM jsonb_to_recordset(%s::jsonb)
       AS r(request_id text, client_id text, handler text, operation text, priority text, payload jsonb,
            metadata jsonb, correlation jsonb, expires_in float8)
ON CONFLICT (request_id) DO NOTHING
RETURNING {ROW_COLUMNS}
"""

SELECT_ONE = f"SELECT {ROW_COLUMNS} FROM graphql.client_async_messages WHERE request_id = %s"

# rows are locked in request_id order first (the writer's batches take the same order: app/writer.py), so a mark
# and a writer batch over the same rows wait for each other instead of deadlocking; %b: the ids as a binary array
MARK_PUBLISHED = """
UPDATE graphql.client_async_messages
   SET status = 'published', published_at = now(), updated_at = now()
 WHERE status = 'pending' AND request_id = ANY(ARRAY(
       SELECT request_id FROM graphql.client_async_messages
        WHERE request_id = ANY(%b::text[]) AND status = 'pending' ORDER BY request_id FOR UPDATE))
"""

# a row Kafka refuses for good (too large for the broker, invalid record): terminal, with the reason visible
# to the client and the operator, so it never blocks the relay's scan of older-first pending rows
PARK_UNPUBLISHABLE = """
UPDATE graphql.client_async_messages AS m
   SET status = 'failed', completed_at = now(), updated_at = now(),
       error = jsonb_build_object('code', 'unpublishable', 'message', p.reason)
  FROM unnest(%s::text[], %s::text[]) AS p(request_id, reason)
 WHERE m.request_id = p.request_id AND m.status = 'pending' AND m.request_id = ANY(ARRAY(
       SELECT l.request_id FROM graphql.client_async_messages AS l
        WHERE l.request_id = ANY(%s::text[]) AND l.status = 'pending' ORDER BY l.request_id FOR UPDATE))
"""

# rows the normal path did not publish: older than the grace period, not expired, one relay at a time per row
CLAIM_UNPUBLISHED = f"""
SELECT {ROW_COLUMNS} FROM graphql.client_async_messages
 WHERE status = 'pending'
   AND created_at < now() - make_interval(secs => %s)
   AND expires_at > now()
 ORDER BY created_at
 LIMIT %s
 FOR UPDATE SKIP LOCKED
"""

# the outbox backlog gauges: rows the relay still owes Kafka (the partial index on pending rows serves it)
OUTBOX_BACKLOG = """
SELECT count(*), COALESCE(EXTRACT(EPOCH FROM now() - min(created_at)), 0)::float8
  FROM graphql.client_async_messages
 WHERE status = 'pending' AND expires_at > now()
"""


async def insert_pending(conn: AsyncConnection, request: AsyncRequest) -> dict[str, Any] | None:
    """The stored row, or None when the request_id exists already."""
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(INSERT_PENDING, (
        request.request_id, request.client_id, request.handler, request.operation, request.priority,
        Jsonb(request.payload), Jsonb(request.metadata), Jsonb(request.correlation), request.expires_in_seconds,
    ))
    return await cur.fetchone()


# a jsonb value stops at 256 MB (PostgreSQL's jsonb_util.c), and a document of small numbers takes up to ~6x its
# text there: a larger batch document is split, so no setting of rows x message size can reach the limit
BATCH_DOCUMENT_MAX_CHARS = 32 * 1024 * 1024


async def insert_pending_many(conn: AsyncConnection, requests: list[AsyncRequest]) -> list[dict[str, Any]]:
    """The rows stored, one per request_id that did not exist yet (in no particular order)."""
    # json.dumps as psycopg's Jsonb would, done here so the document's size is known before it is sent
    document = json.dumps([{
        "request_id": r.request_id, "client_id": r.client_id, "handler": r.handler, "operation": r.operation,
        "priority": r.priority, "payload": r.payload, "metadata": r.metadata, "correlation": r.correlation,
        "expires_in": r.expires_in_seconds,
    } for r in requests])
    if len(document) > BATCH_DOCUMENT_MAX_CHARS and len(requests) > 1:
        half = len(requests) // 2
        return [*await insert_pending_many(conn, requests[:half]), *await insert_pending_many(conn, requests[half:])]
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(INSERT_PENDING_MANY, (document,))
    return await cur.fetchall()


async def select_row(conn: AsyncConnection, request_id: str) -> dict[str, Any] | None:
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(SELECT_ONE, (request_id,))
    return await cur.fetchone()


async def mark_published(conn: AsyncConnection, request_ids: list[str]) -> int:
    cur = await conn.execute(MARK_PUBLISHED, (request_ids,))
    return cur.rowcount


async def park_unpublishable(conn: AsyncConnection, reasons: dict[str, str]) -> int:
    # never prepared: the generic plan of a join with unnest is a nested loop over the whole batch (app/writer.py)
    cur = await conn.execute(PARK_UNPUBLISHABLE, (list(reasons), list(reasons.values()), list(reasons)), prepare=False)
    return cur.rowcount


async def claim_unpublished(conn: AsyncConnection, grace_seconds: float, limit: int) -> list[dict[str, Any]]:
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(CLAIM_UNPUBLISHED, (grace_seconds, limit))
    return await cur.fetchall()


async def outbox_backlog(conn: AsyncConnection) -> tuple[int, float]:
    """(unexpired pending rows, age in seconds of the oldest of them; 0 when there is none)."""
    cur = await conn.execute(OUTBOX_BACKLOG)
    rows, age = await cur.fetchone()
    return rows, age
