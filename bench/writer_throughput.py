"""Writer: responses/s from Kafka into rows, beside two same-run figures on the same servers: a naive writer
(one DB transaction and one offset commit per message), and the database's own bound: a plain
`UPDATE … FROM unnest(…)` run back to back on the same kind of rows in the same batch size, no Kafka at all,
half of it before the writer and half after. Goal (issue 19): the writer at ≥ 0.8× that bound.

    python -m bench.writer_throughput [--messages 100000] [--batch-size 1000] [--naive-messages 3000]
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
import uuid
from datetime import UTC, datetime

import psycopg
from confluent_kafka import Consumer, Producer
from psycopg.types.json import Jsonb

from app.envelope import ResponseOutcome, parse_response
from app.settings import WriterSettings
from app.writer import ResponseWriter
from bench.common import CpuMeter, emit, servers

RESPONSES = "graphql.async.responses.v1"
# the database's bound: the plain `UPDATE … FROM unnest` of the same batch (the writer's statement also locks the
# batch's rows in key order first, which is part of what the bound measures the writer against)
RAW_UPDATE = """
UPDATE graphql.client_async_messages AS m
   SET status = r.status, response = r.result, error = r.error, completed_at = r.completed_at, updated_at = now()
  FROM unnest(%b::text[], %b::text[], %b::jsonb[], %b::jsonb[], %b::timestamptz[])
       AS r(request_id, status, result, error, completed_at)
 WHERE m.request_id = r.request_id AND m.status IN ('pending', 'published')
RETURNING m.request_id
"""


def settle(pg) -> None:
    """Dead tuples vacuumed and dirty pages written before a measured part, so no part inherits another's debt."""
    with psycopg.connect(pg.url, autocommit=True) as conn:
        conn.execute("VACUUM (ANALYZE) graphql.client_async_messages")
        conn.execute("CHECKPOINT")


def seed_rows(pg, prefix: str, count: int) -> None:
    with psycopg.connect(pg.url) as conn:
        conn.execute("INSERT INTO graphql.client_async_messages (request_id, client_id, handler, operation, status, "
                     "published_at, expires_at) SELECT %s || g, 'bench', 'h', 'op', 'published', now(), "
                     "now() + interval '1 hour' FROM generate_series(1, %s) g", (prefix, count))
        conn.execute("ANALYZE graphql.client_async_messages")


def seed(pg, kafka, prefix: str, count: int, topic: str = RESPONSES) -> None:
    """`count` published rows and one response each on the responses topic."""
    seed_rows(pg, prefix, count)
    producer = Producer(kafka.client_config() | {"linger.ms": 50, "batch.num.messages": 10000,
                                                 "compression.type": "lz4"})
    for i in range(1, count + 1):
        request_id = f"{prefix}{i}"
        producer.produce(topic, key=request_id, value=json.dumps({
            "spec_version": "async.response.v1", "request_id": request_id, "status": "completed",
            "result": {"invoice_number": f"INV-{i}", "amount": 42.5}}))
        if i % 10000 == 0:
            producer.poll(0)
    producer.flush(60)


def completed(pg, prefix: str) -> int:
    with psycopg.connect(pg.url) as conn:
        return conn.execute("SELECT count(*) FROM graphql.client_async_messages WHERE request_id LIKE %s "
                            "AND status = 'completed'", (prefix + "%",)).fetchone()[0]


def run_writer(pg, kafka, count: int, batch_size: int, topic: str = RESPONSES,
               meter: CpuMeter | None = None) -> float:
    settings = WriterSettings(async_database_url=pg.url, kafka_bootstrap_servers=kafka.bootstrap,
                              async_responses_topic=topic,
                              kafka_username="admin", kafka_password="admin-secret", health_port=0,
                              writer_group_id=f"bench-writer-{uuid.uuid4().hex[:6]}", writer_batch_size=batch_size,
                              writer_instance_id=uuid.uuid4().hex[:6], db_pool_max_size=2)
    writer = ResponseWriter(settings)
    first: list[float] = []
    original = writer.process  # the clock starts when the first batch reaches it

    def timed(messages):
        if not first:
            first.append(time.perf_counter())
            if meter:
                meter.start()
        return original(messages)

    writer.process = timed
    thread = threading.Thread(target=writer.run)
    thread.start()
    try:
        while writer.stats.written < count:
            time.sleep(0.05)
        rate = count / (time.perf_counter() - first[0])
        if meter:
            meter.stop()
        return rate
    finally:  # whatever happens here, the writer's thread must not outlive the benchmark
        writer.stop_event.set()
        thread.join(60)


def run_naive(pg, kafka, prefix: str, count: int) -> float:
    """One transaction per message, offsets committed per message: what a first version would do."""
    consumer = Consumer(kafka.client_config() | {"group.id": f"bench-naive-{uuid.uuid4().hex[:6]}",
                                                 "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    consumer.subscribe([RESPONSES])
    done, started = 0, None
    with psycopg.connect(pg.url) as conn:
        while done < count:
            msg = consumer.poll(1.0)
            if msg is None or msg.error():
                continue
            outcome = parse_response(msg.value())
            if not isinstance(outcome, ResponseOutcome) or not outcome.request_id.startswith(prefix):
                consumer.commit(msg, asynchronous=False)
                continue
            started = started or time.perf_counter()
            with conn.transaction():
                conn.execute("UPDATE graphql.client_async_messages SET status = %s, response = %s, "
                             "completed_at = %s, updated_at = now() WHERE request_id = %s "
                             "AND status IN ('pending', 'published')",
                             (outcome.status, json.dumps(outcome.result), outcome.completed_at, outcome.request_id))
            consumer.commit(msg, asynchronous=False)
            done += 1
    elapsed = time.perf_counter() - started
    consumer.close()
    return count / elapsed


def run_raw_bound(pg, prefix: str, count: int, batch_size: int, meter: CpuMeter | None = None) -> float:
    """The writer's UPDATE alone, one transaction per batch, with the values already parsed: rows/s."""
    ids = [f"{prefix}{i}" for i in range(1, count + 1)]
    results = [Jsonb({"invoice_number": f"INV-{i}", "amount": 42.5}) for i in range(1, count + 1)]
    with psycopg.connect(pg.url) as conn:
        if meter:
            meter.start()
        started = time.perf_counter()
        for start in range(0, count, batch_size):
            batch = slice(start, start + batch_size)
            size = len(ids[batch])
            with conn.transaction():
                conn.execute(RAW_UPDATE, (ids[batch], ["completed"] * size, results[batch], [None] * size,
                                              [datetime.now(UTC)] * size)).fetchall()
        rate = count / (time.perf_counter() - started)
        if meter:
            meter.stop()
        return rate


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--naive-messages", type=int, default=3000)
    args = parser.parse_args()
    with servers() as (pg, kafka):
        # the naive baseline reads its own prefix first, so both read the same kind of backlog
        seed(pg, kafka, "naive-", args.naive_messages)
        naive = run_naive(pg, kafka, "naive-", args.naive_messages)
        # cores each part used: the writer (this process: its thread, librdkafka's threads), PostgreSQL, Kafka
        pids = {"writer_process": os.getpid(), "kafka": kafka.pid,
                "postgresql": pg.pid}
        # the bound runs half before and half after the writer: a shared machine's drift hits both alike
        half = args.messages // 2
        alone = frozenset({"writer_process"})  # this process started the broker: its children are not the writer
        writer_cores, bound_cores = CpuMeter(pids, alone), [CpuMeter(pids, alone), CpuMeter(pids, alone)]
        seed_rows(pg, "raw-a-", half)
        settle(pg)
        bound_before = run_raw_bound(pg, "raw-a-", half, args.batch_size, meter=bound_cores[0])
        seed(pg, kafka, "w-", args.messages)
        settle(pg)
        rate = run_writer(pg, kafka, args.messages, args.batch_size, meter=writer_cores)
        assert completed(pg, "w-") == args.messages and completed(pg, "naive-") == args.naive_messages
        seed_rows(pg, "raw-b-", half)
        settle(pg)
        bound_after = run_raw_bound(pg, "raw-b-", half, args.batch_size, meter=bound_cores[1])
        assert completed(pg, "raw-a-") == completed(pg, "raw-b-") == half
        bound = 2 / (1 / bound_before + 1 / bound_after)  # rows over the time of both halves
    emit({"bench": "writer", "messages": args.messages, "batch_size": args.batch_size,
          "responses_per_s": round(rate), "baseline_naive_per_s": round(naive), "naive_messages": args.naive_messages,
          "speedup": round(rate / naive, 1), "bound_raw_update_per_s": round(bound),
          "bound_before_and_after_per_s": [round(bound_before), round(bound_after)],
          "ratio_to_bound": round(rate / bound, 2),
          "cores_used": {"writer_run": writer_cores.result, "bound_runs": [m.result for m in bound_cores]},
          "target": {"responses_per_s": 20000, "speedup": 10, "ratio_to_bound": 0.8},
          "met_ratio_to_bound": rate / bound >= 0.8})


if __name__ == "__main__":
    main()
