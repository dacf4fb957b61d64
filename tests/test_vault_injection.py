"""Every rendered pod template that asks for the Vault agent passes the injector's own admission checks
(tests/support/vault_injector.py, transcribed from hashicorp/vault-k8s): otherwise the webhook refuses the pod
and the workload never starts."""

from __future__ import annotations

import copy

import pytest

from scripts.scan import all_stacks, manifests, pod_templates
from tests.support.vault_injector import InjectorRefusal, admit, run_as_same_id, wants_injection

STACKS = all_stacks()
INJECTED = {"hasura", "graphql-async-request-publisher", "graphql-async-response-writer", "graphql-async-cleanup",
            "graphql-async-bootstrap", "graphql-async-db-roles"}


@pytest.mark.parametrize("stack", STACKS)
def test_every_injected_pod_is_admitted_by_the_vault_injector(stack):
    admitted = set()
    for name, template in pod_templates(manifests(stack)):
        if not wants_injection(template):
            continue
        admit(template)  # raises InjectorRefusal with the webhook's message
        # the agent runs as the app's own user: same uid as the pod-level one the images are built for
        assert run_as_same_id(template) == template["spec"]["securityContext"]["runAsUser"], name
        admitted.add(name.rsplit("-", 1)[0] if name.startswith(("graphql-async-bootstrap", "graphql-async-db-roles"))
                     else name)
    assert admitted == INJECTED


def test_the_transcription_refuses_what_the_injector_refuses():
    """The checks have teeth: a pod-level runAsUser alone is what the injector refused on the old program."""
    pod = {"metadata": {"annotations": {"vault.hashicorp.com/agent-inject": "true",
                                        "vault.hashicorp.com/role": "r",
                                        "vault.hashicorp.com/agent-run-as-same-user": "true"}},
           "spec": {"securityContext": {"runAsUser": 10001},
                    "containers": [{"name": "app", "securityContext": {"allowPrivilegeEscalation": False}}]}}
    with pytest.raises(InjectorRefusal, match="RunAsUser is nil for Container 0"):
        admit(pod)
    root = copy.deepcopy(pod)
    root["spec"]["containers"][0]["securityContext"]["runAsUser"] = 0
    with pytest.raises(InjectorRefusal, match="not allowed to run as root"):
        admit(root)
    no_token = copy.deepcopy(pod)
    no_token["spec"]["containers"][0]["securityContext"]["runAsUser"] = 10001
    no_token["spec"]["automountServiceAccountToken"] = False
    with pytest.raises(InjectorRefusal, match="failed to find service account volume mount"):
        admit(no_token)


def plan_resources(stack: str, type_: str) -> list[dict]:
    import yaml

    from scripts.plan import plan_path
    document = yaml.safe_load(plan_path(stack).read_text())
    return [r["inputs"] for r in document["resources"] if r["type"] == type_]


@pytest.mark.parametrize("stack", STACKS)
def test_only_the_vault_agent_holds_a_kubernetes_token_and_vault_checks_its_audience(stack):
    """No pod automounts a service-account token; an injected pod has one projected token, bound to the audience
    every Kubernetes auth role demands, which the injector mounts into its agent containers only."""
    roles = {r["roleName"]: r for r in plan_resources(stack, "vault:kubernetes/authBackendRole:AuthBackendRole")}
    assert roles and all(r.get("audience") == "vault" for r in roles.values()), roles
    for name, template in pod_templates(manifests(stack)):
        spec = template["spec"]
        assert spec.get("automountServiceAccountToken") is False, name
        if not wants_injection(template):
            continue
        token = admit(template)
        assert token.audience == roles[template["metadata"]["annotations"]["vault.hashicorp.com/role"]]["audience"]
        # mounted by no app container: the injector puts it under its own path, in its own containers
        assert not any(m["name"] == token.name for c in spec["containers"] for m in c.get("volumeMounts", []))
    [store] = [o for o in manifests(stack) if o["kind"] == "SecretStore"]
    assert store["spec"]["provider"]["vault"]["auth"]["kubernetes"]["serviceAccountRef"]["audiences"] == ["vault"]


@pytest.mark.parametrize("stack", STACKS)
def test_injected_pods_still_pass_pod_security_restricted(stack, tmp_path):
    """The PodSecurity admission runs after mutating webhooks: the pod with the injector's agent containers
    must pass `restricted` too (the upstream evaluator, scripts/pss)."""
    import yaml

    from scripts.scan import pss
    from tests.support.vault_injector import inject

    injected = [(name, inject(template)) for name, template in pod_templates(manifests(stack))
                if wants_injection(template)]
    assert len(injected) == 6 and all(len(t["spec"]["initContainers"]) == 1 for _, t in injected)
    manifest = tmp_path / "injected.yaml"
    manifest.write_text(yaml.safe_dump_all([
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": "graphql"},
         "spec": {"selector": {"matchLabels": template["metadata"]["labels"]}, "template": template}}
        for name, template in injected]))
    assert pss(manifest) == []
    # and the evaluator would notice an agent that ran as root
    root = copy.deepcopy(injected[0][1])
    root["spec"]["initContainers"][0]["securityContext"]["runAsUser"] = 0
    manifest.write_text(yaml.safe_dump({"apiVersion": "apps/v1", "kind": "Deployment",
                                        "metadata": {"name": "root", "namespace": "graphql"},
                                        "spec": {"selector": {"matchLabels": root["metadata"]["labels"]},
                                                 "template": root}}))
    assert [f.object for f in pss(manifest)] == ["Deployment/root"]
