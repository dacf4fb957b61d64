"""Every multi-row UPDATE of the flow takes its rows' locks in request_id order, so a writer batch and a
publisher mark over the same rows wait for each other instead of deadlocking (PostgreSQL would fail one: the
writer's batch rewound and backed off, and the e2e p99 at 1,000/s went past a second). Shown on the real
PostgreSQL: another session holds the LAST row in key order; the statement, given its rows in reverse order,
must already hold every earlier row while it waits for that one."""

from __future__ import annotations

import random
import threading
import uuid

import psycopg
import pytest
from psycopg.types.json import Jsonb

from app import store, writer


def rows(db, count: int, status: str = "pending") -> list[str]:
    """`count` rows stored in a shuffled order, so neither the heap's order nor the caller's is the key's."""
    prefix = f"lock-{uuid.uuid4().hex[:8]}"
    ids = [f"{prefix}-{i:04d}" for i in range(count)]
    stored = random.Random(7).sample(ids, len(ids))
    db.execute("INSERT INTO graphql.client_async_messages (request_id, client_id, handler, operation, status, "
               "published_at, expires_at) SELECT unnest(%s::text[]), 'c', 'h', 'op', %s, now(), "
               "now() + interval '1 hour'", (stored, status))
    db.execute("ANALYZE graphql.client_async_messages")
    return ids


def locked_while_waiting(pg, ids: list[str], statement: str, params: tuple) -> list[str]:
    """Hold the last id; run the statement in a thread (it blocks on that row); report which others it holds."""
    holder = psycopg.connect(pg.url)
    holder.execute("SELECT 1 FROM graphql.client_async_messages WHERE request_id = %s FOR UPDATE", (ids[-1],))
    done = threading.Event()

    def run() -> None:
        with psycopg.connect(pg.url) as conn:
            conn.execute(statement, params)
        done.set()

    thread = threading.Thread(target=run)
    thread.start()
    held = []
    try:
        with psycopg.connect(pg.url, autocommit=True) as probe:
            # the statement is blocked once it waits on the holder's transaction (pg_locks, not a sleep)
            probe.execute("SET lock_timeout = '5s'")
            for _ in range(500):
                waiting = probe.execute("SELECT count(*) FROM pg_locks WHERE NOT granted AND locktype = 'transactionid'"
                                        ).fetchone()[0]
                if waiting or done.is_set():
                    break
                probe.execute("SELECT pg_sleep(0.01)")
            assert not done.is_set(), "the statement did not wait for the held row"
            for request_id in ids[:-1]:
                try:
                    with probe.transaction():
                        probe.execute("SELECT 1 FROM graphql.client_async_messages WHERE request_id = %s "
                                      "FOR UPDATE NOWAIT", (request_id,))
                except psycopg.errors.LockNotAvailable:
                    held.append(request_id)
    finally:
        holder.rollback()
        holder.close()
        thread.join(30)
    return held


@pytest.mark.parametrize("name", ["writer batch", "published mark", "parking"])
def test_each_batch_statement_locks_in_key_order(pg, db, name):
    n = 400  # a batch as large as the services send, so the planner joins as it does for them
    ids = rows(db, n, "published" if name == "writer batch" else "pending")
    given = random.Random(11).sample(ids, n)  # the caller's order is neither the key's nor the heap's
    statement, params = {
        "writer batch": (writer.WRITE_OUTCOMES, (given, ["completed"] * n, [Jsonb({"n": 1})] * n, [None] * n,
                                                 ["2026-01-01T00:00:00Z"] * n, given)),
        "published mark": (store.MARK_PUBLISHED, (given,)),
        "parking": (store.PARK_UNPUBLISHABLE, (given, ["too large"] * n, given)),
    }[name]
    assert locked_while_waiting(pg, ids, statement, params) == ids[:-1]
