"""Group commit of pending rows (app/group_commit.py) on the real PostgreSQL: every call gets its own answer."""

from __future__ import annotations

import asyncio
import uuid

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from app.db import is_database_unavailable, is_value_error
from app.envelope import AsyncRequest
from app.group_commit import PendingInserter
from scripts.servers import free_port
from tests.support.kafka_admin import wait_until


def request(request_id: str | None = None, **changes) -> AsyncRequest:
    fields = {"request_id": request_id or f"gc-{uuid.uuid4().hex}", "client_id": "gc-client",
              "handler": "billing-worker", "operation": "invoice.create", "payload": {"n": 1}, "metadata": {},
              "priority": "normal", "expires_in_seconds": 3600, "correlation": {}}
    return AsyncRequest(**(fields | changes))


async def with_inserter(url: str, body, **settings):
    pool = AsyncConnectionPool(url, min_size=1, max_size=4, kwargs={"autocommit": True}, open=False, timeout=5)
    await pool.open(wait=False)
    inserter = PendingInserter(pool, **({"max_rows": 64, "window_seconds": 0.02, "max_in_flight": 2} | settings))
    task = asyncio.create_task(inserter.run_forever())
    try:
        return await body(inserter, task)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await pool.close()


def waiting_on_a_lock(url: str) -> bool:
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE "
                            "'%INSERT INTO graphql.client_async_messages%jsonb_to_recordset%'").fetchone()[0] > 0


def stored(db, *request_ids: str) -> set[str]:
    return {r for (r,) in db.execute("SELECT request_id FROM graphql.client_async_messages WHERE request_id = "
                                     "ANY(%s)", (list(request_ids),))}


def test_one_batch_with_a_new_row_a_replay_a_duplicate_and_a_refused_value(pg, db):
    existing, first, second = request(), request(), request()
    db.execute("INSERT INTO graphql.client_async_messages (request_id, client_id, handler, operation, expires_at) "
               "VALUES (%s, 'gc-client', 'h', 'o', now() + interval '1 hour')", (existing.request_id,))
    refused = request(priority="urgent")  # passes nothing upstream would; the table's CHECK refuses it
    calls = [first, existing, request(first.request_id), refused, second]

    async def body(inserter, _task):
        return await asyncio.gather(*(inserter.insert(c) for c in calls), return_exceptions=True)

    answers = asyncio.run(with_inserter(pg.url, body))
    assert answers[0]["request_id"] == first.request_id and answers[0]["status"] == "pending"
    assert answers[1] is None  # a replay: the caller reads the stored row
    assert answers[2] is None  # the same request_id twice in one batch: the first call won
    assert isinstance(answers[3], Exception) and is_value_error(answers[3])
    assert answers[4]["request_id"] == second.request_id
    assert stored(db, first.request_id, second.request_id, refused.request_id) == {first.request_id,
                                                                                     second.request_id}


def test_a_batch_stores_every_value_as_the_single_row_insert_does(pg, db):
    """The batch travels as one jsonb document (jsonb_to_recordset); each row must hold what store.insert_pending,
    with its own typed parameters, stores for the same request: a `null` payload included (jsonb_to_recordset
    turns a JSON null into SQL NULL), and in one statement, not through the one-row-at-a-time fallback."""
    from app import store

    payloads = [None, 0, -1.5e-7, 12345678901234567890123, "ünï\"code\\", [1, [2, [3]]], {"b": 1, "a": {"z": None}},
                True, "", {}, []]
    batch = [request(payload=payload, metadata={"m": i}, correlation={"traceparent": f"00-{i:032x}-{i:016x}-01"},
                     client_id=f"gc-ü-{i}", expires_in_seconds=60 + i) for i, payload in enumerate(payloads)]
    singles = [request(**{**vars(r), "request_id": f"{r.request_id}-single"}) for r in batch]

    async def body(inserter, _task):
        answers = await asyncio.gather(*(inserter.insert(r) for r in batch))
        async with inserter._pool.connection() as conn:
            for single in singles:
                await store.insert_pending(conn, single)
        return answers, inserter.batches_total

    answers, batches = asyncio.run(with_inserter(pg.url, body, window_seconds=0.05))
    assert batches == 1
    columns = "client_id, handler, operation, status, priority, payload, metadata, correlation, expires_at - created_at"
    for stored_batch, single in zip(batch, singles, strict=True):
        row = db.execute(f"SELECT {columns} FROM graphql.client_async_messages WHERE request_id = %s",
                         (stored_batch.request_id,)).fetchone()
        assert row == db.execute(f"SELECT {columns} FROM graphql.client_async_messages WHERE request_id = %s",
                                 (single.request_id,)).fetchone()
    assert [a["payload"] for a in answers] == payloads


def test_a_batch_document_over_its_size_budget_is_split_and_every_call_keeps_its_answer(pg, db, monkeypatch):
    """jsonb stops at 256 MB: a batch whose document passes store.BATCH_DOCUMENT_MAX_CHARS goes in halves (here every
    batch of more than two rows), still answering each call as one statement would, a request_id twice included."""
    from app import store

    statements: list[int] = []
    real = store.insert_pending_many

    async def counted(conn, requests):
        statements.append(len(requests))
        return await real(conn, requests)

    monkeypatch.setattr(store, "BATCH_DOCUMENT_MAX_CHARS", 600)  # here three rows take more, two less
    monkeypatch.setattr(store, "insert_pending_many", counted)
    calls = [request() for _ in range(5)]
    calls.insert(3, request(calls[0].request_id))

    async def body(inserter, _task):
        return await asyncio.gather(*(inserter.insert(c) for c in calls)), inserter.batches_total

    answers, batches = asyncio.run(with_inserter(pg.url, body, window_seconds=0.05))
    assert batches == 1 and statements == [6, 3, 1, 2, 3, 1, 2]  # 6 in halves; each 3 as 1 + 2
    assert [a["request_id"] if a else None for a in answers] == [c.request_id for c in calls[:3]] + [None] + \
        [c.request_id for c in calls[4:]]
    assert stored(db, *(c.request_id for c in calls)) == {c.request_id for c in calls}


def test_concurrent_calls_share_commits(pg, db):
    calls = [request() for _ in range(200)]

    async def body(inserter, _task):
        answers = await asyncio.gather(*(inserter.insert(c) for c in calls))
        return answers, inserter.batches_total

    answers, batches = asyncio.run(with_inserter(pg.url, body, max_rows=64))
    assert all(a is not None for a in answers)
    assert {a["request_id"] for a in answers} == {c.request_id for c in calls}
    assert 4 <= batches < 20  # 200 calls in batches of at most 64, not one commit each
    assert len(stored(db, *(c.request_id for c in calls))) == 200


def test_a_stop_mid_batch_lets_the_batch_finish_and_answers_every_call(pg, db):
    blocked = request()

    async def body(inserter, task):
        with psycopg.connect(pg.url) as holder:  # an open transaction holds the same key: the batch waits on it
            holder.execute("INSERT INTO graphql.client_async_messages (request_id, client_id, handler, operation, "
                           "expires_at) VALUES (%s, 'x', 'h', 'o', now())", (blocked.request_id,))
            in_batch = [asyncio.create_task(inserter.insert(c)) for c in (blocked, request())]
            await asyncio.to_thread(wait_until, lambda: waiting_on_a_lock(pg.url), what="the batch blocked")
            assert not any(t.done() for t in in_batch)
            task.cancel()  # the publisher stops while the batch is in the database
            await asyncio.sleep(0)
            late = asyncio.create_task(inserter.insert(request()))
            holder.rollback()  # the other transaction goes away: the batch's INSERT proceeds
            results = await asyncio.gather(*in_batch, return_exceptions=True)
            await asyncio.gather(task, return_exceptions=True)
            late_result = await asyncio.gather(late, return_exceptions=True)
            return results, late_result[0]

    results, late = asyncio.run(with_inserter(pg.url, body))
    assert all(isinstance(r, dict) for r in results), results  # the batch under way committed and answered
    assert blocked.request_id in stored(db, blocked.request_id)
    assert isinstance(late, RuntimeError)  # a call after the stop is told so, never left hanging


def test_a_database_that_is_away_fails_each_call_as_unavailable():
    calls = [request() for _ in range(5)]

    async def body(inserter, _task):
        return await asyncio.gather(*(inserter.insert(c) for c in calls), return_exceptions=True)

    answers = asyncio.run(with_inserter(f"postgresql://u:p@127.0.0.1:{free_port()}/db?connect_timeout=1", body))
    assert len(answers) == 5
    for answer in answers:
        assert isinstance(answer, Exception) and is_database_unavailable(answer), answer


@pytest.mark.parametrize("window", [0.0, 0.001])
def test_a_single_call_is_not_held_back(pg, window):
    async def body(inserter, _task):
        return await inserter.insert(request())

    assert asyncio.run(with_inserter(pg.url, body, window_seconds=window))["status"] == "pending"
