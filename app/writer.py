"""Response writer: graphql.async.responses.v1 -> rows, idempotently by request_id; poison -> DLQ.

Per batch: classify (pure) -> one database transaction (first terminal state wins) -> one Kafka
transaction holding the DLQ messages and the consumer offsets. A crash before the Kafka commit
re-delivers the batch: the database write is a no-op the second time and the aborted DLQ copies
are invisible to read_committed readers, so nothing is duplicated and nothing is lost.
A transient database failure rewinds the batch and backs off; it is never dead-lettered.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import psycopg
from confluent_kafka import Consumer, KafkaException, Message, Producer, TopicPartition
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool

from app import logs
from app.db import is_transient, sync_pool
from app.envelope import InvalidResponse, ResponseOutcome, parse_response
from app.settings import WriterSettings

log = logging.getLogger("app.writer")

WRITE_OUTCOMES = """
UPDATE graphql.client_async_messages AS m
   SET status = r.status, response = r.result, error = r.error, completed_at = r.completed_at, updated_at = now()
  FROM unnest(%s::text[], %s::text[], %s::jsonb[], %s::jsonb[], %s::timestamptz[])
       AS r(request_id, status, result, error, completed_at)
 WHERE m.request_id = r.request_id AND m.status IN ('pending', 'published')
RETURNING m.request_id
"""
EXISTING = "SELECT request_id FROM graphql.client_async_messages WHERE request_id = ANY(%s)"


@dataclass
class BatchPlan:
    """What one batch of messages turns into, before any I/O."""

    outcomes: list[ResponseOutcome] = field(default_factory=list)
    outcome_messages: dict[str, Message] = field(default_factory=dict)
    dead_letters: list[tuple[Message, InvalidResponse]] = field(default_factory=list)
    duplicates_in_batch: int = 0


def plan_batch(messages: list[Message]) -> BatchPlan:
    """Classify; within a batch the first response per request_id wins (same key, same partition, in order)."""
    plan = BatchPlan()
    for msg in messages:
        verdict = parse_response(msg.value())
        if isinstance(verdict, InvalidResponse):
            plan.dead_letters.append((msg, verdict))
        elif verdict.request_id in plan.outcome_messages:
            plan.duplicates_in_batch += 1
        else:
            plan.outcomes.append(verdict)
            plan.outcome_messages[verdict.request_id] = msg
    return plan


def write_outcomes(conn: psycopg.Connection, outcomes: list[ResponseOutcome]) -> tuple[int, list[str], list[str]]:
    """One transaction: (rows written, unknown request_ids, request_ids the database rejected)."""
    if not outcomes:
        return 0, [], []
    try:
        with conn.transaction():
            updated, unknown = _write(conn, outcomes)
        return updated, unknown, []
    except psycopg.DatabaseError as exc:
        if is_transient(exc):
            raise
    # a value the database refuses: find it one by one so the rest still lands
    updated_total, unknown_total, rejected = 0, [], []
    with conn.transaction():
        for outcome in outcomes:
            try:
                with conn.transaction():
                    updated, unknown = _write(conn, [outcome])
                updated_total += updated
                unknown_total += unknown
            except psycopg.DatabaseError as exc:
                if is_transient(exc):
                    raise
                rejected.append(outcome.request_id)
    return updated_total, unknown_total, rejected


def _write(conn: psycopg.Connection, outcomes: list[ResponseOutcome]) -> tuple[int, list[str]]:
    ids = [o.request_id for o in outcomes]
    cur = conn.execute(WRITE_OUTCOMES, (
        ids, [o.status for o in outcomes], [Jsonb(o.result) for o in outcomes],
        [Jsonb(o.error) if o.error is not None else None for o in outcomes], [o.completed_at for o in outcomes],
    ))
    updated = {row[0] for row in cur.fetchall()}
    remaining = [i for i in ids if i not in updated]
    if not remaining:
        return len(updated), []
    existing = {row[0] for row in conn.execute(EXISTING, (remaining,)).fetchall()}
    return len(updated), [i for i in remaining if i not in existing]


def dlq_headers(msg: Message, reason: InvalidResponse) -> list[tuple[str, bytes]]:
    """Why and where from, Kafka Connect style, plus the message's own headers."""
    return [
        *(msg.headers() or []),
        ("dlq.reason", reason.dlq_reason.encode()),
        ("dlq.detail", reason.detail.encode()),
        ("dlq.source.topic", msg.topic().encode()),
        ("dlq.source.partition", str(msg.partition()).encode()),
        ("dlq.source.offset", str(msg.offset()).encode()),
        ("dlq.failed_at", datetime.now(UTC).isoformat().encode()),
    ]


def _offset_range(messages: list[Message]) -> dict[tuple[str, int], tuple[int, int]]:
    """(topic, partition) -> (lowest, highest) offset in the batch."""
    ranges: dict[tuple[str, int], tuple[int, int]] = {}
    for msg in messages:
        key, offset = (msg.topic(), msg.partition()), msg.offset()
        low, high = ranges.get(key, (offset, offset))
        ranges[key] = (min(low, offset), max(high, offset))
    return ranges


def next_offsets(messages: list[Message]) -> list[TopicPartition]:
    """What to commit: one past the highest offset of each partition."""
    return [TopicPartition(t, p, high + 1) for (t, p), (_, high) in sorted(_offset_range(messages).items())]


def first_offsets(messages: list[Message]) -> list[TopicPartition]:
    """Where to rewind to: the lowest offset of each partition."""
    return [TopicPartition(t, p, low) for (t, p), (low, _) in sorted(_offset_range(messages).items())]


@dataclass
class WriterStats:
    written: int = 0
    duplicates: int = 0
    dead_lettered: int = 0
    retries: int = 0
    batches: int = 0
    last_loop: float = field(default_factory=time.monotonic)


class ResponseWriter:
    def __init__(self, settings: WriterSettings, pool: ConnectionPool | None = None):
        self.settings = settings
        self.stop_event = threading.Event()
        self.stats = WriterStats()
        self._own_pool = pool is None
        self.pool = pool or sync_pool(settings)
        client = settings.client_config()
        self.consumer = Consumer(client | {
            "group.id": settings.writer_group_id,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
            "max.poll.interval.ms": 300_000,
        })
        self.producer = Producer(client | {
            "transactional.id": f"{settings.writer_transactional_id_prefix}-{settings.writer_instance_id}",
            "enable.idempotence": True,
            "linger.ms": 5,
        })
        self._backoff = 0.0

    def start(self) -> None:
        """Fence any earlier instance with the same transactional.id; wait for the broker if it is away."""
        while not self.stop_event.is_set():
            try:
                self.producer.init_transactions(10)
                break
            except KafkaException as exc:
                log.warning("kafka not ready for transactions; retrying", extra={"error": str(exc)})
                self.stop_event.wait(2)
        self.consumer.subscribe([self.settings.async_responses_topic])

    def run(self) -> None:
        self.start()
        while not self.stop_event.is_set():
            self.stats.last_loop = time.monotonic()
            messages = self.consumer.consume(self.settings.writer_batch_size, self.settings.writer_batch_wait_seconds)
            good = []
            for msg in messages:
                if msg.error():
                    log.warning("consumer error", extra={"error": str(msg.error())})
                else:
                    good.append(msg)
            if good:
                self.process(good)
            if self._backoff:
                self.stop_event.wait(self._backoff)
        self.close()

    def process(self, messages: list[Message]) -> bool:
        """Write one batch and commit it; False when it was rewound to be tried again."""
        plan = plan_batch(messages)
        try:
            with self.pool.connection() as conn:
                written, unknown, rejected = write_outcomes(conn, plan.outcomes)
        except Exception as exc:
            if not is_transient(exc):
                raise
            self._rewind(messages, "database unavailable", exc)
            return False
        dead_letters = list(plan.dead_letters)
        by_id = {o.request_id: o for o in plan.outcomes}
        for request_id in unknown:
            dead_letters.append((plan.outcome_messages[request_id],
                                 InvalidResponse("unknown_request", "no row with this request_id", request_id)))
        for request_id in rejected:
            dead_letters.append((plan.outcome_messages[request_id],
                                 InvalidResponse("db_rejected", f"database refused {by_id[request_id].status}",
                                                 request_id)))
        try:
            self._commit(messages, dead_letters)
        except KafkaException as exc:
            if exc.args and exc.args[0].fatal():
                raise
            self._rewind(messages, "kafka transaction failed", exc)
            return False
        self._backoff = 0.0
        self.stats.batches += 1
        self.stats.written += written
        # valid answers that changed nothing: the row already had its terminal state, or a repeat in this batch
        already_terminal = len(plan.outcomes) - written - len(unknown) - len(rejected)
        self.stats.duplicates += already_terminal + plan.duplicates_in_batch
        self.stats.dead_lettered += len(dead_letters)
        for msg, reason in dead_letters:
            log.warning("dead-lettered response", extra={
                "dlq_reason": reason.dlq_reason, "detail": reason.detail, "request_id": reason.request_id,
                "source_partition": msg.partition(), "source_offset": msg.offset()})
        return True

    def _commit(self, messages: list[Message], dead_letters: list[tuple[Message, InvalidResponse]]) -> None:
        self.producer.begin_transaction()
        try:
            for msg, reason in dead_letters:
                self.producer.produce(self.settings.async_dlq_topic, value=msg.value(), key=msg.key(),
                                      headers=dlq_headers(msg, reason))
            self.before_commit()
            self.producer.send_offsets_to_transaction(
                next_offsets(messages), self.consumer.consumer_group_metadata(), 30)
            self.producer.commit_transaction(30)
        except KafkaException as exc:
            if exc.args and exc.args[0].txn_requires_abort():
                self.producer.abort_transaction(30)
            raise

    def before_commit(self) -> None:
        """Seam for crash tests: runs after the database and DLQ writes, before the offsets commit."""

    def _rewind(self, messages: list[Message], why: str, exc: BaseException) -> None:
        self.stats.retries += 1
        self._backoff = min(self.settings.writer_retry_max_seconds, max(0.2, self._backoff * 2))
        log.warning(f"{why}; batch rewound for retry", extra={"error": repr(exc), "backoff_s": self._backoff})
        for tp in first_offsets(messages):
            try:
                self.consumer.seek(tp)
            except KafkaException:
                pass  # partition revoked meanwhile: its new owner starts from the committed offset

    def close(self) -> None:
        self.consumer.close()
        self.producer.flush(10)
        if self._own_pool:
            self.pool.close()
        log.info("writer stopped", extra=vars(self.stats))


def serve_health(writer: ResponseWriter, port: int) -> ThreadingHTTPServer:
    """/healthz answers 200 while the consume loop keeps turning."""

    class Health(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            stale = time.monotonic() - writer.stats.last_loop > 120
            self.send_response(503 if stale else 200)
            self.end_headers()
            self.wfile.write(b'{"status":"stale"}' if stale else b'{"status":"ok"}')

        def log_message(self, *_args) -> None:
            pass

    server = ThreadingHTTPServer(("0.0.0.0", port), Health)
    threading.Thread(target=server.serve_forever, daemon=True, name="health").start()
    return server


def main() -> None:
    logs.setup()
    settings = WriterSettings.load_or_exit()
    writer = ResponseWriter(settings)
    signal.signal(signal.SIGTERM, lambda *_: writer.stop_event.set())
    signal.signal(signal.SIGINT, lambda *_: writer.stop_event.set())
    if settings.health_port:
        serve_health(writer, settings.health_port)
    log.info("writer started", extra={"topic": settings.async_responses_topic, "group": settings.writer_group_id})
    writer.run()


if __name__ == "__main__":
    main()
