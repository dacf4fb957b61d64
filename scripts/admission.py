"""Admission for real: the controllers create each workload's Pods, the API server admits them through the Vault
Agent Injector's webhook, and this module reports, per workload, what was admitted (the containers of one Pod)
or refused (the webhook's message, from the controller's FailedCreate event).

No kubelet and no scheduler run here: admitted Pods stay Pending, which is all admission needs. A CronJob's Pods
appear on its schedule; its template is submitted as a Job owned by the CronJob (what `kubectl create job
--from=cronjob/...` does), so the garbage collector removes it with the CronJob.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field

from scripts.control_plane import Kube

INJECT = "vault.hashicorp.com/agent-inject"
WORKLOAD_KINDS = {"Deployment": "apps/v1", "StatefulSet": "apps/v1", "Job": "batch/v1", "CronJob": "batch/v1"}
PLURAL = {"Deployment": "deployments", "StatefulSet": "statefulsets", "Job": "jobs", "CronJob": "cronjobs"}


@dataclass
class Outcome:
    kind: str
    name: str
    pod: dict | None = None
    refusal: str | None = None
    problems: list[str] = field(default_factory=list)  # an admitted pod without what the annotations ask


def workloads(kube: Kube, namespace: str, label: str = "app.kubernetes.io/part-of") -> list[dict]:
    """Every Deployment, StatefulSet, Job and CronJob of the program in the namespace."""
    found = []
    for kind, version in WORKLOAD_KINDS.items():
        items = kube.get(f"/apis/{version}/namespaces/{namespace}/{PLURAL[kind]}", labelSelector=label)["items"]
        found.extend(item | {"kind": kind, "apiVersion": version} for item in items)
    return found


def pod_template(workload: dict) -> dict:
    spec = workload["spec"]
    return spec["jobTemplate"]["spec"]["template"] if workload["kind"] == "CronJob" else spec["template"]


def run_cronjob_once(kube: Kube, cronjob: dict) -> dict:
    meta = cronjob["metadata"]
    job = {"apiVersion": "batch/v1", "kind": "Job",
           "metadata": {"name": f"{meta['name']}-rehearsal", "namespace": meta["namespace"],
                        "labels": cronjob["spec"]["jobTemplate"].get("metadata", {}).get("labels", {}),
                        "ownerReferences": [{"apiVersion": "batch/v1", "kind": "CronJob", "name": meta["name"],
                                             "uid": meta["uid"], "controller": True}]},
           "spec": cronjob["spec"]["jobTemplate"]["spec"]}
    return kube.apply(job) | {"kind": "Job"}


def _pods(kube: Kube, namespace: str, labels: dict[str, str]) -> list[dict]:
    selector = ",".join(f"{k}={v}" for k, v in labels.items())
    return kube.get(f"/api/v1/namespaces/{namespace}/pods", labelSelector=selector)["items"]


def _refusal(kube: Kube, namespace: str, names: set[str]) -> str | None:
    """The newest FailedCreate event of the workload's controllers (its ReplicaSets, itself)."""
    events = kube.get(f"/api/v1/namespaces/{namespace}/events", fieldSelector="reason=FailedCreate")["items"]
    messages = [e["message"] for e in sorted(events, key=lambda e: e.get("lastTimestamp") or "")
                if e["involvedObject"]["name"] in names]
    return messages[-1] if messages else None


def _controller_names(kube: Kube, namespace: str, workload: dict) -> set[str]:
    names = {workload["metadata"]["name"]}
    if workload["kind"] == "Deployment":
        replica_sets = kube.get(f"/apis/apps/v1/namespaces/{namespace}/replicasets")["items"]
        names |= {rs["metadata"]["name"] for rs in replica_sets
                  if any(o["uid"] == workload["metadata"]["uid"] for o in rs["metadata"].get("ownerReferences", []))}
    return names


def admit(kube: Kube, workload: dict, timeout: float = 90) -> Outcome:
    """Wait until the controller created a Pod of the workload, or reported that creating one was refused."""
    namespace, name = workload["metadata"]["namespace"], workload["metadata"]["name"]
    outcome = Outcome(workload["kind"], name)
    if workload["kind"] == "CronJob":
        workload = run_cronjob_once(kube, workload)
    labels = pod_template(workload)["metadata"]["labels"]

    def settled():
        pods = _pods(kube, namespace, labels)
        if pods:
            return ("pod", pods[0])
        refusal = _refusal(kube, namespace, _controller_names(kube, namespace, workload))
        return ("refused", refusal) if refusal else None

    result, value = kube.wait(f"a Pod of {outcome.kind} {name}", settled, timeout)
    if result == "pod":
        outcome.pod = value
        outcome.problems = injection_problems(value)
    else:
        outcome.refusal = value
    return outcome


def agent_config(container: dict) -> dict:
    """The Vault agent's configuration the injector put into the container (env VAULT_CONFIG, base64 JSON;
    vault-k8s agent-inject/agent/container_sidecar.go)."""
    raw = next((e["value"] for e in container.get("env", []) if e["name"] == "VAULT_CONFIG"), None)
    return json.loads(base64.b64decode(raw)) if raw else {}


def injection_problems(pod: dict) -> list[str]:
    """What an injected pod must carry, from its own annotations: init agent (and sidecar unless
    pre-populate-only), one template per agent-inject-template-* annotation at /vault/secrets/<file>, the agents
    running as the first container's user."""
    annotations = pod["metadata"].get("annotations", {})
    if annotations.get(INJECT) != "true":
        return []
    problems = []
    if annotations.get("vault.hashicorp.com/agent-inject-status") != "injected":
        problems.append("no agent-inject-status: injected")
    init = {c["name"]: c for c in pod["spec"].get("initContainers", [])}
    containers = {c["name"]: c for c in pod["spec"]["containers"]}
    agents = [init.get("vault-agent-init")]
    if annotations.get("vault.hashicorp.com/agent-pre-populate-only") != "true":
        agents.append(containers.get("vault-agent"))
    if None in agents:
        return [*problems, f"agent containers missing: init {list(init)}, containers {list(containers)}"]
    prefix = "vault.hashicorp.com/agent-inject-template-"
    wanted = {k.removeprefix(prefix): v for k, v in annotations.items() if k.startswith(prefix)}
    rendered = {t["destination"].removeprefix("/vault/secrets/"): t["contents"]
                for t in agent_config(agents[0]).get("template", [])}
    if rendered != wanted:
        problems.append(f"agent templates {sorted(rendered)} != the annotations' {sorted(wanted)} (or their text)")
    user = pod["spec"]["containers"][0].get("securityContext", {}).get("runAsUser")
    for agent in agents:
        if agent.get("securityContext", {}).get("runAsUser") != user:
            problems.append(f"{agent['name']} runs as {agent.get('securityContext', {}).get('runAsUser')}, "
                            f"the first container as {user}")
    return problems


def describe(outcome: Outcome) -> list[str]:
    """Lines for the rehearsal's output: the admitted Pod's containers, or the refusal."""
    head = f"{outcome.kind} {outcome.name}"
    if outcome.refusal:
        return [f"{head}: REFUSED: {outcome.refusal}"]
    spec = outcome.pod["spec"]
    lines = [f"{head}: pod {outcome.pod['metadata']['name']} admitted ({outcome.pod['status'].get('phase')})"]
    for role, items in (("init", spec.get("initContainers", [])), ("container", spec["containers"])):
        for c in items:
            lines.append(f"    {role:9} {c['name']:28} runAsUser={c.get('securityContext', {}).get('runAsUser')} "
                         f"{c['image']}")
    lines += [f"    PROBLEM: {p}" for p in outcome.problems]
    return lines
