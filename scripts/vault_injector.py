"""The Vault Agent Injector (hashicorp/vault-k8s) as the cluster's mutating webhook, run on loopback.

Set up as its own deploy/ manifests at the pinned tag describe it (injector-rbac.yaml: a `vault-injector` service
account allowed to get/list/watch/patch mutatingwebhookconfigurations; injector-mutating-webhook.yaml: the
webhook `vault.hashicorp.com` on pod CREATE; injector-deployment.yaml: AGENT_INJECT_TLS_AUTO names that
configuration, so the injector generates its serving certificate and patches the caBundle itself). Two things
differ because nothing here runs in a pod:
- the injector insists on an in-cluster client (subcommand/injector/command.go: rest.InClusterConfig()), which
  reads /var/run/secrets/kubernetes.io/serviceaccount/{token,ca.crt}: it runs in a private mount namespace
  (`unshare`) where /run is a folder holding exactly those files, its own service account's token included;
- the webhook is reached by URL (https://127.0.0.1:PORT/mutate) instead of a Service: no kube-proxy.
failurePolicy is Fail (the chart's default is Ignore): a webhook that cannot be called refuses the pod, so a pod
admitted here was really seen by the injector.
"""

from __future__ import annotations

import base64
import os
import shutil
from pathlib import Path

import httpx

from scripts.control_plane import ControlPlane, Process
from scripts.servers import free_port

NAMESPACE = "vault"
ACCOUNT = "vault-injector"
WEBHOOK_CONFIG = "vault-agent-injector-cfg"


def rbac_objects() -> list[dict]:
    """deploy/injector-rbac.yaml's cluster-scoped part (the webhook patching), in the `vault` namespace."""
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}},
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": ACCOUNT, "namespace": NAMESPACE}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
         "metadata": {"name": "vault-injector-clusterrole"},
         "rules": [{"apiGroups": ["admissionregistration.k8s.io"], "resources": ["mutatingwebhookconfigurations"],
                    "verbs": ["get", "list", "watch", "patch"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
         "metadata": {"name": "vault-injector-binding"},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                     "name": "vault-injector-clusterrole"},
         "subjects": [{"kind": "ServiceAccount", "name": ACCOUNT, "namespace": NAMESPACE}]},
    ]


def webhook_configuration(port: int) -> dict:
    """deploy/injector-mutating-webhook.yaml with a URL instead of a Service; caBundle filled in by the injector."""
    return {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
            "metadata": {"name": WEBHOOK_CONFIG},
            "webhooks": [{
                "name": "vault.hashicorp.com", "sideEffects": "None", "admissionReviewVersions": ["v1", "v1beta1"],
                "clientConfig": {"url": f"https://127.0.0.1:{port}/mutate"},
                "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"],
                           "resources": ["pods"], "scope": "Namespaced"}],
                "namespaceSelector": {}, "failurePolicy": "Fail", "timeoutSeconds": 10,
                "objectSelector": {"matchExpressions": [{"key": "app.kubernetes.io/name", "operator": "NotIn",
                                                         "values": ["vault-injector"]}]}}]}


class VaultInjector(Process):
    def __init__(self, work: Path, binary: Path, plane: ControlPlane, vault_address: str):
        super().__init__("vault-injector", work)
        self.binary, self.plane, self.vault_address = binary, plane, vault_address
        self.port = free_port()
        self.root = work / "vault-injector-run"  # becomes /run inside the injector's mount namespace

    def run(self) -> None:
        kube = self.plane.kube
        for obj in rbac_objects():
            kube.apply(obj)
        kube.apply(webhook_configuration(self.port))
        account = self.root / "secrets" / "kubernetes.io" / "serviceaccount"
        shutil.rmtree(self.root, ignore_errors=True)
        account.mkdir(parents=True)
        (account / "token").write_text(kube.service_account_token(NAMESPACE, ACCOUNT, seconds=4 * 3600))
        shutil.copy(self.plane.ca, account / "ca.crt")
        (account / "namespace").write_text(NAMESPACE)
        for path in account.iterdir():
            path.chmod(0o600)
        # root may make a mount namespace directly; anyone else through a user namespace mapped to root
        user = [] if os.geteuid() == 0 else ["--user", "--map-root-user"]
        command = ["unshare", *user, "--mount", "--propagation", "private", "--",
                   "sh", "-c", 'mount --bind "$0" /run && exec "$@"', str(self.root),
                   str(self.binary), "agent-inject", f"-listen=127.0.0.1:{self.port}",
                   f"-vault-address={self.vault_address}", f"-tls-auto={WEBHOOK_CONFIG}", "-tls-auto-hosts=127.0.0.1",
                   "-use-leader-elector=false", "-log-level=info", "-default-template=map"]
        env = os.environ | {"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": str(self.plane.port),
                            "NAMESPACE": NAMESPACE}
        self.start(command, self._ready, timeout=60, env=env)

    def _ready(self) -> bool:
        """The caBundle patched into the webhook configuration by the injector, and the injector serving its
        health endpoint with a certificate from that CA (204 once it has one: subcommand/injector/command.go,
        handleReady) — what the API server will check when it calls the webhook."""
        config = self.plane.kube.get(
            f"/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/{WEBHOOK_CONFIG}")
        bundle = config["webhooks"][0]["clientConfig"].get("caBundle")
        if not bundle:
            return False
        ca = self.root.parent / "vault-injector-ca.crt"
        ca.write_bytes(base64.b64decode(bundle))
        return httpx.get(f"https://127.0.0.1:{self.port}/health/ready", verify=str(ca), timeout=2).status_code == 204
