"""The rehearsal's Kubernetes side: the control plane, what a cluster admin installs before the program, and the
checks that need a real API server (tunnel-token flow, admission, every workload's Vault login, nothing left).

scripts/rehearse.py runs these as phases around `pulumi up` / `destroy`; each returns report lines or raises
with what went wrong.
"""

from __future__ import annotations

import contextlib
import secrets
from pathlib import Path

import httpx

from components.vault_access import EXTERNAL_SECRETS_ROLE, TUNNEL_TOKEN, policy_hcl
from scripts import admission, bao_kubernetes_auth, external_secrets
from scripts.control_plane import ControlPlane, KubeError, require_binaries
from scripts.vault_injector import VaultInjector

PART_OF = "app.kubernetes.io/part-of=graphql-entrypoint"
# README "Prerequisites in the cluster": the namespace enforces the Pod Security Standards at restricted
PSS_ENFORCE = {"pod-security.kubernetes.io/enforce": "restricted",
               "pod-security.kubernetes.io/enforce-version": "latest"}
# what the program may leave in its namespace: nothing but what Kubernetes itself puts there
NAMESPACED = {"pods": "/api/v1", "services": "/api/v1", "configmaps": "/api/v1", "secrets": "/api/v1",
              "serviceaccounts": "/api/v1", "deployments": "/apis/apps/v1", "replicasets": "/apis/apps/v1",
              "statefulsets": "/apis/apps/v1", "controllerrevisions": "/apis/apps/v1", "jobs": "/apis/batch/v1",
              "cronjobs": "/apis/batch/v1", "networkpolicies": "/apis/networking.k8s.io/v1",
              "externalsecrets": "/apis/external-secrets.io/v1", "secretstores": "/apis/external-secrets.io/v1"}
KUBERNETES_OWN = {("configmaps", "kube-root-ca.crt"), ("serviceaccounts", "default")}


class Cluster:
    def __init__(self, work: Path, namespace: str):
        self.binaries = require_binaries()  # fails fast, naming each missing binary and where it comes from
        self.work, self.namespace = work / "cluster", namespace
        self.plane = ControlPlane(self.work, self.binaries)
        self.eso: external_secrets.ExternalSecretsController | None = None
        self.injector: VaultInjector | None = None

    @property
    def kube(self):
        return self.plane.kube

    def start(self) -> str:
        self.plane.start()
        return ", ".join(f"{k} {v:.1f}s" for k, v in self.plane.timings.items())

    def prerequisites(self, bao_address: str, bao_token: str, auth_mount: str) -> str:
        """What README's "Prerequisites in the cluster" asks of a cluster admin: the namespace, External Secrets
        (CRDs + controller), the Vault Agent Injector (webhook), the Kubernetes auth mount pointed at the cluster."""
        # the API server's own PodSecurity admission then checks every Pod the controllers create, agents included
        self.kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {
            "name": self.namespace, "labels": PSS_ENFORCE}})
        self._pss_refuses_a_root_pod()
        crds = external_secrets.install_crds(self.kube)
        self.eso = external_secrets.ExternalSecretsController(self.work, self.binaries["external-secrets"],
                                                              self.plane.kubeconfig)
        self.eso.run()
        bao_kubernetes_auth.configure(self.plane, bao_address, bao_token, auth_mount)
        self.injector = VaultInjector(self.work, self.binaries["vault-k8s"], self.plane, bao_address)
        self.injector.run()
        return (f"namespace {self.namespace} (Pod Security restricted, enforced), {crds} External Secrets CRDs + "
                f"controller, auth/{auth_mount} "
                f"reviewing with this API server, injector webhook on 127.0.0.1:{self.injector.port}")

    # ------------------------------------------------------------------ the tunnel-token flow
    def tunnel_token_flow(self, bao_address: str, bao_token: str, key: str, auth_mount: str) -> list[str]:
        """The program's SecretStore + ExternalSecret through the real controller: synced with OpenBao's value,
        following a rotation, and failing visibly (SecretSyncedError) when the role's policy loses `read` or the
        role is bound to another service account; restored after each."""
        kube, ns, headers = self.kube, self.namespace, {"X-Vault-Token": bao_token}
        store = kube.get(f"/apis/external-secrets.io/v1/namespaces/{ns}/secretstores")["items"][0]
        secret = kube.get(f"/apis/external-secrets.io/v1/namespaces/{ns}/externalsecrets")["items"][0]
        name, interval = secret["metadata"]["name"], secret["spec"]["refreshInterval"]
        target, secret_key = secret["spec"]["target"]["name"], secret["spec"]["data"][0]["secretKey"]
        kv = f"{bao_address}/v1/secret/data/{TUNNEL_TOKEN}"

        def current() -> str:
            answer = httpx.get(kv, headers=headers)
            answer.raise_for_status()
            return answer.json()["data"]["data"][key]

        lines = []
        kube.wait("SecretStore Valid", lambda: external_secrets.condition(kube.get(
            f"/apis/external-secrets.io/v1/namespaces/{ns}/secretstores/{store['metadata']['name']}")).get(
            "reason") == "Valid", 60)
        synced = external_secrets.wait_status(kube, ns, name, "SecretSynced", 60)
        external_secrets.wait_value(kube, ns, target, secret_key, current(), 10)
        lines.append(f"SecretStore {store['metadata']['name']} Valid; ExternalSecret {name}: {synced['reason']}; "
                     f"Secret {target}.{secret_key} == OpenBao {TUNNEL_TOKEN}.{key}")
        original = current()
        rotated = secrets.token_urlsafe(32)  # a new value, never printed
        httpx.post(kv, headers=headers, json={"data": {key: rotated}}).raise_for_status()
        took = external_secrets.wait_value(kube, ns, target, secret_key, rotated, seconds(interval) + 20)
        lines.append(f"rotated in OpenBao: the Secret followed in {took:.1f}s (refreshInterval {interval})")

        policy_url = f"{bao_address}/v1/sys/policies/acl/{EXTERNAL_SECRETS_ROLE}"
        policy = httpx.get(policy_url, headers=headers).json()["data"]["policy"]
        lines += self._broken("policy without `read`", name, interval, target, secret_key, rotated,
                              lambda: httpx.put(policy_url, headers=headers, json={"policy": policy_hcl(
                                  [(f"secret/metadata/{TUNNEL_TOKEN}", ["list"])])}).raise_for_status(),
                              lambda: httpx.put(policy_url, headers=headers,
                                                json={"policy": policy}).raise_for_status())
        role_url = f"{bao_address}/v1/auth/{auth_mount}/role/{EXTERNAL_SECRETS_ROLE}"
        bound = httpx.get(role_url, headers=headers).json()["data"]["bound_service_account_names"]
        lines += self._broken("role bound to another service account", name, interval, target, secret_key, rotated,
                              lambda: httpx.post(role_url, headers=headers, json={
                                  "bound_service_account_names": ["default"]}).raise_for_status(),
                              lambda: httpx.post(role_url, headers=headers, json={
                                  "bound_service_account_names": bound}).raise_for_status())
        httpx.post(kv, headers=headers, json={"data": {key: original}}).raise_for_status()
        external_secrets.wait_value(kube, ns, target, secret_key, original, seconds(interval) + 20)
        lines.append("restored: SecretSynced again, the Secret holds OpenBao's value")
        return lines

    def _broken(self, what: str, name: str, interval: str, target: str, secret_key: str, last_good: str,
                break_it, restore) -> list[str]:
        """Break the flow on purpose: the ExternalSecret must turn SecretSyncedError (and say why in its event),
        the Secret keep its last good value; then restore and see it synced again."""
        kube, ns = self.kube, self.namespace
        try:
            break_it()
            failed = external_secrets.wait_status(kube, ns, name, "SecretSyncedError", seconds(interval) + 30)
            kept = external_secrets.secret_value(kube, ns, target, secret_key) == last_good
            events = kube.get(f"/api/v1/namespaces/{ns}/events",
                              fieldSelector=f"involvedObject.name={name},type=Warning")["items"]
            lines = [f"{what}: Ready={failed['status']} reason={failed['reason']} message={failed['message']!r}; "
                     f"the Secret kept its last value: {kept}"]
            if events:
                newest = max(events, key=lambda e: e.get("lastTimestamp") or "")
                lines.append(f"  event {newest['reason']}: {' '.join(newest['message'].split())[:400]}")
            if not kept:
                raise AssertionError(f"{what}: the Secret lost its last good value")
        finally:
            restore()
        external_secrets.wait_status(kube, ns, name, "SecretSynced", seconds(interval) + 30)
        return lines

    def _pss_refuses_a_root_pod(self) -> None:
        """The enforcement is live: the API server refuses (dry run) a pod that runs as root with no securityContext,
        so a pod of ours admitted later passed the restricted checks, not an admission that checks nothing."""
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "pss-probe", "namespace": self.namespace},
               "spec": {"containers": [{"name": "c", "image": "busybox@sha256:" + "0" * 64}]}}
        try:
            self.kube.post(f"/api/v1/namespaces/{self.namespace}/pods", pod, dryRun="All")
        except KubeError as exc:
            if exc.status == 403 and "violates PodSecurity" in str(exc):
                return
            raise
        raise AssertionError(f"namespace {self.namespace}: a root pod was admitted; Pod Security is not enforced")

    # ------------------------------------------------------------------ admission
    def admission(self) -> tuple[list[str], list[admission.Outcome]]:
        """Per workload: one admitted Pod's containers, or the refusal. Returns (lines, refused or defective)."""
        lines, bad = [], []
        for workload in admission.workloads(self.kube, self.namespace, PART_OF):
            outcome = admission.admit(self.kube, workload)
            lines += admission.describe(outcome)
            if outcome.refusal or outcome.problems:
                bad.append(outcome)
        return lines, bad

    # ------------------------------------------------------------------ logins
    def logins(self, bao_address: str, auth_mount: str) -> list[str]:
        """role -> service account, from what is in the cluster: each Vault-injected pod template's role annotation
        and service account, and the SecretStore's role and serviceAccountRef."""
        pairs = {}
        for workload in admission.workloads(self.kube, self.namespace, PART_OF):
            template = admission.pod_template(workload)
            annotations = template["metadata"].get("annotations", {})
            if annotations.get(admission.INJECT) == "true":
                pairs[annotations["vault.hashicorp.com/role"]] = template["spec"].get("serviceAccountName", "default")
        for store in self.kube.get(f"/apis/external-secrets.io/v1/namespaces/{self.namespace}/secretstores")["items"]:
            auth = store["spec"]["provider"]["vault"]["auth"]["kubernetes"]
            pairs[auth["role"]] = auth["serviceAccountRef"]["name"]
        return bao_kubernetes_auth.check_logins(self.kube, bao_address, self.namespace, pairs, auth_mount)

    # ------------------------------------------------------------------ after destroy
    def leftovers(self, timeout: float = 60) -> list[str]:
        """Until the namespace holds nothing of the program's (the garbage collector removes ReplicaSets, Pods
        and the ExternalSecret's Secret after their owners); returns what is still there at the deadline."""
        def remaining() -> list[str]:
            found = []
            for plural, base in NAMESPACED.items():
                for item in self.kube.get(f"{base}/namespaces/{self.namespace}/{plural}")["items"]:
                    if (plural, item["metadata"]["name"]) not in KUBERNETES_OWN:
                        found.append(f"{plural}/{item['metadata']['name']}")
            return found

        with contextlib.suppress(TimeoutError):
            self.kube.wait("the namespace emptied", lambda: not remaining(), timeout)
        return remaining()

    def stop(self) -> None:
        for process in (self.injector, self.eso):
            if process:
                with contextlib.suppress(Exception):
                    process.stop()
        self.plane.stop()


def seconds(interval: str) -> float:
    """`10s`, `1m30s`, `1h` -> seconds."""
    total, number = 0.0, ""
    for char in interval:
        if char.isdigit():
            number += char
        else:
            total += int(number) * {"s": 1, "m": 60, "h": 3600}[char]
            number = ""
    return total
