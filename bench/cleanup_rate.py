"""Cleanup: rows/s while deleting 1,000,000 expired rows, and the publisher's p99 during the cleanup
beside its p99 without it (same server, same run).

    python -m bench.cleanup_rate [--rows 1000000] [--batch-size N] [--connections 8] [--pace ROWS_PER_S]

Goals (issue 19): during cleanup the publisher keeps p99 within 1.2x and throughput within 0.9x of the same
run without cleanup, and cleanup still finishes 1M rows in under 60 s, at the default pace.
"""

from __future__ import annotations

import argparse
import threading
import time

import psycopg

from app.cleanup import run_cleanup
from app.settings import CleanupSettings
from bench.common import emit, publisher, servers, wrk


def seed_expired(pg, rows: int) -> None:
    with psycopg.connect(pg.url) as conn:
        conn.execute("INSERT INTO graphql.client_async_messages (request_id, client_id, handler, operation, status, "
                     "payload, expires_at, created_at, completed_at) "
                     "SELECT 'exp-' || g, 'client-' || (g %% 1000), 'h', 'op', "
                     "'completed', '{\"n\": 1}', now() - interval '1 minute', now() - interval '2 hours', "
                     "now() - interval '1 hour' "
                     "FROM generate_series(1, %s) g", (rows,))
    # the seed's own aftermath (its insert-triggered autovacuum, the checkpoint its WAL forces) done before the
    # quiet window, so that window measures the publisher alone
    with psycopg.connect(pg.url, autocommit=True) as conn:
        conn.execute("VACUUM (ANALYZE) graphql.client_async_messages")
        conn.execute("CHECKPOINT")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--batch-size", type=int, default=CleanupSettings.model_fields["cleanup_batch_size"].default,
                        help="default: the service's default")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--load-seconds", type=int, default=30,
                        help="each publisher load window (the one during cleanup lies within it); long enough "
                             "that one stall of a shared machine does not decide a p99")
    parser.add_argument("--pace", type=float, default=CleanupSettings.model_fields["cleanup_max_rows_per_second"]
                        .default, help="rows/s (0 = unpaced); default: the service's default")
    args = parser.parse_args()
    with servers() as (pg, kafka), publisher(pg, kafka) as url:
        action = f"{url}/action/publish_async_request"
        wrk(action, seconds=2, connections=args.connections, post=True)  # warm-up
        seed_expired(pg, args.rows)
        quiet = wrk(action, seconds=args.load_seconds, connections=args.connections, post=True)

        result: dict = {}

        def cleanup() -> None:
            started = time.perf_counter()
            report = run_cleanup(pg.url, args.batch_size, 3600, max_rows_per_second=args.pace)
            result.update(report=report, seconds=time.perf_counter() - started)

        thread = threading.Thread(target=cleanup)
        thread.start()
        busy = wrk(action, seconds=args.load_seconds, connections=args.connections, post=True)
        thread.join()
        report = result["report"]
        assert report.deleted == args.rows, report
    emit({"bench": "cleanup", "rows": args.rows, "batch_size": args.batch_size,
          "rows_per_s": round(report.deleted / result["seconds"]), "seconds": round(result["seconds"], 1),
          "batches": report.batches,
          "pace_rows_per_s": args.pace,
          "publisher_during_cleanup": busy, "baseline_publisher_without_cleanup": quiet,
          "ratio_p99": round(busy["p99_ms"] / quiet["p99_ms"], 2),
          "ratio_throughput": round(busy["requests_per_s"] / quiet["requests_per_s"], 2),
          "goal": {"p99_within": 1.2, "throughput_within": 0.9, "seconds_below": 60,
                   "met": busy["p99_ms"] <= 1.2 * quiet["p99_ms"]
                   and busy["requests_per_s"] >= 0.9 * quiet["requests_per_s"] and result["seconds"] < 60},
          "load_seconds": args.load_seconds,
          "cleanup_covered_load_window": round(min(1.0, result["seconds"] / args.load_seconds), 2)})


if __name__ == "__main__":
    main()
