"""The whole async flow on this machine, on embedded defaults: `bash scripts/dev.sh up`.

Starts PostgreSQL and a Kafka broker (SASL/SCRAM, ACLs), creates the topics, the two service
principals and their ACLs, runs the bootstrap SQL, then the publisher, the writer, a periodic
cleanup and a demo worker as real processes. Sends one demo request through the whole flow and
shows the row. Ctrl-C stops everything in order and says where the data lives.

Hasura does not run here: the publisher is called the way Hasura calls it (same body, same secret
header), and the bootstrap's Hasura metadata step is left to the cluster Job.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import httpx
import psycopg
from confluent_kafka.admin import AdminClient

from app.cleanup import run_cleanup
from app.db import apply_schema
from app.stop_signals import set_on_stop_signals
from components.kafka_access import AsyncTopics, ServicePrincipals, WorkerPrincipal, service_acls, worker_acls
from scripts.kafka_admin import apply_acls, create_topics, upsert_user
from scripts.local_prometheus import LocalMonitoring
from scripts.local_service import service_env
from scripts.servers import (
    KAFKA_ADMIN_PASSWORD,
    KAFKA_ADMIN_USER,
    REPO,
    DataDirUnreachable,
    KafkaBroker,
    PostgresServer,
    fetch_kafka_jars,
    free_port,
    make_dirs,
    make_reachable_for_postgres,
    port_free,
    wait_for,
)

# colours only on a terminal: piped or logged output stays plain text
BOLD, DIM, GREEN, RESET = ("\033[1m", "\033[2m", "\033[32m", "\033[0m") if sys.stdout.isatty() else ("",) * 4
DEFAULT_PUBLISHER_PORT = 8080
TOPICS = AsyncTopics()
PRINCIPALS = ServicePrincipals()
# the demo worker runs as a worker principal of its own, with exactly the ACLs a stack's kafka.workers entry gets
DEMO_WORKER = WorkerPrincipal("demo", consumer_group="demo-worker")


def say(text: str = "", **kwargs) -> None:
    """Print, but never let a closed terminal or pipe (`| tee` ended, Ctrl-C) stop the shutdown."""
    try:
        print(text, flush=True, **kwargs)
    except (BrokenPipeError, OSError):
        with contextlib.suppress(OSError):
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - stays open for the rest of the process


def step(text: str) -> None:
    say(f"{BOLD}==>{RESET} {text}")


def done(text: str = "ok") -> None:
    say(f"    {GREEN}{text}{RESET}")


class DataDirBusy(RuntimeError):
    """Another `dev.sh up` holds this data directory."""


class PortTaken(RuntimeError):
    """The publisher port asked for is in use: by another stack's publisher, or anything else."""


def publisher_port_arg(text: str) -> int:
    """0 = any free port; otherwise a TCP port. Checked before anything starts."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a TCP port (0-65535; 0 picks a free one)")
    return port


def choose_publisher_port(asked: int | None, last: int | None) -> tuple[int, str]:
    """The port and why: an explicit port must be free now (else refuse); `0` is any free port; by default the
    port this data directory used last, else 8080, else a free one, so a second stack never lands on the first."""
    if asked:
        if not port_free(asked):
            raise PortTaken(f"publisher port {asked} is in use (another stack's publisher?); pick another with "
                            "--publisher-port N, or 0 for any free port")
        return asked, "asked for"
    if asked == 0:
        return free_port(), "a free port (--publisher-port 0)"
    for candidate, why in ((last, "this data directory's last port"), (DEFAULT_PUBLISHER_PORT, "the default")):
        if candidate and port_free(candidate):
            return candidate, why
    return free_port(), f"a free port ({last or DEFAULT_PUBLISHER_PORT} is in use, e.g. by another stack)"


def lock_data_dir(data: Path):
    """An exclusive lock for the life of this process: two runs on one data directory would share servers."""
    handle = (data / ".lock").open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "?"
        raise DataDirBusy(f"{data} is in use by another `dev.sh up` (pid {holder}); stop it first, or use "
                          "--data DIR for a second, separate stack") from None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    return handle


def _die_with_parent() -> None:
    """Runs in the child: if this script is killed outright, the service gets SIGTERM instead of living on."""
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG


class LocalStack:
    def __init__(self, data: Path, publisher_port: int | None, cleanup_interval: float, *, writer: bool = True,
                 worker: bool = True, prometheus: bool = False):
        created = make_dirs(data)
        if os.geteuid() == 0:  # PostgreSQL runs as `postgres`: refuse now, before anything starts, if it can't enter
            make_reachable_for_postgres(data, created)
        self.lock = lock_data_dir(data)
        self.data = data
        self.logs = data / "logs"
        self.cleanup_interval = cleanup_interval
        self.with_writer, self.with_worker = writer, worker
        self.state = self._load_state()
        self.publisher_port, self.publisher_port_reason = choose_publisher_port(
            publisher_port, self.state.get("publisher_port"))
        self.log_offsets: dict[str, int] = {}
        self.monitoring = LocalMonitoring(data, self.state, prometheus)
        self.pg = PostgresServer(data / "pg", port=self.state["pg_port"], owned_root=created)
        self.kafka = KafkaBroker(data / "kafka", port=self.state["kafka_port"],
                                 controller_port=self.state["controller_port"])
        self.children: dict[str, subprocess.Popen] = {}
        self.stop_event = threading.Event()
        self.cleanup_thread: threading.Thread | None = None

    def _load_state(self) -> dict:
        """Ports and local-only credentials stay the same across runs of one data directory."""
        path = self.data / "local-state.json"
        state = json.loads(path.read_text()) if path.exists() else {}
        if "pg_port" not in state:
            state = {"pg_port": free_port(), "kafka_port": free_port(), "controller_port": free_port(),
                     "action_secret": secrets.token_urlsafe(24),
                     "passwords": {p: secrets.token_urlsafe(18) for p in (PRINCIPALS.publisher, PRINCIPALS.writer)}}
        state["passwords"].setdefault(DEMO_WORKER.username, secrets.token_urlsafe(18))  # data dirs from before
        state.setdefault("writer_health_port", free_port())
        return state

    def _save_state(self) -> None:
        """Everything needed to connect as every principal, and every port, for tools and `dev.sh service`
        (the publisher's port once it has served: a port that failed is not remembered)."""
        users = {PRINCIPALS.publisher: "publisher", PRINCIPALS.writer: "writer", DEMO_WORKER.username: "worker"}
        self.state.update({
            "database_url": self.pg.url,
            "kafka_bootstrap": self.kafka.bootstrap,
            "kafka_security": {"security.protocol": "SASL_PLAINTEXT", "sasl.mechanisms": "SCRAM-SHA-256"},
            "kafka_principals": {"admin (super user)": {"username": KAFKA_ADMIN_USER, "password": KAFKA_ADMIN_PASSWORD},
                                 **{role: {"username": user, "password": self.state["passwords"][user]}
                                    for user, role in users.items()}},
            "topics": {"requests": TOPICS.requests, "responses": TOPICS.responses, "dlq": TOPICS.dlq},
        })
        path = self.data / "local-state.json"
        path.write_text(json.dumps(self.state, indent=2))
        path.chmod(0o600)

    # ------------------------------------------------------------------ up
    def up(self) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        step(f"PostgreSQL on 127.0.0.1:{self.pg.port} (data: {self.pg.data_dir})")
        t = time.monotonic()
        self.pg.start()
        done(f"ready in {time.monotonic() - t:.1f}s")

        step("Kafka broker jars (downloaded from Maven Central on the first run, then cached)")
        say(f"    {DIM}{fetch_kafka_jars(quiet=True)}{RESET}")
        orphan = self.kafka.orphan_pid()
        if orphan:  # we hold the data-dir lock, so nobody else owns it: an earlier run was killed
            step(f"stopping an orphaned broker of an earlier run on this data directory (pid {orphan})")
            self.kafka.stop()
            done()
        step(f"Kafka broker on 127.0.0.1:{self.kafka.port} (KRaft, SASL/SCRAM, ACLs; data: {self.kafka.work_dir})")
        t = time.monotonic()
        self.kafka.start()
        done(f"ready in {time.monotonic() - t:.1f}s")

        step("topics, service principals and their ACLs")
        self._kafka_objects()
        done(f"{TOPICS.requests}, {TOPICS.responses}, {TOPICS.dlq}")

        self._save_state()
        step("bootstrap: table graphql.client_async_messages")
        with psycopg.connect(self.pg.url) as conn:
            apply_schema(conn)
        done("ok (Hasura metadata is applied by the bootstrap Job in the cluster; Hasura does not run here)")

        step(f"publisher on {self.publisher_url} ({self.publisher_port_reason})")
        publisher = self._spawn("publisher", "app.publisher",
                                service_env(self.state, "publisher", port=self.publisher_port)
                                | self.monitoring.publisher_env())
        wait_for(lambda: httpx.get(f"{self.publisher_url}/readyz", timeout=1).status_code == 200, 30,
                 "publisher", publisher, self.logs / "publisher.log", self.log_offsets["publisher"])
        if publisher.poll() is not None:  # the answer came from someone else on that port, and ours died
            raise RuntimeError(f"publisher exited with {publisher.returncode}: port {self.publisher_port} was taken "
                               "meanwhile")
        self.state |= {"publisher_port": self.publisher_port, "publisher_url": self.publisher_url}  # once it worked
        self._save_state()
        done()
        if self.with_writer:
            step("writer (consumer group on the responses topic)")
            health = self.state["writer_health_port"]
            writer = self._spawn("writer", "app.writer",
                                 service_env(self.state, "writer", port=health, instance_id="local"))
            wait_for(lambda: httpx.get(f"http://127.0.0.1:{health}/healthz", timeout=1).status_code == 200, 30,
                     "writer", writer, self.logs / "writer.log", self.log_offsets["writer"])
            done()
        if self.with_worker:
            step("demo worker (answers every request)")
            self._spawn("demo-worker", "scripts.demo_worker", service_env(self.state, "worker"))
            done()
        step(f"cleanup every {self.cleanup_interval:.0f}s")
        self.cleanup_thread = threading.Thread(target=self._cleanup_loop, daemon=True)
        self.cleanup_thread.start()
        done()
        self.monitoring.start(step, done)

    @property
    def publisher_url(self) -> str:
        return f"http://127.0.0.1:{self.publisher_port}"

    def _kafka_objects(self) -> None:
        admin = AdminClient(self.kafka.client_config())
        create_topics(admin, {TOPICS.requests: 3, TOPICS.responses: 3, TOPICS.dlq: 1}, exist_ok=True)
        for user, password in self.state["passwords"].items():
            upsert_user(admin, user, password)
        apply_acls(admin, service_acls(TOPICS, PRINCIPALS) + worker_acls(TOPICS, DEMO_WORKER))

    def _spawn(self, name: str, module: str, env: dict[str, str]) -> subprocess.Popen:
        log = (self.logs / f"{name}.log").open("ab")
        self.log_offsets[name] = log.seek(0, os.SEEK_END)  # a failure shows this run's lines, not an earlier run's
        base = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "ASYNC_"))}
        # own session: Ctrl-C reaches only this script, which then stops the services in order
        process = subprocess.Popen([sys.executable, "-m", module], cwd=REPO, env=base | env |
                                   {"ASYNC_SECRETS_DIR": str(self.data / "no-vault")},
                                   stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                   preexec_fn=_die_with_parent if sys.platform == "linux" else None)
        self.children[name] = process
        return process

    def _cleanup_loop(self) -> None:
        while not self.stop_event.wait(self.cleanup_interval):
            try:
                report = run_cleanup(self.pg.url, 1000, 60, self.stop_event)
                if report.deleted:
                    say(f"    {DIM}cleanup deleted {report.deleted} expired rows{RESET}")
            except psycopg.Error as exc:
                say(f"    cleanup failed: {type(exc).__name__}")

    # ------------------------------------------------------------------ demo
    def example_call(self) -> str:
        """A call to paste: it carries a request_id, so pasting it twice replays the first answer, no second row."""
        body = {"action": {"name": "publish_async_request"},
                "input": {"input": {"request_id": f"curl-{uuid.uuid4().hex[:12]}", "handler": "billing-worker",
                                    "operation": "invoice.create",
                                    "payload": {"invoice_id": "inv_123", "amount": 42.5},
                                    "metadata": {"tenant": "acme"}}},
                "session_variables": {"x-hasura-role": "user", "x-hasura-user-id": "user-123"}}
        return (f"curl -s -X POST {self.publisher_url}/action/publish_async_request \\\n"
                f"  -H 'Content-Type: application/json' -H 'X-Async-Action-Secret: {self.state['action_secret']}' \\\n"
                f"  -d '{json.dumps(body)}'")

    def demo(self) -> dict:
        request_id = f"demo-{uuid.uuid4().hex[:12]}"
        body = {"action": {"name": "publish_async_request"},
                "input": {"input": {"request_id": request_id, "handler": "billing-worker",
                                    "operation": "invoice.create", "payload": {"invoice_id": "inv_demo"}}},
                "session_variables": {"x-hasura-role": "user", "x-hasura-user-id": "demo-user"}}
        step(f"demo request {request_id} through the whole flow")
        answer = httpx.post(f"{self.publisher_url}/action/publish_async_request", json=body, timeout=30,
                            headers={"X-Async-Action-Secret": self.state["action_secret"], "CF-Ray": "local-demo"})
        answer.raise_for_status()
        say(f"    action answered: {answer.json()}")
        row: dict = {}

        def completed() -> bool:
            nonlocal row
            with psycopg.connect(self.pg.url) as conn:
                cur = conn.execute("SELECT request_id, client_id, status, response, error, created_at, published_at, "
                                   "completed_at, expires_at FROM graphql.client_async_messages "
                                   "WHERE request_id = %s", (request_id,))
                found = cur.fetchone()
                row = dict(zip([c.name for c in cur.description], found, strict=True)) if found else {}
            return row.get("status") in ("completed", "failed")

        wait_for(completed, 60, "the demo row to complete")
        say(f"    {GREEN}row:{RESET} " + json.dumps(row, default=str, indent=2).replace("\n", "\n    "))
        return row

    # ------------------------------------------------------------------ down
    def down(self) -> None:
        """Services, then broker, then database; each step runs even if an earlier one (or the terminal) failed."""
        self.stop_event.set()
        step("stopping")
        for name in ("demo-worker", "publisher", "writer"):
            process = self.children.get(name)
            if process is None or process.poll() is not None:
                continue
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            say(f"    {name} stopped")
        self.monitoring.stop()
        for name, server in (("kafka", self.kafka), ("postgresql", self.pg)):
            try:
                server.stop()
                say(f"    {name} stopped")
            except Exception as exc:  # noqa: BLE001 - go on: the next server must still be stopped
                say(f"    {name} did not stop cleanly: {exc}")
        say(f"\n{BOLD}data lives in {self.data}{RESET}: PostgreSQL {self.pg.data_dir}, Kafka {self.kafka.work_dir}, "
            f"logs {self.logs}, connection details {self.data / 'local-state.json'}\n"
            "(remove the folder for a fresh start)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO / ".local", help="data directory (default .local/)")
    parser.add_argument("--publisher-port", type=publisher_port_arg, default=None,
                        help="publisher port; 0 = any free port (default: the one this data directory used last, "
                             "else 8080, else a free one)")
    parser.add_argument("--cleanup-interval", type=float, default=60.0)
    parser.add_argument("--no-writer", action="store_true",
                        help="start without the writer (responses wait on the topic; run one with `dev.sh service "
                             "writer`)")
    parser.add_argument("--no-worker", action="store_true", help="start without the demo worker")
    parser.add_argument("--once", action="store_true", help="bring up, run the demo, stop (for checks)")
    parser.add_argument("--prometheus", action="store_true",
                        help="also start a Prometheus server scraping the services, with the alert rules loaded")
    args = parser.parse_args(argv)
    stopping = threading.Event()
    set_on_stop_signals(stopping)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)  # a closed pipe is a BrokenPipeError that say() absorbs
    try:
        stack = LocalStack(args.data.resolve(), args.publisher_port, args.cleanup_interval,
                           writer=not args.no_writer, worker=not args.no_worker, prometheus=args.prometheus)
    except (DataDirBusy, DataDirUnreachable, PortTaken) as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return 2
    try:
        stack.up()
        say(f"\n{BOLD}publisher listening on {stack.publisher_url}{RESET} "
            f"(action handler: {stack.publisher_url}/action/publish_async_request)")
        say("example call (this is how Hasura calls it; the secret is local to this data directory):\n")
        say(stack.example_call() + "\n")
        say("rows (the table Hasura would serve as a subscription):\n")
        say(f"psql '{stack.pg.url}' -c 'SELECT request_id, client_id, status, response, error "
            f"FROM graphql.client_async_messages ORDER BY created_at DESC LIMIT 10'\n")
        for line in stack.monitoring.describe():
            say(line)
        say(f"one more service in the foreground: bash scripts/dev.sh service writer|publisher|worker|cleanup "
            f"--data {stack.data}\n")
        if stack.with_writer and stack.with_worker:
            stack.demo()
        else:
            say("demo request skipped: it needs both the writer and the demo worker")
        if not args.once:
            say(f"\n{BOLD}running; Ctrl-C stops everything{RESET} (logs in {stack.logs})")
            stopping.wait()
        return 0
    except Exception as exc:  # noqa: BLE001 - report, then still stop what was started
        with contextlib.suppress(OSError):
            print(f"\nfailed: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        stack.down()


if __name__ == "__main__":
    sys.exit(main())
