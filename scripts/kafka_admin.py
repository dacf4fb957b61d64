"""Kafka admin operations from the same ACL spec the Pulumi program declares: topics, SCRAM users, ACLs.

Used by the local run and by the tests against the real broker.
"""

from __future__ import annotations

from confluent_kafka import KafkaError, KafkaException
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


def create_topics(admin: AdminClient, partitions: dict[str, int], *, exist_ok: bool = False) -> None:
    futures = admin.create_topics([NewTopic(name, n, 1) for name, n in partitions.items()])
    for name, future in futures.items():
        try:
            future.result(30)
        except KafkaException as exc:
            if not (exist_ok and exc.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS):
                raise RuntimeError(f"creating topic {name}: {exc}") from None


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
