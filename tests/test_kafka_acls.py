"""The ACLs the Pulumi program declares, applied to the real broker (StandardAuthorizer): least privilege holds."""

from __future__ import annotations

import json
import uuid

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient

from app.settings import WriterSettings
from components.kafka_access import AsyncTopics, ServicePrincipals, WorkerPrincipal, service_acls, worker_acls
from tests.support.kafka_admin import apply_acls, create_topics, read_all, upsert_user, wait_until
from tests.support.services import running_writer

TOPICS = AsyncTopics()  # the production names: the ACLs are literal on them
PRINCIPALS = ServicePrincipals()
WORKER = WorkerPrincipal("billing")  # another team's worker, declared in the stack's kafka.workers
PASSWORDS = {PRINCIPALS.publisher: "publisher-pass-123", PRINCIPALS.writer: "writer-pass-456",
             WORKER.username: "worker-pass-789"}


@pytest.fixture(scope="module")
def secured(kafka):
    admin = AdminClient(kafka.client_config())
    create_topics(admin, {TOPICS.requests: 3, TOPICS.responses: 3, TOPICS.dlq: 1})
    for user, password in PASSWORDS.items():
        upsert_user(admin, user, password)
    apply_acls(admin, service_acls(TOPICS, PRINCIPALS) + worker_acls(TOPICS, WORKER))
    return kafka


def as_user(kafka, user: str) -> dict:
    return kafka.client_config(user, PASSWORDS[user])


def try_produce(config: dict, topic: str) -> KafkaError | None:
    """None when the broker accepted the write, else its error."""
    errors: list = []
    producer = Producer(config | {"message.timeout.ms": 8000})
    producer.produce(topic, key=b"k", value=b"{}", on_delivery=lambda err, _m: errors.append(err))
    producer.flush(10)
    return errors[0] if errors else KafkaError(KafkaError._MSG_TIMED_OUT)


def try_consume(config: dict, topic: str, group: str) -> KafkaError | None:
    consumer = Consumer(config | {"group.id": group, "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe([topic])
    try:
        for _ in range(20):
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            if msg.error():
                return msg.error()
            return None
        return None  # no error within the window (nothing to read is not a refusal)
    finally:
        consumer.close()


def authorized(error: KafkaError | None) -> bool:
    return error is None


def denied(error: KafkaError | None) -> bool:
    return error is not None and error.code() in (KafkaError.TOPIC_AUTHORIZATION_FAILED,
                                                  KafkaError.GROUP_AUTHORIZATION_FAILED)


def test_publisher_writes_requests_but_cannot_read_responses(secured):
    config = as_user(secured, PRINCIPALS.publisher)
    # new users and ACLs reach the broker through the metadata log: poll until they apply
    wait_until(lambda: authorized(try_produce(config, TOPICS.requests)), what="publisher may write requests")
    assert denied(try_produce(config, TOPICS.responses))
    assert denied(try_produce(config, TOPICS.dlq))
    assert denied(try_consume(config, TOPICS.responses, f"{PRINCIPALS.writer_group}-x"))
    assert denied(try_consume(config, TOPICS.requests, "any-group"))


def test_writer_reads_responses_writes_dlq_but_cannot_publish_requests(secured):
    config = as_user(secured, PRINCIPALS.writer)
    wait_until(lambda: authorized(try_produce(config, TOPICS.dlq)), what="writer may write the DLQ")
    assert denied(try_produce(config, TOPICS.requests))
    assert denied(try_produce(config, TOPICS.responses))
    assert denied(try_consume(config, TOPICS.requests, f"{PRINCIPALS.writer_group}-x"))
    assert denied(try_consume(config, TOPICS.responses, "some-other-group"))
    assert authorized(try_consume(config, TOPICS.responses, f"{PRINCIPALS.writer_group}-acl"))


def test_the_writer_runs_end_to_end_with_only_its_own_principal(secured, pg, db):
    """Transactions (DLQ + offsets) work with exactly the writer's ACLs: no hidden super-user dependency."""
    request_id, poison_key = f"req-{uuid.uuid4().hex}", f"poison-{uuid.uuid4().hex}"
    db.execute("INSERT INTO graphql.client_async_messages (request_id, client_id, handler, operation, status, "
               "expires_at) VALUES (%s, 'c', 'h', 'op', 'published', now() + interval '1 hour')", (request_id,))
    worker = Producer(secured.client_config())
    worker.produce(TOPICS.responses, key=request_id, value=json.dumps({
        "spec_version": "async.response.v1", "request_id": request_id, "status": "completed", "result": 1}))
    worker.produce(TOPICS.responses, key=poison_key, value=b"garbage")
    worker.flush(10)
    settings = WriterSettings(
        async_database_url=pg.url, kafka_bootstrap_servers=secured.bootstrap, kafka_username=PRINCIPALS.writer,
        kafka_password=PASSWORDS[PRINCIPALS.writer],
        writer_group_id=f"{PRINCIPALS.writer_group}-{uuid.uuid4().hex[:6]}",
        writer_instance_id=uuid.uuid4().hex[:6], health_port=0, writer_batch_wait_seconds=0.2)
    with running_writer(settings) as (_writer, failure):
        wait_until(lambda: db.execute("SELECT status FROM graphql.client_async_messages WHERE request_id = %s",
                                      (request_id,)).fetchone()[0] == "completed", what="row completed")
        wait_until(lambda: any(m.key() == poison_key.encode()
                               for m in read_all(secured.client_config(), TOPICS.dlq, expect=1, timeout=3)),
                   what="poison in the DLQ")
        assert not failure


def test_writer_cannot_use_a_foreign_transactional_id(secured):
    config = as_user(secured, PRINCIPALS.writer) | {"transactional.id": "someone-elses-txn"}
    producer = Producer(config)
    with pytest.raises(KafkaException) as refused:
        producer.init_transactions(15)
    assert refused.value.args[0].code() == KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED


def test_a_worker_reads_requests_in_its_own_group_and_writes_responses_only(secured):
    config = as_user(secured, WORKER.username)
    wait_until(lambda: authorized(try_produce(config, TOPICS.responses)), what="worker may write responses")
    assert authorized(try_consume(config, TOPICS.requests, WORKER.group))
    assert denied(try_consume(config, TOPICS.requests, PRINCIPALS.writer_group))  # nobody else's group
    assert denied(try_consume(config, TOPICS.responses, WORKER.group))  # never the other workers' answers
    assert denied(try_produce(config, TOPICS.requests))
    assert denied(try_produce(config, TOPICS.dlq))
