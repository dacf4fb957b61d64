"""The response writer on real PostgreSQL and Kafka: idempotency, DLQ, database outage, crash before commit."""

from __future__ import annotations

import contextlib
import json
import uuid
from datetime import UTC, datetime

import psycopg
import pytest
from confluent_kafka import Producer
from psycopg.types.json import Jsonb

from app.envelope import ResponseOutcome
from app.writer import WRITE_OUTCOMES, ResponseWriter, write_outcomes
from tests.support.kafka_admin import read_all, wait_until
from tests.support.services import running_writer


def insert_rows(db, request_ids: list[str], status: str = "published") -> None:
    with db.cursor() as cur:
        cur.executemany(
            "INSERT INTO graphql.client_async_messages (request_id, client_id, handler, operation, status, payload, "
            "expires_at) VALUES (%s, 'client-w', 'h', 'op', %s, %s, now() + interval '1 hour')",
            [(r, status, Jsonb({})) for r in request_ids])


def response(request_id: str, status: str = "completed", **extra) -> bytes:
    doc = {"spec_version": "async.response.v1", "request_id": request_id, "status": status, **extra}
    if status == "completed":
        doc.setdefault("result", {"ok": True})
    else:
        doc.setdefault("error", {"code": "E_WORKER", "message": "worker failed"})
    return json.dumps(doc).encode()


def produce(kafka, topic: str, messages: list[tuple[str | None, bytes | None]]) -> None:
    producer = Producer(kafka.client_config())
    for key, value in messages:
        producer.produce(topic, key=key, value=value)
    assert producer.flush(10) == 0


def rows(db, request_ids: list[str]) -> dict[str, tuple]:
    return {r[0]: r[1:] for r in db.execute(
        "SELECT request_id, status, response, error FROM graphql.client_async_messages WHERE request_id = ANY(%s)",
        (request_ids,))}


def committed_offset_total(kafka, settings) -> int:
    from confluent_kafka import Consumer, TopicPartition

    # read_uncommitted: the committed offsets, even while a writer's transaction holds pending ones (a crashed
    # writer's, until its successor fences it); under read_committed librdkafka waits for them to settle
    consumer = Consumer(kafka.client_config() | {"group.id": settings.writer_group_id,
                                                 "isolation.level": "read_uncommitted"})
    parts = consumer.list_topics(settings.async_responses_topic, timeout=10).topics[
        settings.async_responses_topic].partitions
    committed = consumer.committed([TopicPartition(settings.async_responses_topic, p) for p in parts], timeout=10)
    consumer.close()
    return sum(max(tp.offset, 0) for tp in committed)


@contextlib.contextmanager
def refusing_trigger(db):
    """A database rule about one value: answers whose result has {"refuse": true} raise SQLSTATE 22023."""
    db.execute("""
        CREATE OR REPLACE FUNCTION graphql.test_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          IF NEW.response @> '{"refuse": true}' THEN
            RAISE EXCEPTION 'refused by a test rule' USING ERRCODE = '22023';
          END IF;
          RETURN NEW;
        END $$""")
    db.execute("CREATE TRIGGER test_refuse BEFORE UPDATE ON graphql.client_async_messages "
               "FOR EACH ROW EXECUTE FUNCTION graphql.test_refuse()")
    try:
        yield
    finally:
        db.execute("DROP TRIGGER IF EXISTS test_refuse ON graphql.client_async_messages")


def ids(n: int) -> list[str]:
    return [f"req-{uuid.uuid4().hex}" for _ in range(n)]


def test_first_terminal_state_wins_and_duplicates_change_nothing(kafka, db, writer_settings, topics):
    done, failed = ids(20), ids(5)
    insert_rows(db, done + failed)
    messages = [(r, response(r, result={"n": i})) for i, r in enumerate(done)]
    messages += [(r, response(r, "failed")) for r in failed]
    # duplicates and late contradicting answers, in the same batch and in later batches
    messages += [(r, response(r, "failed")) for r in done[:5]] + [(r, response(r, result={"late": 1}))
                                                                   for r in failed]
    produce(kafka, topics.responses, messages)
    with running_writer(writer_settings) as (writer, failure):
        wait_until(lambda: committed_offset_total(kafka, writer_settings) == len(messages), what="all committed")
        produce(kafka, topics.responses, [(r, response(r, "failed")) for r in done[5:10]])
        wait_until(lambda: committed_offset_total(kafka, writer_settings) == len(messages) + 5, what="replays")
        assert not failure
    state = rows(db, done + failed)
    for i, r in enumerate(done):
        assert state[r] == ("completed", {"n": i}, None)
    for r in failed:
        assert state[r] == ("failed", None, {"code": "E_WORKER", "message": "worker failed"})
    assert writer.stats.written == 25 and writer.stats.dead_lettered == 0
    assert read_all(kafka.client_config(), topics.dlq, expect=0, timeout=2) == []


POISON = [
    ("invalid_json", b"{nope"),
    ("not_an_object", b"[1,2]"),
    ("missing_request_id", json.dumps({"spec_version": "async.response.v1", "status": "completed"}).encode()),
    ("unknown_spec_version", json.dumps({"spec_version": "async.response.v9", "request_id": "x1",
                                         "status": "completed"}).encode()),
    ("invalid_status", json.dumps({"spec_version": "async.response.v1", "request_id": "x2",
                                   "status": "done"}).encode()),
    ("invalid_error", json.dumps({"spec_version": "async.response.v1", "request_id": "x3",
                                  "status": "failed", "error": "boom"}).encode()),
    ("unstorable_result", json.dumps({"spec_version": "async.response.v1", "request_id": "x4",
                                      "status": "completed", "result": "a\u0000b"}).encode()),
    ("empty_message", None),
]


def test_poison_messages_go_to_the_dlq_with_reason_and_source(kafka, db, writer_settings, topics):
    good, unknown = ids(3), f"req-unknown-{uuid.uuid4().hex}"
    insert_rows(db, good)
    messages = [(f"poison-{i}", value) for i, (_, value) in enumerate(POISON)]
    messages += [(unknown, response(unknown))] + [(r, response(r)) for r in good]
    produce(kafka, topics.responses, messages)
    with running_writer(writer_settings) as (_writer, failure):
        wait_until(lambda: committed_offset_total(kafka, writer_settings) == len(messages), what="committed")
        assert not failure
    dead = read_all(kafka.client_config(), topics.dlq, expect=len(POISON) + 1)
    assert len(dead) == len(POISON) + 1
    by_key = {m.key().decode(): dict(m.headers()) for m in dead}
    for i, (reason, _value) in enumerate(POISON):
        headers = by_key[f"poison-{i}"]
        assert headers["dlq.reason"].decode() == reason
        assert headers["dlq.source.topic"].decode() == topics.responses
        assert int(headers["dlq.source.offset"]) >= 0 and int(headers["dlq.source.partition"]) in (0, 1, 2)
    assert by_key[unknown]["dlq.reason"] == b"unknown_request"
    dlq_values = {m.key().decode(): m.value() for m in dead}
    assert dlq_values["poison-0"] == b"{nope"  # the original bytes travel unchanged
    assert all(s[0] == "completed" for s in rows(db, good).values())


def test_an_answer_keyed_for_another_row_is_dead_lettered_and_an_unkeyed_one_applied(kafka, db, writer_settings,
                                                                                   topics):
    """Found by a live probe: key x-3 with body x-4 completed row 4. The key is what keeps one row's answers on
    one partition, in order; a mismatch is a sender's bug. No key at all: the body names the row."""
    keyed_wrong, unkeyed, empty_keyed, bystander = ids(4)
    insert_rows(db, [keyed_wrong, unkeyed, empty_keyed, bystander])
    produce(kafka, topics.responses, [(bystander, response(keyed_wrong)), (None, response(unkeyed)),
                                      ("", response(empty_keyed))])
    with running_writer(writer_settings) as (writer, failure):
        wait_until(lambda: failure or committed_offset_total(kafka, writer_settings) == 3, what="committed")
        assert not failure, failure
    state = {r: s[0] for r, s in rows(db, [keyed_wrong, unkeyed, empty_keyed, bystander]).items()}
    assert state == {keyed_wrong: "published", bystander: "published", unkeyed: "completed", empty_keyed: "completed"}
    [dead] = read_all(kafka.client_config(), topics.dlq, expect=1)
    assert dict(dead.headers())["dlq.reason"] == b"key_mismatch" and dead.key() == bystander.encode()


def test_database_outage_is_retried_never_dead_lettered(kafka, pg, db, writer_settings, topics):
    request_ids = ids(30)
    insert_rows(db, request_ids)
    pg.stop()
    try:
        produce(kafka, topics.responses, [(r, response(r)) for r in request_ids])
        with running_writer(writer_settings) as (writer, failure):
            wait_until(lambda: writer.stats.retries >= 2, what="writer retrying while the database is down")
            assert committed_offset_total(kafka, writer_settings) == 0
            pg.start()
            wait_until(lambda: committed_offset_total(kafka, writer_settings) == 30, timeout=60, what="recovery")
            assert not failure
    finally:
        pg.start()
    with psycopg.connect(pg.url) as conn:
        assert all(s[0] == "completed" for s in rows(conn, request_ids).values())
    assert read_all(kafka.client_config(), topics.dlq, expect=0, timeout=2) == []


def test_a_batch_read_across_a_rebalance_is_dropped_and_read_again_and_each_message_lands_once(
        kafka, db, writer_settings, topics):
    """The first writer waits in a long poll when a second one joins the group: the revocation, the new
    assignment and the first message of it (produced once the revocation is seen) all come within that one
    call, so the batch was read across a rebalance. It is dropped and its partitions read again from their
    committed offsets (skipping them would leave rows unanswered). Across both writers every answer lands once
    and every poison message is dead-lettered once."""
    before_ids, after_ids = ids(15), ids(30)
    insert_rows(db, before_ids + after_ids)
    produce(kafka, topics.responses, [(r, response(r)) for r in before_ids] + [("poison-1", b"{")])
    # the poll outlasts the rebalance (a few seconds); stopping waits for it to end
    waiting = writer_settings.model_copy(update={"writer_batch_wait_seconds": 30})
    with running_writer(waiting) as (first, first_failure):
        wait_until(lambda: committed_offset_total(kafka, writer_settings) == 16, what="the first writer alone")
        other = writer_settings.model_copy(update={"writer_instance_id": f"{writer_settings.writer_instance_id}-b"})
        with running_writer(other) as (second, second_failure):
            # not first.consumer.assignment(): asked from this thread while the writer's polls, it never answers
            wait_until(lambda: first._revocations >= 1, timeout=20, what="the first writer revoked, inside its poll")
            produce(kafka, topics.responses, [(r, response(r)) for r in after_ids] + [
                (f"poison-{n}", b"[") for n in range(2, 8)])
            wait_until(lambda: committed_offset_total(kafka, writer_settings) == 16 + 36, timeout=90,
                       what="every message committed")
            assert not first_failure and not second_failure, (first_failure, second_failure)
    assert first.stats.restarts == 1
    assert all(s[0] == "completed" for s in rows(db, before_ids + after_ids).values())
    assert (first.stats.written + second.stats.written, first.stats.duplicates + second.stats.duplicates) == (45, 0)
    dead = read_all(kafka.client_config(), topics.dlq, expect=7)
    assert sorted(m.key().decode() for m in dead) == sorted(f"poison-{n}" for n in range(1, 8))  # once each


class Crash(BaseException):
    """Stands for the process dying: raised past every handler, nothing is committed or closed."""


def test_crash_between_write_and_commit_duplicates_and_loses_nothing(kafka, db, writer_settings, topics):
    request_ids, unknown = ids(10), f"req-unknown-{uuid.uuid4().hex}"
    insert_rows(db, request_ids)
    produce(kafka, topics.responses,
            [(r, response(r, result={"attempt": 1})) for r in request_ids] + [(unknown, response(unknown))]
            + [("poison", b"not json")])

    class CrashingWriter(ResponseWriter):
        def before_commit(self) -> None:
            raise Crash()

    # one batch of exactly these 12 messages, however slowly the broker hands them over
    settings = writer_settings.model_copy(update={"writer_batch_size": 12, "writer_batch_wait_seconds": 20,
                                                  "writer_batch_linger_ms": 20_000})
    with running_writer(settings, CrashingWriter) as (crashed, failure):
        wait_until(lambda: failure, what="the writer to crash before its commit")
    assert isinstance(failure[0], Crash)
    # the database write happened, the offsets did not move
    assert all(s[0] == "completed" for s in rows(db, request_ids).values())
    assert committed_offset_total(kafka, writer_settings) == 0
    # the dead process's group session ends (closing commits nothing: auto-commit is off)
    crashed.consumer.close()
    assert committed_offset_total(kafka, writer_settings) == 0
    before = rows(db, request_ids)

    with running_writer(writer_settings) as (restarted, failure):  # same transactional.id: fences the dead one
        wait_until(lambda: committed_offset_total(kafka, writer_settings) == 12, what="redelivery committed")
        assert not failure
    assert rows(db, request_ids) == before
    assert restarted.stats.written == 0
    dead = read_all(kafka.client_config(), topics.dlq, expect=2)
    assert sorted(m.key().decode() for m in dead) == sorted([unknown, "poison"])  # once each, not twice


def offsets_pending(kafka, settings, topic: str) -> bool:
    """The group's offsets are held by an open transaction: a stable-offsets fetch (KIP-447's require_stable)
    answers UNSTABLE_OFFSET_COMMIT instead of the committed offsets."""
    from confluent_kafka import ConsumerGroupTopicPartitions, KafkaError, TopicPartition
    from confluent_kafka.admin import AdminClient

    # the admin client's offset fetch is not retried on UNSTABLE_OFFSET_COMMIT: it comes back per partition
    admin = AdminClient(kafka.client_config())
    request = [ConsumerGroupTopicPartitions(settings.writer_group_id, [TopicPartition(topic, p) for p in range(3)])]
    answer = admin.list_consumer_group_offsets(request, require_stable=True, request_timeout=10)[
        settings.writer_group_id].result()
    errors = {tp.error.code() for tp in answer.topic_partitions if tp.error is not None}
    assert errors <= {KafkaError.UNSTABLE_OFFSET_COMMIT}, errors
    return bool(errors)


def test_offsets_travel_during_the_database_write_and_count_only_after_it(kafka, pg, db, writer_settings, topics):
    """The batch's offsets reach the group coordinator while its database write waits (here on a row lock a test
    session holds): pending in the open Kafka transaction, not committed. Only after the write commits does the
    transaction commit, and with it the offsets."""
    request_ids = ids(8)
    insert_rows(db, request_ids)
    # one batch of all eight, as the crash tests pin it
    settings = writer_settings.model_copy(update={"writer_batch_size": 8, "writer_batch_wait_seconds": 5,
                                                  "writer_batch_linger_ms": 2000})
    assert not offsets_pending(kafka, settings, topics.responses)
    with psycopg.connect(pg.url) as holder:
        holder.execute("SELECT 1 FROM graphql.client_async_messages WHERE request_id = %s FOR UPDATE",
                       (min(request_ids),))
        produce(kafka, topics.responses, [(r, response(r)) for r in request_ids])
        with running_writer(settings) as (_writer, failure):
            wait_until(lambda: db.execute("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                                          "AND query LIKE '%%UPDATE graphql.client_async_messages%%'").fetchone()[0],
                       what="the writer's batch waiting on the row lock")
            wait_until(lambda: offsets_pending(kafka, settings, topics.responses),
                       what="the offsets pending in the open transaction")
            assert committed_offset_total(kafka, settings) == 0
            assert all(s[0] == "published" for s in rows(db, request_ids).values())
            holder.rollback()
            wait_until(lambda: committed_offset_total(kafka, settings) == 8, what="the commit after the write")
            assert not offsets_pending(kafka, settings, topics.responses)
            assert not failure
    assert all(s[0] == "completed" for s in rows(db, request_ids).values())


def test_a_database_write_longer_than_the_kafka_transaction_allows_is_rewound_not_fatal(
        kafka, pg, db, writer_settings, topics):
    """The Kafka transaction opens before the database write; a write that outlives its timeout would have the
    coordinator abort it and fence the producer (the writer could only exit). A row lock held past that timeout
    instead cancels the write at its budget (half the transaction timeout): the batch is rewound, retried
    smaller, and the writer lives on and lands it once the lock goes. A write that fits but is slow (over a
    quarter of the budget) keeps the smaller size; only fast writes grow it back."""

    class RecordingWriter(ResponseWriter):
        committed_sizes: list[int] = []

        def process(self, messages):
            committed = super().process(messages)
            if committed:
                self.committed_sizes.append(len(messages))
            return committed

    request_ids = sorted(ids(4))
    insert_rows(db, request_ids)
    # transaction timeout 4 s, write budget 2 s; the test broker aborts timed-out transactions within 1 s;
    # retries: an abort that times out on a busy machine is retried instead of ending the writer
    settings = writer_settings.model_copy(update={
        "writer_kafka_timeout_seconds": 1.0, "writer_kafka_retries": 10, "writer_retry_max_seconds": 0.5,
        "writer_batch_size": 4})
    with psycopg.connect(pg.url) as holder:
        holder.execute("SELECT 1 FROM graphql.client_async_messages WHERE request_id = %s FOR UPDATE",
                       (request_ids[0],))
        producer = Producer(kafka.client_config())
        for request_id in request_ids:  # one partition, the locked row first: every retry starts with it
            producer.produce(topics.responses, key=request_id, value=response(request_id), partition=0)
        assert producer.flush(10) == 0
        with running_writer(settings, RecordingWriter) as (writer, failure):
            assert writer.write_budget_seconds == 2.0
            # three budgets spent (>= 6 s, past the 4 s transaction timeout and the broker's 1 s abort sweep)
            too_slow = writer.metrics.rewinds.labels("database_too_slow")
            wait_until(lambda: failure or too_slow._value.get() >= 3, timeout=60, what="the write cancelled thrice")
            assert not failure, failure
            assert writer.batch_limit == 1  # a quarter after each: a smaller batch fits a slow database's budget
            assert all(s[0] == "published" for s in rows(db, request_ids).values())
            # let the next try wait past a quarter of its budget (0.5 s; the database's clock) before it may land
            wait_until(lambda: db.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND now() - query_start "
                "> interval '0.7 seconds' AND query LIKE '%%UPDATE graphql.client_async_messages%%'").fetchone()[0],
                interval=0.05, what="a write waiting past a quarter of its budget")
            holder.rollback()
            wait_until(lambda: failure or committed_offset_total(kafka, settings) == 4, timeout=60,
                       what="the batch landed after the lock went")
            assert not failure, failure
            # the slow write's size is kept (1), the fast one after it doubles (1 -> 2), and again (2 -> 4)
            assert writer.committed_sizes == [1, 1, 2]
            assert writer.batch_limit == 4
    assert all(s[0] == "completed" for s in rows(db, request_ids).values())
    assert writer.stats.written == 4


@pytest.mark.parametrize("batch_size", [1, 7])
def test_batch_size_does_not_change_the_outcome(kafka, db, writer_settings, topics, batch_size):
    request_ids = ids(15)
    insert_rows(db, request_ids, status="pending")  # a response may overtake the publisher's own mark
    produce(kafka, topics.responses, [(r, response(r)) for r in request_ids] * 2)
    settings = writer_settings.model_copy(update={"writer_batch_size": batch_size})
    with running_writer(settings) as (writer, failure):
        wait_until(lambda: committed_offset_total(kafka, settings) == 30, what="committed")
        assert not failure
    assert writer.stats.written == 15
    assert {s[0] for s in rows(db, request_ids).values()} == {"completed"}


def test_a_value_the_database_refuses_is_dead_lettered_and_the_rest_lands(kafka, db, writer_settings, topics):
    """A row-level rule of the database (a trigger raising a data exception) refuses one answer: only that message
    goes to the DLQ, with its SQLSTATE."""
    good, bad = ids(4), f"req-{uuid.uuid4().hex}"
    insert_rows(db, good + [bad])
    with refusing_trigger(db):
        produce(kafka, topics.responses, [(r, response(r)) for r in good[:2]]
                + [(bad, response(bad, result={"refuse": True}))] + [(r, response(r)) for r in good[2:]])
        with running_writer(writer_settings) as (writer, failure):
            wait_until(lambda: committed_offset_total(kafka, writer_settings) == 5, what="committed")
            assert not failure
    assert {s[0] for s in rows(db, good).values()} == {"completed"}
    assert rows(db, [bad])[bad][0] == "published"  # untouched, still waiting for a storable answer
    [dead] = read_all(kafka.client_config(), topics.dlq, expect=1)
    assert dead.key().decode() == bad and dict(dead.headers())["dlq.reason"] == b"db_rejected"
    assert b"22023" in dict(dead.headers())["dlq.detail"]
    assert writer.stats.written == 4 and writer.stats.dead_lettered == 1


def test_refused_values_are_found_by_halving_not_one_statement_per_answer(db):
    """Three refused answers among 64 (one of them followed by a storable answer for the same row), and an answer
    whose row does not exist inside a refused half: every answer ends in exactly one place, in a number of UPDATEs
    that grows with log2(batch) per refusal, not with the batch (a sequence counts the statements, even those
    rolled back to their savepoint)."""
    prefix = f"req-{uuid.uuid4().hex[:8]}-"
    request_ids = [f"{prefix}{n:03d}" for n in range(64)]
    refused, missing, retried = {request_ids[5], request_ids[6], request_ids[40]}, request_ids[7], request_ids[40]
    insert_rows(db, [r for r in request_ids if r != missing])
    now = datetime.now(UTC)
    outcomes = [(None, ResponseOutcome(r, "completed", {"refuse": True} if r in refused else {"n": 1}, None, now))
                for r in request_ids]
    outcomes.append((None, ResponseOutcome(retried, "completed", {"n": 2}, None, now)))  # the next answer lands
    session = db.execute("SELECT pg_backend_pid()").fetchone()[0]
    try:
        db.execute("CREATE SEQUENCE graphql.test_updates")
        # only this session's UPDATEs: another test's leftover thread must not add to the count
        db.execute("CREATE FUNCTION graphql.test_count_update() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                   f"IF pg_backend_pid() = {int(session)} THEN PERFORM nextval('graphql.test_updates'); END IF; "
                   "RETURN NULL; END $$")
        db.execute("CREATE TRIGGER test_count_update BEFORE UPDATE ON graphql.client_async_messages "
                   "FOR EACH STATEMENT EXECUTE FUNCTION graphql.test_count_update()")
        with refusing_trigger(db):
            before = db.execute("SELECT nextval('graphql.test_updates')").fetchone()[0]
            with db.transaction():
                result = write_outcomes(db, outcomes)
            updates = db.execute("SELECT nextval('graphql.test_updates')").fetchone()[0] - before - 1
    finally:
        db.execute("DROP TRIGGER IF EXISTS test_count_update ON graphql.client_async_messages")
        db.execute("DROP FUNCTION IF EXISTS graphql.test_count_update()")
        db.execute("DROP SEQUENCE IF EXISTS graphql.test_updates")
    assert (result.applied, result.duplicates, len(result.dead_letters)) == (63 - 2, 0, 4)
    assert sorted((r.request_id, r.dlq_reason) for _, r in result.dead_letters) == sorted(
        [*((r, "db_rejected") for r in refused), (missing, "unknown_request")])
    statuses = {r: s[0] for r, s in rows(db, request_ids).items()}
    assert {r for r, status in statuses.items() if status != "completed"} == refused - {retried}
    assert rows(db, [retried])[retried][1] == {"n": 2}
    # one round of 64 halving down to 3 refusals (at most 1 + 3 * 2 * 6), then one for the retried row's next
    # answer; one UPDATE per answer would be 66 (the previous writer's)
    assert updates <= 1 + 3 * 2 * 6 + 1, updates


def test_broker_outage_is_waited_out(kafka, db, writer_settings, topics):
    request_ids = ids(30)
    insert_rows(db, request_ids)
    produce(kafka, topics.responses, [(r, response(r)) for r in request_ids])
    kafka.stop()
    try:
        with running_writer(writer_settings) as (writer, failure):
            kafka.start()
            wait_until(lambda: committed_offset_total(kafka, writer_settings) == 30, timeout=90,
                       what="writer catches up after the broker returns")
            assert not failure
    finally:
        kafka.start()
    assert {s[0] for s in rows(db, request_ids).values()} == {"completed"}
    assert writer.stats.dead_lettered == 0
    assert read_all(kafka.client_config(), topics.dlq, expect=0, timeout=2) == []


def plan_nodes(node: dict):
    yield node
    for child in node.get("Plans", []):
        yield from plan_nodes(child)


def explain(db, plan_cache_mode: str, params: tuple) -> dict:
    """The writer's statement's plan: custom (the batch's values known, how the writer runs it) or generic (what a
    prepared statement may switch to; the writer never prepares it, see the test below)."""
    if plan_cache_mode == "force_custom_plan":
        return db.execute("EXPLAIN (FORMAT JSON) " + WRITE_OUTCOMES, params).fetchone()[0][0]
    numbered = WRITE_OUTCOMES
    for n in range(1, len(params) + 1):
        numbered = numbered.replace("%b", f"${n}", 1)
    name = f"writer_{uuid.uuid4().hex[:8]}"
    db.execute(f"PREPARE {name} AS {numbered}")
    try:
        db.execute(f"SET plan_cache_mode = {plan_cache_mode}")
        # EXPLAIN takes no bound parameters: the values go in as literals (a client-side cursor)
        cursor = psycopg.ClientCursor(db)
        cursor.execute(f"EXPLAIN (FORMAT JSON) EXECUTE {name}({', '.join(['%s'] * len(params))})", params)
        return cursor.fetchone()[0][0]
    finally:
        db.execute("RESET plan_cache_mode")
        db.execute(f"DEALLOCATE {name}")


def test_the_batch_update_never_runs_as_a_generic_plan(db):
    """psycopg prepares a statement after a few executions, and PostgreSQL then switches a prepared statement to a
    generic plan when it looks cheaper. The batch UPDATE's generic plan (the batch's size unknown, guessed at 10)
    joins the batch by a nested loop over unnest, every row against every row: 900 instead of 65 ms a batch of 1,000
    at 1M rows (the growth bench found it). The writer never prepares it: an unnamed statement is planned with its
    values every time. With psycopg told to prepare everything at once, a prepared statement would show here."""
    prefix = f"generic-{uuid.uuid4().hex[:8]}-"
    batches = [[f"{prefix}{b}-{i}" for i in range(50)] for b in range(2)]
    insert_rows(db, [r for batch in batches for r in batch])
    now = datetime.now(UTC)
    threshold = db.prepare_threshold
    db.prepare_threshold = 0  # prepare on the first execution: no cost model, no batch count to reach
    try:
        for batch in batches:
            with db.transaction():
                result = write_outcomes(db, [(None, ResponseOutcome(r, "completed", {"n": 1}, None, now))
                                             for r in batch])
            assert result.applied == len(batch)
        db.prepare_threshold = None  # this query names unnest itself: it must not be prepared
        prepared = db.execute("SELECT count(*) FROM pg_prepared_statements WHERE statement LIKE '%unnest%'").fetchone()
        assert prepared[0] == 0
        assert {s[0] for s in rows(db, [r for batch in batches for r in batch]).values()} == {"completed"}
    finally:
        db.prepare_threshold = threshold
        db.execute("DELETE FROM graphql.client_async_messages WHERE request_id LIKE %s", (f"{prefix}%",))


@pytest.mark.parametrize("plan_cache_mode", ["force_custom_plan", "force_generic_plan"])
def test_the_batch_update_reaches_its_rows_by_key_not_by_hashing_the_table(db, plan_cache_mode):
    """The batch UPDATE finds the rows it changes through the primary key. Joined with a CTE of the batch, it was
    planned from the CTE's default estimates as a hash join over a sequential scan of the whole table (152 ms
    instead of 44 ms a batch of 1,000 at 100k rows). Only the locking lookup may still scan, where the planner
    finds a batch a large share of the table; on YugabyteDB both go by the primary key."""
    prefix = f"scan-{uuid.uuid4().hex[:8]}-"
    db.execute("INSERT INTO graphql.client_async_messages (request_id, client_id, handler, operation, status, "
               "expires_at) SELECT %s || g, 'client-w', 'h', 'op', 'published', now() + interval '1 hour' "
               "FROM generate_series(1, 100000) g", (prefix,))
    db.execute("ANALYZE graphql.client_async_messages")
    answered = [f"{prefix}{i}" for i in range(1, 100_001, 100)]
    now = datetime.now(UTC)
    outcomes = [(None, ResponseOutcome(r, "completed", {"n": i}, None, now)) for i, r in enumerate(answered)]
    n = len(answered)
    try:
        plan = explain(db, plan_cache_mode, (answered, ["completed"] * n, [Jsonb({})] * n, [Jsonb({})] * n,
                                             [now] * n, answered))
        updated = [node for node in plan_nodes(plan["Plan"])
                   if node.get("Alias") == "m" and node["Node Type"] != "ModifyTable"]
        assert [node["Node Type"] for node in updated] == ["Index Scan"], updated
        with db.transaction():
            result = write_outcomes(db, [*outcomes, (None, ResponseOutcome(f"{prefix}none", "completed", {}, None,
                                                                            now))])
        assert result.applied == n and [r.dlq_reason for _, r in result.dead_letters] == ["unknown_request"]
        assert {s[0] for s in rows(db, answered).values()} == {"completed"}
    finally:
        db.execute("DELETE FROM graphql.client_async_messages WHERE request_id LIKE %s", (f"{prefix}%",))
