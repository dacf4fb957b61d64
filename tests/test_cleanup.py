"""Cleanup on real PostgreSQL: bounded batches, time budget, safe beside writes and another cleanup."""

from __future__ import annotations

import threading
import uuid

import psycopg
import pytest

from app.cleanup import run_cleanup
from app.settings import CleanupSettings


def seed(db, prefix: str, expired: int, live: int) -> None:
    with db.cursor() as cur:
        cur.execute(
            "INSERT INTO graphql.client_async_messages (request_id, client_id, handler, operation, expires_at) "
            "SELECT %s || g, 'c', 'h', 'op', now() - interval '1 minute' FROM generate_series(1, %s) g",
            (f"{prefix}-exp-", expired))
        cur.execute(
            "INSERT INTO graphql.client_async_messages (request_id, client_id, handler, operation, expires_at) "
            "SELECT %s || g, 'c', 'h', 'op', now() + interval '1 hour' FROM generate_series(1, %s) g",
            (f"{prefix}-live-", live))


def count(db, pattern: str) -> int:
    return db.execute("SELECT count(*) FROM graphql.client_async_messages WHERE request_id LIKE %s",
                      (pattern,)).fetchone()[0]


def purge_expired(db) -> None:
    db.execute("DELETE FROM graphql.client_async_messages WHERE expires_at < now()")


def test_deletes_only_expired_rows_in_bounded_batches(pg, db):
    purge_expired(db)
    prefix = uuid.uuid4().hex[:8]
    seed(db, prefix, expired=2_345, live=100)
    report = run_cleanup(pg.url, batch_size=500, time_budget_seconds=60)
    assert report.deleted == 2_345 and report.batches == 5 and report.stopped_by == "done"
    assert count(db, f"{prefix}-exp-%") == 0 and count(db, f"{prefix}-live-%") == 100


def test_time_budget_stops_early_and_reports(pg, db):
    purge_expired(db)
    prefix = uuid.uuid4().hex[:8]
    seed(db, prefix, expired=3_000, live=0)
    report = run_cleanup(pg.url, batch_size=10, time_budget_seconds=0.05)
    assert report.stopped_by == "time_budget"
    assert 0 < report.deleted < 3_000 and report.deleted == report.batches * 10
    assert count(db, f"{prefix}-exp-%") == 3_000 - report.deleted
    assert run_cleanup(pg.url, batch_size=1000, time_budget_seconds=60).deleted == 3_000 - report.deleted


def test_locked_rows_are_skipped_not_waited_for(pg, db):
    purge_expired(db)
    prefix = uuid.uuid4().hex[:8]
    seed(db, prefix, expired=50, live=0)
    with psycopg.connect(pg.url) as holder:  # a writer mid-transaction on one expired row
        holder.execute("UPDATE graphql.client_async_messages SET status = 'failed', completed_at = now() "
                       "WHERE request_id = %s", (f"{prefix}-exp-7",))
        report = run_cleanup(pg.url, batch_size=20, time_budget_seconds=30)
        assert report.deleted == 49
        holder.rollback()
    assert count(db, f"{prefix}-exp-%") == 1


def test_two_cleanups_beside_concurrent_writes(pg, db):
    purge_expired(db)
    prefix = uuid.uuid4().hex[:8]
    seed(db, prefix, expired=20_000, live=0)
    stop = threading.Event()
    written = []

    def publisher_and_writer() -> None:
        with psycopg.connect(pg.url, autocommit=True) as conn:
            n = 0
            while not stop.is_set():
                n += 1
                conn.execute("INSERT INTO graphql.client_async_messages (request_id, client_id, handler, operation, "
                             "expires_at) VALUES (%s, 'c', 'h', 'op', now() + interval '1 hour')",
                             (f"{prefix}-new-{n}",))
                conn.execute("UPDATE graphql.client_async_messages SET status = 'completed', completed_at = now() "
                             "WHERE request_id = %s", (f"{prefix}-exp-{n}",))
                written.append(n)

    reports = []
    workers = [threading.Thread(target=publisher_and_writer)] + [
        threading.Thread(target=lambda: reports.append(run_cleanup(pg.url, 200, 60))) for _ in range(2)]
    for t in workers:
        t.start()
    for t in workers[1:]:
        t.join(120)
    stop.set()
    workers[0].join(30)
    assert written, "the concurrent writer made progress"
    # every expired row went, each deleted exactly once across both runs, and no new row was touched
    assert sum(r.deleted for r in reports) + count(db, f"{prefix}-exp-%") == 20_000
    leftover = run_cleanup(pg.url, 1000, 60).deleted
    assert count(db, f"{prefix}-exp-%") == 0
    assert sum(r.deleted for r in reports) + leftover == 20_000
    assert count(db, f"{prefix}-new-%") == len(written)


def test_the_pace_bounds_the_deletion_rate_and_a_stop_ends_the_wait(pg, db):
    purge_expired(db)
    prefix = uuid.uuid4().hex[:8]
    seed(db, prefix, expired=1_000, live=0)
    report = run_cleanup(pg.url, batch_size=50, time_budget_seconds=1.0, max_rows_per_second=100)
    assert report.stopped_by == "time_budget"
    # never ahead of the pace by more than the batch in hand
    assert 50 <= report.deleted <= 100 * report.elapsed_seconds + 50
    stop = threading.Event()
    threading.Timer(0.2, stop.set).start()
    paced = run_cleanup(pg.url, batch_size=50, time_budget_seconds=3600, stop=stop, max_rows_per_second=10)
    assert paced.stopped_by == "signal" and paced.deleted == 50  # one batch, then waited for its due time
    assert run_cleanup(pg.url, batch_size=1000, time_budget_seconds=60).deleted == 1_000 - report.deleted - 50


def test_one_call_deletes_at_most_the_settings_maximum_batch(db):
    """A caller's huge batch is capped in SQL at what CleanupSettings allows: one transaction stays bounded."""
    [cap] = [m.le for m in CleanupSettings.model_fields["cleanup_batch_size"].metadata if hasattr(m, "le")]
    purge_expired(db)
    prefix = uuid.uuid4().hex[:8]
    seed(db, prefix, expired=cap + 1, live=0)
    assert db.execute("SELECT graphql.delete_expired_messages(%s)", (cap * 10,)).fetchone()[0] == cap
    assert count(db, f"{prefix}-exp-%") == 1
    with pytest.raises(psycopg.errors.InvalidRowCountInLimitClause):  # a negative batch is PostgreSQL's own error
        db.execute("SELECT graphql.delete_expired_messages(-1)")
    purge_expired(db)


def test_a_batch_reaches_its_rows_by_key_not_by_scanning_the_table(db):
    """The function's plan is made once for a parameter LIMIT; it must still find each batch through the primary
    key, never a sequential scan of the table (which grew with the table: bench/growth.py, 0.7 s a batch at 11M
    rows). pg_stat_xact_user_tables counts this transaction's scans of the table."""
    purge_expired(db)
    prefix = uuid.uuid4().hex[:8]
    seed(db, prefix, expired=5_000, live=45_000)  # enough rows that a scan of them is the cheap-looking plan
    db.execute("ANALYZE graphql.client_async_messages")
    try:
        with db.transaction():
            assert db.execute("SELECT graphql.delete_expired_messages(100)").fetchone()[0] == 100
            scans = db.execute("SELECT seq_scan, idx_scan FROM pg_stat_xact_user_tables "
                               "WHERE relid = 'graphql.client_async_messages'::regclass").fetchone()
        assert scans[0] == 0 and scans[1] >= 2, scans  # the expiry index to pick, the key to delete by
    finally:
        purge_expired(db)
        db.execute("DELETE FROM graphql.client_async_messages WHERE request_id LIKE %s", (f"{prefix}-live-%",))
