"""The scanners (checkov, kube-score, the Pod Security Standards evaluator at restricted) find nothing on any
stack's rendered manifests beyond the reviewed suppressions (config/scanner-suppressions.yaml), and they do
find what they should on a bad manifest, so a clean run means something. `bash scripts/dev.sh test` builds them."""

from __future__ import annotations

import pytest

from scripts.scan import SCANNERS, all_stacks, load_suppressions, scan_objects, scan_stack, stale


@pytest.fixture(scope="module")
def reports():
    suppressions = load_suppressions()
    return suppressions, [scan_stack(stack, suppressions) for stack in all_stacks()]


def test_every_stack_scans_clean(reports):
    _, found = reports
    for report in found:
        assert report.findings == [], "\n".join(f"{report.stack}: {f}" for f in report.findings)


def test_every_suppression_is_still_needed(reports):
    suppressions, found = reports
    assert stale(suppressions, found) == []


def test_each_scanner_refuses_a_bad_pod(tmp_path):
    bad = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "bad", "namespace": "graphql"},
           "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "bad"}},
                    "template": {"metadata": {"labels": {"app": "bad"}},
                                 "spec": {"hostNetwork": True, "containers": [{
                                     "name": "bad", "image": "busybox:latest",
                                     "securityContext": {"privileged": True, "runAsUser": 0}}]}}}}
    findings = scan_objects([bad], tmp_path, "bad")
    assert {f.scanner for f in findings} == set(SCANNERS)
    by = {(f.scanner, f.check) for f in findings}
    assert ("checkov", "CKV_K8S_16") in by  # privileged container
    assert ("kube-score", "container-security-context-privileged") in by
    assert any(f.scanner == "pss" and "privileged" in f.message for f in findings)
