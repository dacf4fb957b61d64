"""A real Kubernetes control plane on loopback for the rehearsal: etcd, kube-apiserver, kube-controller-manager.

No kubelet, no scheduler, no container runtime: objects are stored, defaulted, validated and admitted by the
real API server (webhooks included), controllers create ReplicaSets/Pods/Jobs, and Pods stay Pending.

    python -m scripts.control_plane up        # start it, print the admin kubeconfig's path, Ctrl-C stops it
    python -m scripts.control_plane binaries  # where each binary is, or what is missing and how to get it

Binaries (never built by the rehearsal itself, see README "Rehearsal: the control plane"):
  kube-apiserver, kube-controller-manager  bash scripts/build_control_plane.sh (Go module proxy) -> CACHE/bin
  etcd                                      Debian `etcd-server`, or ETCD_BIN
  vault-k8s, external-secrets               VAULT_K8S_BIN / ESO_BIN, or CACHE/bin (see MISSING_HINTS)
CACHE is $CONTROL_PLANE_CACHE or ~/.cache/control-plane.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import yaml

from scripts.servers import free_port, wait_for

CACHE = Path(os.environ.get("CONTROL_PLANE_CACHE", Path.home() / ".cache" / "control-plane"))
KUBE_VERSION = "v1.34.3"
VAULT_K8S_TAG = "v1.7.6"
ESO_TAG = "v1.3.2"
SERVICE_CIDR = "10.96.0.0/16"

# binary -> (env var that overrides its location, how to get it when missing)
MISSING_HINTS: dict[str, tuple[str, str]] = {
    "kube-apiserver": ("KUBE_APISERVER_BIN", "build it: bash scripts/build_control_plane.sh "
                                             f"(k8s.io/kubernetes {KUBE_VERSION} from the Go module proxy, ~6 min)"),
    "kube-controller-manager": ("KUBE_CONTROLLER_MANAGER_BIN", "build it: bash scripts/build_control_plane.sh "
                                                           "(~2 min more)"),
    "etcd": ("ETCD_BIN", "install it: apt-get install etcd-server (Debian)"),
    "vault-k8s": ("VAULT_K8S_BIN", "the Vault Agent Injector, built from a source snapshot of "
                                   f"github.com/hashicorp/vault-k8s at {VAULT_K8S_TAG} (the Go module proxy refuses "
                                   "the module itself); this repository carries no build steps for it"),
    "external-secrets": ("ESO_BIN", "External Secrets Operator with its Vault provider, built from a source "
                                    f"snapshot of github.com/external-secrets/external-secrets at {ESO_TAG}; this "
                                    "repository carries no build steps for it"),
}


def find_binary(name: str) -> Path | None:
    variable, _hint = MISSING_HINTS[name]
    for candidate in (os.environ.get(variable), CACHE / "bin" / name, shutil.which(name)):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return Path(candidate)
    return None


def require_binaries(names: tuple[str, ...] = tuple(MISSING_HINTS)) -> dict[str, Path]:
    """Every binary the control plane needs, or SystemExit naming each missing one and how to get it."""
    found = {name: find_binary(name) for name in names}
    missing = [name for name, path in found.items() if path is None]
    if missing:
        lines = [f"  {name}: {MISSING_HINTS[name][1]}\n    (found through {MISSING_HINTS[name][0]}, "
                 f"{CACHE / 'bin'} or PATH)" for name in missing]
        raise SystemExit("the rehearsal's control plane is missing binaries:\n" + "\n".join(lines))
    return {name: path for name, path in found.items() if path is not None}


class Process:
    """One server process of the control plane: its own log file, started in its own session, stopped by pid."""

    def __init__(self, name: str, work: Path):
        self.name, self.log = name, work / f"{name}.log"
        self.process: subprocess.Popen | None = None

    def start(self, command: list[str], ready: Callable[[], bool], timeout: float = 60, env: dict | None = None,
              ) -> None:
        offset = self.log.stat().st_size if self.log.exists() else 0
        self.process = subprocess.Popen(command, stdout=self.log.open("ab"), stderr=subprocess.STDOUT,
                                        start_new_session=True, env=env)
        wait_for(ready, timeout, self.name, self.process, self.log, offset)

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        if self.running():
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


class Kube:
    """A small client of the API server (httpx): what the rehearsal needs, with errors that carry the server's
    message. `apply` is server-side apply, the same field ownership the Pulumi provider uses."""

    def __init__(self, server: str, ca: Path, token: str):
        self.server, self.ca = server, ca
        self.http = httpx.Client(base_url=server, verify=str(ca), timeout=30,
                                 headers={"Authorization": f"Bearer {token}"})

    def request(self, method: str, path: str, ok: tuple[int, ...] = (200, 201), **kwargs) -> dict:
        answer = self.http.request(method, path, **kwargs)
        if answer.status_code not in ok:
            try:
                message = answer.json().get("message", answer.text)
            except ValueError:
                message = answer.text
            raise KubeError(answer.status_code, f"{method} {path}: {answer.status_code} {message}")
        return answer.json() if answer.content else {}

    def get(self, path: str, **params) -> dict:
        return self.request("GET", path, params=params)

    def exists(self, path: str) -> bool:
        return self.http.get(path).status_code == 200

    def post(self, path: str, body: dict, **params) -> dict:
        return self.request("POST", path, json=body, params=params)

    def delete(self, path: str) -> None:
        self.request("DELETE", path, ok=(200, 202, 404))

    def apply(self, obj: dict, manager: str = "rehearsal") -> dict:
        return self.request("PATCH", object_path(self, obj), content=yaml.safe_dump(obj).encode(),
                            headers={"Content-Type": "application/apply-patch+yaml"},
                            params={"fieldManager": manager, "force": "true"})

    def service_account_token(self, namespace: str, account: str, audience: str | None = None,
                              seconds: int = 600) -> str:
        """A token from the TokenRequest API; without `audience`, the API server's own (what the kubelet mounts
        into a pod's kube-api-access volume, the token the Vault agent logs in with)."""
        spec: dict[str, Any] = {"expirationSeconds": seconds}
        if audience:
            spec["audiences"] = [audience]
        answer = self.post(f"/api/v1/namespaces/{namespace}/serviceaccounts/{account}/token",
                           {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec})
        return answer["status"]["token"]

    def wait(self, what: str, check: Callable[[], Any], timeout: float) -> Any:
        """Poll until `check()` returns something truthy (returned), with a deadline."""
        deadline = time.monotonic() + timeout
        while True:
            value = check()
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what}: not within {timeout:.0f}s")
            time.sleep(0.3)


class KubeError(RuntimeError):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


_PLURALS: dict[tuple[str, str], tuple[str, bool]] = {}


def object_path(kube: Kube, obj: dict) -> str:
    """The REST path of an object, from the server's discovery (resource name, namespaced or not)."""
    api_version, kind = obj["apiVersion"], obj["kind"]
    if (api_version, kind) not in _PLURALS:  # asked again on a miss: a CRD may have added the kind since
        base = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
        for resource in kube.get(base)["resources"]:
            if "/" not in resource["name"]:
                _PLURALS[(api_version, resource["kind"])] = (resource["name"], resource["namespaced"])
    plural, namespaced = _PLURALS[(api_version, kind)]
    base = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
    meta = obj["metadata"]
    scope = f"/namespaces/{meta['namespace']}" if namespaced else ""
    return f"{base}{scope}/{plural}/{meta['name']}"


class ControlPlane:
    """etcd + kube-apiserver + kube-controller-manager on free loopback ports under `work`."""

    def __init__(self, work: Path, binaries: dict[str, Path] | None = None):
        self.work = work
        self.bin = binaries or require_binaries(("etcd", "kube-apiserver", "kube-controller-manager"))
        self.etcd, self.apiserver, self.controllers = (Process(n, work) for n in
                                                       ("etcd", "kube-apiserver", "kube-controller-manager"))
        self.port = free_port()
        self.server = f"https://127.0.0.1:{self.port}"
        self.ca = work / "certs" / "apiserver.crt"
        self.kubeconfig = work / "admin.kubeconfig"
        self.sa_key = work / "sa.key"
        self._token = secrets.token_urlsafe(32)
        self.kube: Kube | None = None
        self.timings: dict[str, float] = {}

    def start(self) -> Kube:
        self.work.mkdir(parents=True, exist_ok=True)
        os.chmod(self.work, 0o700)
        started = time.monotonic()
        self._start_etcd()
        self.timings["etcd"] = time.monotonic() - started
        self._keys()
        started = time.monotonic()
        self._start_apiserver()
        self.timings["kube-apiserver"] = time.monotonic() - started
        self._write_kubeconfig()
        self.kube = Kube(self.server, self.ca, self._token)
        started = time.monotonic()
        self._start_controllers()
        self.timings["kube-controller-manager"] = time.monotonic() - started
        return self.kube

    def _start_etcd(self) -> None:
        client, peer = free_port(), free_port()
        self.etcd_url = f"http://127.0.0.1:{client}"
        self.etcd.start([str(self.bin["etcd"]), "--data-dir", str(self.work / "etcd"), "--name", "default",
                         "--listen-client-urls", self.etcd_url, "--advertise-client-urls", self.etcd_url,
                         "--listen-peer-urls", f"http://127.0.0.1:{peer}",
                         "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
                         "--initial-cluster", f"default=http://127.0.0.1:{peer}"],
                        lambda: httpx.get(f"{self.etcd_url}/health", timeout=2).json().get("health") == "true")

    def _keys(self) -> None:
        """The service-account signing key pair and the static admin token (files only this user can read)."""
        subprocess.run(["openssl", "genrsa", "-out", str(self.sa_key), "2048"], check=True, capture_output=True)
        subprocess.run(["openssl", "rsa", "-in", str(self.sa_key), "-pubout", "-out", str(self.work / "sa.pub")],
                       check=True, capture_output=True)
        tokens = self.work / "tokens.csv"
        tokens.write_text(f'{self._token},admin,admin,"system:masters"\n')
        for path in (self.sa_key, tokens):
            path.chmod(0o600)

    def _start_apiserver(self) -> None:
        certs = self.work / "certs"
        self.apiserver.start(
            [str(self.bin["kube-apiserver"]), f"--etcd-servers={self.etcd_url}", f"--secure-port={self.port}",
             "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", f"--cert-dir={certs}",
             "--authorization-mode=RBAC", f"--token-auth-file={self.work / 'tokens.csv'}",
             f"--service-cluster-ip-range={SERVICE_CIDR}", f"--service-account-key-file={self.work / 'sa.pub'}",
             f"--service-account-signing-key-file={self.sa_key}",
             "--service-account-issuer=https://kubernetes.default.svc", "--enable-priority-and-fairness=false",
             "--profiling=false", "--v=1"],
            lambda: self.ca.exists() and httpx.get(f"{self.server}/readyz", verify=str(self.ca),
                                                   headers={"Authorization": f"Bearer {self._token}"},
                                                   timeout=2).text == "ok",
            timeout=90)

    def _write_kubeconfig(self) -> None:
        config = {"apiVersion": "v1", "kind": "Config", "current-context": "rehearsal",
                  "clusters": [{"name": "rehearsal", "cluster": {"server": self.server,
                                                                 "certificate-authority": str(self.ca)}}],
                  "users": [{"name": "admin", "user": {"token": self._token}}],
                  "contexts": [{"name": "rehearsal", "context": {"cluster": "rehearsal", "user": "admin"}}]}
        self.kubeconfig.write_text(yaml.safe_dump(config))
        self.kubeconfig.chmod(0o600)

    def _start_controllers(self) -> None:
        """Controllers with the admin credentials (no per-controller service accounts needed); ready when the
        service-account controller has created `default` in the namespace `default`."""
        self.controllers.start(
            [str(self.bin["kube-controller-manager"]), f"--kubeconfig={self.kubeconfig}",
             "--leader-elect=false", "--bind-address=127.0.0.1", f"--secure-port={free_port()}",
             f"--service-account-private-key-file={self.sa_key}", f"--root-ca-file={self.ca}",
             f"--service-cluster-ip-range={SERVICE_CIDR}", "--use-service-account-credentials=false",
             "--profiling=false", "--v=1"],
            lambda: self.kube.exists("/api/v1/namespaces/default/serviceaccounts/default"), timeout=90)

    def stop(self) -> None:
        for process in (self.controllers, self.apiserver, self.etcd):
            process.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["up", "check", "binaries"],
                        help="up: run until Ctrl-C; check: start and stop; binaries: only say which are missing")
    parser.add_argument("--work", type=Path, default=Path(".local") / "control-plane")
    args = parser.parse_args(argv)
    if args.command == "binaries":
        for name, path in require_binaries().items():
            print(f"{name}: {path}")
        return 0
    shutil.rmtree(args.work, ignore_errors=True)
    plane = ControlPlane(args.work.resolve())
    try:
        plane.start()
        print("control plane up:", ", ".join(f"{k} {v:.1f}s" for k, v in plane.timings.items()), flush=True)
        print(f"KUBECONFIG={plane.kubeconfig}", flush=True)
        if args.command == "up":
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
            signal.sigwait({signal.SIGINT, signal.SIGTERM})
    finally:
        plane.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
