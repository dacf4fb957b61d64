"""Test helpers for the real broker: readiness polling and reading a topic back."""

from __future__ import annotations

import time

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition

from scripts.kafka_admin import apply_acls, create_topics, upsert_user

__all__ = ["apply_acls", "create_topics", "read_all", "upsert_user", "wait_until"]


def wait_until(check, timeout: float = 30.0, interval: float = 0.2, what: str = "condition"):
    """Poll `check` until it returns a truthy value (readiness polling, not a fixed sleep)."""
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
        except Exception as exc:  # noqa: BLE001 - keep polling; report the last failure
            last_exc = exc
        time.sleep(interval)
    raise TimeoutError(f"timed out waiting for {what}" + (f": {last_exc!r}" if last_exc else ""))


def read_all(config: dict, topic: str, *, expect: int, timeout: float = 30.0,
             isolation: str = "read_committed") -> list:
    """Read a topic from the beginning until `expect` messages arrived (or timeout), then a short drain."""
    consumer = Consumer(config | {"group.id": f"test-reader-{time.monotonic_ns()}", "enable.auto.commit": False,
                                  "isolation.level": isolation, "auto.offset.reset": "earliest"})
    metadata = consumer.list_topics(topic, timeout=10)
    consumer.assign([TopicPartition(topic, p, 0) for p in metadata.topics[topic].partitions])
    messages, deadline = [], time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            batch = consumer.consume(500, 0.5)
            for msg in batch:
                if msg.error():
                    raise KafkaException(msg.error())
                messages.append(msg)
            if len(messages) >= expect and not batch:
                break
    finally:
        consumer.close()
    return messages


def warm_up(config: dict, timeout: float = 90.0) -> None:
    """Pay the broker's one-time costs once per session, before any test's own deadline counts: the first
    idempotent producer id, the transaction log (__transaction_state) and the offsets topic
    (__consumer_offsets). A cold broker answers the first of each with COORDINATOR_LOAD_IN_PROGRESS and the
    client retries with backoff, which a test's 2 s publish wait would otherwise absorb."""
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient

    topic = "session-warm-up"
    create_topics(AdminClient(config), {topic: 1})
    delivered: list = []
    producer = Producer(config | {"enable.idempotence": True, "acks": "all"})
    producer.produce(topic, b"warm", on_delivery=lambda err, _msg: delivered.append(err))
    producer.flush(timeout)
    assert delivered == [None], f"warm-up produce failed: {delivered}"
    transactional = Producer(config | {"transactional.id": "session-warm-up"})
    transactional.init_transactions(timeout)
    transactional.begin_transaction()
    transactional.produce(topic, b"warm-txn")
    transactional.commit_transaction(timeout)
    consumer = Consumer(config | {"group.id": "session-warm-up", "auto.offset.reset": "earliest",
                                  "enable.auto.commit": False})
    try:
        consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])  # no committed-offset fetch: read at once
        # the offsets topic is created by the first commit; a loading coordinator refuses it for a while
        message = wait_until(lambda: (m := consumer.poll(1.0)) is not None and m.error() is None and m,
                             timeout=timeout, what="warm-up message")
        wait_until(lambda: consumer.commit(message=message, asynchronous=False), timeout=timeout,
                   what="warm-up offset commit")
    finally:
        consumer.close()
