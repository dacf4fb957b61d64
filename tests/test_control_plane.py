"""The rehearsal's control plane on its own (no Pulumi CLI): a real kube-apiserver + controller-manager on etcd,
OpenBao's Kubernetes auth reviewing real service-account tokens, External Secrets syncing the tunnel token, the
Vault Agent Injector admitting or refusing the program's pod templates.

The Kubernetes objects are the program's own, from a run of the `local` stack under mocks (scripts/pulumi_harness);
the Vault roles and policies are written from the program's own definitions (components/vault_access), standing
in for the Vault provider that `bash scripts/dev.sh rehearse` runs for real. Skipped, with the reason, where the
binaries are not built (CI's fresh machine): see scripts/control_plane.py MISSING_HINTS.
"""

from __future__ import annotations

import copy
import shutil

import httpx
import pytest

from components.k8s import VAULT_AUDIENCE
from components.vault_access import CONSUMER_ENTRIES, EXTERNAL_SECRETS_ROLE, TUNNEL_TOKEN, policy_grants, policy_hcl
from scripts import admission, bao_kubernetes_auth, external_secrets
from scripts.control_plane import ControlPlane, KubeError, find_binary
from scripts.pulumi_harness import run_stack

NAMESPACE = "graphql"
CORE = ("etcd", "kube-apiserver", "kube-controller-manager")


def _missing(*names: str) -> list[str]:
    return [n for n in names if find_binary(n) is None]


pytestmark = pytest.mark.skipif(bool(_missing(*CORE)) or shutil.which("bao") is None,
                                reason=f"control-plane binaries not built ({', '.join(_missing(*CORE)) or 'bao'}): "
                                       "bash scripts/build_control_plane.sh, apt-get install etcd-server")


@pytest.fixture(scope="module")
def bao(tmp_path_factory):
    from scripts.rehearse import OpenBao

    server = OpenBao(tmp_path_factory.mktemp("bao"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def plane(tmp_path_factory, bao):
    cluster = ControlPlane(tmp_path_factory.mktemp("control-plane"))
    try:
        cluster.start()
        bao_kubernetes_auth.configure(cluster, bao.address, bao.token)
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def program(bao):
    """The local stack's Kubernetes objects, pointed at this OpenBao."""
    run = run_stack("local", {"graphql-entrypoint:vault": {"address": bao.address, "kvMount": "secret",
                                                           "kubernetesAuthPath": "kubernetes",
                                                           "tunnelTokenKey": "value"}})
    return run.kubernetes_objects()


def _vault_roles(bao, service_accounts: dict[str, str]) -> None:
    """The program's policies and roles (what components/vault_access declares), written directly."""
    headers = {"X-Vault-Token": bao.token}
    for consumer, grants in policy_grants("secret").items():
        httpx.put(f"{bao.address}/v1/sys/policies/acl/{consumer}", headers=headers,
                  json={"policy": policy_hcl(grants)}).raise_for_status()
        httpx.post(f"{bao.address}/v1/auth/kubernetes/role/{consumer}", headers=headers, json={
            "bound_service_account_names": [service_accounts[consumer]],
            "bound_service_account_namespaces": [NAMESPACE], "audience": VAULT_AUDIENCE,
            "token_policies": [consumer]}).raise_for_status()


def _apply(plane, objects, kinds):
    plane.kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})
    for obj in objects:
        if obj["kind"] in kinds:
            plane.kube.apply(obj)


def test_controllers_create_pods_that_stay_pending(plane):
    kube = plane.kube
    kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "smoke"}})
    kube.wait("default service account in smoke", lambda: kube.exists(
        "/api/v1/namespaces/smoke/serviceaccounts/default"), 30)
    kube.apply({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "smoke"},
                "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "web", "image": "example.test/web:1"}]}}}})
    pods = kube.wait("a pod of smoke/web", lambda: kube.get("/api/v1/namespaces/smoke/pods",
                                                            labelSelector="app=web")["items"], 60)
    assert pods[0]["status"]["phase"] == "Pending"  # no scheduler, no kubelet
    with pytest.raises(KubeError) as refused:  # immutable fields are the server's, for real
        kube.request("PATCH", "/apis/apps/v1/namespaces/smoke/deployments/web", json={
            "spec": {"selector": {"matchLabels": {"app": "other"}}}},
            headers={"Content-Type": "application/merge-patch+json"})
    assert refused.value.status == 422 and "field is immutable" in str(refused.value)


def test_each_workload_token_logs_in_to_its_own_role_only(plane, bao, program):
    accounts = {consumer: consumer for consumer in CONSUMER_ENTRIES} | {
        EXTERNAL_SECRETS_ROLE: "cloudflare-tunnel-secretstore"}
    _apply(plane, program, {"ServiceAccount"})
    _vault_roles(bao, accounts)
    lines = bao_kubernetes_auth.check_logins(plane.kube, bao.address, NAMESPACE, accounts)
    assert len(lines) == len(accounts)
    # a role bound to the wrong account is caught: its own workload is refused, the other one let in
    swapped = dict(accounts, hasura="graphql-async-cleanup")
    _vault_roles(bao, swapped)
    with pytest.raises(AssertionError, match="graphql-async-cleanup's token was ACCEPTED for role hasura"):
        bao_kubernetes_auth.check_logins(plane.kube, bao.address, NAMESPACE, accounts)
    _vault_roles(bao, accounts)


@pytest.mark.skipif(find_binary("external-secrets") is None, reason="external-secrets not built (ESO_BIN)")
def test_external_secrets_syncs_rotates_and_reports_a_denied_read(plane, bao, program, tmp_path):
    kube, headers = plane.kube, {"X-Vault-Token": bao.token}
    accounts = {consumer: consumer for consumer in CONSUMER_ENTRIES} | {
        EXTERNAL_SECRETS_ROLE: "cloudflare-tunnel-secretstore"}
    _vault_roles(bao, accounts)
    httpx.post(f"{bao.address}/v1/secret/data/{TUNNEL_TOKEN}", headers=headers,
               json={"data": {"value": "first-token-value"}}).raise_for_status()
    assert external_secrets.install_crds(kube) >= 2
    controller = external_secrets.ExternalSecretsController(tmp_path, find_binary("external-secrets"),
                                                            plane.kubeconfig)
    controller.run()
    try:
        objects = [copy.deepcopy(o) for o in program if o["kind"] in ("ServiceAccount", "SecretStore",
                                                                       "ExternalSecret")]
        for obj in objects:
            if obj["kind"] == "ExternalSecret":
                obj["spec"]["refreshInterval"] = "5s"
        _apply(plane, objects, {"ServiceAccount", "SecretStore", "ExternalSecret"})
        name = next(o["metadata"]["name"] for o in objects if o["kind"] == "ExternalSecret")
        external_secrets.wait_status(kube, NAMESPACE, name, "SecretSynced", 60)
        external_secrets.wait_value(kube, NAMESPACE, name, "token", "first-token-value", 10)
        httpx.post(f"{bao.address}/v1/secret/data/{TUNNEL_TOKEN}", headers=headers,
                   json={"data": {"value": "rotated-token-value"}}).raise_for_status()
        external_secrets.wait_value(kube, NAMESPACE, name, "token", "rotated-token-value", 30)
        # take `read` out of the policy: the next refresh fails, the Secret keeps the last value
        httpx.put(f"{bao.address}/v1/sys/policies/acl/{EXTERNAL_SECRETS_ROLE}", headers=headers, json={
            "policy": policy_hcl([(f"secret/metadata/{TUNNEL_TOKEN}", ["list"])])}).raise_for_status()
        httpx.post(f"{bao.address}/v1/secret/data/{TUNNEL_TOKEN}", headers=headers,
                   json={"data": {"value": "unreadable-token-value"}}).raise_for_status()
        failed = external_secrets.wait_status(kube, NAMESPACE, name, "SecretSyncedError", 30)
        assert "could not get secret data from provider" in failed["message"], failed
        assert external_secrets.secret_value(kube, NAMESPACE, name, "token") == "rotated-token-value"
    finally:
        controller.stop()


@pytest.mark.skipif(find_binary("vault-k8s") is None, reason="vault-k8s not built (VAULT_K8S_BIN)")
def test_injector_admits_a_pod_with_container_user_and_refuses_one_without(plane, bao, program, tmp_path):
    from scripts.vault_injector import VaultInjector

    kube = plane.kube
    _apply(plane, program, {"ServiceAccount"})
    injector = VaultInjector(tmp_path, find_binary("vault-k8s"), plane, bao.address)
    injector.run()
    try:
        writer = next(o for o in program if o["kind"] == "StatefulSet")
        template = copy.deepcopy(writer["spec"]["template"])
        uid = template["spec"]["securityContext"]["runAsUser"]
        template["spec"]["containers"][0].setdefault("securityContext", {}).pop("runAsUser", None)
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {**template["metadata"], "name": "without-user",
                                                               "namespace": NAMESPACE}, "spec": template["spec"]}
        with pytest.raises(KubeError) as refused:
            kube.post(f"/api/v1/namespaces/{NAMESPACE}/pods", pod)
        assert 'admission webhook "vault.hashicorp.com" denied the request' in str(refused.value)
        assert "RunAsUser is nil for Container 0's SecurityContext" in str(refused.value)

        pod["metadata"]["name"] = "with-user"
        pod["spec"]["containers"][0]["securityContext"]["runAsUser"] = uid
        admitted = kube.post(f"/api/v1/namespaces/{NAMESPACE}/pods", pod)
        assert admission.injection_problems(admitted) == []
        names = [c["name"] for c in admitted["spec"]["initContainers"]] + [
            c["name"] for c in admitted["spec"]["containers"]]
        assert "vault-agent-init" in names and "vault-agent" in names
    finally:
        injector.stop()
