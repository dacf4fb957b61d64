"""External Secrets Operator for the rehearsal's control plane: its CRDs, and its controller run out of cluster.

The CRDs come from the released module on the Go module proxy (config/crds/bases/*.yaml of the same tag the
binary is built from, cached in .cache/ like tests/support/eso_crds.py); the controller binary is found by
scripts.control_plane (ESO_BIN or the cache), never built here. Out of cluster it reads the admin kubeconfig and
mints the SecretStore's service-account token itself with TokenRequest (providers/v1/vault: the `kubernetes`
auth's serviceAccountRef), which OpenBao then reviews against the API server.
"""

from __future__ import annotations

import base64
import io
import os
import subprocess
import time
import urllib.request
import zipfile
from pathlib import Path

import httpx
import yaml

from scripts.control_plane import ESO_TAG, Kube, Process
from scripts.servers import REPO, free_port

MODULE = "github.com/external-secrets/external-secrets"
ZIP = REPO / ".cache" / f"external-secrets-{ESO_TAG}.zip"


def _proxy() -> str:
    configured = os.environ.get("GOPROXY") or subprocess.run(["go", "env", "GOPROXY"], capture_output=True,
                                                             text=True).stdout.strip()
    return next((p for p in configured.split(",") if p.startswith("http")), "https://proxy.golang.org")


def crd_documents() -> list[dict]:
    """Every CRD of the release (23 at v1.3.2), as a cluster admin installs them before the operator."""
    if not ZIP.exists():
        ZIP.parent.mkdir(parents=True, exist_ok=True)
        with urllib.request.urlopen(f"{_proxy()}/{MODULE}/@v/{ESO_TAG}.zip", timeout=120) as answer:
            ZIP.write_bytes(answer.read())
    prefix = f"{MODULE}@{ESO_TAG}/config/crds/bases/"
    with zipfile.ZipFile(io.BytesIO(ZIP.read_bytes())) as archive:
        documents = [yaml.safe_load(archive.read(name)) for name in sorted(archive.namelist())
                     if name.startswith(prefix) and name.endswith(".yaml")]
    return [d for d in documents if d.get("kind") == "CustomResourceDefinition"]  # not the kustomization.yaml


def install_crds(kube: Kube) -> int:
    """Apply the CRDs and wait until each is Established (served); returns how many."""
    crds = crd_documents()
    for crd in crds:
        kube.apply(crd)
    for crd in crds:
        path = f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{crd['metadata']['name']}"
        kube.wait(f"CRD {crd['metadata']['name']} established", lambda p=path: any(
            c["type"] == "Established" and c["status"] == "True"
            for c in (kube.get(p).get("status") or {}).get("conditions") or []), 60)
    return len(crds)


class ExternalSecretsController(Process):
    """The controller (`external-secrets` root command) with only the reconcilers the program uses."""

    def __init__(self, work: Path, binary: Path, kubeconfig: Path):
        super().__init__("external-secrets", work)
        self.binary, self.kubeconfig = binary, kubeconfig
        self.live = free_port()

    def run(self) -> None:
        self.start([str(self.binary), "--enable-leader-election=false", f"--metrics-addr=127.0.0.1:{free_port()}",
                    f"--live-addr=127.0.0.1:{self.live}", "--enable-cluster-store-reconciler=false",
                    "--enable-cluster-external-secret-reconciler=false",
                    "--enable-cluster-push-secret-reconciler=false", "--enable-push-secret-reconciler=false",
                    "--enable-generator-state=false", "--loglevel=info"],
                   lambda: httpx.get(f"http://127.0.0.1:{self.live}/healthz", timeout=2).status_code == 200,
                   timeout=60, env=os.environ | {"KUBECONFIG": str(self.kubeconfig)})


def condition(obj: dict, kind: str = "Ready") -> dict:
    return next((c for c in (obj.get("status") or {}).get("conditions") or [] if c["type"] == kind), {})


def external_secret(kube: Kube, namespace: str, name: str) -> dict:
    return kube.get(f"/apis/external-secrets.io/v1/namespaces/{namespace}/externalsecrets/{name}")


def wait_status(kube: Kube, namespace: str, name: str, reason: str, timeout: float) -> dict:
    """Until the ExternalSecret's Ready condition has this reason (SecretSynced / SecretSyncedError)."""
    return kube.wait(f"ExternalSecret {name} {reason}", lambda: (
        lambda c: c if c.get("reason") == reason else None)(condition(external_secret(kube, namespace, name))),
        timeout)


def secret_value(kube: Kube, namespace: str, name: str, key: str) -> str | None:
    answer = kube.http.get(f"/api/v1/namespaces/{namespace}/secrets/{name}")
    if answer.status_code != 200:
        return None
    raw = answer.json().get("data", {}).get(key)
    return base64.b64decode(raw).decode() if raw is not None else None


def wait_value(kube: Kube, namespace: str, name: str, key: str, want: str, timeout: float) -> float:
    """Seconds until the Secret holds `want` (compared, never printed)."""
    started = time.monotonic()
    kube.wait(f"Secret {name} holding the value from OpenBao", lambda: secret_value(kube, namespace, name, key) == want,
              timeout)
    return time.monotonic() - started
