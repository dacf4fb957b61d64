"""End to end: the time a client waits from the action call to its row being terminal, under open-loop load.

Publisher, writer and a worker that answers at once (scripts/demo_worker.py) run as real processes on a real
PostgreSQL and Kafka. `vegeta` (Go module proxy) sends at a constant rate whatever the answers do (open loop:
a slow answer does not delay the next call, so coordinated omission does not hide queueing). Per call:
vegeta's send timestamp → the row's `updated_at` when the writer made it terminal (the writer transaction's
`now()`; the worker's own `completed_at` has whole seconds only). Beside it, in the same run: the bound of a
bare produce→consume round trip on the same broker at the same rate.

    python -m bench.e2e_latency [--rates 200,1000,3000] [--seconds 5]
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import datetime
from pathlib import Path

import psycopg
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient

from bench.common import ACTION_SECRET, CpuMeter, emit, publisher, servers, service_env
from scripts.kafka_admin import create_topics
from scripts.servers import REPO, free_port

VEGETA = Path(os.environ.get("VEGETA_BIN", REPO / ".cache" / "bin" / "vegeta"))
GOAL_P99_MS, GOAL_RATE = 100.0, 1000


def percentiles(values_ms: list[float]) -> dict:
    if not values_ms:
        return {"p50_ms": None, "p99_ms": None, "max_ms": None}
    ordered = sorted(values_ms)
    return {"p50_ms": round(statistics.median(ordered), 2),
            "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], 2),
            "max_ms": round(ordered[-1], 2)}


@contextlib.contextmanager
def service(module: str, env: dict[str, str]):
    log = tempfile.NamedTemporaryFile(prefix=f"bench-{module}-", suffix=".log", delete=False)
    proc = subprocess.Popen([sys.executable, "-m", module], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        proc.terminate()
        proc.wait(30)


def targets_file(url: str, prefix: str, count: int) -> Path:
    """One JSON target per call, each with its own request_id (vegeta's `-format=json`)."""
    path = Path(tempfile.mkstemp(prefix="vegeta-", suffix=".jsonl")[1])
    with path.open("w") as out:
        for i in range(count):
            body = {"action": {"name": "publish_async_request"},
                    "session_variables": {"x-hasura-role": "user", "x-hasura-user-id": "bench-user"},
                    "input": {"input": {"request_id": f"{prefix}-{i}", "handler": "billing-worker",
                                        "operation": "invoice.create", "payload": {"invoice_id": "inv_1"}}}}
            out.write(json.dumps({"method": "POST", "url": url, "body": base64.b64encode(json.dumps(body).encode())
                                  .decode(), "header": {"Content-Type": ["application/json"],
                                                        "X-Async-Action-Secret": [ACTION_SECRET]}}) + "\n")
    return path


def attack(url: str, rate: int, seconds: int, prefix: str) -> tuple[dict[str, float], dict[int, int]]:
    """request_id → send time (epoch seconds) for every call answered 200, and the count of each status code."""
    targets = targets_file(url, prefix, rate * seconds)
    try:
        attack_run = subprocess.run([str(VEGETA), "attack", "-format=json", f"-targets={targets}", f"-rate={rate}/s",
                                     f"-duration={seconds}s", "-timeout=30s", "-max-workers=2000"],
                                    capture_output=True, check=True)
        encoded = subprocess.run([str(VEGETA), "encode", "--to", "json"], input=attack_run.stdout,
                                 capture_output=True, check=True).stdout
    finally:
        targets.unlink()
    sent: dict[str, float] = {}
    codes: dict[int, int] = {}
    for line in encoded.splitlines():
        result = json.loads(line)
        codes[result["code"]] = codes.get(result["code"], 0) + 1
        if result["code"] == 200:
            answer = json.loads(base64.b64decode(result["body"]))
            sent[answer["request_id"]] = datetime.fromisoformat(result["timestamp"]).timestamp()
    return sent, codes


def row_stages(pg_url: str, prefix: str, expected: int, deadline_s: float = 120) -> dict[str, tuple[float, ...]]:
    """Wait (bounded) until every accepted call's row is terminal; request_id → (created_at, published_at or None,
    updated_at) in epoch seconds."""
    deadline = time.monotonic() + deadline_s
    rows: dict[str, tuple[float, ...]] = {}
    with psycopg.connect(pg_url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            rows = {r[0]: tuple(r[1:]) for r in conn.execute(
                "SELECT request_id, extract(epoch FROM created_at)::float8, "
                "extract(epoch FROM published_at)::float8, "
                "extract(epoch FROM updated_at)::float8 FROM graphql.client_async_messages "
                "WHERE request_id LIKE %s AND status IN ('completed', 'failed')", (f"{prefix}-%",)).fetchall()}
            if len(rows) >= expected:
                break
            time.sleep(0.5)
    return rows


def bare_round_trip(kafka, rate: int, seconds: int) -> dict:
    """The broker's own bound: produce at `rate`, consume, time each message from send to receipt."""
    topic = f"bench-roundtrip-{uuid.uuid4().hex[:8]}"
    client = kafka.client_config()
    create_topics(AdminClient(client), {topic: 3})
    consumer = Consumer(client | {"group.id": topic, "auto.offset.reset": "earliest"})
    consumer.subscribe([topic])
    producer = Producer(client | {"linger.ms": 1, "enable.idempotence": True})
    producer.produce(topic, b"warm-up")
    producer.flush(10)
    latencies: list[float] = []
    total = rate * seconds
    done = threading.Event()

    def consume() -> None:
        seen = 0
        while seen < total + 1 and not done.is_set():
            msg = consumer.poll(0.5)
            if msg is None or msg.error():
                continue
            seen += 1
            if msg.value() != b"warm-up":
                latencies.append((time.time() - float(msg.value())) * 1000)

    reader = threading.Thread(target=consume)
    reader.start()
    start = time.monotonic()
    for i in range(total):
        # open loop: each message at its scheduled time, however the previous one fared
        delay = start + i / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        producer.produce(topic, str(time.time()).encode())
        producer.poll(0)
    producer.flush(30)
    reader.join(60)
    done.set()
    consumer.close()
    return {"messages": len(latencies), **percentiles(latencies)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rates", default="200,1000,3000")
    parser.add_argument("--seconds", type=int, default=5)
    args = parser.parse_args()
    if not VEGETA.exists():
        raise SystemExit(f"vegeta is needed at {VEGETA}: GOBIN=$PWD/.cache/bin go install "
                         "github.com/tsenart/vegeta/v12@v12.13.0 (bash scripts/dev.sh bench does it)")
    rates = [int(r) for r in args.rates.split(",")]
    results = []
    pids: dict[str, int] = {}
    with servers() as (pg, kafka), publisher(pg, kafka, pids) as url:
        env = service_env(pg, kafka)
        with service("app.writer", env | {"HEALTH_PORT": str(free_port()), "WRITER_INSTANCE_ID": "bench"}) as writer, \
                service("scripts.demo_worker", env) as worker:
            pids |= {"writer": writer.pid, "worker": worker.pid, "kafka": kafka.pid,
                     "postgresql": pg.pid}
            # warm-up: connections, partitions assigned, the first round trip made
            attack(f"{url}/action/publish_async_request", 50, 2, "warmup")
            row_stages(pg.url, "warmup", 1, 60)
            for rate in rates:
                prefix = f"e2e-{rate}-{uuid.uuid4().hex[:6]}"
                # cores each process used while vegeta sent and its answers were read (vegeta: this process's
                # reaped children, the attack and its encoding), all over the same elapsed time
                meter, load_tool = CpuMeter(pids), resource.getrusage(resource.RUSAGE_CHILDREN)
                meter.start()
                sent, codes = attack(f"{url}/action/publish_async_request", rate, args.seconds, prefix)
                cores = meter.stop()
                after = resource.getrusage(resource.RUSAGE_CHILDREN)
                cores["vegeta"] = round((after.ru_utime + after.ru_stime - load_tool.ru_utime - load_tool.ru_stime)
                                        / meter.elapsed, 2)
                stages = row_stages(pg.url, prefix, len(sent))
                waits = [(stages[rid][2] - at) * 1000 for rid, at in sent.items() if rid in stages]
                # where the wait goes: call → row stored, stored → marked published, published → answer written;
                # a row answered before its mark has no published_at (the mark skips terminal rows): counted apart
                marked = {rid: s for rid, s in stages.items() if rid in sent and s[1] is not None}
                by_stage = {name: percentiles([(s[b] - (sent[rid] if a < 0 else s[a])) * 1000
                                               for rid, s in marked.items()])
                            for name, a, b in (("stored", -1, 0), ("published", 0, 1), ("answered", 1, 2))}
                results.append({"rate_per_s": rate, "calls": rate * args.seconds, "codes": codes,
                                "terminal": len(waits), "not_terminal": len(sent) - len(waits),
                                **percentiles(waits),
                                "p50_ms_by_stage": {k: v["p50_ms"] for k, v in by_stage.items()},
                                "p99_ms_by_stage": {k: v["p99_ms"] for k, v in by_stage.items()},
                                "answered_before_marked": len(waits) - len(marked),
                                "cores_used_while_sending": cores,
                                "bound_bare_round_trip": bare_round_trip(kafka, rate, args.seconds)})
    crossing = next((r["rate_per_s"] for r in results if r["p99_ms"] is None or r["p99_ms"] >= GOAL_P99_MS), None)
    at_goal = next((r for r in results if r["rate_per_s"] == GOAL_RATE), None)
    emit({"bench": "e2e_latency", "seconds_per_rate": args.seconds, "rates": results,
          "p99_crosses_100ms_at_rate": crossing,
          "goal": {"p99_ms_below": GOAL_P99_MS, "at_rate": GOAL_RATE,
                   "met": bool(at_goal and at_goal["p99_ms"] is not None and at_goal["p99_ms"] < GOAL_P99_MS)}})


if __name__ == "__main__":
    main()
