"""Kubernetes building blocks every workload shares: labels, hardened pods, Vault agent annotations."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

PART_OF = "graphql-entrypoint"


def labels(name: str, component: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": name, "app.kubernetes.io/component": component,
            "app.kubernetes.io/part-of": PART_OF, "app.kubernetes.io/managed-by": "pulumi"}


def selector(name: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": name}


@dataclass(frozen=True)
class Resources:
    cpu_request: str = "50m"
    memory_request: str = "128Mi"
    cpu_limit: str = "500m"
    memory_limit: str = "256Mi"
    # /tmp (an emptyDir) and the container's logs: a runaway writer is evicted before it fills the node's disk
    ephemeral_request: str = "64Mi"
    ephemeral_limit: str = "512Mi"

    def spec(self) -> dict:
        return {"requests": {"cpu": self.cpu_request, "memory": self.memory_request,
                             "ephemeral-storage": self.ephemeral_request},
                "limits": {"cpu": self.cpu_limit, "memory": self.memory_limit,
                           "ephemeral-storage": self.ephemeral_limit}}


# every start checks the pod may pull its (digest-pinned) image, instead of reusing what another pod pulled onto
# the node with its own credentials; the digest keeps the content fixed
IMAGE_PULL_POLICY = "Always"


def pod_security(uid: int) -> dict:
    return {"runAsNonRoot": True, "runAsUser": uid, "runAsGroup": uid, "fsGroup": uid,
            "seccompProfile": {"type": "RuntimeDefault"}}


def container_security(uid: int, read_only_root: bool = True) -> dict:
    """runAsUser is repeated on the container: with agent-run-as-same-user the Vault injector reads the uid from
    containers[0].securityContext only and refuses the pod without it (hashicorp/vault-k8s,
    agent-inject/agent/annotations.go, Agent.runAsSameID: "RunAsUser is nil for Container 0's SecurityContext")."""
    return {"runAsNonRoot": True, "runAsUser": uid, "runAsGroup": uid, "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": read_only_root, "capabilities": {"drop": ["ALL"]}}


@dataclass(frozen=True)
class VaultFile:
    """One file the Vault agent renders under /vault/secrets/<file_name>: the KV v2 entry's key, bare.

    The bare value is data: services read it with pydantic's secrets_dir, Hasura's start script with
    `$(cat file)`. Nothing ever sources it, so a `$(...)` or a quote in a Vault value stays a character."""

    file_name: str
    kv_path: str  # e.g. secret/data/graphql-hasura-admin-secret
    key: str = "value"

    def template(self) -> str:
        return f'{{{{- with secret "{self.kv_path}" -}}}}{{{{ .Data.data.{self.key} }}}}{{{{- end -}}}}'


# the `aud` of the token the Vault agent logs in with; every Kubernetes auth role requires exactly this audience
VAULT_AUDIENCE = "vault"
VAULT_TOKEN_VOLUME = "vault-sa-token"


def vault_token_volume() -> dict:
    """The only Kubernetes token in an injected pod (automountServiceAccountToken is false): short-lived, bound to
    Vault's audience, mounted by the injector into its agent containers only. No app container mounts it, so the
    injector mounts it at its DefaultServiceAccountMount (hashicorp/vault-k8s, agent-inject/agent/agent.go,
    serviceaccount() and getTokenPathFromProjectedVolume(); the auth config's token_path follows it,
    annotations.go)."""
    return {"name": VAULT_TOKEN_VOLUME, "projected": {"sources": [{"serviceAccountToken": {
        "audience": VAULT_AUDIENCE, "expirationSeconds": 3600, "path": "token"}}]}}


def vault_agent_annotations(role: str, files: list[VaultFile], *, run_to_completion: bool = False) -> dict[str, str]:
    """Vault agent injector annotations; Jobs use pre-populate-only so the sidecar does not keep them alive."""
    annotations = {
        "vault.hashicorp.com/agent-inject": "true",
        "vault.hashicorp.com/role": role,
        "vault.hashicorp.com/agent-run-as-same-user": "true",
        # the projected, audience-bound token above (annotations.go, AnnotationAgentServiceAccountTokenVolumeName)
        "vault.hashicorp.com/agent-service-account-token-volume-name": VAULT_TOKEN_VOLUME,
    }
    if run_to_completion:
        annotations["vault.hashicorp.com/agent-pre-populate-only"] = "true"
    for f in files:
        annotations[f"vault.hashicorp.com/agent-inject-secret-{f.file_name}"] = f.kv_path
        annotations[f"vault.hashicorp.com/agent-inject-template-{f.file_name}"] = f.template()
    return annotations


def spread(app: str) -> dict:
    """Pod spec fields: replicas prefer different nodes and zones, so losing one leaves the others serving."""
    match = {"matchLabels": selector(app)}
    other_node = {"weight": 100, "podAffinityTerm": {"labelSelector": match, "topologyKey": "kubernetes.io/hostname"}}
    return {"affinity": {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [other_node]}},
            "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
                                           "whenUnsatisfiable": "ScheduleAnyway", "labelSelector": match}]}


def disruption_budget(resource_name: str, app: str, namespace: str, component: str, replicas: int,
                      parent: pulumi.Resource) -> k8s.policy.v1.PodDisruptionBudget | None:
    """A drain evicts one replica at a time; only for several replicas (one has nobody to keep serving)."""
    if replicas < 2:
        return None
    return k8s.policy.v1.PodDisruptionBudget(
        resource_name, metadata={"name": app, "namespace": namespace, "labels": labels(app, component)},
        spec={"maxUnavailable": 1, "selector": {"matchLabels": selector(app)}}, opts=child(parent))


def child(parent: pulumi.Resource, **kwargs) -> pulumi.ResourceOptions:
    return pulumi.ResourceOptions(parent=parent, **kwargs)
