"""Shared set-up for the benchmarks: real PostgreSQL + Kafka in a temp dir, the publisher as a process, wrk."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import psycopg
from confluent_kafka.admin import AdminClient

from app.db import apply_schema
from scripts.kafka_admin import create_topics
from scripts.servers import REPO, KafkaBroker, PostgresServer, free_port, wait_for

ACTION_SECRET = "bench-action-secret-0123456789"


@contextlib.contextmanager
def servers(partitions: int = 3):
    """PostgreSQL with production's durable settings (BENCH_COMMIT_DELAY_US adds a stand-in for a replicated
    commit's latency, PostgreSQL's commit_delay) and a Kafka broker, both fresh."""
    tmp = Path(tempfile.mkdtemp(prefix="bench-"))
    pg = PostgresServer(tmp / "pg", owned_root=tmp, durable=True,
                        commit_delay_us=int(os.environ.get("BENCH_COMMIT_DELAY_US", "0")))
    kafka = KafkaBroker(tmp / "kafka")
    try:
        pg.start()
        kafka.start()
        with psycopg.connect(pg.url) as conn:
            apply_schema(conn)
        create_topics(AdminClient(kafka.client_config()), {"graphql.async.requests.v1": partitions,
                                                            "graphql.async.responses.v1": partitions,
                                                            "graphql.async.responses.dlq.v1": 1})
        yield pg, kafka
    finally:
        kafka.stop()
        pg.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def service_env(pg: PostgresServer, kafka: KafkaBroker, **extra: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "ASYNC_"))}
    return base | {"ASYNC_SECRETS_DIR": "/nonexistent", "ASYNC_DATABASE_URL": pg.url,
                   "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap, "KAFKA_USERNAME": "admin",
                   "KAFKA_PASSWORD": "admin-secret", "ASYNC_ACTION_SECRET": ACTION_SECRET, **extra}


@contextlib.contextmanager
def publisher(pg: PostgresServer, kafka: KafkaBroker, pids: dict[str, int] | None = None, **extra: str):
    """The publisher as a process; its pid goes into `pids["publisher"]` when a dict is given."""
    port = free_port()
    log = tempfile.NamedTemporaryFile(prefix="bench-publisher-", suffix=".log", delete=False)
    proc = subprocess.Popen([sys.executable, "-m", "app.publisher"], cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                            env=service_env(pg, kafka, PUBLISHER_HOST="127.0.0.1", PUBLISHER_PORT=str(port),
                                            **extra))
    if pids is not None:
        pids["publisher"] = proc.pid
    url = f"http://127.0.0.1:{port}"
    wait_for(lambda: httpx.get(f"{url}/readyz", timeout=1).status_code == 200, 30, "publisher", proc, Path(log.name))
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait(30)


WRK_POST = """
local counter = 0
local prefix = ""
function setup(thread)
  thread:set("tid", tostring(math.random(1, 1000000000)))
end
function init(args)
  prefix = "bench-" .. tid .. "-" .. tostring(os.time()) .. "-"
end
request = function()
  counter = counter + 1
  local body = '{"action":{"name":"publish_async_request"},"session_variables":{"x-hasura-role":"user",' ..
    '"x-hasura-user-id":"bench-user"},"input":{"input":{"request_id":"' .. prefix .. counter .. '",' ..
    '"handler":"billing-worker","operation":"invoice.create","payload":{"invoice_id":"inv_1","amount":42.5}}}}'
  return wrk.format("POST", nil, {["Content-Type"]="application/json",
                                  ["X-Async-Action-Secret"]="%s"}, body)
end
"""


def wrk(url: str, *, seconds: int, connections: int, threads: int = 1, post: bool = False) -> dict:
    """Run wrk against url; returns requests/s, p50/p99 ms, non-2xx count and the requests it completed."""
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is needed: apt-get install wrk")
    args = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency"]
    script = None
    if post:
        script = tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False)
        script.write(WRK_POST % ACTION_SECRET)
        script.close()
        args += ["-s", script.name]
    out = subprocess.run([*args, url], capture_output=True, text=True, check=True).stdout
    if script:
        os.unlink(script.name)
    return {"requests_per_s": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
            "p50_ms": _ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1)),
            "p99_ms": _ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1)),
            "non_2xx": int(m.group(1)) if (m := re.search(r"Non-2xx or 3xx responses: (\d+)", out)) else 0,
            "requests": int(re.search(r"(\d+) requests in", out).group(1))}


def _ms(value: str) -> float:
    number, unit = re.match(r"([\d.]+)(\w+)", value).groups()
    return round(float(number) * {"us": 0.001, "ms": 1, "s": 1000, "m": 60000}[unit], 3)


def _stat_fields(stat: Path) -> list[str]:
    """/proc/<pid>/stat after the command name (which may hold spaces and parentheses): field 3 (state) onwards."""
    return stat.read_text().rsplit(")", 1)[1].split()


def _cpu_ticks(pid: int, with_children: bool) -> int:
    """utime + stime of a process (+ cutime + cstime: children it has reaped), in clock ticks; 0 once it is gone."""
    try:
        fields = _stat_fields(Path(f"/proc/{pid}/stat"))
    except (FileNotFoundError, ProcessLookupError):
        return 0
    return int(fields[11]) + int(fields[12]) + (int(fields[13]) + int(fields[14]) if with_children else 0)


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(_stat_fields(stat)[1]) == pid:
                found.append(int(stat.parent.name))
        except (FileNotFoundError, ProcessLookupError, ValueError, IndexError):
            continue
    return found


def cpu_seconds(pid: int, with_children: bool = True) -> float:
    """CPU seconds of a process. With its children: the live ones, plus what its reaped ones used (PostgreSQL's
    backends come and go under the postmaster: one that exits between two readings moves into its cutime)."""
    ticks = _cpu_ticks(pid, with_children)
    if with_children:
        ticks += sum(_cpu_ticks(child, False) for child in _children(pid))
    return ticks / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """Cores used by each named process between start() and stop(): where a run's CPU went. A process is measured
    with its children (PostgreSQL's backends) unless its name is in `alone` (a process that started the broker
    itself must not count the broker's CPU as its own)."""

    def __init__(self, pids: dict[str, int], alone: frozenset[str] = frozenset()):
        self.pids, self.alone = dict(pids), alone
        self._start: dict[str, float] = {}
        self._started_at = 0.0
        self.elapsed = 0.0
        self.result: dict[str, float] = {}

    def _read(self, name: str) -> float:
        return cpu_seconds(self.pids[name], with_children=name not in self.alone)

    def start(self) -> None:
        self._started_at = time.monotonic()
        self._start = {name: self._read(name) for name in self.pids}

    def stop(self) -> dict[str, float]:
        self.elapsed = time.monotonic() - self._started_at
        self.result = {name: round((self._read(name) - self._start[name]) / self.elapsed, 2) for name in self.pids}
        return self.result


def machine() -> str:
    return f"{platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}"


def emit(record: dict) -> None:
    """One JSON line: the record, with the day, the machine and the stand-in commit delay it ran with."""
    print(json.dumps({"date": datetime.now(UTC).date().isoformat(), "machine": machine(),
                      "commit_delay_us": int(os.environ.get("BENCH_COMMIT_DELAY_US", "0")), **record}), flush=True)
