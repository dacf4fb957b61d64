"""Publisher: requests/s and p50/p99 through the HTTP action handler under concurrent load (wrk),
beside a bare endpoint on the same server that does no I/O (/healthz). One publisher process. Also the
publisher's CPU per call (/proc) for both: a figure a shared machine's drift moves less than a rate.

    python -m bench.publisher_load [--seconds 10] [--connections 16]
"""

from __future__ import annotations

import argparse
import resource

import psycopg

from bench.common import CpuMeter, emit, publisher, servers, wrk


def measured(pids: dict[str, int], url: str, **kwargs) -> dict:
    """wrk's figures, the publisher's CPU milliseconds per completed call, and the cores each process used
    (wrk's from its rusage once reaped), over the same window."""
    meter, load_tool = CpuMeter(pids), resource.getrusage(resource.RUSAGE_CHILDREN)
    meter.start()
    result = wrk(url, **kwargs)
    cores = meter.stop()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cores["wrk"] = round((after.ru_utime + after.ru_stime - load_tool.ru_utime - load_tool.ru_stime)
                         / meter.elapsed, 2)
    per_call = cores["publisher"] * meter.elapsed * 1000 / max(1, result["requests"])
    return result | {"cpu_ms_per_call": round(per_call, 3), "cores": cores}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--publish-wait", default=None,
                        help="PUBLISH_WAIT_SECONDS for the publisher (0: answer once the row is committed)")
    args = parser.parse_args()
    extra = {"PUBLISH_WAIT_SECONDS": args.publish_wait} if args.publish_wait is not None else {}
    pids: dict[str, int] = {}
    with servers() as (pg, kafka), publisher(pg, kafka, pids, **extra) as url:
        pids |= {"postgres": pg.pid, "kafka": kafka.pid}
        wrk(f"{url}/action/publish_async_request", seconds=2, connections=args.connections, post=True)  # warm-up
        # the bare endpoint half before and half after the action: a shared machine's drift hits both alike
        bare_windows = [measured(pids, f"{url}/healthz", seconds=max(1, args.seconds // 2),
                                 connections=args.connections)]
        action = measured(pids, f"{url}/action/publish_async_request", seconds=args.seconds,
                          connections=args.connections, post=True)
        bare_windows.append(measured(pids, f"{url}/healthz", seconds=max(1, args.seconds // 2),
                                     connections=args.connections))
        bare = {key: round(sum(w[key] for w in bare_windows) / len(bare_windows), 3) for key in bare_windows[0]
                if key != "cores"}
        with psycopg.connect(pg.url) as conn:
            statuses = dict(conn.execute("SELECT status, count(*) FROM graphql.client_async_messages "
                                         "GROUP BY status").fetchall())
    emit({"bench": "publisher", "connections": args.connections, "seconds": args.seconds,
          "requests_per_s": action["requests_per_s"], "p50_ms": action["p50_ms"], "p99_ms": action["p99_ms"],
          "non_2xx": action["non_2xx"], "rows_by_status": statuses, "cpu_ms_per_call": action["cpu_ms_per_call"],
          "cores_used": action["cores"],
          "publish_wait_seconds": args.publish_wait or "default",
          "baseline_bare_endpoint": bare, "ratio_to_bare": round(action["requests_per_s"] / bare["requests_per_s"], 3),
          "cpu_ratio_bare_to_action": round(bare["cpu_ms_per_call"] / action["cpu_ms_per_call"], 3),
          "target": {"ratio_to_bare": 0.15, "p99_ms": 15},
          "met": action["requests_per_s"] >= 0.15 * bare["requests_per_s"] and action["p99_ms"] < 15
          and action["non_2xx"] == 0 and set(statuses) == {"published"}})


if __name__ == "__main__":
    main()
