"""`bash scripts/dev.sh rehearse`: the `local` stack applied for real by the Pulumi engine on this machine.

Real parts: the Pulumi CLI and provider plugins (random, kafka, vault, kubernetes), the Kafka broker the
tests use, an OpenBao dev server (the Vault API), an S3 state backend served by moto, and a Kubernetes control
plane (etcd, kube-apiserver, kube-controller-manager) with External Secrets Operator and the Vault Agent
Injector as a cluster admin installs them (scripts/rehearse_cluster.py). Not here: a kubelet (Pods are admitted
and stay Pending), Cloudflare (switched off in the local stack), a Docker daemon (prebuilt image references).

Phases: services -> cluster prerequisites -> stack -> up -> preview --expect-no-changes and an immutable-field
change -> tunnel token via External Secrets -> admission -> Vault logins -> consumer stack -> checks (pytest -m
rehearsal) -> destroy -> nothing left behind. Exits non-zero at the first phase that fails; admission refusals
are all reported first, then fail the run after the remaining phases (destroy included).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import yaml

from scripts.rehearse_cluster import Cluster
from scripts.servers import REPO, KafkaBroker, free_port, wait_for

STACK = "local"
CONSUMER_DIR = REPO / "examples" / "consumer"
OFFLINE = Path(os.environ.get("PULUMI_OFFLINE", Path.home() / ".cache" / "pulumi-offline"))
BUCKET = "pulumi-state"


PHASES = 12


# colours only on a terminal (a CI log or a pipe gets plain text)
BOLD, GREEN, RESET = ("\033[1m", "\033[32m", "\033[0m") if sys.stdout.isatty() else ("", "", "")


def phase(number: int, text: str) -> float:
    print(f"{BOLD}==> [{number}/{PHASES}] {text}{RESET}", flush=True)
    return time.monotonic()


def done(started: float, text: str = "ok") -> None:
    print(f"    {GREEN}{text}{RESET} ({time.monotonic() - started:.1f}s)", flush=True)


def pulumi_env() -> dict[str, str]:
    """The standard CLI on PATH, or the one build-pulumi-offline.sh built (then never download plugins)."""
    env = dict(os.environ)
    if shutil.which("pulumi") is None and (OFFLINE / "bin" / "pulumi").exists():
        env |= {"PATH": f"{OFFLINE / 'bin'}:{env['PATH']}", "PULUMI_HOME": str(OFFLINE / "pulumi-home"),
                "PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION": "true", "PULUMI_IGNORE_AMBIENT_PLUGINS": "true"}
    if shutil.which("pulumi", path=env["PATH"]) is None:
        raise SystemExit("no Pulumi CLI: install it (https://www.pulumi.com/docs/install/) or build it offline with "
                         "../shared/tools/build-pulumi-offline.sh (PULUMI_OFFLINE=<its folder>)")
    return env | {"PULUMI_SKIP_UPDATE_CHECK": "true", "PULUMI_SKIP_CONFIRMATIONS": "true"}


class LoopbackServer:
    """A server process of the rehearsal on a free loopback port: started, polled until it answers, stopped."""

    name = "server"

    def __init__(self, work: Path):
        self.port = free_port()
        self.log = work / f"{self.name}.log"
        self.process: subprocess.Popen | None = None

    def _spawn(self, command: list[str], ready: Callable[[], bool]) -> None:
        self.process = subprocess.Popen(command, stdout=self.log.open("ab"), stderr=subprocess.STDOUT,
                                        start_new_session=True)
        wait_for(ready, 30, self.name, self.process, self.log)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)


class OpenBao(LoopbackServer):
    """`bao server -dev` (in memory), with the Kubernetes auth mount the roles need."""

    name = "openbao"

    def __init__(self, work: Path):
        super().__init__(work)
        self.token = secrets.token_urlsafe(18)
        self.address = f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self._spawn(["bao", "server", "-dev", f"-dev-root-token-id={self.token}",
                     f"-dev-listen-address=127.0.0.1:{self.port}"],
                    lambda: httpx.get(f"{self.address}/v1/sys/health").status_code == 200)
        httpx.post(f"{self.address}/v1/sys/auth/kubernetes", json={"type": "kubernetes"},
                   headers={"X-Vault-Token": self.token}).raise_for_status()

    def write_external_entries(self, stack_file: Path) -> dict[str, str]:
        """The entries the stack file names for Hasura but another team owns (replica and connection-set URLs,
        the license key): written here as that team would, before `up`. Returns entry -> value."""
        from components.config import HasuraConfig
        from components.hasura import hasura_secret_env

        # the program's own list of what Hasura reads from entries it does not write
        config = yaml.safe_load(stack_file.read_text())["config"]
        hasura = HasuraConfig.model_validate(config["graphql-entrypoint:hasura"])
        values = {s.entry: (f"postgresql://reader:{secrets.token_urlsafe(12)}@127.0.0.1:5433/{s.entry}"
                            if s.variable.endswith("_URL") else secrets.token_urlsafe(24))
                  for s in hasura_secret_env(hasura)}
        for name, value in values.items():
            httpx.post(f"{self.address}/v1/secret/data/{name}", json={"data": {"value": value}},
                       headers={"X-Vault-Token": self.token}).raise_for_status()
        return values


class MotoS3(LoopbackServer):
    """moto's S3 server: the self-managed state backend (`pulumi login s3://...`)."""

    name = "moto"

    @property
    def backend_url(self) -> str:
        return (f"s3://{BUCKET}?endpoint=127.0.0.1:{self.port}&disableSSL=true&s3ForcePathStyle=true"
                "&region=us-east-1")

    def start(self) -> None:
        self._spawn(["moto_server", "-H", "127.0.0.1", "-p", str(self.port)],
                    lambda: httpx.get(f"http://127.0.0.1:{self.port}/").status_code < 500)
        httpx.put(f"http://127.0.0.1:{self.port}/{BUCKET}").raise_for_status()


PROJECT_PARTS = ("Pulumi.yaml", "__main__.py", "components", "app", "config")


def project_copy(work: Path) -> Path:
    """The program as committed, in the work folder: `stack init` and `config set` write the stack file, and
    those writes (salt, encrypted secrets, this run's ports) must never land in the repository."""
    project = work / "project"
    project.mkdir()
    for part in PROJECT_PARTS:
        source = REPO / part
        if source.is_dir():
            shutil.copytree(source, project / part, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, project / part)
    # Pulumi.yaml names ./venv: the copy uses the environment this run has (the project's venv under dev.sh)
    if sys.prefix != sys.base_prefix:
        (project / "venv").symlink_to(sys.prefix, target_is_directory=True)
    else:
        subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(project / "venv")], check=True)
    return project


def stack_config_file(project: Path, broker: KafkaBroker, bao: OpenBao, kubeconfig: Path) -> Path:
    """The committed Pulumi.local.yaml with this run's ports and API server, as the copy's stack file."""
    document = yaml.safe_load((REPO / "Pulumi.local.yaml").read_text())
    config = document["config"]
    config["graphql-entrypoint:kafka"]["bootstrapServers"] = [broker.bootstrap]
    config["graphql-entrypoint:vault"]["address"] = bao.address
    config["kubernetes:kubeconfig"] = str(kubeconfig)  # a path: the admin token stays in that 0600 file
    path = project / "Pulumi.local.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


class Pulumi:
    def __init__(self, env: dict[str, str], cwd: Path):
        self.env, self.cwd = env, cwd

    def __call__(self, *args: str, capture: bool = False, check: bool = True) -> subprocess.CompletedProcess:
        command = ["pulumi", *args, "--non-interactive"]
        run = subprocess.run(command, cwd=self.cwd, env=self.env, text=True,
                             stdout=subprocess.PIPE if capture else None, stderr=subprocess.PIPE if capture else None)
        if check and run.returncode != 0:
            raise SystemExit(f"`{' '.join(command)}` failed (exit {run.returncode})"
                             + (f":\n{(run.stdout + run.stderr)[-4000:]}" if capture else ""))
        return run


def run_checks(state: Path, marker: str) -> None:
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", marker,
                          "tests/rehearsal"], cwd=REPO, env=os.environ | {"REHEARSAL_STATE": str(state)})
    if run.returncode != 0:
        raise SystemExit(f"rehearsal checks ({marker}) failed")


def export_manifests(pulumi: Pulumi, folder: Path) -> int:
    """The Kubernetes objects as the program declared them (the inputs in the stack's state, secrets left
    encrypted), one YAML file each: what the checks validate. Returns how many."""
    deployment = json.loads(pulumi("stack", "export", "--stack", STACK, capture=True).stdout)["deployment"]
    folder.mkdir(parents=True, exist_ok=True)
    count = 0
    for resource in deployment.get("resources", []):
        if resource["type"].startswith("kubernetes:") and resource.get("custom") \
                and not resource["type"].startswith("pulumi:providers:"):
            inputs = resource["inputs"]
            name = f"{inputs['kind']}-{inputs['metadata'].get('namespace', '')}-{inputs['metadata']['name']}"
            (folder / f"{name}.yaml").write_text(yaml.safe_dump(inputs, sort_keys=False))
            count += 1
    return count


def immutable_change(pulumi: Pulumi, cluster: Cluster) -> str:
    """Point the cleanup image (also the bootstrap Job's) at another digest: a Job's pod template is immutable,
    so the preview must plan a replacement of the Job (not an update the API server would refuse), and the
    `up` must replace it."""
    document = yaml.safe_load((REPO / "Pulumi.local.yaml").read_text())
    image = document["config"]["graphql-entrypoint:images"]["prebuilt"]["cleanup"]
    changed = image.rsplit("@sha256:", 1)[0] + "@sha256:" + "4" * 64
    pulumi("config", "set", "--path", "--stack", STACK, "images.prebuilt.cleanup", changed)
    preview = json.loads(pulumi("preview", "--json", "--stack", STACK, capture=True).stdout)
    jobs = [step for step in preview.get("steps", []) if step["urn"].split("::")[-2].endswith("batch/v1:Job")]
    if not jobs or jobs[0]["op"] not in ("replace", "create-replacement", "delete-replaced"):
        raise SystemExit(f"the Job's image change did not preview as a replacement: {[s['op'] for s in jobs]}")
    pulumi("up", "--yes", "--stack", STACK, "--skip-preview")
    live = cluster.kube.get(f"/apis/batch/v1/namespaces/{cluster.namespace}/jobs")["items"]
    images = {c["image"] for job in live for c in job["spec"]["template"]["spec"]["containers"]}
    if changed not in images:
        raise SystemExit(f"after `up` no Job runs the new image: {images}")
    pulumi("preview", "--expect-no-changes", "--stack", STACK)
    return f"Job image change previewed as `{jobs[0]['op']}`, applied; the live Job runs the new digest"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="skip destroy and leave the services running")
    args = parser.parse_args(argv)
    work = REPO / ".local" / "rehearsal"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    total = time.monotonic()
    env = pulumi_env()
    namespace = yaml.safe_load((REPO / "Pulumi.local.yaml").read_text())["config"]["graphql-entrypoint:namespace"]
    cluster = Cluster(work, namespace)  # before anything starts: fails fast when a binary is missing
    broker, bao, s3 = KafkaBroker(work / "kafka"), OpenBao(work), MotoS3(work)
    refused: list[str] = []
    try:
        t = phase(1, "services: Kafka broker (KRaft, SCRAM, ACLs), OpenBao dev server, moto S3, Kubernetes "
                     "control plane (etcd, kube-apiserver, kube-controller-manager)")
        broker.start()
        bao.start()
        s3.start()
        started = cluster.start()
        done(t, f"kafka {broker.bootstrap}, openbao {bao.address}, s3 127.0.0.1:{s3.port}, "
                f"API server {cluster.plane.server} ({started})")

        t = phase(2, "cluster prerequisites, as a cluster admin installs them before the program")
        auth_mount = yaml.safe_load((REPO / "Pulumi.local.yaml").read_text())["config"][
            "graphql-entrypoint:vault"]["kubernetesAuthPath"]
        done(t, cluster.prerequisites(bao.address, bao.token, auth_mount))

        t = phase(3, f"stack `{STACK}` in the S3 backend {s3.backend_url}")
        project = project_copy(work)
        env |= {"PULUMI_BACKEND_URL": s3.backend_url, "AWS_ACCESS_KEY_ID": "rehearsal",
                "AWS_SECRET_ACCESS_KEY": "rehearsal", "AWS_REGION": "us-east-1",
                "PULUMI_CONFIG_PASSPHRASE": secrets.token_urlsafe(18),
                "VAULT_ADDR": bao.address, "VAULT_TOKEN": bao.token}
        stack_config_file(project, broker, bao, cluster.plane.kubeconfig)
        external = bao.write_external_entries(REPO / "Pulumi.local.yaml")
        pulumi = Pulumi(env, project)
        pulumi("stack", "init", STACK, "--secrets-provider", "passphrase")
        for key, value in {"databaseUrl": "postgresql://hasura:rehearsal-db-pw@127.0.0.1:5433/hasura",
                           "databaseRoleAdminUrl": "postgresql://role_admin:rehearsal-admin-pw@127.0.0.1:5433/hasura",
                           "kafkaAdminPassword": broker.client_config()["sasl.password"],
                           "localTunnelToken": secrets.token_urlsafe(32)}.items():
            pulumi("config", "set", "--secret", "--stack", STACK, key, value)
        done(t)

        t = phase(4, "pulumi preview of the fresh stack (passwords still unknown), then pulumi up to the API server")
        pulumi("preview", "--stack", STACK)
        pulumi("up", "--yes", "--stack", STACK, "--skip-preview")
        outputs = json.loads(pulumi("stack", "output", "--json", "--stack", STACK, capture=True).stdout)
        count = export_manifests(pulumi, work / "manifests")
        done(t, f"{count} Kubernetes objects applied; outputs: {sorted(outputs)}")

        t = phase(5, "pulumi preview --expect-no-changes (server-side defaults are no diff), then an immutable "
                     "field: the bootstrap Job's image")
        pulumi("preview", "--expect-no-changes", "--stack", STACK)
        done(t, immutable_change(pulumi, cluster))

        t = phase(6, "the tunnel token through External Secrets: synced, rotated, broken on purpose, restored")
        key = yaml.safe_load((REPO / "Pulumi.local.yaml").read_text())["config"]["graphql-entrypoint:vault"][
            "tunnelTokenKey"]
        for line in cluster.tunnel_token_flow(bao.address, bao.token, key, auth_mount):
            print(f"    {line}", flush=True)
        done(t)

        t = phase(7, "admission: the controllers create each workload's Pods through the Vault Agent Injector")
        lines, bad = cluster.admission()
        for line in lines:
            print(f"    {line}", flush=True)
        refused = [f"{o.kind} {o.name}: {o.refusal or '; '.join(o.problems)}" for o in bad]
        done(t, f"{len(refused)} workload(s) refused or mis-injected" if refused else "every workload admitted")

        t = phase(8, "every workload's service-account token logs in to its own Vault role only")
        for line in cluster.logins(bao.address, auth_mount):
            print(f"    {line}", flush=True)
        done(t)

        t = phase(9, "another team's stack reads the outputs (examples/consumer, StackReference)")
        consumer_dir = work / "consumer"
        shutil.copytree(CONSUMER_DIR, consumer_dir, ignore=shutil.ignore_patterns("__pycache__", "Pulumi.*.yaml"))
        consumer = Pulumi(env, consumer_dir)
        consumer("stack", "init", STACK, "--secrets-provider", "passphrase")
        consumer("config", "set", "--stack", STACK, "entrypointStack", f"organization/graphql-entrypoint/{STACK}")
        consumer("up", "--yes", "--stack", STACK, "--skip-preview")
        consumer_outputs = json.loads(consumer("stack", "output", "--json", "--stack", STACK, capture=True).stdout)
        done(t, f"consumer exports {sorted(consumer_outputs)}")

        state = work / "state.json"
        state.write_text(json.dumps({
            "kafka": broker.client_config(), "openbao": {"address": bao.address, "token": bao.token},
            "external_entries": external,
            "manifests": str(work / "manifests"), "outputs": outputs, "consumer_outputs": consumer_outputs,
            "work": str(work)}, indent=2))
        state.chmod(0o600)
        t = phase(10, "checks: principals on the broker, policies on OpenBao, agent templates, manifests")
        run_checks(state, "rehearsal")
        done(t)
        if args.keep:
            print(f"kept: state {state}, KUBECONFIG={cluster.plane.kubeconfig}; stop the services with Ctrl-C",
                  flush=True)
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
            signal.sigwait({signal.SIGINT, signal.SIGTERM})
            return 0

        t = phase(11, "pulumi destroy (consumer, then the stack)")
        consumer("destroy", "--yes", "--stack", STACK, "--skip-preview")
        pulumi("destroy", "--yes", "--stack", STACK, "--skip-preview")
        done(t)
        t = phase(12, "nothing left: no topic, ACL, SCRAM user, policy, KV entry or Kubernetes object of the program's")
        run_checks(state, "rehearsal_destroyed")
        left = cluster.leftovers()
        if left:
            raise SystemExit(f"left in namespace {namespace} after destroy: {left}")
        done(t)
        if refused:
            raise SystemExit("admission refused (the injector's messages):\n  " + "\n  ".join(refused))
        print(f"\n{BOLD}rehearsal passed in {time.monotonic() - total:.0f}s{RESET}", flush=True)
        return 0
    finally:
        for server in (cluster, s3, bao, broker):
            with contextlib.suppress(Exception):
                server.stop()


if __name__ == "__main__":
    sys.exit(main())
