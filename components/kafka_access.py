"""Who may do what on the broker: the one list both the Pulumi Kafka component and the real-broker tests use.

Pure data, no Pulumi import, so the tests can apply exactly these rules to a real broker.
The seed shared one principal between all async services; each service gets its own here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

ResourceType = Literal["Topic", "Group", "TransactionalID", "Cluster"]
PatternType = Literal["Literal", "Prefixed"]
Operation = Literal["Read", "Write", "Describe", "Create", "IdempotentWrite"]


@dataclass(frozen=True)
class AclRule:
    principal: str  # "User:<name>"
    resource_type: ResourceType
    resource_name: str
    pattern_type: PatternType
    operation: Operation

    @property
    def slug(self) -> str:
        user = self.principal.split(":", 1)[1]
        resource = self.resource_name.replace(".", "-")
        return f"{user}-{self.operation.lower()}-{self.resource_type.lower()}-{resource}"


@dataclass(frozen=True)
class AsyncTopics:
    requests: str = "graphql.async.requests.v1"
    responses: str = "graphql.async.responses.v1"
    dlq: str = "graphql.async.responses.dlq.v1"


@dataclass(frozen=True)
class ServicePrincipals:
    publisher: str = "graphql-async-publisher"
    writer: str = "graphql-async-writer"
    writer_group: str = "graphql-async-response-writer"
    writer_transactional_id: str = "graphql-async-response-writer"


@dataclass(frozen=True)
class WorkerPrincipal:
    """Another team's worker: reads request envelopes, writes responses, commits offsets in its own group."""

    name: str
    consumer_group: str | None = None

    @property
    def username(self) -> str:
        return f"graphql-async-worker-{self.name}"

    @property
    def group(self) -> str:
        return self.consumer_group or self.username


def worker_acls(topics: AsyncTopics, worker: WorkerPrincipal) -> list[AclRule]:
    """Least privilege for a worker: nothing on the DLQ, nobody else's group, no transactional ids. Write on the
    responses topic is enough for librdkafka's idempotent producer (Kafka 3+: IdempotentWrite is implied)."""
    user = f"User:{worker.username}"
    return [
        AclRule(user, "Topic", topics.requests, "Literal", "Read"),
        AclRule(user, "Topic", topics.requests, "Literal", "Describe"),
        AclRule(user, "Group", worker.group, "Literal", "Read"),
        AclRule(user, "Topic", topics.responses, "Literal", "Write"),
        AclRule(user, "Topic", topics.responses, "Literal", "Describe"),
    ]


def service_acls(topics: AsyncTopics, principals: ServicePrincipals) -> list[AclRule]:
    """Least privilege: the publisher writes requests; the writer reads responses and writes the DLQ."""
    publisher, writer = f"User:{principals.publisher}", f"User:{principals.writer}"
    return [
        AclRule(publisher, "Topic", topics.requests, "Literal", "Write"),
        AclRule(publisher, "Topic", topics.requests, "Literal", "Describe"),
        AclRule(writer, "Topic", topics.responses, "Literal", "Read"),
        AclRule(writer, "Topic", topics.responses, "Literal", "Describe"),
        # prefixed: replicas and blue/green deployments use <group>-<suffix>
        AclRule(writer, "Group", principals.writer_group, "Prefixed", "Read"),
        AclRule(writer, "Topic", topics.dlq, "Literal", "Write"),
        AclRule(writer, "Topic", topics.dlq, "Literal", "Describe"),
        # DLQ writes and offset commits share one Kafka transaction per batch
        AclRule(writer, "TransactionalID", principals.writer_transactional_id, "Prefixed", "Write"),
        AclRule(writer, "TransactionalID", principals.writer_transactional_id, "Prefixed", "Describe"),
    ]
