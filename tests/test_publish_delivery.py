"""After the commit, on real PostgreSQL and Kafka: the producer's delivery reports served by the event loop
itself, and the lingering `published` marker with its asynchronous commit."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool
from pydantic import SecretStr

from app import store
from app.db import lazy_commit_pool
from app.kafka_io import AsyncProducer, producer_config
from app.publisher import PublishedMarker
from scripts.servers import free_port
from tests.support.kafka_admin import read_all


def seed_pending(db, ids: list[str]) -> None:
    db.execute("INSERT INTO graphql.client_async_messages (request_id, client_id, handler, operation, expires_at) "
               "SELECT i, 'c', 'h', 'o', now() + interval '1 hour' FROM unnest(%s::text[]) i", (ids,))


def statuses(db, ids: list[str]) -> dict[str, str]:
    return dict(db.execute("SELECT request_id, status FROM graphql.client_async_messages "
                           "WHERE request_id = ANY(%s)", (ids,)).fetchall())


async def mark_through_marker(pool, ids: list[str], linger_seconds: float) -> set[str]:
    """Hand every id to a PublishedMarker as acked, stop it, let it finish; what is left in flight."""
    in_flight = set(ids)
    marker = PublishedMarker(pool, in_flight, linger_seconds=linger_seconds)
    task = asyncio.create_task(marker.run_forever())
    for request_id in ids:
        marker.add(request_id)
    marker.stop()
    await asyncio.wait_for(task, 20)  # a failure is logged and the loop ends: no crash, no hang
    return in_flight


def test_deliveries_settle_on_the_event_loop_without_a_poll_thread(publisher_settings, kafka, topics):
    async def run() -> tuple[list, set[str]]:
        before = {t.name for t in threading.enumerate()}
        producer = AsyncProducer(producer_config(publisher_settings.client_config(), 10),
                                 asyncio.get_running_loop())
        try:
            futures = [producer.send(topics.requests, f"k{i}", b"{}", []) for i in range(50)]
            results = await asyncio.wait_for(asyncio.gather(*futures, return_exceptions=True), 30)
            return results, {t.name for t in threading.enumerate()} - before
        finally:
            await producer.close()

    results, new_threads = asyncio.run(run())
    assert results == [None] * 50
    assert not new_threads  # librdkafka's own threads are native; no Python thread competes for the GIL
    assert len(read_all(kafka.client_config(), topics.requests, expect=50)) == 50


def test_close_flushes_and_settles_what_is_still_in_flight(publisher_settings, kafka, topics):
    async def run() -> list:
        producer = AsyncProducer(producer_config(publisher_settings.client_config(), 10),
                                 asyncio.get_running_loop())
        futures = [producer.send(topics.requests, f"k{i}", b"{}", []) for i in range(20)]
        await producer.close()  # the loop polls no more: flush()'s reports arrive from its worker thread
        return await asyncio.wait_for(asyncio.gather(*futures, return_exceptions=True), 10)

    assert asyncio.run(run()) == [None] * 20


def test_a_producer_is_made_on_its_loop(publisher_settings):
    loop = asyncio.new_event_loop()
    try:
        with pytest.raises(RuntimeError, match="event loop"):
            AsyncProducer(producer_config(publisher_settings.client_config(), 10), loop)
    finally:
        loop.close()


def test_marks_commit_lazily_on_their_own_session_and_the_inserts_stay_durable(db, pg, publisher_settings):
    """The publisher's marker writes on db.lazy_commit_pool (one statement, no WAL flush wait); the pool the
    inserts use keeps the session's durable commit. A statement trigger records the setting each mark ran with."""
    from app.publisher import Publisher

    ids = [f"mark-{uuid.uuid4().hex}" for _ in range(30)]
    seed_pending(db, ids)
    # the test server itself commits lazily: the URL asks for durable sessions, as production's server is
    url = f"{pg.url}{'&' if '?' in pg.url else '?'}options=-c%20synchronous_commit%3Don"
    publisher = Publisher(publisher_settings.model_copy(update={"async_database_url": SecretStr(url)}))
    db.execute("CREATE TABLE public.mark_sessions (setting text)")
    db.execute("CREATE FUNCTION public.record_mark_session() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
               "INSERT INTO public.mark_sessions VALUES (current_setting('synchronous_commit')); RETURN NULL; END $$")
    db.execute("CREATE TRIGGER record_mark_session AFTER UPDATE ON graphql.client_async_messages "
               "FOR EACH STATEMENT EXECUTE FUNCTION public.record_mark_session()")

    async def run() -> tuple[set[str], str]:
        await publisher.mark_pool.open()
        await publisher.pool.open()
        try:
            # the publisher's own marker: all 30 acks arrive before its first wake-up, so they share one UPDATE
            publisher.in_flight.update(ids)
            task = asyncio.create_task(publisher.marker.run_forever())
            for request_id in ids:
                publisher.marker.add(request_id)
            publisher.marker.stop()
            await asyncio.wait_for(task, 20)
            async with publisher.pool.connection() as conn:
                return publisher.in_flight, (await (await conn.execute("SHOW synchronous_commit")).fetchone())[0]
        finally:
            await publisher.mark_pool.close()
            await publisher.pool.close()

    try:
        left, inserts_commit = asyncio.run(run())
        marks = [row[0] for row in db.execute("SELECT setting FROM public.mark_sessions").fetchall()]
    finally:
        db.execute("DROP TRIGGER record_mark_session ON graphql.client_async_messages")
        db.execute("DROP FUNCTION public.record_mark_session()")
        db.execute("DROP TABLE public.mark_sessions")
    assert not left  # the relay may consider them again
    assert marks == ["off"]  # one UPDATE for the 30 rows, committed without waiting for the flush
    assert inserts_commit == "on"
    assert set(statuses(db, ids).values()) == {"published"}


def test_a_mark_that_fails_leaves_rows_pending_for_the_relay(db, publisher_settings):
    ids = [f"nomark-{uuid.uuid4().hex}" for _ in range(3)]
    seed_pending(db, ids)

    async def run() -> set[str]:
        # a database that is not there: every mark fails
        pool = AsyncConnectionPool(f"host=127.0.0.1 port={free_port()} user=x dbname=x connect_timeout=1",
                                   min_size=1, open=False, timeout=1)
        await pool.open(wait=False)
        try:
            return await mark_through_marker(pool, ids, linger_seconds=0)
        finally:
            await pool.close()

    assert asyncio.run(run()) == set()  # handed back to the relay
    assert set(statuses(db, ids).values()) == {"pending"}


def test_lazy_mark_counts_only_pending_rows(db, publisher_settings):
    ids = [f"lazy-{uuid.uuid4().hex}" for _ in range(3)]
    seed_pending(db, ids)
    db.execute("UPDATE graphql.client_async_messages SET status = 'completed', completed_at = now() "
               "WHERE request_id = %s", (ids[0],))

    async def run() -> int:
        pool = lazy_commit_pool(publisher_settings)
        await pool.open()
        try:
            async with pool.connection() as conn:
                return await store.mark_published(conn, ids)
        finally:
            await pool.close()

    assert asyncio.run(run()) == 2  # first terminal state wins: the completed row stays completed
    assert statuses(db, ids) == {ids[0]: "completed", ids[1]: "published", ids[2]: "published"}


def test_shutdown_is_bounded_when_a_mark_waits_on_a_lock(pg, db, publisher_settings):
    """A `published` mark stuck behind another session's row lock does not hold the publisher's shutdown:
    stop() gives it the publish timeout within the shutdown budget, then leaves the row `pending` to the relay."""
    from app.publisher import Publisher
    from app.shutdown import CANCEL_GRACE_SECONDS, MIN_CLOSE_SECONDS

    request_id = f"stuck-{uuid.uuid4().hex}"
    seed_pending(db, [request_id])
    settings = publisher_settings.model_copy(update={"shutdown_timeout_seconds": 12.0})
    # past the budget only by what a cut phase gets to unwind and the two pools' minimum close
    bound = settings.shutdown_timeout_seconds + 4 * CANCEL_GRACE_SECONDS + 2 * MIN_CLOSE_SECONDS

    async def run() -> tuple[float, dict[str, float]]:
        publisher = Publisher(settings)
        await publisher.start()
        with psycopg.connect(pg.url) as holder:
            holder.execute("SELECT 1 FROM graphql.client_async_messages WHERE request_id = %s FOR UPDATE",
                           (request_id,))
            publisher.marker.add(request_id)
            deadline = time.monotonic() + 20
            while not db.execute("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                                 "AND query LIKE '%%status = ''published''%%'").fetchone()[0]:
                assert time.monotonic() < deadline, "the mark never reached the lock"
                await asyncio.sleep(0.05)
            started = time.monotonic()
            await asyncio.wait_for(publisher.stop(), bound + 10)
            stopped = time.monotonic() - started
            holder.rollback()
        return stopped, publisher.last_shutdown.spent

    stopped, phases = asyncio.run(run())
    assert stopped < bound, phases
    # its own cap (the publish timeout), not the rest of the budget
    assert phases["published-marker"] < settings.publish_timeout_seconds + CANCEL_GRACE_SECONDS + 3, phases
    assert statuses(db, [request_id]) == {request_id: "pending"}  # the relay's, after its grace period


def test_a_failing_poll_does_not_stop_the_delivery_reports(publisher_settings, kafka, topics):
    class FirstPollFails:
        """The real producer, whose first poll raises (as a fatal error raised from error_cb would)."""

        def __init__(self, producer):
            self._producer, self.failed = producer, False

        def poll(self, timeout):
            if not self.failed:
                self.failed = True
                raise RuntimeError("poll failed")
            return self._producer.poll(timeout)

        def __getattr__(self, name):
            return getattr(self._producer, name)

        def __len__(self):
            return len(self._producer)

    async def run() -> list:
        producer = AsyncProducer(producer_config(publisher_settings.client_config(), 10),
                                 asyncio.get_running_loop())
        producer._producer = FirstPollFails(producer._producer)
        try:
            futures = [producer.send(topics.requests, f"k{i}", b"{}", []) for i in range(5)]
            results = await asyncio.wait_for(asyncio.gather(*futures, return_exceptions=True), 30)
            assert producer._producer.failed
            return results
        finally:
            await producer.close()

    assert asyncio.run(run()) == [None] * 5


def test_session_options_keep_what_libpq_would_have_used(pg, monkeypatch):
    """options= replaces libpq's own choice (the URL's options, else PGOPTIONS): both survive, the extra wins."""
    from app.db import LAZY_COMMIT, session_options

    monkeypatch.setenv("PGOPTIONS", "-c statement_timeout=777")
    with psycopg.connect(pg.url, options=session_options(pg.url, LAZY_COMMIT)) as conn:
        assert conn.execute("SHOW statement_timeout").fetchone()[0] == "777ms"
        assert conn.execute("SHOW synchronous_commit").fetchone()[0] == "off"
    url = f"{pg.url}{'&' if '?' in pg.url else '?'}options=-c%20lock_timeout%3D555"
    with psycopg.connect(url, options=session_options(url, "-c synchronous_commit=on")) as conn:
        assert conn.execute("SHOW lock_timeout").fetchone()[0] == "555ms"  # the URL's own, not PGOPTIONS
        assert conn.execute("SHOW statement_timeout").fetchone()[0] == "0"  # as libpq: the URL's options win
        assert conn.execute("SHOW synchronous_commit").fetchone()[0] == "on"
