"""Cleanup: delete expired rows in bounded primary-key batches, each its own short transaction.

Safe beside the writer, the publisher and another cleanup: rows another transaction holds are
skipped (SKIP LOCKED) and picked up by a later batch or run. No ctid: YugabyteDB has none. The delete
is the function graphql.delete_expired_messages (schema.sql): the only thing the cleanup's role may do.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from dataclasses import asdict, dataclass

import psycopg

from app import logs
from app.db import LAZY_COMMIT, is_transient, session_options
from app.metrics import CleanupMetrics
from app.settings import CleanupSettings
from app.stop_signals import set_on_stop_signals

log = logging.getLogger("app.cleanup")

# schema.sql: the same bounded, SKIP LOCKED delete, as the one function the cleanup's role may run
DELETE_EXPIRED_BATCH = "SELECT graphql.delete_expired_messages(%s)"


@dataclass
class CleanupReport:
    deleted: int = 0
    batches: int = 0
    elapsed_seconds: float = 0.0
    stopped_by: str = "done"  # done | time_budget | signal
    transient_errors: int = 0


def run_cleanup(conninfo: str, batch_size: int, time_budget_seconds: float,
                stop: threading.Event | None = None, max_rows_per_second: float = 0) -> CleanupReport:
    """Delete expired rows until none are left, the time budget is spent or `stop` is set. `max_rows_per_second`
    (0 = unpaced) spaces the batches so the database keeps room for the publisher's inserts."""
    stop = stop or threading.Event()
    report = CleanupReport()
    started = time.monotonic()
    conn: psycopg.Connection | None = None
    backoff = 0.5
    try:
        while True:
            report.elapsed_seconds = round(time.monotonic() - started, 3)
            if stop.is_set():
                report.stopped_by = "signal"
                break
            if report.elapsed_seconds >= time_budget_seconds:
                report.stopped_by = "time_budget"
                break
            try:
                if conn is None or conn.closed:
                    # lazy commits: the batches stop queueing behind (and adding to) the publisher's WAL flushes
                    conn = psycopg.connect(conninfo, autocommit=True, connect_timeout=5,
                                           application_name="graphql-async-cleanup",
                                           options=session_options(conninfo, LAZY_COMMIT))
                deleted = conn.execute(DELETE_EXPIRED_BATCH, (batch_size,)).fetchone()[0]
            except psycopg.Error as exc:
                if not is_transient(exc):
                    raise
                report.transient_errors += 1
                log.warning("cleanup batch failed; retrying", extra={"error": repr(exc)})
                if conn is not None:
                    conn.close()
                conn = None
                stop.wait(backoff)
                backoff = min(backoff * 2, 10)
                continue
            backoff = 0.5
            report.batches += 1
            report.deleted += deleted
            if deleted < batch_size:
                report.elapsed_seconds = round(time.monotonic() - started, 3)
                break
            if max_rows_per_second:  # ahead of the pace: wait until the rows deleted so far were due
                stop.wait(max(0.0, started + report.deleted / max_rows_per_second - time.monotonic()))
    finally:
        if conn is not None:
            conn.close()
    return report


PUSH_JOB = "graphql-async-cleanup"  # the Pushgateway group: one per deployment, each run replaces the last


def push_metrics(url: str, report: CleanupReport | None, metrics: CleanupMetrics | None = None) -> None:
    """The run's figures to the Pushgateway (POST: a failed run's push leaves the last success in place).
    A failing push is logged, never fatal: the rows were deleted all the same."""
    from prometheus_client import pushadd_to_gateway

    metrics = metrics or CleanupMetrics()
    if report is None:
        metrics.last_failure.set_to_current_time()
        registry = metrics.failure_registry
    else:
        metrics.deleted.set(report.deleted)
        metrics.batches.set(report.batches)
        metrics.duration.set(report.elapsed_seconds)
        metrics.incomplete.set(int(report.stopped_by != "done"))
        metrics.last_success.set_to_current_time()
        registry = metrics.registry
    try:
        pushadd_to_gateway(url, job=PUSH_JOB, registry=registry, timeout=10)
    except OSError as exc:
        log.warning("cleanup metrics not pushed", extra={"error": type(exc).__name__, "detail": str(exc)[:200]})


def main() -> None:
    logs.setup()
    settings = CleanupSettings.load_or_exit()
    stop = threading.Event()
    set_on_stop_signals(stop, (signal.SIGTERM,))
    try:
        report = run_cleanup(settings.async_database_url.get_secret_value(), settings.cleanup_batch_size,
                             settings.cleanup_time_budget_seconds, stop, settings.cleanup_max_rows_per_second)
    except Exception:
        if settings.cleanup_pushgateway_url:
            push_metrics(settings.cleanup_pushgateway_url, None)
        raise
    log.info("cleanup finished", extra=asdict(report))
    if settings.cleanup_pushgateway_url:  # a run that never reached the database (no batch) is no success
        push_metrics(settings.cleanup_pushgateway_url, report if report.batches else None)


if __name__ == "__main__":
    main()
