"""Run the scanners on the rendered Kubernetes manifests of every stack (plans/<stack>.plan.yaml).

    python -m scripts.scan             # every stack; exit 1 on a finding not suppressed, or a stale suppression
    python -m scripts.scan dev

Scanners: checkov (kubernetes framework), kube-score, and pss-check (scripts/pss: the upstream Pod Security
Standards evaluator, k8s.io/pod-security-admission, at `restricted`). `bash scripts/dev.sh lint` builds and
installs them (.cache/bin, .cache/scanners-venv). A finding is fixed at the source, or suppressed in
config/scanner-suppressions.yaml with a one-line reason; a suppression that matches nothing fails the run too.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import yaml

from scripts.plan import PLANS, REPO, all_stacks

SUPPRESSIONS = REPO / "config" / "scanner-suppressions.yaml"
CACHE = REPO / ".cache"
KUBE_SCORE = Path(os.environ.get("KUBE_SCORE", CACHE / "bin" / "kube-score"))
PSS_CHECK = Path(os.environ.get("PSS_CHECK", CACHE / "bin" / "pss-check"))
CHECKOV = Path(os.environ.get("CHECKOV", CACHE / "scanners-venv" / "bin" / "checkov"))


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


@dataclass(frozen=True)
class Finding:
    scanner: str  # checkov | kube-score | pss
    check: str  # the scanner's own id
    object: str  # Kind/name
    message: str

    def __str__(self) -> str:
        return f"{self.scanner} {self.check} {self.object}: {self.message}"


@dataclass(frozen=True)
class Suppression:
    scanner: str
    check: str
    object: str  # Kind/name, or * for every object
    reason: str
    stacks: tuple[str, ...] = ()  # empty: every stack

    def matches(self, stack: str, finding: Finding) -> bool:
        return (finding.scanner == self.scanner and finding.check == self.check
                and self.object in ("*", finding.object) and (not self.stacks or stack in self.stacks))


def load_suppressions(path: Path = SUPPRESSIONS) -> list[Suppression]:
    entries = yaml.safe_load(path.read_text()) or []
    suppressions = []
    for entry in entries:
        if not str(entry.get("reason", "")).strip():
            raise ValueError(f"{path.name}: a suppression without a reason: {entry}")
        suppressions.append(Suppression(entry["scanner"], entry["check"], entry["object"], entry["reason"],
                                        tuple(entry.get("stacks", ()))))
    return suppressions


def _tool(path: Path) -> str:
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: `bash scripts/dev.sh lint` builds the scanners")
    return str(path)


def kube_score(manifest: Path) -> list[Finding]:
    run = subprocess.run([_tool(KUBE_SCORE), "score", "--output-format", "json", str(manifest)],
                         capture_output=True, text=True, timeout=300)
    if run.returncode not in (0, 1) or not run.stdout.strip():  # 1: it found something
        raise RuntimeError(f"kube-score failed: {run.stderr}")
    findings = []
    for obj in json.loads(run.stdout):
        name = f"{obj['type_meta']['kind']}/{obj['object_meta']['name']}"
        for check in obj["checks"]:
            if not check["skipped"] and check["grade"] < 10:  # 10: OK, 5: warning, 1: critical
                summary = "; ".join(c["summary"] for c in check.get("comments") or [])
                findings.append(Finding("kube-score", check["check"]["id"], name, summary))
    return findings


def checkov(manifest: Path) -> list[Finding]:
    run = subprocess.run([_tool(CHECKOV), "--file", str(manifest), "--framework", "kubernetes", "--output", "json",
                          "--quiet", "--compact"], capture_output=True, text=True, timeout=600,
                         env=os.environ | {"BC_SKIP_MAPPING": "TRUE", "CHECKOV_NO_UPDATE_CHECK": "TRUE"})
    if run.returncode not in (0, 1) or not run.stdout.strip():
        raise RuntimeError(f"checkov failed: {run.stderr[-2000:]}")
    report = json.loads(run.stdout)
    if isinstance(report, list):
        [report] = [r for r in report if r.get("check_type") == "kubernetes"]
    if report.get("summary", {}).get("parsing_errors"):
        raise RuntimeError(f"checkov could not parse {manifest}")
    findings = []
    for failed in report.get("results", {}).get("failed_checks", []):
        kind, _namespace, name = failed["resource"].split(".", 2)
        findings.append(Finding("checkov", failed["check_id"], f"{kind}/{name}", failed["check_name"]))
    return findings


def pss(manifest: Path) -> list[Finding]:
    run = subprocess.run([_tool(PSS_CHECK), "-level", "restricted", "-json", str(manifest)],
                         capture_output=True, text=True, timeout=120)
    if run.returncode not in (0, 1):
        raise RuntimeError(f"pss-check failed: {run.stderr}")
    return [Finding("pss", "restricted", f"{r['kind']}/{r['name']}", r["detail"]) for r in json.loads(run.stdout)]


SCANNERS = {"checkov": checkov, "kube-score": kube_score, "pss": pss}


def scan_objects(objects: list[dict], folder: Path, name: str) -> list[Finding]:
    manifest = folder / f"{name}.yaml"
    manifest.write_text(yaml.safe_dump_all(objects, sort_keys=False))
    return [finding for scanner in SCANNERS.values() for finding in scanner(manifest)]


@dataclass
class StackReport:
    stack: str
    findings: list[Finding]  # not suppressed
    suppressed: list[tuple[Finding, Suppression]]


def scan_stack(stack: str, suppressions: list[Suppression]) -> StackReport:
    with tempfile.TemporaryDirectory(prefix="scan-") as folder:
        found = scan_objects(manifests(stack), Path(folder), stack)
    report = StackReport(stack, [], [])
    for finding in found:
        match = next((s for s in suppressions if s.matches(stack, finding)), None)
        if match:
            report.suppressed.append((finding, match))
        else:
            report.findings.append(finding)
    return report


def stale(suppressions: list[Suppression], reports: list[StackReport]) -> list[Suppression]:
    """Suppressions no finding of any scanned stack needed: the cause is gone, so must the line be."""
    used = {s for r in reports for _, s in r.suppressed}
    scanned = {r.stack for r in reports}
    return [s for s in suppressions if s not in used and (not s.stacks or set(s.stacks) & scanned)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stacks", nargs="*")
    args = parser.parse_args(argv)
    suppressions = load_suppressions()
    reports = [scan_stack(stack, suppressions) for stack in (args.stacks or all_stacks())]
    failed = False
    for report in reports:
        for finding in report.findings:
            print(f"{report.stack}: {finding}")
            failed = True
        print(f"{report.stack}: {len(report.findings)} findings, {len(report.suppressed)} suppressed "
              f"({', '.join(SCANNERS)})")
    for suppression in stale(suppressions, reports):
        print(f"stale suppression (matches nothing): {suppression}")
        failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
