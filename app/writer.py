"""Response writer: graphql.async.responses.v1 -> rows, idempotently by request_id; poison -> DLQ.

Per batch: classify (pure, never raises) -> one database transaction (first terminal state wins) ->
one Kafka transaction holding the DLQ messages and the consumer offsets. The Kafka transaction opens
first and its offsets travel to the coordinator while the database writes (a round trip that used to
follow the write), but they count only at its commit, which still comes after the database's. A crash
before the Kafka commit re-delivers the batch: the database write is a no-op the second time and the aborted DLQ
copies are invisible to read_committed readers, so nothing is duplicated and nothing is lost.
Every consumed message ends in exactly one place: applied, a no-op (row already terminal) or the
DLQ, whatever the batch size. Only a value the database refuses is dead-lettered; any other
database failure rewinds the batch and backs off. Every Kafka failure inside a transaction ends
in abort-and-rewind, or in a clean exit (FatalWriterError) so Kubernetes restarts the pod.
"""

from __future__ import annotations

import functools
import logging
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TypeVar

import psycopg
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool

from app import logs, metrics
from app.db import is_database_unavailable, is_value_error, sync_pool
from app.envelope import InvalidResponse, ResponseLimits, ResponseOutcome, parse_response
from app.kafka_io import kafka_error
from app.settings import SettingsError, WriterSettings
from app.stop_signals import set_on_stop_signals

log = logging.getLogger("app.writer")
T = TypeVar("T")

# %b: arrays sent in binary; psycopg's text dump of a 1000-element jsonb[] costs ~11 ms, binary ~2 ms
# the batch's rows are locked in request_id order first, the order the publisher's mark takes too (app/store.py):
# two batches over the same rows wait for each other instead of deadlocking (and rewinding).
# = ANY(ARRAY(...)) of the locked ids: the UPDATE reaches its rows by primary key. Joined with a CTE of the batch, it
# was planned from the CTE's default estimates as a hash join over the whole table (152 vs 44 ms a batch at 100k rows)
WRITE_OUTCOMES = """
UPDATE graphql.client_async_messages AS m
   SET status = r.status, response = r.result, error = r.error, completed_at = r.completed_at, updated_at = now()
  FROM unnest(%b::text[], %b::text[], %b::jsonb[], %b::jsonb[], %b::timestamptz[])
       AS r(request_id, status, result, error, completed_at)
 WHERE m.request_id = r.request_id AND m.status IN ('pending', 'published') AND m.request_id = ANY(ARRAY(
       SELECT l.request_id FROM graphql.client_async_messages AS l
        WHERE l.request_id = ANY(%b::text[]) AND l.status IN ('pending', 'published')
        ORDER BY l.request_id FOR UPDATE))
RETURNING m.request_id
"""
EXISTING = "SELECT request_id FROM graphql.client_async_messages WHERE request_id = ANY(%s)"
# the rest of the batch's write budget as this transaction's statement_timeout (in ms): a row lock or a slow
# database cancels the statement (QueryCanceled, transient) before the open Kafka transaction times out
STATEMENT_BUDGET = "SELECT set_config('statement_timeout', %s, true)"


class WriteBudgetSpent(psycopg.OperationalError):
    """The batch's database write ran past its share of the Kafka transaction's timeout: rewind and retry."""

DLQ_DETAIL_BYTES = 512  # dlq.detail never grows with the message
DLQ_KEY_BYTES = 1024
DLQ_RECORD_OVERHEAD = 1024  # record and batch framing the broker counts beyond key, value and headers
DLQ_HEADER_FRAMING = 10  # a header's name and value lengths, one varint each (at most 5 bytes for an int32)


RESTART_OFFSETS_TIMEOUT_SECONDS = 5


class FatalWriterError(RuntimeError):
    """The producer cannot go on (fenced, fatal error, a transaction that will not abort): exit, be restarted."""


@dataclass
class BatchPlan:
    """What one batch of messages turns into, before any I/O."""

    outcomes: list[tuple[Message, ResponseOutcome]] = field(default_factory=list)  # valid, in consumption order
    dead_letters: list[tuple[Message, InvalidResponse]] = field(default_factory=list)


def keyed_by_its_request(key: bytes | None, verdict: ResponseOutcome | InvalidResponse
                         ) -> ResponseOutcome | InvalidResponse:
    """The contract keys a response by its request_id, so all answers for one row share a partition and keep
    their order; one keyed for another row is a sender's bug, dead-lettered rather than applied out of order.
    No key at all (or an empty one) is accepted: the body names the row."""
    if isinstance(verdict, InvalidResponse) or not key or key == verdict.request_id.encode():
        return verdict
    return InvalidResponse("key_mismatch", "the message key is not the body's request_id", verdict.request_id)


def plan_batch(messages: list[Message], limits: ResponseLimits = ResponseLimits()) -> BatchPlan:  # noqa: B008
    """Classify every message; one message's failure to classify dead-letters that message only."""
    plan = BatchPlan()
    for msg in messages:
        try:
            verdict = keyed_by_its_request(msg.key(), parse_response(msg.value(), limits=limits))
        except Exception as exc:  # noqa: BLE001 - parse_response should not raise; if it does, only this message pays
            verdict = InvalidResponse("invalid_message", f"{type(exc).__name__} while validating")
        if isinstance(verdict, InvalidResponse):
            plan.dead_letters.append((msg, verdict))
        else:
            plan.outcomes.append((msg, verdict))
    return plan


@dataclass
class WriteResult:
    applied: int = 0
    duplicates: int = 0  # valid answers that changed nothing: the row already had its terminal state
    dead_letters: list[tuple[Message, InvalidResponse]] = field(default_factory=list)  # unknown / db_rejected


def write_outcomes(conn: psycopg.Connection, outcomes: list[tuple[Message, ResponseOutcome]],
                   deadline: float | None = None) -> WriteResult:
    """One transaction. Answers for one request_id are tried in consumption order until one is applied or
    finds the row terminal; the rest are no-ops. Raises for any failure that is not about a value, and
    (WriteBudgetSpent, QueryCanceled) when a statement would run past `deadline` (time.monotonic())."""
    result = WriteResult()
    queues: dict[str, deque[int]] = {}
    for index, (_, outcome) in enumerate(outcomes):
        queues.setdefault(outcome.request_id, deque()).append(index)
    with conn.transaction():
        while queues:
            candidates = [outcomes[queue[0]][1] for queue in queues.values()]
            applied, unknown, rejected = _write_round(conn, candidates, deadline)
            for outcome in candidates:
                request_id = outcome.request_id
                queue = queues[request_id]
                if request_id in rejected:  # this answer cannot be stored; the next one for the row may
                    result.dead_letters.append((outcomes[queue.popleft()][0], InvalidResponse(
                        "db_rejected", f"database refused the {outcome.status} answer "
                                       f"(SQLSTATE {rejected[request_id]})", request_id)))
                    if not queue:
                        del queues[request_id]
                    continue
                if request_id in unknown:
                    result.dead_letters.extend((outcomes[i][0], InvalidResponse(
                        "unknown_request", "no row with this request_id", request_id)) for i in queue)
                else:
                    result.applied += request_id in applied
                    result.duplicates += len(queue) - (request_id in applied)
                del queues[request_id]
    return result


def _write_round(conn: psycopg.Connection, outcomes: list[ResponseOutcome], deadline: float | None
                 ) -> tuple[set[str], set[str], dict[str, str]]:
    """One answer per request_id: (applied ids, ids without a row, id -> SQLSTATE the database refused)."""
    try:
        with conn.transaction():
            applied, unknown = _write(conn, outcomes, deadline)
        return applied, unknown, {}
    except psycopg.Error as exc:
        if not is_value_error(exc):
            raise
        if len(outcomes) == 1:
            return set(), set(), {outcomes[0].request_id: exc.sqlstate or "?"}
    # a value the database refuses: find it by halving, so the rest still lands in a few statements rather
    # than one per answer (in key order, as the locks go: a half rolled back releases its row locks)
    ordered = sorted(outcomes, key=lambda o: o.request_id)
    middle = len(ordered) // 2
    applied, unknown, rejected = set(), set(), {}
    for half in (ordered[:middle], ordered[middle:]):
        half_applied, half_unknown, half_rejected = _write_round(conn, half, deadline)
        applied |= half_applied
        unknown |= half_unknown
        rejected |= half_rejected
    return applied, unknown, rejected


def _write(conn: psycopg.Connection, outcomes: list[ResponseOutcome], deadline: float | None
           ) -> tuple[set[str], set[str]]:
    ids = [o.request_id for o in outcomes]
    _limit_statement(conn, deadline)
    # never prepared: a prepared statement switches to a generic plan after a few batches, and that plan (the batch's
    # size unknown) joins the batch by a nested loop over unnest: 900 instead of 65 ms a batch of 1,000 at 1M rows
    cur = conn.execute(WRITE_OUTCOMES, (
        ids, [o.status for o in outcomes], [Jsonb(o.result) for o in outcomes],
        [Jsonb(o.error) if o.error is not None else None for o in outcomes], [o.completed_at for o in outcomes], ids,
    ), prepare=False)
    applied = {row[0] for row in cur.fetchall()}
    remaining = [i for i in ids if i not in applied]
    if not remaining:
        return applied, set()
    _limit_statement(conn, deadline)
    existing = {row[0] for row in conn.execute(EXISTING, (remaining,)).fetchall()}
    return applied, {i for i in remaining if i not in existing}


def _limit_statement(conn: psycopg.Connection, deadline: float | None) -> None:
    """The next statement may run until `deadline` and no longer (the server cancels it)."""
    if deadline is None:
        return
    remaining_ms = int((deadline - time.monotonic()) * 1000)
    if remaining_ms <= 0:
        raise WriteBudgetSpent("the batch's database write ran past its budget")
    conn.execute(STATEMENT_BUDGET, (str(remaining_ms),))


def _database_rewind(exc: BaseException) -> tuple[str, str]:
    """(metrics cause, log message) for a batch whose database write failed."""
    if isinstance(exc, (WriteBudgetSpent, psycopg.errors.QueryCanceled)):
        return "database_too_slow", "database write ran past its budget"
    if is_database_unavailable(exc):
        return "database_unavailable", "database unavailable"
    return "database_error", "database write failed"


def header_bytes(headers: list[tuple[str, bytes]]) -> int:
    """Headers' size as librdkafka counts it toward message.max.bytes: name and value in bytes, and two length
    varints each (rdkafka_header.c rd_kafka_header_add, rkhdr_ser_size)."""
    return sum(len(name.encode()) + len(value) + DLQ_HEADER_FRAMING for name, value in headers)


def dlq_message(msg: Message, reason: InvalidResponse, max_bytes: int
                ) -> tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]:
    """Key, value and headers of the DLQ copy, Kafka Connect style, never over `max_bytes` in all; a key or
    value that would not fit is cut and marked (`dlq.key_truncated_from`, `dlq.value_truncated_from` = the
    original size in bytes).

    The message's own headers are never read, so they do not travel: confluent-kafka's Message.headers() builds
    its list without checking each name's UTF-8 decode (confluent_kafka.c c_headers_to_py, Message_headers caches
    the half-built list), and on a name that is not UTF-8 it raised SystemError or, in a full test run, crashed
    the process (SIGSEGV). Every `dlq.*` header is therefore the writer's."""
    headers = [
        ("dlq.reason", reason.dlq_reason.encode()),
        ("dlq.detail", reason.detail.encode(errors="replace")[:DLQ_DETAIL_BYTES]),
        ("dlq.source.topic", msg.topic().encode()),
        ("dlq.source.partition", str(msg.partition()).encode()),
        ("dlq.source.offset", str(msg.offset()).encode()),
        ("dlq.failed_at", datetime.now(UTC).isoformat().encode()),
    ]
    key, value = msg.key(), msg.value()
    if key is not None and len(key) > DLQ_KEY_BYTES:
        headers.append(("dlq.key_truncated_from", str(len(key)).encode()))
        key = key[:DLQ_KEY_BYTES]
    if value is not None:
        marker = ("dlq.value_truncated_from", str(len(value)).encode())
        room = max_bytes - DLQ_RECORD_OVERHEAD - len(key or b"") - header_bytes(headers)
        if len(value) > room:
            headers.append(marker)
            value = value[:max(0, room - header_bytes([marker]))]
    return key, value, headers


def _readable(messages: list[Message]) -> list[Message]:
    """The messages without the consumer's error events (logged: they are not messages of the topic)."""
    readable = []
    for msg in messages:
        if msg.error():
            log.warning("consumer error", extra={"error": str(msg.error())})
        else:
            readable.append(msg)
    return readable


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
class ReadBatch:
    """Messages taken from the consumer, and the writer's revocation count before the call that took them:
    a rebalance since then may have handed their partitions to another writer."""

    messages: list[Message]
    revocations: int


@dataclass
class WriterStats:
    written: int = 0
    duplicates: int = 0
    dead_lettered: int = 0
    retries: int = 0
    batches: int = 0
    restarts: int = 0  # read messages dropped after a rebalance, partitions read again from their committed offsets
    last_loop: float = field(default_factory=time.monotonic)
    # last commit, or last moment nothing was waiting: liveness goes red when this gets old
    last_progress: float = field(default_factory=time.monotonic)


class ResponseWriter:
    def __init__(self, settings: WriterSettings, pool: ConnectionPool | None = None):
        self.settings = settings
        self.limits = ResponseLimits(settings.response_max_bytes, settings.response_max_depth)
        self.stop_event = threading.Event()
        self.stats = WriterStats()
        self.metrics = metrics.WriterMetrics()
        self.metrics.watch_health(self.stalled)
        self._own_pool = pool is None
        self.pool = pool or sync_pool(settings)
        # a named client (broker logs, quotas, `kafka-consumer-groups --describe`) instead of librdkafka's `rdkafka`
        client = settings.client_config() | {"client.id": f"graphql-async-writer-{settings.writer_instance_id}"}
        self.consumer = Consumer(client | {
            "group.id": settings.writer_group_id,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
            "max.poll.interval.ms": 300_000,
        })
        transaction_timeout = settings.writer_kafka_timeout_seconds * 4
        # half of it for the database write (from before the transaction opens to the last statement before
        # COMMIT); the database's COMMIT, the offsets call's wait and commit_transaction share the rest
        self.write_budget_seconds = transaction_timeout / 2
        # a quarter after a write that ran past its budget; doubled back after a commit whose write took under a
        # quarter of the budget (a size that barely fits is kept, not doubled into the next failure)
        self.batch_limit = settings.writer_batch_size
        self.metrics.batch_limit.set_function(lambda: self.batch_limit)
        self.producer = Producer(client | {
            "transactional.id": settings.transactional_id,
            "enable.idempotence": True,
            "linger.ms": 5,
            "message.max.bytes": settings.dlq_max_message_bytes + DLQ_RECORD_OVERHEAD,
            "transaction.timeout.ms": int(transaction_timeout * 1000),
        })
        # the lag is read on its own handle and thread: a loop that is stuck (database down) still shows it grow
        self.lag_monitor = LagMonitor(client, settings.writer_group_id, settings.async_responses_topic,
                                      settings.writer_lag_interval_seconds, self.metrics)
        # sends each batch's offsets to its transaction while this thread writes the batch to the database
        self._offsets_sender = ThreadPoolExecutor(max_workers=1, thread_name_prefix="writer-offsets")
        self._backoff = 0.0
        self._closed = False
        self._revocations = 0  # partitions revoked or lost so far (the rebalance callbacks count them)
        # partitions whose read messages were dropped (read across a rebalance): restarted from their committed
        # offsets before anything else is read; and where each restart put them, until a message moves them on
        self._to_restart: set[tuple[str, int]] = set()
        self._sought: dict[tuple[str, int], int] = {}

    def start(self) -> None:
        """Fence any earlier instance with the same transactional.id; wait for the broker if it is away."""
        while not self.stop_event.is_set():
            try:
                self.producer.init_transactions(10)
                break
            except KafkaException as exc:
                error = kafka_error(exc)
                if error is not None and error.fatal():
                    raise FatalWriterError(f"init_transactions: {error}") from exc
                log.warning("kafka not ready for transactions; retrying", extra={"error": str(exc)})
                self.stop_event.wait(2)
        self.consumer.subscribe([self.settings.async_responses_topic], on_revoke=self._revoked, on_lost=self._revoked)
        self.lag_monitor.start()

    def _revoked(self, _consumer: Consumer, _partitions: list[TopicPartition]) -> None:
        self._revocations += 1
        self._sought.clear()

    def run(self) -> None:
        """Until stopped; a FatalWriterError leaves the group at once (the batch stays uncommitted) and re-raises."""
        try:
            self.start()
            while not self.stop_event.is_set():
                self.stats.last_loop = time.monotonic()
                if self._to_restart and not self._restart_from_committed():
                    self.stop_event.wait(1)
                    continue
                batch = self._next_batch()
                if batch.messages and batch.revocations != self._revocations:  # read across a rebalance: maybe
                    self._to_restart |= {(m.topic(), m.partition()) for m in batch.messages}  # no longer ours
                    continue
                if batch.messages:
                    self.process(batch.messages)
                elif not self._backoff and not self._has_lag():  # a rewound batch waits, whatever position says
                    self.stats.last_progress = time.monotonic()
                if self._backoff:
                    self.stop_event.wait(self._backoff)
        finally:
            self.close()

    def _next_batch(self) -> ReadBatch:
        """Up to batch_limit messages (writer_batch_size, less after a write past its budget): wait (up to
        writer_batch_wait_seconds) for the first one only, then
        linger a few milliseconds for company. A backlog fills the batch at once; at low rates an answer no longer
        waits for a batch that never fills."""
        revocations = self._revocations
        first = self.consumer.poll(self.settings.writer_batch_wait_seconds)
        if first is None:
            return ReadBatch([], revocations)
        messages = [first]
        if self.batch_limit > 1:
            messages += self.consumer.consume(self.batch_limit - 1, self.settings.writer_batch_linger_ms / 1000)
        return ReadBatch(_readable(messages), revocations)

    def _restart_from_committed(self) -> bool:
        """The dropped messages' partitions that are still this writer's read again from their committed offsets
        (a message read after the new assignment is read again, never skipped; one committed already is never
        read back). False when the offsets could not be fetched: tried again before anything else is read."""
        try:
            # a partition that delivered nothing since it was assigned starts from its committed offset anyway;
            # asking for its offset could only wait on a previous owner's open transaction
            owned = [TopicPartition(t, p) for t, p in sorted(self._to_restart & self._assigned())]
            wanted = [TopicPartition(tp.topic, tp.partition)
                      for tp in (self.consumer.position(owned) if owned else []) if tp.offset >= 0]
            # short: a previous owner's open transaction holds its offsets until it ends (KIP-447 stable offsets)
            committed = self.consumer.committed(wanted, RESTART_OFFSETS_TIMEOUT_SECONDS) if wanted else []
            for tp in committed:
                if tp.error is not None:
                    raise KafkaException(tp.error)
                self._seek_committed(tp)
        except KafkaException as exc:
            log.warning("restart from the committed offsets failed; retrying", extra={"error": str(exc)})
            return False
        self._to_restart.clear()
        if not committed:
            return True
        self.stats.restarts += 1
        log.info("batch read across a rebalance dropped; its partitions read again from their committed offsets",
                 extra={"partitions": len(committed)})
        return True

    def _seek_committed(self, committed: TopicPartition) -> None:
        key = (committed.topic, committed.partition)
        target = committed.offset if committed.offset >= 0 else OFFSET_BEGINNING
        try:
            self.consumer.seek(TopicPartition(committed.topic, committed.partition, target))
        except KafkaException as exc:
            error = kafka_error(exc)
            if error is not None and error.code() in (KafkaError._STATE, KafkaError._PREV_IN_PROGRESS):
                return  # its fetch has not started yet: it will start from the committed offset
            raise
        if target < 0:  # from the beginning: lag counts from the low watermark (nothing known: no evidence)
            target, _high = self.consumer.get_watermark_offsets(committed, cached=True) or (-1, -1)
        if target >= 0:
            self._sought[key] = target

    def _assigned(self) -> set[tuple[str, int]]:
        return {(tp.topic, tp.partition) for tp in self.consumer.assignment()}

    def stalled(self) -> bool:
        """The loop stopped turning, or batches keep failing while messages wait."""
        now, limit = time.monotonic(), self.settings.writer_stall_seconds
        return now - self.stats.last_loop > limit or now - self.stats.last_progress > limit

    def _has_lag(self) -> bool:
        try:
            for tp in self.consumer.position(self.consumer.assignment()):
                _low, high = self.consumer.get_watermark_offsets(tp, cached=True) or (-1, -1)
                # a seek leaves the position unknown until the next message: where it was sought to stands in
                offset = tp.offset if tp.offset >= 0 else self._sought.get((tp.topic, tp.partition), -1)
                if offset >= 0 and high > offset:
                    return True
        except KafkaException:
            return False  # nothing known about the partitions: no evidence of lag
        return False

    def process(self, messages: list[Message]) -> bool:
        """Write one batch and commit it; False when it was rewound to be tried again."""
        started = time.perf_counter()
        plan = plan_batch(messages, self.limits)
        # the database's share of the Kafka transaction's timeout, counted from before it opens; past it the
        # coordinator would abort the transaction and fence this producer (the writer would have to exit)
        opened = time.monotonic()
        deadline = opened + self.write_budget_seconds
        try:
            offsets_sent = self._begin(messages, plan.dead_letters)
        except KafkaException as exc:
            self.metrics.rewinds.labels("kafka_transaction").inc()
            self._rewind(messages, "kafka transaction aborted", exc)
            return False
        try:
            with self.pool.connection(timeout=min(self.pool.timeout, max(0.001, deadline - time.monotonic()))) as conn:
                result = write_outcomes(conn, plan.outcomes, deadline)
            write_seconds = time.monotonic() - opened
        except Exception as exc:  # noqa: BLE001 - nothing here is about one message: wait, never dead-letter
            self._abandon(offsets_sent, exc)
            cause, why = _database_rewind(exc)
            if cause == "database_too_slow":  # a smaller batch fits the budget (a slow database, many refusals)
                self.batch_limit = max(1, self.batch_limit // 4)
            self.metrics.rewinds.labels(cause).inc()
            self._rewind(messages, why, exc)
            return False
        dead_letters = plan.dead_letters + result.dead_letters
        try:
            self._commit(offsets_sent, result.dead_letters)
        except KafkaException as exc:
            self.metrics.rewinds.labels("kafka_transaction").inc()
            self._rewind(messages, "kafka transaction aborted", exc)
            return False
        self.metrics.committed(result.applied, result.duplicates, [r.dlq_reason for _, r in dead_letters],
                               len(messages), time.perf_counter() - started)
        self._backoff = 0.0
        if write_seconds < self.write_budget_seconds / 4:
            self.batch_limit = min(self.settings.writer_batch_size, self.batch_limit * 2)
        self.stats.batches += 1
        self.stats.last_progress = time.monotonic()
        self.stats.written += result.applied
        self.stats.duplicates += result.duplicates
        self.stats.dead_lettered += len(dead_letters)
        for msg, reason in dead_letters:
            log.warning("dead-lettered response", extra={
                "dlq_reason": reason.dlq_reason, "detail": reason.detail[:DLQ_DETAIL_BYTES],
                "request_id": reason.request_id, "source_partition": msg.partition(), "source_offset": msg.offset()})
        return True

    def _begin(self, messages: list[Message], dead_letters: list[tuple[Message, InvalidResponse]]) -> Future:
        """Open the batch's Kafka transaction with the DLQ copies known before the database write, and start
        sending its offsets on the helper thread (the group metadata is read here, on the consuming thread: read
        from another thread while this one polls, it stalled both). A failure aborts it before re-raising."""
        try:
            self.producer.begin_transaction()
        except KafkaException as exc:  # only possible if a previous transaction was left open: never go on
            raise FatalWriterError(f"begin_transaction: {exc}") from exc
        try:
            self._produce_dead_letters(dead_letters)
            group, offsets = self.consumer.consumer_group_metadata(), next_offsets(messages)
        except KafkaException as exc:
            self._fail_transaction(exc)
            raise
        send = functools.partial(self.producer.send_offsets_to_transaction, offsets, group)
        return self._offsets_sender.submit(self._retrying, send)

    def _commit(self, offsets_sent: Future, dead_letters: list[tuple[Message, InvalidResponse]]) -> None:
        """After the database commit: the offsets are in, the database's DLQ copies join, the transaction
        commits. Any failure aborts it (or exits) before re-raising."""
        try:
            offsets_sent.result()
            self._produce_dead_letters(dead_letters)
            self.before_commit()
            self._retrying(self.producer.commit_transaction)
        except KafkaException as exc:
            self._fail_transaction(exc)
            raise

    def _abandon(self, offsets_sent: Future, cause: BaseException) -> None:
        """The database write failed: the transaction goes, once its offsets call has returned (two
        transactional calls at once are refused), without counting as a Kafka failure."""
        try:
            offsets_sent.result()
        except KafkaException as exc:
            error = kafka_error(exc)
            if error is not None and error.fatal():
                raise FatalWriterError(f"fatal producer error: {error}") from exc
        self._abort(cause, count=False)

    def _fail_transaction(self, exc: KafkaException) -> None:
        error = kafka_error(exc)
        if error is not None and error.fatal():
            raise FatalWriterError(f"fatal producer error: {error}") from exc
        self._abort(exc)

    def _produce_dead_letters(self, dead_letters: list[tuple[Message, InvalidResponse]]) -> None:
        for msg, reason in dead_letters:
            self._produce(*dlq_message(msg, reason, self.settings.dlq_max_message_bytes))

    def _produce(self, key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]]) -> None:
        while True:
            try:
                self.producer.produce(self.settings.async_dlq_topic, value=value, key=key, headers=headers)
                return
            except BufferError:  # local queue full: let deliveries drain
                self.producer.poll(0.5)

    def _retrying(self, call: Callable[[float], T]) -> T:
        """A transactional call (given its timeout) again after a retriable error (a timeout, a coordinator move),
        as librdkafka asks: it resumes the call, so no other transactional call may come in between."""
        attempts = self.settings.writer_kafka_retries
        for attempt in range(1, attempts + 1):
            try:
                return call(self.settings.writer_kafka_timeout_seconds)
            except KafkaException as exc:
                error = kafka_error(exc)
                if (error is None or not error.retriable() or error.txn_requires_abort() or error.fatal()
                        or attempt == attempts or self.stop_event.is_set()):
                    raise
                log.warning("kafka transactional call failed; retrying", extra={"error": str(exc), "attempt": attempt})
        raise AssertionError("unreachable")

    def _abort(self, cause: BaseException, *, count: bool = True) -> None:
        """Abort the open transaction so the next batch can begin one; exit if it cannot be aborted."""
        if count:
            self.metrics.aborts.inc()
        try:
            self._retrying(self.producer.abort_transaction)
        except KafkaException as exc:
            raise FatalWriterError(f"transaction could not be aborted after {cause}: {exc}") from exc

    def before_commit(self) -> None:
        """Seam for crash tests: runs after the database and DLQ writes, before the transaction (and with it the
        offsets) commits."""

    def _rewind(self, messages: list[Message], why: str, exc: BaseException) -> None:
        self.stats.retries += 1
        self._backoff = min(self.settings.writer_retry_max_seconds, max(0.2, self._backoff * 2))
        log.warning(f"{why}; batch rewound for retry", extra={"error": repr(exc)[:500], "backoff_s": self._backoff})
        for tp in first_offsets(messages):
            try:
                self.consumer.seek(tp)
            except KafkaException:
                continue  # partition revoked meanwhile: its new owner starts from the committed offset
            self._sought[(tp.topic, tp.partition)] = tp.offset

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.lag_monitor.stop()
        self._offsets_sender.shutdown(wait=True)  # idle: every batch waits for its offsets call
        self.consumer.close()  # leaves the group at once; nothing uncommitted is committed (auto-commit is off)
        try:
            self.producer.flush(10)
        except KafkaException as exc:  # a fenced or failed producer: nothing of ours is left to deliver
            log.warning("producer not flushed on close", extra={"error": str(exc)})
        if self._own_pool:
            self.pool.close()
        log.info("writer stopped", extra=vars(self.stats))


class LagMonitor:
    """Consumer lag of the writer's group on every partition of its topic: high watermark - committed offset.

    Its own consumer handle, never subscribed (it reads the group's offsets without joining the group), on
    its own thread: the figure keeps coming while the consume loop is stuck, and every writer replica reports
    the whole group, so a hung replica's partitions show their lag on the others (alerts take the max)."""

    def __init__(self, client: dict, group: str, topic: str, interval: float, writer_metrics: metrics.WriterMetrics):
        # read_uncommitted: the committed offsets as they are, without waiting out a writer's open transaction
        # (librdkafka asks the broker for stable offsets under read_committed, which refuses while offsets are pending)
        self._config = client | {"group.id": group, "enable.auto.commit": False, "isolation.level": "read_uncommitted"}
        self._topic, self._interval, self._metrics = topic, interval, writer_metrics
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="lag-monitor")
        self._consumer: Consumer | None = None

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(15)
        else:
            self.close()

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None

    def sample(self) -> dict[tuple[str, int], int]:
        """(topic, partition) -> lag; a partition the group never committed counts from its low watermark."""
        timeout = 10
        if self._consumer is None:
            self._consumer = Consumer(self._config)
        partitions = self._consumer.list_topics(self._topic, timeout=timeout).topics[self._topic].partitions
        committed = self._consumer.committed([TopicPartition(self._topic, p) for p in sorted(partitions)], timeout)
        lag = {}
        for tp in committed:
            low, high = self._consumer.get_watermark_offsets(tp, timeout=timeout)
            lag[(tp.topic, tp.partition)] = max(0, high - (tp.offset if tp.offset >= 0 else low))
        return lag

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                try:
                    self._metrics.set_lag(self.sample())
                except KafkaException as exc:  # the last figures stay; their timestamp shows they are old
                    log.warning("consumer lag not measured", extra={"error": str(exc)})
                self._stop.wait(self._interval)
        finally:
            self.close()


def serve_health(writer: ResponseWriter, port: int) -> ThreadingHTTPServer:
    """/healthz answers 200 while the writer makes progress (or has nothing to do), 503 when it is stuck;
    /metrics is the writer's Prometheus registry."""

    class Health(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            if self.path.split("?")[0] == "/metrics":
                self.send_response(200)
                self.send_header("Content-Type", CONTENT_TYPE_LATEST)
                self.end_headers()
                self.wfile.write(generate_latest(writer.metrics.registry))
                return
            stale = writer.stalled()
            self.send_response(503 if stale else 200)
            self.end_headers()
            self.wfile.write(b'{"status":"stalled"}' if stale else b'{"status":"ok"}')

        def log_message(self, *_args) -> None:
            pass

    server = ThreadingHTTPServer(("0.0.0.0", port), Health)
    threading.Thread(target=server.serve_forever, daemon=True, name="health").start()
    return server


def main() -> None:
    logs.setup()
    settings = WriterSettings.load_or_exit()
    try:
        writer = ResponseWriter(settings)
    except SettingsError as exc:  # e.g. SASL without credentials: found when the clients are configured
        print(f"configuration error: {exc}", file=sys.stderr)
        sys.exit(2)
    set_on_stop_signals(writer.stop_event)
    if settings.health_port:
        serve_health(writer, settings.health_port)
    log.info("writer started", extra={"topic": settings.async_responses_topic, "group": settings.writer_group_id,
                                      "transactional_id": settings.transactional_id})
    try:
        writer.run()
    except FatalWriterError as exc:
        # nothing was committed past the last good batch: a restarted pod re-reads from there
        log.critical("writer cannot continue; exiting for a restart", extra={"error": str(exc)})
        sys.exit(3)


if __name__ == "__main__":
    main()
