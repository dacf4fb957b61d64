"""Kafka: the three async topics, one SCRAM user per service, and their ACLs when the broker authorizes."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pulumi
import pulumi_kafka as kafka
import pulumi_random as random
import pulumi_vault as vault

from components.config import KafkaConfig
from components.k8s import child
from components.kafka_access import AsyncTopics, ServicePrincipals, WorkerPrincipal, service_acls, worker_acls
from components.vault_access import KafkaCredential

SCRAM_MECHANISM = {"SCRAM-SHA-256": "scram-sha256", "SCRAM-SHA-512": "scram-sha512"}


@dataclass
class KafkaAccessArgs:
    config: KafkaConfig
    admin_password: pulumi.Input[str]
    principals: ServicePrincipals
    kv_mount: str = "secret"  # where config.ca_entry lives (SASL_SSL)

    def ca_cert(self) -> pulumi.Output[str] | None:
        """The brokers' CA, read from Vault at deploy time: the provider verifies the brokers as the services do.

        A preview that cannot read it (an offline fresh-stack preview, `dev.sh preview-fresh`) goes on with a
        placeholder and says so; an `up` never does: it reads the entry or fails."""
        entry = self.config.ca_entry
        if not entry:
            return None
        try:
            data = vault.kv.get_secret_v2(mount=self.kv_mount, name=entry).data
        except Exception as exc:  # noqa: BLE001 - any failure to read it: the provider's own error types
            if not pulumi.runtime.is_dry_run():
                raise
            # the provider's message only: its text carries "error:" lines a preview check would take for its own
            lines = [line.strip(" *\t") for line in str(exc).splitlines() if any(c.isalnum() for c in line)]
            reason = (lines[-1] if lines else type(exc).__name__).replace("error:", "error -")
            pulumi.log.warn(f"kafka.caEntry {entry!r} is not readable from Vault in this preview ({reason[:200]}); "
                            "previewing with a placeholder CA: `pulumi up` reads the real one or fails")
            return pulumi.Output.secret(PREVIEW_PLACEHOLDER)
        return pulumi.Output.secret(data["value"])


PREVIEW_PLACEHOLDER = "preview-placeholder-password-not-applied"


def known_at_preview(value: pulumi.Output[str]) -> pulumi.Output[str]:
    """The value, or during a preview in which it is not known yet (a fresh stack's RandomPassword) a placeholder.

    pulumi-kafka 3.13 panics ("value is unknown") planning a UserScramCredential whose password is unknown, so
    a fresh stack's preview would fail. The placeholder exists only in that preview: `up` is not a dry run and
    always sends the real password, and once the password is in state every preview sees the real value."""
    if not pulumi.runtime.is_dry_run():
        return value

    async def resolved() -> str:
        return await value.future() if await value.is_known() else PREVIEW_PLACEHOLDER

    async def known() -> bool:
        return True

    return pulumi.Output(value.resources(), asyncio.ensure_future(resolved()), asyncio.ensure_future(known()),
                         asyncio.ensure_future(value.is_secret()))


class KafkaAccess(pulumi.ComponentResource):
    def __init__(self, name: str, args: KafkaAccessArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("graphql:index:KafkaAccess", name, None, opts)
        cfg = args.config
        self.topic_names = AsyncTopics(cfg.topics.requests, cfg.topics.responses, cfg.topics.dlq)

        provider = kafka.Provider(
            "kafka", bootstrap_servers=cfg.bootstrap_servers, sasl_mechanism=SCRAM_MECHANISM[cfg.sasl_mechanism],
            sasl_username=cfg.admin_username, sasl_password=args.admin_password,
            tls_enabled=cfg.security_protocol == "SASL_SSL", ca_cert=args.ca_cert(), opts=child(self))
        on_broker = child(self, provider=provider)

        topic_retention = {self.topic_names.requests: cfg.retention_ms, self.topic_names.responses: cfg.retention_ms,
                           self.topic_names.dlq: cfg.dlq_retention_ms}
        self.topics = {
            topic: kafka.Topic(
                topic.replace(".", "-"), name=topic, partitions=cfg.partitions,
                replication_factor=cfg.replication_factor,
                config={"retention.ms": str(retention), "cleanup.policy": "delete",
                        "min.insync.replicas": str(cfg.min_insync_replicas)},
                opts=on_broker)
            for topic, retention in topic_retention.items()
        }

        self.credentials: dict[str, KafkaCredential] = {}
        self.users: dict[str, kafka.UserScramCredential] = {}
        self.workers = [WorkerPrincipal(w.name, w.consumer_group) for w in cfg.workers]
        principals = [("publisher", args.principals.publisher), ("writer", args.principals.writer),
                      *((f"worker-{w.name}", w.username) for w in self.workers)]
        self.principal_names = dict(principals)  # a stack output: names only, never a password
        for service, username in principals:
            password = random.RandomPassword(f"kafka-{service}-password", length=40, special=False,
                                             opts=child(self)).result
            self.users[service] = kafka.UserScramCredential(
                f"kafka-user-{service}", username=username, scram_mechanism=cfg.sasl_mechanism,
                scram_iterations=8192, password=known_at_preview(password), opts=on_broker)
            self.credentials[service] = KafkaCredential(username=username, password=password)

        self.acls: list[kafka.Acl] = []
        if cfg.authorizer_enabled:
            rules = service_acls(self.topic_names, args.principals)
            rules += [rule for worker in self.workers for rule in worker_acls(self.topic_names, worker)]
            for rule in rules:
                topic_dependency = [self.topics[rule.resource_name]] if rule.resource_name in self.topics else []
                self.acls.append(kafka.Acl(
                    f"acl-{rule.slug}", acl_resource_name=rule.resource_name, acl_resource_type=rule.resource_type,
                    resource_pattern_type_filter=rule.pattern_type, acl_principal=rule.principal, acl_host="*",
                    acl_operation=rule.operation, acl_permission_type="Allow",
                    opts=child(self, provider=provider, depends_on=topic_dependency)))

        self.register_outputs({"topics": list(self.topics), "principals": [c.username for c in
                                                                            self.credentials.values()]})
