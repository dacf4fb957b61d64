"""Publisher: requests/s and p50/p99 through the HTTP action handler under concurrent load (wrk),
beside a bare endpoint on the same server that does no I/O (/healthz). One publisher process.

    python -m bench.publisher_load [--seconds 10] [--connections 16]
"""

from __future__ import annotations

import argparse

import psycopg

from bench.common import emit, publisher, servers, wrk


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--publish-wait", default=None,
                        help="PUBLISH_WAIT_SECONDS for the publisher (0: answer once the row is committed)")
    args = parser.parse_args()
    extra = {"PUBLISH_WAIT_SECONDS": args.publish_wait} if args.publish_wait is not None else {}
    with servers() as (pg, kafka), publisher(pg, kafka, **extra) as url:
        wrk(f"{url}/action/publish_async_request", seconds=2, connections=args.connections, post=True)  # warm-up
        # the bare endpoint half before and half after the action: a shared machine's drift hits both alike
        bare_windows = [wrk(f"{url}/healthz", seconds=max(1, args.seconds // 2), connections=args.connections)]
        action = wrk(f"{url}/action/publish_async_request", seconds=args.seconds, connections=args.connections,
                     post=True)
        bare_windows.append(wrk(f"{url}/healthz", seconds=max(1, args.seconds // 2), connections=args.connections))
        bare = {key: round(sum(w[key] for w in bare_windows) / len(bare_windows), 3) for key in bare_windows[0]}
        with psycopg.connect(pg.url) as conn:
            statuses = dict(conn.execute("SELECT status, count(*) FROM graphql.client_async_messages "
                                         "GROUP BY status").fetchall())
    emit({"bench": "publisher", "connections": args.connections, "seconds": args.seconds,
          "requests_per_s": action["requests_per_s"], "p50_ms": action["p50_ms"], "p99_ms": action["p99_ms"],
          "non_2xx": action["non_2xx"], "rows_by_status": statuses,
          "publish_wait_seconds": args.publish_wait or "default",
          "baseline_bare_endpoint": bare, "ratio_to_bare": round(action["requests_per_s"] / bare["requests_per_s"], 3),
          "target": {"ratio_to_bare": 0.15, "p99_ms": 15},
          "met": action["requests_per_s"] >= 0.15 * bare["requests_per_s"] and action["p99_ms"] < 15})


if __name__ == "__main__":
    main()
