"""What the Vault Agent Injector (hashicorp/vault-k8s) requires of a pod before it mutates it, transcribed
from its source so a test can hold every rendered pod template against it. An error here is an error the
webhook returns, and the pod is refused at admission.

Upstream: hashicorp/vault-k8s, agent-inject/agent/{annotations.go,agent.go} (cited per function).
"""

from __future__ import annotations

from dataclasses import dataclass

INJECT = "vault.hashicorp.com/agent-inject"
ROLE = "vault.hashicorp.com/role"
RUN_AS_SAME_USER = "vault.hashicorp.com/agent-run-as-same-user"
TOKEN_VOLUME_NAME = "vault.hashicorp.com/agent-service-account-token-volume-name"
# agent.go, DefaultServiceAccountMount: where the agent mounts a named token volume no app container mounts
DEFAULT_SERVICE_ACCOUNT_MOUNT = "/var/run/secrets/vault.hashicorp.com/serviceaccount"
# what the API server's ServiceAccount admission plugin mounts when automountServiceAccountToken is not false
KUBE_TOKEN_MOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"


class InjectorRefusal(Exception):
    """The webhook's error: the pod is not admitted."""


def _parse_bool(raw: str) -> bool:
    # parseutil.ParseBool (go-secure-stdlib): strconv.ParseBool's spellings
    if raw in ("1", "t", "T", "TRUE", "true", "True"):
        return True
    if raw in ("0", "f", "F", "FALSE", "false", "False"):
        return False
    raise InjectorRefusal(f"invalid boolean {raw!r}")


def wants_injection(pod: dict) -> bool:
    """annotations.go, Agent.inject(): the annotation is absent or false -> no injection."""
    raw = pod["metadata"].get("annotations", {}).get(INJECT)
    return raw is not None and _parse_bool(raw)


def run_as_same_id(pod: dict) -> int | None:
    """annotations.go, Agent.runAsSameID(): with agent-run-as-same-user true, container 0 must carry its own
    securityContext.runAsUser (the pod-level one is not looked at) and it must not be 0."""
    raw = pod["metadata"].get("annotations", {}).get(RUN_AS_SAME_USER)
    if raw is None or not _parse_bool(raw):
        return None
    containers = pod["spec"].get("containers", [])
    if not containers:
        raise InjectorRefusal("No containers found in Pod Spec")
    context = containers[0].get("securityContext")
    if context is None:
        raise InjectorRefusal("No SecurityContext found for Container 0")
    if context.get("runAsUser") is None:
        raise InjectorRefusal("RunAsUser is nil for Container 0's SecurityContext")
    if context["runAsUser"] == 0:
        raise InjectorRefusal("container not allowed to run as root")
    return context["runAsUser"]


@dataclass(frozen=True)
class TokenVolume:
    name: str
    mount_path: str
    token_path: str
    audience: str | None  # the projected token's audience (None: the API server's default)


def _projected_token(volume: dict) -> tuple[str, str | None]:
    """agent.go, getTokenPathFromProjectedVolume(): the first serviceAccountToken source with a path."""
    for source in volume.get("projected", {}).get("sources", []):
        token = source.get("serviceAccountToken")
        if token and token.get("path"):
            return token["path"], token.get("audience")
    raise InjectorRefusal(f"failed to find tokenPath for projected volume {volume['name']!r}")


def service_account_token(pod: dict) -> TokenVolume:
    """agent.go, serviceaccount(): the named volume if the annotation names one (mounted by an app container, or
    else at DefaultServiceAccountMount); otherwise an app container's mount whose path contains "serviceaccount",
    which only the API server's automount provides. Without either, Agent.Validate() refuses the pod."""
    spec = pod["spec"]
    name = pod["metadata"].get("annotations", {}).get(TOKEN_VOLUME_NAME, "")
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    if name:
        for container in spec.get("containers", []):
            for mount in container.get("volumeMounts", []):
                if mount["name"] == name:
                    if name not in volumes:
                        raise InjectorRefusal(f"failed to find volume {name!r} in Pod volumes")
                    return TokenVolume(name, mount["mountPath"], *_projected_token(volumes[name]))
        if name in volumes:
            return TokenVolume(name, DEFAULT_SERVICE_ACCOUNT_MOUNT, *_projected_token(volumes[name]))
        raise InjectorRefusal(f"failed to find service account volume {name!r}")
    for container in spec.get("containers", []):
        for mount in container.get("volumeMounts", []):
            if "serviceaccount" in mount["mountPath"]:
                return TokenVolume(mount["name"], mount["mountPath"], "token", None)
    if spec.get("automountServiceAccountToken") is not False:
        # added by the ServiceAccount admission plugin, which runs before mutating webhooks
        return TokenVolume("kube-api-access", KUBE_TOKEN_MOUNT, "token", None)
    raise InjectorRefusal("failed to find service account volume mount")


def admit(pod: dict) -> TokenVolume | None:
    """The checks the webhook runs on a pod that asks for injection; None when it does not ask."""
    if not wants_injection(pod):
        return None
    run_as_same_id(pod)
    token = service_account_token(pod)
    # agent.go, Agent.Validate(): kubernetes auth needs a role
    if not pod["metadata"].get("annotations", {}).get(ROLE):
        raise InjectorRefusal("no Vault role found")
    return token


def security_context(run_as_user: int, run_as_group: int = 1000) -> dict:
    """container_sidecar.go, Agent.securityContext(): what the injector puts on its init and sidecar containers
    (SetSecurityContext is on: annotations.go Init() flips it when agent-run-as-same-user is set). The group is
    DefaultAgentRunAsGroup (agent.go) unless agent-run-as-group says otherwise."""
    return {"runAsUser": run_as_user, "runAsGroup": run_as_group,
            "runAsNonRoot": run_as_user != 0 and run_as_group != 0, "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]}, "allowPrivilegeEscalation": False}


def inject(pod: dict) -> dict:
    """The pod as the webhook returns it (the parts the Pod Security admission that follows looks at): the
    vault-agent-init container, and the vault-agent sidecar unless agent-pre-populate-only, each with the token
    volume and the shared /vault/secrets memory volume (container_init_sidecar.go, container_sidecar.go)."""
    token = admit(pod)
    if token is None:
        return pod
    annotations = pod["metadata"].get("annotations", {})
    uid = run_as_same_id(pod) or 100  # DefaultAgentRunAsUser
    group = int(annotations.get("vault.hashicorp.com/agent-run-as-group", 1000))
    mounts = [{"name": token.name, "mountPath": token.mount_path, "readOnly": True},
              {"name": "home-init", "mountPath": "/home/vault"},
              {"name": "vault-secrets", "mountPath": "/vault/secrets"}]
    agent = {"image": "hashicorp/vault:1.20.0", "command": ["/bin/sh", "-ec"], "volumeMounts": mounts,
             "securityContext": security_context(uid, group),
             "resources": {"limits": {"cpu": "500m", "memory": "128Mi"},
                           "requests": {"cpu": "250m", "memory": "64Mi"}}}
    spec = {**pod["spec"], "volumes": [*pod["spec"].get("volumes", []),
                                       {"name": "home-init", "emptyDir": {"medium": "Memory"}},
                                       {"name": "vault-secrets", "emptyDir": {"medium": "Memory"}}]}
    spec["initContainers"] = [*spec.get("initContainers", []), {"name": "vault-agent-init", **agent}]
    if annotations.get("vault.hashicorp.com/agent-pre-populate-only") != "true":
        spec["containers"] = [*spec["containers"], {"name": "vault-agent", **agent}]
    return {**pod, "spec": spec}
