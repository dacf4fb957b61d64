"""Writer under attack and under faults, on real PostgreSQL and Kafka (issue 7, findings 1-5).

Every consumed message must end in exactly one place (applied, a no-op duplicate, or the DLQ), the
writer must never die on a message nor wedge on a Kafka error, and database trouble that is not
about a value must be waited out, never dead-lettered.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import uuid

import httpx
import psycopg
import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource

from app.writer import FatalWriterError, ResponseWriter, serve_health
from scripts.servers import free_port
from tests.support.kafka_admin import create_topics, read_all, wait_until
from tests.support.raw_produce import produce_raw
from tests.support.services import running_writer
from tests.test_writer import committed_offset_total, ids, insert_rows, produce, refusing_trigger, response, rows

SPEC = '{"spec_version":"async.response.v1","request_id":"%s","status":"completed","result":%s}'


def hostile_responses(tag: str) -> list[tuple[str, str, bytes]]:
    """(key, expected dlq_reason, value): every class that used to escape parse_response or echo itself."""
    rid = f"req-{tag}"
    return [
        (f"{tag}-deep", "too_deep", (SPEC % (rid + "a", "[" * 5000 + "]" * 5000)).encode()),
        (f"{tag}-deep-dicts", "too_deep", (SPEC % (rid + "b", '{"a":' * 3000 + "1" + "}" * 3000)).encode()),
        (f"{tag}-bigint", "invalid_number", (SPEC % (rid + "c", "9" * 5000)).encode()),
        (f"{tag}-nan", "invalid_number", (SPEC % (rid + "d", '{"x": NaN}')).encode()),
        (f"{tag}-inf", "invalid_number", (SPEC % (rid + "e", "1e400")).encode()),
        (f"{tag}-neginf", "invalid_number", (SPEC % (rid + "f", "-Infinity")).encode()),
        (f"{tag}-surrogate", "unstorable_result", (SPEC % (rid + "g", '"\\ud800"')).encode()),
        (f"{tag}-surrogate-key", "unstorable_result", (SPEC % (rid + "h", '{"\\udfff": 1}')).encode()),
        (f"{tag}-not-utf8", "invalid_json", b'{"request_id": "\xff\xfe"}'),
        (f"{tag}-huge-spec", "unknown_spec_version",
         json.dumps({"spec_version": "x" * 200_000, "request_id": rid + "i", "status": "completed"}).encode()),
        (f"{tag}-huge-status", "invalid_status",
         json.dumps({"spec_version": "async.response.v1", "request_id": rid + "j", "status": "y" * 200_000}).encode()),
        (f"{tag}-huge-time", "invalid_completed_at",
         json.dumps({"spec_version": "async.response.v1", "request_id": rid + "k", "status": "completed",
                     "completed_at": "2026-01-01" + "0" * 100_000}).encode()),
        (f"{tag}-newline-id", "missing_request_id",
         json.dumps({"spec_version": "async.response.v1", "request_id": rid + "\n", "status": "completed"}).encode()),
    ]


def test_hostile_responses_are_dead_lettered_with_bounded_headers_and_the_writer_lives(kafka, db, writer_settings,
                                                                                       topics):
    good = ids(20)
    insert_rows(db, good)
    poison = hostile_responses(uuid.uuid4().hex[:6])
    produce(kafka, topics.responses, [(r, response(r)) for r in good[:10]] + [(k, v) for k, _, v in poison]
            + [(r, response(r)) for r in good[10:]])
    total = len(good) + len(poison)
    with running_writer(writer_settings) as (writer, failure):
        wait_until(lambda: committed_offset_total(kafka, writer_settings) == total, what="all committed")
        assert not failure
    assert {s[0] for s in rows(db, good).values()} == {"completed"}
    dead = read_all(kafka.client_config(), topics.dlq, expect=len(poison))
    assert sorted(m.key().decode() for m in dead) == sorted(k for k, _, _ in poison)  # each exactly once
    expected = {k: reason for k, reason, _ in poison}
    for m in dead:
        headers = dict(m.headers())
        assert headers["dlq.reason"].decode() == expected[m.key().decode()], m.key()
        assert len(headers["dlq.detail"]) <= 512  # never echoes the huge field
    assert writer.stats.dead_lettered == len(poison) and writer.stats.written == len(good)


@pytest.mark.parametrize("batch_size", [1, 4, 1000])
def test_every_message_ends_in_exactly_one_place_whatever_the_batch_size(kafka, db, writer_settings, topics,
                                                                         batch_size):
    """A refused first answer does not swallow a corrected second one; repeats for an unknown id are each
    dead-lettered; repeats for a terminal row are no-ops."""
    fixed, done, unknown = f"req-{uuid.uuid4().hex}", f"req-{uuid.uuid4().hex}", f"req-unknown-{uuid.uuid4().hex}"
    insert_rows(db, [fixed, done])
    # keyed by their request_id, as the contract says; offsets 0-7 in the one partition name them below
    messages = [(fixed, response(fixed, result={"refuse": True})), (fixed, response(fixed, result={"v": 2})),
                (fixed, response(fixed, result={"v": 3})), (done, response(done, result={"v": 1})),
                (done, response(done, "failed")), (unknown, response(unknown)), (unknown, response(unknown)),
                (unknown, response(unknown, "failed"))]
    settings = writer_settings.model_copy(update={"writer_batch_size": batch_size})
    # one partition keeps the consumption order the test reasons about
    topic = f"{topics.responses}.single"
    create_topics(AdminClient(kafka.client_config()), {topic: 1})
    settings = settings.model_copy(update={"async_responses_topic": topic})
    with refusing_trigger(db):
        produce(kafka, topic, messages)
        with running_writer(settings) as (writer, failure):
            wait_until(lambda: committed_offset_total(kafka, settings) == len(messages), what="all committed")
            assert not failure
    state = rows(db, [fixed, done])
    assert state[fixed] == ("completed", {"v": 2}, None)
    assert state[done] == ("completed", {"v": 1}, None)
    dead = read_all(kafka.client_config(), topics.dlq, expect=4)
    reasons = {int(dict(m.headers())["dlq.source.offset"]): dict(m.headers())["dlq.reason"].decode() for m in dead}
    assert len(dead) == 4
    assert reasons == {0: "db_rejected", 5: "unknown_request", 6: "unknown_request", 7: "unknown_request"}
    assert writer.stats.written == 2 and writer.stats.duplicates == 2 and writer.stats.dead_lettered == 4


def test_read_only_database_is_waited_out_never_dead_lettered(kafka, pg, db, writer_settings, topics):
    request_ids = ids(25)
    insert_rows(db, request_ids)
    admin = psycopg.connect(pg.url, autocommit=True)
    admin.execute("SET default_transaction_read_only = off")  # this session can always undo it
    admin.execute("ALTER SYSTEM SET default_transaction_read_only = on")
    admin.execute("SELECT pg_reload_conf()")
    try:
        produce(kafka, topics.responses, [(r, response(r)) for r in request_ids])
        with running_writer(writer_settings) as (writer, failure):
            wait_until(lambda: writer.stats.retries >= 3, what="writer retrying against a read-only database")
            assert committed_offset_total(kafka, writer_settings) == 0
            assert writer.stats.dead_lettered == 0
            admin.execute("ALTER SYSTEM RESET default_transaction_read_only")
            admin.execute("SELECT pg_reload_conf()")
            wait_until(lambda: committed_offset_total(kafka, writer_settings) == 25, timeout=60, what="recovery")
            assert not failure
    finally:
        admin.execute("ALTER SYSTEM RESET default_transaction_read_only")
        admin.execute("SELECT pg_reload_conf()")
        admin.close()
    assert {s[0] for s in rows(db, request_ids).values()} == {"completed"}
    assert read_all(kafka.client_config(), topics.dlq, expect=0, timeout=2) == []


def test_a_dlq_copy_over_the_limit_is_truncated_and_marked(kafka, db, writer_settings, topics):
    big_value = json.dumps({"spec_version": "nope", "blob": "z" * 1_000_000}).encode()
    big_headers = [(f"h{i}", b"v" * 1000) for i in range(20)]  # 20 KB of the message's own headers
    producer = Producer(kafka.client_config() | {"message.max.bytes": 1_040_000})
    producer.produce(topics.responses, key=b"big", value=big_value, headers=big_headers)
    assert producer.flush(10) == 0
    good = ids(3)
    insert_rows(db, good)
    produce(kafka, topics.responses, [(r, response(r)) for r in good])
    with running_writer(writer_settings) as (writer, failure):
        wait_until(lambda: committed_offset_total(kafka, writer_settings) == 4, what="all committed")
        assert not failure
    [dead] = read_all(kafka.client_config(), topics.dlq, expect=1)
    headers = dict(dead.headers())
    assert headers["dlq.reason"] == b"missing_request_id"
    assert int(headers["dlq.value_truncated_from"]) == len(big_value)
    assert not any(name.startswith("h") for name in headers)  # the message's own headers never travel
    assert big_value.startswith(dead.value()) and len(dead.value()) < len(big_value)
    assert {s[0] for s in rows(db, good).values()} == {"completed"}


def dead_letter_beside_three_answers(kafka, db, writer_settings, topics) -> tuple:
    """Three good answers after the one poison message already on the topic: the writer commits all four
    without failing; returns the one DLQ copy and the good request_ids."""
    good = ids(3)
    insert_rows(db, good)
    produce(kafka, topics.responses, [(r, response(r)) for r in good])
    with running_writer(writer_settings) as (_writer, failure):
        wait_until(lambda: failure or committed_offset_total(kafka, writer_settings) == 4, what="all committed")
        assert not failure, failure
    [dead] = read_all(kafka.client_config(), topics.dlq, expect=1)
    return dead, good


def test_a_header_name_that_is_not_utf8_is_dead_lettered_and_the_writer_lives(kafka, db, writer_settings, topics):
    """Found by a live probe: confluent-kafka cannot decode such a name (Message.headers() raised SystemError,
    and in a full test run crashed the process), which killed the writer before the DLQ copy was made, and again
    on every restart; the writer now never reads a message's headers. A Java or Go client may send such a name;
    the Python producer cannot, so it goes out through librdkafka's C API."""
    produce_raw(kafka.client_config(), topics.responses, b"bad-header", b"not json", [(b"\xffbad", b"v")],
                partition=1)
    dead, good = dead_letter_beside_three_answers(kafka, db, writer_settings, topics)
    headers = dict(dead.headers())
    assert headers["dlq.reason"] == b"invalid_json" and not any(n.startswith("\ufffd") for n in headers)
    assert (dead.key(), dead.value()) == (b"bad-header", b"not json")
    assert {s[0] for s in rows(db, good).values()} == {"completed"}


@pytest.mark.parametrize("own_headers", [
    [("h", b"")] * 5000,  # each header's two length varints, which the size check did not count
    [("\u0939" * 5000, b"")],  # 15,000 bytes of name, counted as 5,000 characters
], ids=["many-small-headers", "multibyte-header-name"])
def test_a_dlq_copy_near_the_limit_fits_the_producer_and_blocks_nothing(kafka, db, writer_settings, topics,
                                                                      own_headers):
    """Found by a live probe: a ~1 MB value with headers the size check undercounted made a DLQ copy the
    writer's own producer refused (MSG_SIZE_TOO_LARGE) on every retry, and no partition moved again."""
    producer = Producer(kafka.client_config() | {"message.max.bytes": 1_040_000})
    producer.produce(topics.responses, key=b"big", value=b"x" * 990_000, headers=own_headers, partition=2)
    assert producer.flush(10) == 0
    dead, good = dead_letter_beside_three_answers(kafka, db, writer_settings, topics)
    assert dict(dead.headers())["dlq.reason"] == b"invalid_json"
    assert {s[0] for s in rows(db, good).values()} == {"completed"}


def test_a_senders_own_dlq_headers_never_reach_the_dlq_copy(kafka, db, writer_settings, topics):
    """A reader takes the first `dlq.reason`: a sender's own must not stand before the writer's (found by a live
    probe, when the message's own headers still travelled with its copy)."""
    spoofed = [("dlq.reason", b"none"), ("DLQ.source.topic", b"elsewhere"), ("dlq.source.offset", b"999"),
               ("trace", b"kept")]
    producer = Producer(kafka.client_config())
    producer.produce(topics.responses, key=b"spoof", value=b"{", headers=spoofed)
    assert producer.flush(10) == 0
    with running_writer(writer_settings) as (writer, failure):
        wait_until(lambda: failure or committed_offset_total(kafka, writer_settings) == 1, what="committed")
        assert not failure, failure
    [dead] = read_all(kafka.client_config(), topics.dlq, expect=1)
    names = [name.lower() for name, _ in dead.headers()]
    assert names.count("dlq.reason") == names.count("dlq.source.topic") == names.count("dlq.source.offset") == 1
    headers = dict(dead.headers())
    assert (headers["dlq.reason"], headers["dlq.source.topic"]) == (b"invalid_json", topics.responses.encode())
    assert "trace" not in headers  # the message's own headers never travel (app/writer.py dlq_message)


def test_a_dlq_the_broker_refuses_aborts_turns_health_red_and_never_wedges(kafka, db, writer_settings, topics):
    """The DLQ topic takes at most 40 KB but the writer is configured for more: every transaction with that DLQ
    copy fails. Each failure must be aborted (the next transaction can begin) and /healthz must go red; a
    writer configured to the topic's limit then truncates the copy and gets through."""
    _set_topic_config(kafka, topics.dlq, "max.message.bytes", "40000")
    good = ids(2)
    insert_rows(db, good)
    # one partition, poison first: nothing behind it may commit, however the consumer splits the fetches
    producer = Producer(kafka.client_config())
    for key, value in [("poison", json.dumps({"junk": "q" * 60_000}).encode()), *((r, response(r)) for r in good)]:
        producer.produce(topics.responses, key=key, value=value, partition=0)
    assert producer.flush(10) == 0
    settings = writer_settings.model_copy(update={"writer_stall_seconds": 3, "writer_retry_max_seconds": 0.5})
    port = free_port()
    with running_writer(settings) as (writer, failure):
        server = serve_health(writer, port)
        try:
            wait_until(lambda: writer.stats.retries >= 3, what="transactions failing and being aborted")
            wait_until(lambda: httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 503,
                       what="health goes red while nothing commits")
            assert not failure, failure  # aborted and rewound each time, not wedged in _STATE, not dead
            assert committed_offset_total(kafka, settings) == 0
        finally:
            server.shutdown()
    fitted = settings.model_copy(update={"dlq_max_message_bytes": 39_000})
    with running_writer(fitted) as (writer, failure):
        wait_until(lambda: committed_offset_total(kafka, fitted) == 3, what="committed with a truncated copy")
        assert not failure
    [dead] = read_all(kafka.client_config(), topics.dlq, expect=1)
    assert dead.key() == b"poison" and "dlq.value_truncated_from" in dict(dead.headers())
    assert {s[0] for s in rows(db, good).values()} == {"completed"}


def _set_topic_config(kafka, topic: str, name: str, value: str) -> None:
    resource = ConfigResource("topic", topic, incremental_configs=[
        ConfigEntry(name, value, incremental_operation=AlterConfigOpType.SET)])
    admin = AdminClient(kafka.client_config())
    for future in admin.incremental_alter_configs([resource]).values():
        future.result(10)


def test_broker_paused_during_commit_is_retried_or_aborted_and_nothing_is_lost(kafka, db, writer_settings, topics):
    """SIGSTOP the broker right before the offsets go into the transaction; the calls time out."""
    request_ids = ids(10)
    insert_rows(db, request_ids)
    produce(kafka, topics.responses, [(r, response(r)) for r in request_ids] + [("poison", b"{nope")])
    paused = threading.Event()

    class PausingWriter(ResponseWriter):
        def before_commit(self) -> None:
            if not paused.is_set():
                paused.set()
                os.kill(kafka.pid, signal.SIGSTOP)
                threading.Timer(6, os.kill, (kafka.pid, signal.SIGCONT)).start()

    settings = writer_settings.model_copy(update={"writer_kafka_timeout_seconds": 2, "writer_kafka_retries": 3})
    try:
        with running_writer(settings, PausingWriter) as (writer, failure):
            wait_until(lambda: failure or committed_offset_total(kafka, settings) == 11, timeout=90,
                       what="commit after the pause")
    finally:
        os.kill(kafka.pid, signal.SIGCONT)
    if failure:  # the clean-exit path: a restarted writer (same transactional.id) finishes the work
        assert isinstance(failure[0], FatalWriterError)
        with running_writer(settings) as (_restarted, again):
            wait_until(lambda: committed_offset_total(kafka, settings) == 11, timeout=60, what="restart commits")
            assert not again
    assert paused.is_set()
    assert {s[0] for s in rows(db, request_ids).values()} == {"completed"}
    dead = read_all(kafka.client_config(), topics.dlq, expect=1)
    assert [m.key() for m in dead] == [b"poison"]  # aborted copies are invisible to read_committed readers


def test_a_replacement_with_the_same_identity_fences_the_old_instance(kafka, db, writer_settings, topics):
    """StatefulSet identity: the replacement's init_transactions fences the old pod, whose next commit is refused
    with a fatal error; it exits cleanly (FatalWriterError) instead of writing zombie transactions."""
    request_ids = ids(6)
    insert_rows(db, request_ids)
    with running_writer(writer_settings) as (_old, old_failure):
        produce(kafka, topics.responses, [(request_ids[0], response(request_ids[0]))])
        wait_until(lambda: committed_offset_total(kafka, writer_settings) == 1, what="old writer working")
        replacement = ResponseWriter(writer_settings)
        replacement.producer.init_transactions(10)  # what the new pod does first
        try:
            produce(kafka, topics.responses, [(r, response(r)) for r in request_ids[1:3]])
            wait_until(lambda: old_failure, what="the fenced instance to stop")
            assert isinstance(old_failure[0], FatalWriterError)
            assert committed_offset_total(kafka, writer_settings) == 1  # the zombie committed nothing more
        finally:
            replacement.close()
    with running_writer(writer_settings) as (_writer, failure):
        produce(kafka, topics.responses, [(r, response(r)) for r in request_ids[3:]])
        wait_until(lambda: committed_offset_total(kafka, writer_settings) == 6, what="replacement commits all")
        assert not failure
    assert {s[0] for s in rows(db, request_ids).values()} == {"completed"}


def test_poison_pause_read_only_and_sigkill_among_ten_thousand_responses(kafka, pg, db, topics):
    """The issue's fault run, the writer as the real process: at the end every good response's row is terminal,
    every poison message is in the DLQ exactly once, the offsets reach the end and the writer is running."""
    import random
    import subprocess
    import sys

    from tests.conftest import REPO
    from tests.test_service_processes import service_env
    from tests.test_writer import POISON

    good = [f"req-ft-{uuid.uuid4().hex}" for _ in range(10_000)]
    with db.cursor() as cur, cur.copy("COPY graphql.client_async_messages (request_id, client_id, handler, operation,"
                                      " status, expires_at) FROM STDIN") as copy:
        for r in good:
            copy.write_row((r, "c", "h", "o", "published", "2099-01-01T00:00:00Z"))
    tag = uuid.uuid4().hex[:6]
    poison = [(k, v) for k, _, v in hostile_responses(tag)] + [(f"{tag}-p{i}", v) for i, (_, v) in enumerate(POISON)]
    unknown = f"req-unknown-{tag}"
    poison += [(unknown, response(unknown))]
    messages = [(r, response(r, result={"i": i})) for i, r in enumerate(good)] + poison
    random.Random(7).shuffle(messages)
    thirds = [messages[:3000], messages[3000:6500], messages[6500:]]
    group = f"graphql-async-response-writer-{tag}"
    health = free_port()
    env = service_env(pg, kafka, topics, WRITER_GROUP_ID=group, WRITER_INSTANCE_ID="fault-0", HEALTH_PORT=str(health),
                      WRITER_BATCH_SIZE="500", WRITER_KAFKA_TIMEOUT_SECONDS="2", WRITER_RETRY_MAX_SECONDS="1")

    def start():
        return subprocess.Popen([sys.executable, "-m", "app.writer"], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)

    class Group:  # committed_offset_total reads these two fields
        writer_group_id, async_responses_topic = group, topics.responses

    def committed() -> int:
        return committed_offset_total(kafka, Group)

    writer = start()
    try:
        produce(kafka, topics.responses, thirds[0])
        wait_until(lambda: committed() > 500, timeout=60, what="first batches")
        os.kill(kafka.pid, signal.SIGSTOP)  # broker pause, whatever the writer is doing
        threading.Timer(5, os.kill, (kafka.pid, signal.SIGCONT)).start()
        wait_until(lambda: committed() >= 3000, timeout=120, what="first third after the pause")

        admin = psycopg.connect(pg.url, autocommit=True)
        admin.execute("SET default_transaction_read_only = off")
        admin.execute("ALTER SYSTEM SET default_transaction_read_only = on")
        admin.execute("SELECT pg_reload_conf()")
        try:
            produce(kafka, topics.responses, thirds[1])
            threading.Event().wait(3)  # the fault window's length, not a readiness stand-in
        finally:
            admin.execute("ALTER SYSTEM RESET default_transaction_read_only")
            admin.execute("SELECT pg_reload_conf()")
            admin.close()
        wait_until(lambda: committed() > 4000, timeout=120, what="progress after the read-only window")
        writer.kill()  # SIGKILL mid-stream: no shutdown, an open transaction left behind
        writer.wait(10)
        writer = start()  # same identity: fences the dead instance's transaction
        produce(kafka, topics.responses, thirds[2])
        wait_until(lambda: committed() == len(messages), timeout=180, what="offsets reach the end")
        assert writer.poll() is None
        wait_until(lambda: httpx.get(f"http://127.0.0.1:{health}/healthz").status_code == 200, what="writer healthy")
    finally:
        os.kill(kafka.pid, signal.SIGCONT)
        writer.terminate()
        writer.wait(60)
    statuses = dict(db.execute("SELECT status, count(*) FROM graphql.client_async_messages WHERE request_id = ANY(%s) "
                               "GROUP BY status", (good,)).fetchall())
    assert statuses == {"completed": 10_000}
    dead = read_all(kafka.client_config(), topics.dlq, expect=len(poison), timeout=60)
    assert sorted(m.key().decode() for m in dead) == sorted(k for k, _ in poison)  # each exactly once


def test_a_dlq_limit_too_small_for_what_a_copy_carries_besides_its_value_is_refused(writer_settings):
    """Own headers (16 KiB), key (1 KiB) and the dlq.* headers are never cut: under 32 KiB a copy could exceed
    the producer's limit whatever is left of its value, and wedge the writer (a review against rdkafka_msg.c)."""
    from app.settings import SettingsError, WriterSettings

    fields = writer_settings.model_dump() | {"async_database_url": writer_settings.async_database_url}
    for bytes_ in (16 * 1024, 1_048_000):
        with pytest.raises(SettingsError, match="DLQ_MAX_MESSAGE_BYTES"):
            WriterSettings.from_env(**(fields | {"dlq_max_message_bytes": bytes_}))
