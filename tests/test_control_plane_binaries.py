"""Without the control plane's binaries the rehearsal stops before starting anything, naming each one and where it
comes from (and, for the two built from source snapshots, the pinned tags; no build steps of them are kept here)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ENV_VARS = ("KUBE_APISERVER_BIN", "KUBE_CONTROLLER_MANAGER_BIN", "ETCD_BIN", "VAULT_K8S_BIN", "ESO_BIN")


def _binaries(tmp_path: Path, **extra: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ENV_VARS} | {
        "CONTROL_PLANE_CACHE": str(tmp_path / "cache"), "PATH": str(tmp_path / "bin")} | extra
    return subprocess.run([sys.executable, "-m", "scripts.control_plane", "binaries"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=60)


def test_missing_binaries_are_named_with_where_they_come_from(tmp_path):
    run = _binaries(tmp_path)
    assert run.returncode != 0
    for name, origin in (("kube-apiserver", "bash scripts/build_control_plane.sh"),
                         ("kube-controller-manager", "bash scripts/build_control_plane.sh"),
                         ("etcd", "apt-get install etcd-server"),
                         ("vault-k8s", "github.com/hashicorp/vault-k8s at v1.7.6"),
                         ("external-secrets", "github.com/external-secrets/external-secrets at v1.3.2")):
        line = next((x for x in run.stderr.splitlines() if x.strip().startswith(f"{name}:")), "")
        assert origin in line, (name, run.stderr)


def test_a_binary_given_by_its_variable_is_no_longer_missing(tmp_path):
    fake = tmp_path / "etcd"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    run = _binaries(tmp_path, ETCD_BIN=str(fake))
    assert run.returncode != 0
    assert "  etcd:" not in run.stderr and "kube-apiserver:" in run.stderr
