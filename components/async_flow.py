"""The async flow's workloads: db-roles and bootstrap Jobs, publisher Deployment + Service, writer StatefulSet,
cleanup CronJob and their service accounts (who may reach them: components/network_policy.py)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import pulumi
import pulumi_kubernetes as k8s

from components.config import AsyncFlowConfig, HasuraConfig, KafkaConfig
from components.k8s import (
    IMAGE_PULL_POLICY,
    Resources,
    VaultFile,
    child,
    container_security,
    disruption_budget,
    labels,
    pod_security,
    selector,
    spread,
    vault_agent_annotations,
    vault_token_volume,
)
from components.kafka_access import AsyncTopics, ServicePrincipals
from components.monitoring import FlowMonitoringArgs, ScrapeTarget, declare_monitoring
from components.vault_access import (
    ACTION_SECRET,
    DATABASE_ROLE_ADMIN_URL,
    DATABASE_ROLE_VERIFIERS,
    DATABASE_URL,
    HASURA_ADMIN_SECRET,
    database_entry,
    kafka_entry,
    vault_file,
)

APP_UID = 10001  # the images' numeric user (app/Dockerfile)
PUBLISHER = "graphql-async-request-publisher"
WRITER = "graphql-async-response-writer"
CLEANUP = "graphql-async-cleanup"
BOOTSTRAP = "graphql-async-bootstrap"
DB_ROLES = "graphql-async-db-roles"  # creates the services' database roles as the role administrator
DATABASE_ROLES_ANNOTATION = "graphql-entrypoint/database-roles-version"  # 8 hex of the roles' verifiers
PUBLISHER_PORT = 8080
WRITER_HEALTH_PORT = 8081  # /healthz and /metrics
PUBLISHER_METRICS_PORT = 9102  # /metrics, apart from the action port only Hasura may reach
PUBLISHER_DRAIN_SECONDS = 10  # after SIGTERM, open action calls get this long before uvicorn cancels them
PUBLISHER_SHUTDOWN_SECONDS = 30  # then the publisher's whole graceful shutdown (app/shutdown.py)
# SIGKILL after this: the drain, the shutdown budget, and room for cut phases to unwind and the process to exit
TERMINATION_GRACE_SECONDS = PUBLISHER_DRAIN_SECONDS + PUBLISHER_SHUTDOWN_SECONDS + 5
DEFAULT_RESOURCES = Resources()


def bootstrap_fingerprint(app_dir: Path, handler_url: str, source_settings: str = "") -> str:
    """The Job re-runs when the table SQL, the Hasura metadata it applies, the handler URL or the source's
    configuration (pool, replicas, routing) change."""
    digest = hashlib.sha256(handler_url.encode())
    digest.update(source_settings.encode())
    files = [app_dir / "schema.sql", app_dir / "bootstrap.py", app_dir / "db_roles.py", app_dir / "db_audit.py",
             *sorted(p for p in (app_dir / "hasura").rglob("*") if p.is_file() and "__pycache__" not in p.parts)]
    for path in files:  # the whole Hasura model package: a change to any of its modules re-runs the Job
        digest.update(path.relative_to(app_dir).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:10]


KAFKA_CA_FILE = "kafka_ca.pem"  # /vault/secrets/kafka_ca.pem: KAFKA_SSL_CA_LOCATION (app/settings.py)


def kafka_ca_reads(kafka: KafkaConfig) -> dict[str, list[str]]:
    """With SASL_SSL the Kafka clients also read the brokers' CA entry (their policies grant it)."""
    return {PUBLISHER: [kafka.ca_entry], WRITER: [kafka.ca_entry]} if kafka.ca_entry else {}


def workload_vault_files(kv_mount: str, kafka_ca_entry: str | None = None) -> dict[str, list[VaultFile]]:
    """Workload -> the files its Vault agent renders under /vault/secrets/<setting name> (app/settings.py)."""
    def database(service: str) -> VaultFile:  # the service's own role (app/db_roles.py)
        return vault_file(kv_mount, database_entry(service), "async_database_url")

    def kafka_login(service: str) -> list[VaultFile]:
        ca = [vault_file(kv_mount, kafka_ca_entry, KAFKA_CA_FILE)] if kafka_ca_entry else []
        return [vault_file(kv_mount, kafka_entry(service, "username"), "kafka_username"),
                vault_file(kv_mount, kafka_entry(service, "password"), "kafka_password"), *ca]

    return {
        PUBLISHER: [database("publisher"), vault_file(kv_mount, ACTION_SECRET, "async_action_secret"),
                    *kafka_login("publisher")],
        WRITER: [database("writer"), *kafka_login("writer")],
        CLEANUP: [database("cleanup")],
        # the owner role (table DDL, grants) and Hasura's admin secret (metadata)
        BOOTSTRAP: [vault_file(kv_mount, DATABASE_URL, "async_database_url"),
                    vault_file(kv_mount, HASURA_ADMIN_SECRET, "hasura_admin_secret")],
        # the role administrator and the verifiers it creates the services' roles with, nothing else
        DB_ROLES: [vault_file(kv_mount, DATABASE_ROLE_ADMIN_URL, "async_database_role_admin_url"),
                   vault_file(kv_mount, DATABASE_ROLE_VERIFIERS, "async_database_roles")],
    }


@dataclass
class AsyncFlowArgs:
    namespace: str
    config: AsyncFlowConfig
    kafka: KafkaConfig
    topics: AsyncTopics
    images: dict[str, pulumi.Input[str]]  # target -> pinned image (repo digest)
    kv_mount: str
    hasura_url: str
    hasura: HasuraConfig  # its source's pool, replicas and routing, and the row limit: applied by the bootstrap
    app_dir: Path
    principals: ServicePrincipals  # the writer's consumer group and transactional id prefix
    database_roles_version: pulumi.Input[str] = ""  # VaultAccess: a new service password re-runs the db-roles Job

    @property
    def vault_files(self) -> dict[str, list[VaultFile]]:
        return workload_vault_files(self.kv_mount, self.kafka.ca_entry)

    @property
    def publisher_url(self) -> str:
        return f"http://{PUBLISHER}.{self.namespace}.svc.cluster.local:{PUBLISHER_PORT}/action/publish_async_request"


def pod_spec(app: str, image: pulumi.Input[str], env: dict[str, str], *, command: list[str] | None = None,
             ports: list[dict] | None = None, probes: dict | None = None,
             resources: Resources = DEFAULT_RESOURCES, restart: str | None = None) -> dict:
    """A hardened single-container pod running as the app's own service account."""
    container = {
        "name": app.removeprefix("graphql-async-"),
        "image": image,
        "imagePullPolicy": IMAGE_PULL_POLICY,
        "env": [{"name": k, "value": v} for k, v in sorted(env.items())],
        "resources": resources.spec(),
        "securityContext": container_security(APP_UID),
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
        **({"command": command} if command else {}),
        **({"ports": ports} if ports else {}),
        **(probes or {}),
    }
    spec = {"serviceAccountName": app, "automountServiceAccountToken": False, "securityContext": pod_security(APP_UID),
            "terminationGracePeriodSeconds": TERMINATION_GRACE_SECONDS, "containers": [container],
            "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "32Mi"}}, vault_token_volume()]}
    if restart:
        spec["restartPolicy"] = restart
    return spec


class AsyncFlow(pulumi.ComponentResource):
    """Service accounts, then one builder per workload: db-roles, bootstrap, publisher, writer, cleanup."""

    def __init__(self, name: str, args: AsyncFlowArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("graphql:index:AsyncFlow", name, None, opts)
        self.args = args
        self.service_accounts = {
            sa: k8s.core.v1.ServiceAccount(sa, metadata=self._metadata(sa), opts=child(self))
            for sa in (PUBLISHER, WRITER, CLEANUP, DB_ROLES, BOOTSTRAP)
        }
        self.db_roles = self._db_roles()
        self.bootstrap = self._bootstrap()
        self._publisher()
        self._writer()
        self._cleanup()
        self.monitoring = declare_monitoring(self, FlowMonitoringArgs(args.namespace, args.config.metrics, [
            ScrapeTarget(PUBLISHER, self._publisher_metrics_ports),
            ScrapeTarget(WRITER, (("health", WRITER_HEALTH_PORT),))]))
        self.register_outputs({"publisher_url": args.publisher_url, "bootstrap_job": self.bootstrap_job})

    # ------------------------------------------------------------ shared pieces
    def _metadata(self, app: str, name: str | None = None) -> dict:
        return {"name": name or app, "namespace": self.args.namespace, "labels": labels(app, "async")}

    def _pod_metadata(self, app: str, *, run_to_completion: bool = False, rolls_with_password: bool = False) -> dict:
        annotations = vault_agent_annotations(app, self.args.vault_files[app], run_to_completion=run_to_completion)
        if rolls_with_password:  # settings are read once: a replaced database password rolls the pods (after the Jobs)
            annotations = {**annotations, DATABASE_ROLES_ANNOTATION: self.args.database_roles_version}
        return {"labels": labels(app, "async"), "annotations": annotations}

    @property
    def _kafka_env(self) -> dict[str, str]:
        kafka, topics = self.args.kafka, self.args.topics
        return {
            "KAFKA_BOOTSTRAP_SERVERS": ",".join(kafka.bootstrap_servers),
            "KAFKA_SECURITY_PROTOCOL": kafka.security_protocol,
            "KAFKA_SASL_MECHANISM": kafka.sasl_mechanism,
            "ASYNC_REQUESTS_TOPIC": topics.requests,
            "ASYNC_RESPONSES_TOPIC": topics.responses,
            "ASYNC_DLQ_TOPIC": topics.dlq,
            **({"KAFKA_SSL_CA_LOCATION": f"/vault/secrets/{KAFKA_CA_FILE}"} if kafka.ca_entry else {}),
        }

    def _after(self, app: str, *others: pulumi.Resource) -> pulumi.ResourceOptions:
        return child(self, depends_on=[self.service_accounts[app], *others])

    def _job_opts(self, app: str, *others: pulumi.Resource) -> pulumi.ResourceOptions:
        # a Job may wait 600 s for its database, then back off: longer than the provider's default 10 min wait
        return pulumi.ResourceOptions.merge(self._after(app, *others), pulumi.ResourceOptions(
            custom_timeouts=pulumi.CustomTimeouts(create="20m", update="20m")))

    # ------------------------------------------------------------ workloads
    def _db_roles(self) -> k8s.batch.v1.Job:
        """The services' database roles; a new name (its code, a replaced password) re-runs it."""
        args = self.args
        digest = hashlib.sha256()
        for name in ("role_admin.py", "db_roles.py", "db_audit.py", "db.py"):
            digest.update((args.app_dir / name).read_bytes())
        fingerprint = digest.hexdigest()
        self.db_roles_job = pulumi.Output.from_input(args.database_roles_version).apply(
            lambda roles: f"{DB_ROLES}-{hashlib.sha256((fingerprint + roles).encode()).hexdigest()[:10]}")
        return k8s.batch.v1.Job(
            "db-roles", metadata=self._metadata(DB_ROLES, self.db_roles_job),
            spec={"backoffLimit": 6, "activeDeadlineSeconds": 900,
                  "template": {"metadata": self._pod_metadata(DB_ROLES, run_to_completion=True),
                               "spec": pod_spec(DB_ROLES, args.images["cleanup"], {},
                                                command=["python", "-m", "app.role_admin"], restart="OnFailure")}},
            opts=self._job_opts(DB_ROLES))

    def _bootstrap(self) -> k8s.batch.v1.Job:
        """Table + Hasura metadata + the source's pool/replicas/routing; a new name re-runs it on any change."""
        args = self.args
        source_settings = args.hasura.source_settings().to_json()
        row_limit = str(args.hasura.subscriptions.user_row_limit)
        fingerprint = bootstrap_fingerprint(args.app_dir, args.publisher_url, source_settings + row_limit)
        self.bootstrap_job = f"{BOOTSTRAP}-{fingerprint}"
        env = {"HASURA_ENDPOINT": args.hasura_url, "HASURA_SOURCE": args.hasura.source_name,
               "ASYNC_SERVICE_ROLES": "true", "ACTION_HANDLER_URL": args.publisher_url, "HASURA_RETRY_SECONDS": "600",
               "HASURA_SOURCE_SETTINGS": source_settings, "HASURA_USER_ROW_LIMIT": row_limit}
        return k8s.batch.v1.Job(
            "bootstrap", metadata=self._metadata(BOOTSTRAP, self.bootstrap_job),
            spec={"backoffLimit": 6, "activeDeadlineSeconds": 900,
                  "template": {"metadata": self._pod_metadata(BOOTSTRAP, run_to_completion=True),
                               "spec": pod_spec(BOOTSTRAP, args.images["cleanup"], env,
                                                command=["python", "-m", "app.bootstrap"], restart="OnFailure")}},
            opts=self._job_opts(BOOTSTRAP, self.db_roles))  # the grants need the roles

    @property
    def _publisher_env(self) -> dict[str, str]:
        flow = self.args.config
        return {"PUBLISHER_PORT": str(PUBLISHER_PORT), "METRICS_PORT": str(PUBLISHER_METRICS_PORT),
                "PUBLISHER_PROCESSES": str(flow.publisher_processes),
                "GROUP_COMMIT_MAX_ROWS": str(flow.group_commit_max_rows),
                "GROUP_COMMIT_WINDOW_MS": str(flow.group_commit_window_ms),
                "PUBLISH_WAIT_SECONDS": str(flow.publish_wait_seconds),
                "PUBLISHED_MARK_LINGER_MS": str(flow.published_mark_linger_ms),
                "SHUTDOWN_DRAIN_SECONDS": str(PUBLISHER_DRAIN_SECONDS),
                "SHUTDOWN_TIMEOUT_SECONDS": str(PUBLISHER_SHUTDOWN_SECONDS)}

    @property
    def _publisher_metrics_ports(self) -> tuple[tuple[str, int], ...]:
        """Each publisher process serves /metrics on its own port: METRICS_PORT, METRICS_PORT + 1, ..."""
        processes = self.args.config.publisher_processes
        return tuple((f"metrics-{i}" if i else "metrics", PUBLISHER_METRICS_PORT + i) for i in range(processes))

    @property
    def _publisher_resources(self) -> Resources:
        processes = self.args.config.publisher_processes  # each process is one event loop: one core, its memory
        return Resources("100m", "128Mi", str(processes), f"{512 * processes}Mi")

    def _publisher(self) -> None:
        """The action handler, reachable only from Hasura (components/network_policy.py)."""
        args = self.args
        health = {"readinessProbe": {"httpGet": {"path": "/readyz", "port": PUBLISHER_PORT}, "periodSeconds": 5},
                  "livenessProbe": {"httpGet": {"path": "/healthz", "port": PUBLISHER_PORT}, "periodSeconds": 10,
                                    "initialDelaySeconds": 5}}
        self.publisher = k8s.apps.v1.Deployment(
            "publisher", metadata=self._metadata(PUBLISHER),
            spec={"replicas": args.config.publisher_replicas, "selector": {"matchLabels": selector(PUBLISHER)},
                  "template": {"metadata": self._pod_metadata(PUBLISHER, rolls_with_password=True),
                               "spec": pod_spec(PUBLISHER, args.images["publisher"],
                                                self._kafka_env | self._publisher_env,
                                                ports=[{"name": "http", "containerPort": PUBLISHER_PORT},
                                                       *({"name": name, "containerPort": port}
                                                         for name, port in self._publisher_metrics_ports)],
                                                probes=health, resources=self._publisher_resources)
                               | spread(PUBLISHER)}},
            opts=self._after(PUBLISHER, self.bootstrap))
        self.publisher_budget = disruption_budget("publisher-pdb", PUBLISHER, args.namespace, "async",
                                                  args.config.publisher_replicas, self)
        self.publisher_service = k8s.core.v1.Service(
            "publisher-svc", metadata=self._metadata(PUBLISHER),
            spec={"selector": selector(PUBLISHER),
                  "ports": [{"name": "http", "port": PUBLISHER_PORT, "targetPort": "http"}]},
            opts=child(self))

    def _writer(self) -> None:
        """Consumer group on the responses topic. A StatefulSet gives each replica a stable name (…-writer-0, -1);
        it is the instance part of the transactional.id, so a replacement pod fences its predecessor's open
        transaction, and Kubernetes never runs two pods of one identity at once."""
        args = self.args
        # ready once its health server listens: a rolling update moves to the next replica only then; alive while
        # it makes progress (a stuck writer is restarted, app/writer.py serve_health)
        health = {"readinessProbe": {"tcpSocket": {"port": WRITER_HEALTH_PORT}, "periodSeconds": 10},
                  "livenessProbe": {"httpGet": {"path": "/healthz", "port": WRITER_HEALTH_PORT},
                                    "periodSeconds": 15, "initialDelaySeconds": 10, "failureThreshold": 4}}
        pod = pod_spec(WRITER, args.images["writer"], self._kafka_env | {
            "WRITER_GROUP_ID": args.principals.writer_group,
            "WRITER_TRANSACTIONAL_ID_PREFIX": args.principals.writer_transactional_id,
            "WRITER_BATCH_SIZE": str(args.config.writer_batch_size),
            "HEALTH_PORT": str(WRITER_HEALTH_PORT)},
            ports=[{"name": "health", "containerPort": WRITER_HEALTH_PORT}],
            probes=health, resources=Resources("100m", "128Mi", "1", "512Mi"))
        pod["containers"][0]["env"].append(
            {"name": "WRITER_INSTANCE_ID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}})
        self.writer_service = k8s.core.v1.Service(
            "writer-headless", metadata=self._metadata(WRITER),
            spec={"clusterIP": "None", "selector": selector(WRITER),
                  "ports": [{"name": "health", "port": WRITER_HEALTH_PORT, "targetPort": "health"}]},
            opts=child(self))
        self.writer = k8s.apps.v1.StatefulSet(
            "writer", metadata=self._metadata(WRITER),
            spec={"replicas": args.config.writer_replicas, "serviceName": WRITER, "podManagementPolicy": "Parallel",
                  "selector": {"matchLabels": selector(WRITER)},
                  "template": {"metadata": self._pod_metadata(WRITER, rolls_with_password=True),
                               "spec": pod | spread(WRITER)}},
            opts=self._after(WRITER, self.bootstrap, self.writer_service))
        self.writer_budget = disruption_budget("writer-pdb", WRITER, args.namespace, "async",
                                               args.config.writer_replicas, self)

    def _cleanup(self) -> None:
        """Batched delete of expired rows; never two at once."""
        args, cfg = self.args, self.args.config
        job_pod = {"metadata": self._pod_metadata(CLEANUP, run_to_completion=True),
                   "spec": pod_spec(CLEANUP, args.images["cleanup"], {
                       "CLEANUP_BATCH_SIZE": str(cfg.cleanup_batch_size),
                       "CLEANUP_TIME_BUDGET_SECONDS": str(cfg.cleanup_time_budget_seconds),
                       "CLEANUP_MAX_ROWS_PER_SECOND": str(cfg.cleanup_max_rows_per_second),
                       **({"CLEANUP_PUSHGATEWAY_URL": cfg.metrics.pushgateway_url}
                          if cfg.metrics.pushgateway_url else {})}, restart="Never")}
        self.cleanup = k8s.batch.v1.CronJob(
            "cleanup", metadata=self._metadata(CLEANUP),
            spec={"schedule": cfg.cleanup_schedule, "concurrencyPolicy": "Forbid", "startingDeadlineSeconds": 300,
                  "successfulJobsHistoryLimit": 3, "failedJobsHistoryLimit": 3,
                  "jobTemplate": {"spec": {"backoffLimit": 2,
                                           "activeDeadlineSeconds": cfg.cleanup_time_budget_seconds + 120,
                                           "template": job_pod}}},
            opts=self._after(CLEANUP, self.bootstrap))
