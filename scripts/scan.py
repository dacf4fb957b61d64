"""The rendered Kubernetes manifests of every stack (plans/<stack>.plan.yaml), as the scanners read them."""

from __future__ import annotations

import yaml

from scripts.plan import PLANS, all_stacks


def manifests(stack: str) -> list[dict]:
    """The Kubernetes objects of a stack's committed plan (test_infra keeps the plan equal to the program)."""
    document = yaml.safe_load((PLANS / f"{stack}.plan.yaml").read_text())
    return [r["inputs"] for r in document["resources"]
            if r["type"].startswith("kubernetes:") and isinstance(r["inputs"], dict) and "kind" in r["inputs"]]


def pod_templates(objects: list[dict]) -> list[tuple[str, dict]]:
    """(workload name, pod template) for every object that makes pods."""
    found = []
    for obj in objects:
        spec = obj.get("spec", {})
        if obj["kind"] in ("Deployment", "StatefulSet", "Job", "DaemonSet", "ReplicaSet"):
            found.append((obj["metadata"]["name"], spec["template"]))
        elif obj["kind"] == "CronJob":
            found.append((obj["metadata"]["name"], spec["jobTemplate"]["spec"]["template"]))
    return found


__all__ = ["all_stacks", "manifests", "pod_templates"]
