"""Topics, SCRAM users and ACLs on the real test broker, from the same spec the Pulumi program declares."""

from __future__ import annotations

import time

from confluent_kafka import Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import (
    AclBinding,
    AclOperation,
    AclPermissionType,
    AdminClient,
    NewTopic,
    ResourcePatternType,
    ResourceType,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialUpsertion,
)

from components.kafka_access import AclRule

_RESOURCE = {"Topic": ResourceType.TOPIC, "Group": ResourceType.GROUP,
             "TransactionalID": ResourceType.TRANSACTIONAL_ID, "Cluster": ResourceType.BROKER}
_PATTERN = {"Literal": ResourcePatternType.LITERAL, "Prefixed": ResourcePatternType.PREFIXED}
_OPERATION = {"Read": AclOperation.READ, "Write": AclOperation.WRITE, "Describe": AclOperation.DESCRIBE,
              "Create": AclOperation.CREATE, "IdempotentWrite": AclOperation.IDEMPOTENT_WRITE}


def create_topics(admin: AdminClient, partitions: dict[str, int]) -> None:
    futures = admin.create_topics([NewTopic(name, n, 1) for name, n in partitions.items()])
    for future in futures.values():
        future.result(30)


def upsert_user(admin: AdminClient, name: str, password: str) -> None:
    info = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_256, 8192)
    for future in admin.alter_user_scram_credentials(
            [UserScramCredentialUpsertion(name, info, password.encode())]).values():
        future.result(30)


def apply_acls(admin: AdminClient, rules: list[AclRule]) -> None:
    bindings = [
        AclBinding(_RESOURCE[r.resource_type], "kafka-cluster" if r.resource_type == "Cluster" else r.resource_name,
                   _PATTERN[r.pattern_type], r.principal, "*", _OPERATION[r.operation], AclPermissionType.ALLOW)
        for r in rules
    ]
    for future in admin.create_acls(bindings).values():
        future.result(30)


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
