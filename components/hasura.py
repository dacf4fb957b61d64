"""Hasura GraphQL Engine: env-file ConfigMap, Deployment with Vault-injected secrets, Service.

Start-up order inside the container: each Vault-rendered file is read as data into its variable
(`VAR="$(cat file)"`: the value is never evaluated by the shell), then the ConfigMap's env file,
whose lines only fill variables that are still unset (`VAR="${VAR:-default}"`). So container env
and Vault secrets always win over the file's defaults.
"""

from __future__ import annotations

import hashlib
import json
import shlex
from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

from app.hasura.source import connection_set_url_env
from components.config import HasuraConfig
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
from components.vault_access import ACTION_SECRET, DATABASE_URL, HASURA_ADMIN_SECRET, vault_file

ENV_FILE_MOUNT = "/etc/hasura/hasura.env"
ENV_FILE_KEY = "hasura.env"
PORT = 8080
# any non-root uid works (graphql-engine reads its binary, writes only /tmp, an emptyDir); a high one matches no
# account on the node (checkov CKV_K8S_40, kube-score container-security-context-user-group-id)
HASURA_UID = 10001
SECRETS_DIR = "/vault/secrets"


# Hasura's pinned settings: they win over the env file
PINNED_ENV = {"HASURA_GRAPHQL_UNAUTHORIZED_ROLE": "anonymous", "HASURA_GRAPHQL_SERVER_PORT": str(PORT)}


@dataclass(frozen=True)
class SecretEnv:
    """A setting Hasura reads from a KV entry, rendered bare into /vault/secrets/<file_name> (an annotation suffix)."""

    variable: str
    entry: str
    file_name: str


def hasura_secret_env(config: HasuraConfig) -> list[SecretEnv]:
    """JWT/auth hook/Redis settings, read replica and connection-set URLs, the Enterprise license key."""
    routing = config.routing.connection_set if config.routing else {}
    return [
        *(SecretEnv(variable, entry, variable.lower())
          for variable, entry in sorted(config.secret_env_from_vault.items())),
        *(SecretEnv(variable, entry, f"replica-{i}")
          for i, (variable, entry) in enumerate(config.replica_env().items(), start=1)),
        *(SecretEnv(connection_set_url_env(member), entry, f"db-{member}")
          for member, entry in sorted(routing.items())),
        *([SecretEnv("HASURA_GRAPHQL_EE_LICENSE_KEY", config.ee_license_key_entry, "ee-license-key")]
          if config.ee_license_key_entry else []),
    ]


# the entries this program writes that Hasura reads
OWN_SECRET_ENV = (
    SecretEnv("HASURA_GRAPHQL_DATABASE_URL", DATABASE_URL, "database-url"),
    SecretEnv("HASURA_GRAPHQL_ADMIN_SECRET", HASURA_ADMIN_SECRET, "admin-secret"),
    SecretEnv("ASYNC_ACTION_SECRET", ACTION_SECRET, "action-secret"),  # the action sends it (value_from_env)
)


def hasura_vault_files(kv_mount: str, secret_env: list[SecretEnv]) -> list[VaultFile]:
    """What the Vault agent renders for Hasura: each value bare, in its own file."""
    return [vault_file(kv_mount, s.entry, s.file_name) for s in (*OWN_SECRET_ENV, *secret_env)]


def start_script(secret_env: list[SecretEnv], secrets_dir: str = SECRETS_DIR, env_file: str = ENV_FILE_MOUNT) -> str:
    """Hasura's start command. A value is the output of `cat`, assigned inside double quotes: the shell never
    parses it, so `$(...)`, backticks and quotes in a Vault value reach Hasura as they are. The assignment
    stands alone (not `export VAR="$(cat …)"`) so a missing file fails the start under `set -e`."""
    lines = ["set -eu"]
    for s in (*OWN_SECRET_ENV, *secret_env):
        lines.append(f'{s.variable}="$(cat {shlex.quote(f"{secrets_dir}/{s.file_name}")})"; export {s.variable}')
    # our generated env file (no secrets): it only fills what is still unset
    lines += ["set -a", f". {shlex.quote(env_file)}", "set +a", "exec graphql-engine serve"]
    return "\n".join(lines)


@dataclass
class HasuraArgs:
    namespace: str
    config: HasuraConfig
    env_file: str  # contents of config/hasura/hasura.env
    kv_mount: str
    vault_role: str = "hasura"
    name: str = "hasura"

    @property
    def url(self) -> str:
        """In-cluster address (the tunnel's origin and the bootstrap's metadata endpoint)."""
        return f"http://{self.name}.{self.namespace}.svc.cluster.local:{PORT}"

    @property
    def secret_env(self) -> list[SecretEnv]:
        return hasura_secret_env(self.config)

    @property
    def vault_reads(self) -> list[str]:
        """KV entries Hasura reads beyond its own (its Vault policy grants exactly these too)."""
        return sorted({s.entry for s in self.secret_env})

    @property
    def vault_files(self) -> list[VaultFile]:
        return hasura_vault_files(self.kv_mount, self.secret_env)

    @property
    def container_env(self) -> dict[str, str]:
        """Non-secret settings pinned on the container (subscriptions, WebSockets); they win over the env file."""
        return {**self.config.subscriptions.env(), **PINNED_ENV}


class Hasura(pulumi.ComponentResource):
    def __init__(self, name: str, args: HasuraArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("graphql:index:Hasura", name, None, opts)
        ns, app = args.namespace, args.name
        self.service_account = k8s.core.v1.ServiceAccount(
            "hasura-sa", metadata={"name": app, "namespace": ns, "labels": labels(app, "graphql")}, opts=child(self))
        self.config_map = k8s.core.v1.ConfigMap(
            "hasura-env", metadata={"name": f"{app}-env", "namespace": ns, "labels": labels(app, "graphql")},
            data={ENV_FILE_KEY: args.env_file}, opts=child(self))
        # a new env file rolls the pods: the checksum is part of the pod template
        env_checksum = hashlib.sha256(args.env_file.encode()).hexdigest()
        # what the post-deploy verification re-runs on: the env file and the pinned settings
        self.config_checksum = hashlib.sha256(
            (args.env_file + json.dumps(args.container_env, sort_keys=True)).encode()).hexdigest()
        annotations = {"checksum/hasura-env": env_checksum,
                       **vault_agent_annotations(args.vault_role, args.vault_files)}
        self.deployment = k8s.apps.v1.Deployment(
            "hasura",
            metadata={"name": app, "namespace": ns, "labels": labels(app, "graphql")},
            spec={
                "replicas": args.config.replicas,
                "selector": {"matchLabels": selector(app)},
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
                "template": {
                    "metadata": {"labels": labels(app, "graphql"), "annotations": annotations},
                    "spec": {
                        "serviceAccountName": app,
                        "automountServiceAccountToken": False,  # Hasura never calls the Kubernetes API
                        "securityContext": pod_security(HASURA_UID),
                        "terminationGracePeriodSeconds": 75,
                        "containers": [{
                            "name": "graphql-engine",
                            "image": args.config.image,
                            "imagePullPolicy": IMAGE_PULL_POLICY,
                            "command": ["/bin/sh", "-c", start_script(args.secret_env)],
                            "env": [{"name": k, "value": v} for k, v in sorted(args.container_env.items())],
                            "ports": [{"name": "http", "containerPort": PORT}],
                            # /healthz fails while the database is unreachable: that takes a replica out of the
                            # Service; liveness only asks whether the server accepts connections, so a database
                            # outage never restarts every replica at once
                            "readinessProbe": {"httpGet": {"path": "/healthz", "port": PORT}, "periodSeconds": 5,
                                               "failureThreshold": 3},
                            "livenessProbe": {"tcpSocket": {"port": PORT}, "initialDelaySeconds": 30,
                                              "periodSeconds": 10, "failureThreshold": 6},
                            "resources": Resources("250m", "512Mi", "2", "2Gi").spec(),
                            "securityContext": container_security(HASURA_UID),
                            "volumeMounts": [
                                {"name": "hasura-env", "mountPath": ENV_FILE_MOUNT, "subPath": ENV_FILE_KEY,
                                 "readOnly": True},
                                {"name": "tmp", "mountPath": "/tmp"},
                            ],
                        }],
                        "volumes": [
                            {"name": "hasura-env", "configMap": {"name": f"{app}-env"}},
                            {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}},
                            vault_token_volume(),
                        ],
                        **spread(app),
                    },
                },
            },
            opts=child(self, depends_on=[self.config_map, self.service_account]))
        self.budget = disruption_budget("hasura-pdb", app, ns, "graphql", args.config.replicas, self)
        self.service = k8s.core.v1.Service(
            "hasura-svc",
            metadata={"name": app, "namespace": ns, "labels": labels(app, "graphql")},
            spec={"selector": selector(app), "ports": [{"name": "http", "port": PORT, "targetPort": "http"}]},
            opts=child(self))
        self.url = args.url
        self.register_outputs({"url": self.url})
