"""Test helpers for the real broker: readiness polling and reading a topic back."""

from __future__ import annotations

import time

from confluent_kafka import Consumer, KafkaException, TopicPartition

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
