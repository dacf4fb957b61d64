"""Growth: how the publisher, the writer and the cleanup cost grows with the table (issue 19).

One durable PostgreSQL grows through the sizes (default 0, 1M, 10M rows already in the table: completed,
unexpired rows of 1,000 clients, as a busy day leaves them). At each size, after `VACUUM (ANALYZE)` (what
autovacuum does for a table that size, done at once so runs compare) and a `CHECKPOINT` (before the publisher, the
writer and the bound alike, so none of them pays for the fill's dirty pages), it prints one JSON line with the publisher
(wrk, beside the bare endpoint in the same minute) and the writer (beside its raw `UPDATE … FROM unnest` bound
on the same table), each with its ratio and the ratio to the first size. Then the cleanup at each expired size
(default 1M, 10M expired rows on top of the live ones), unpaced, so the figure is the database's cost per row
rather than the pace setting (bench/cleanup_rate.py measures the pace against the publisher).

    python -m bench.growth [--sizes 0,1000000,10000000] [--expired 1000000,10000000] [--seconds 10]
"""

from __future__ import annotations

import argparse
import time

import psycopg
from confluent_kafka.admin import AdminClient

from app.cleanup import run_cleanup
from bench.common import emit, publisher, servers, wrk
from bench.writer_throughput import run_raw_bound, run_writer, seed, seed_rows, settle
from scripts.kafka_admin import create_topics

FILL_CHUNK = 500_000  # rows per INSERT … SELECT: one statement per chunk keeps each transaction's WAL bounded


def fill(pg, start: int, stop: int, *, expired: bool) -> None:
    """Rows start+1..stop: completed, small payloads, 1,000 clients; live for a day, or expired a minute ago."""
    kind, expiry = ("exp", "now() - interval '1 minute'") if expired else ("live", "now() + interval '1 day'")
    with psycopg.connect(pg.url, autocommit=True) as conn:
        for low in range(start, stop, FILL_CHUNK):
            high = min(stop, low + FILL_CHUNK)
            conn.execute(
                "INSERT INTO graphql.client_async_messages (request_id, client_id, handler, operation, status, "
                "payload, response, created_at, published_at, completed_at, expires_at) "
                f"SELECT '{kind}-' || g, 'client-' || (g %% 1000), 'billing-worker', 'invoice.create', 'completed', "
                "'{\"invoice_id\": \"inv_1\", \"amount\": 42.5}', '{\"invoice_number\": \"INV-1\"}', "
                "now() - interval '2 hours', now() - interval '2 hours', now() - interval '1 hour', "
                f"{expiry} FROM generate_series(%s::bigint, %s::bigint) g", (low + 1, high))
    settle(pg)


def table_bytes(pg) -> int:
    with psycopg.connect(pg.url) as conn:
        return conn.execute("SELECT pg_total_relation_size('graphql.client_async_messages')").fetchone()[0]


def measure_size(pg, kafka, rows: int, args, first: dict | None) -> dict:
    with publisher(pg, kafka) as url:
        action = f"{url}/action/publish_async_request"
        wrk(action, seconds=2, connections=args.connections, post=True)  # warm-up
        served = wrk(action, seconds=args.seconds, connections=args.connections, post=True)
        bare = wrk(f"{url}/healthz", seconds=args.seconds, connections=args.connections)
    prefix, topic = f"g{rows}-", f"graphql.async.responses.growth-{rows}"  # its own topic: no earlier backlog
    create_topics(AdminClient(kafka.client_config()), {topic: 3})
    seed(pg, kafka, prefix, args.messages, topic)
    settle(pg)  # the fill's and the publisher's dirty pages are written before the writer, not during it
    writer = run_writer(pg, kafka, args.messages, args.batch_size, topic)
    seed_rows(pg, f"raw-{prefix}", args.messages)
    settle(pg)
    bound = run_raw_bound(pg, f"raw-{prefix}", args.messages, args.batch_size)
    record = {"bench": "growth", "rows_in_table": rows, "table_mb": round(table_bytes(pg) / 2**20),
              "publisher": {"requests_per_s": served["requests_per_s"], "p99_ms": served["p99_ms"],
                            "non_2xx": served["non_2xx"], "baseline_bare_per_s": bare["requests_per_s"],
                            "ratio_to_bare": round(served["requests_per_s"] / bare["requests_per_s"], 3)},
              "writer": {"responses_per_s": round(writer), "bound_raw_update_per_s": round(bound),
                         "ratio_to_bound": round(writer / bound, 2)}}
    if first is not None:  # how the same figures moved since the first size, in the same run
        record["vs_first_size"] = {
            "publisher_per_s": round(served["requests_per_s"] / first["publisher"]["requests_per_s"], 2),
            "publisher_p99": round(served["p99_ms"] / first["publisher"]["p99_ms"], 2),
            "writer_per_s": round(writer / first["writer"]["responses_per_s"], 2),
            "raw_bound_per_s": round(bound / first["writer"]["bound_raw_update_per_s"], 2)}
    return record


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="0,1000000,10000000")
    parser.add_argument("--expired", default="1000000,10000000")
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--messages", type=int, default=20_000, help="responses the writer applies per size")
    parser.add_argument("--batch-size", type=int, default=1000)
    args = parser.parse_args()
    sizes = sorted(int(s) for s in args.sizes.split(",") if s)  # --sizes "": the cleanup figures alone
    with servers() as (pg, kafka):
        have, first = 0, None
        for rows in sizes:
            started = time.perf_counter()
            fill(pg, have, rows, expired=False)
            have = rows
            record = measure_size(pg, kafka, rows, args, first)
            record["fill_seconds"] = round(time.perf_counter() - started, 1)
            first = first or record
            emit(record)
        per_row_first = None
        for expired in sorted(int(s) for s in args.expired.split(",") if s):
            fill(pg, 0, expired, expired=True)
            started = time.perf_counter()
            report = run_cleanup(pg.url, args.batch_size, 24 * 3600, max_rows_per_second=0)
            seconds = time.perf_counter() - started
            assert report.deleted == expired, report
            rate = report.deleted / seconds
            per_row_first = per_row_first or rate
            emit({"bench": "growth-cleanup", "expired_rows": expired, "live_rows": have, "pace": "unpaced",
                  "rows_per_s": round(rate), "seconds": round(seconds, 1), "batches": report.batches,
                  "vs_first_size_rows_per_s": round(rate / per_row_first, 2)})


if __name__ == "__main__":
    main()
