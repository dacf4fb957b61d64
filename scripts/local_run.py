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
from components.kafka_access import AsyncTopics, ServicePrincipals, service_acls
from scripts.kafka_admin import apply_acls, create_topics, upsert_user
from scripts.servers import REPO, KafkaBroker, PostgresServer, fetch_kafka_jars, free_port, wait_for

BOLD, DIM, GREEN, RESET = "\033[1m", "\033[2m", "\033[32m", "\033[0m"
TOPICS = AsyncTopics()
PRINCIPALS = ServicePrincipals()


def step(text: str) -> None:
    print(f"{BOLD}==>{RESET} {text}", flush=True)


def done(text: str = "ok") -> None:
    print(f"    {GREEN}{text}{RESET}", flush=True)


def _die_with_parent() -> None:
    """Runs in the child: if this script is killed outright, the service gets SIGTERM instead of living on."""
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG


class LocalStack:
    def __init__(self, data: Path, publisher_port: int, cleanup_interval: float):
        self.data = data
        self.logs = data / "logs"
        self.cleanup_interval = cleanup_interval
        self.state = self._load_state(publisher_port)
        self.pg = PostgresServer(data / "pg", port=self.state["pg_port"])
        self.kafka = KafkaBroker(data / "kafka", port=self.state["kafka_port"],
                                 controller_port=self.state["controller_port"])
        self.children: dict[str, subprocess.Popen] = {}
        self.stop_event = threading.Event()
        self.cleanup_thread: threading.Thread | None = None

    def _load_state(self, publisher_port: int) -> dict:
        """Ports and local-only credentials stay the same across runs of one data directory."""
        path = self.data / "local-state.json"
        if path.exists():
            state = json.loads(path.read_text())
        else:
            self.data.mkdir(parents=True, exist_ok=True)
            state = {"pg_port": free_port(), "kafka_port": free_port(), "controller_port": free_port(),
                     "action_secret": secrets.token_urlsafe(24),
                     "passwords": {p: secrets.token_urlsafe(18) for p in (PRINCIPALS.publisher, PRINCIPALS.writer)}}
            path.write_text(json.dumps(state, indent=2))
            path.chmod(0o600)
        state["publisher_port"] = publisher_port or state.get("publisher_port") or 8080
        return state

    # ------------------------------------------------------------------ up
    def up(self) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        step(f"PostgreSQL on 127.0.0.1:{self.pg.port} (data: {self.pg.data_dir})")
        t = time.monotonic()
        self.pg.start()
        done(f"ready in {time.monotonic() - t:.1f}s")

        step("Kafka broker jars (downloaded from Maven Central on the first run, then cached)")
        print(f"    {DIM}{fetch_kafka_jars(quiet=True)}{RESET}", flush=True)
        step(f"Kafka broker on 127.0.0.1:{self.kafka.port} (KRaft, SASL/SCRAM, ACLs; data: {self.kafka.work_dir})")
        t = time.monotonic()
        self.kafka.start()
        done(f"ready in {time.monotonic() - t:.1f}s")

        step("topics, service principals and their ACLs")
        self._kafka_objects()
        done(f"{TOPICS.requests}, {TOPICS.responses}, {TOPICS.dlq}")

        step("bootstrap: table graphql.client_async_messages")
        with psycopg.connect(self.pg.url) as conn:
            apply_schema(conn)
        done("ok (Hasura metadata is applied by the bootstrap Job in the cluster; Hasura does not run here)")

        step(f"publisher on http://127.0.0.1:{self.state['publisher_port']}")
        publisher = self._spawn("publisher", "app.publisher", self._publisher_env())
        wait_for(lambda: httpx.get(f"{self.publisher_url}/readyz", timeout=1).status_code == 200, 30,
                 "publisher", publisher, self.logs / "publisher.log")
        done()
        step("writer (consumer group on the responses topic)")
        health = free_port()
        writer = self._spawn("writer", "app.writer", self._writer_env(health))
        wait_for(lambda: httpx.get(f"http://127.0.0.1:{health}/healthz", timeout=1).status_code == 200, 30,
                 "writer", writer, self.logs / "writer.log")
        done()
        step("demo worker (answers every request)")
        self._spawn("demo-worker", "scripts.demo_worker", self._kafka_env("admin", "admin-secret"))
        done()
        step(f"cleanup every {self.cleanup_interval:.0f}s")
        self.cleanup_thread = threading.Thread(target=self._cleanup_loop, daemon=True)
        self.cleanup_thread.start()
        done()

    @property
    def publisher_url(self) -> str:
        return f"http://127.0.0.1:{self.state['publisher_port']}"

    def _kafka_objects(self) -> None:
        admin = AdminClient(self.kafka.client_config())
        create_topics(admin, {TOPICS.requests: 3, TOPICS.responses: 3, TOPICS.dlq: 1}, exist_ok=True)
        for user, password in self.state["passwords"].items():
            upsert_user(admin, user, password)
        apply_acls(admin, service_acls(TOPICS, PRINCIPALS))

    def _kafka_env(self, user: str, password: str) -> dict[str, str]:
        return {"KAFKA_BOOTSTRAP_SERVERS": self.kafka.bootstrap, "KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
                "KAFKA_SASL_MECHANISM": "SCRAM-SHA-256", "KAFKA_USERNAME": user, "KAFKA_PASSWORD": password}

    def _publisher_env(self) -> dict[str, str]:
        return self._kafka_env(PRINCIPALS.publisher, self.state["passwords"][PRINCIPALS.publisher]) | {
            "ASYNC_DATABASE_URL": self.pg.url, "ASYNC_ACTION_SECRET": self.state["action_secret"],
            "PUBLISHER_HOST": "127.0.0.1", "PUBLISHER_PORT": str(self.state["publisher_port"])}

    def _writer_env(self, health_port: int) -> dict[str, str]:
        return self._kafka_env(PRINCIPALS.writer, self.state["passwords"][PRINCIPALS.writer]) | {
            "ASYNC_DATABASE_URL": self.pg.url, "HEALTH_PORT": str(health_port), "WRITER_INSTANCE_ID": "local"}

    def _spawn(self, name: str, module: str, env: dict[str, str]) -> subprocess.Popen:
        log = (self.logs / f"{name}.log").open("ab")
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
                    print(f"    {DIM}cleanup deleted {report.deleted} expired rows{RESET}", flush=True)
            except psycopg.Error as exc:
                print(f"    cleanup failed: {exc}", flush=True)

    # ------------------------------------------------------------------ demo
    def example_call(self) -> str:
        body = {"action": {"name": "publish_async_request"},
                "input": {"input": {"handler": "billing-worker", "operation": "invoice.create",
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
        print(f"    action answered: {answer.json()}", flush=True)
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
        print(f"    {GREEN}row:{RESET} " + json.dumps(row, default=str, indent=2).replace("\n", "\n    "), flush=True)
        return row

    # ------------------------------------------------------------------ down
    def down(self) -> None:
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
            print(f"    {name} stopped", flush=True)
        self.kafka.stop()
        print("    kafka stopped", flush=True)
        self.pg.stop()
        print("    postgresql stopped", flush=True)
        print(f"\n{BOLD}data lives in {self.data}{RESET}: PostgreSQL {self.pg.data_dir}, Kafka {self.kafka.work_dir}, "
              f"logs {self.logs}\n(remove the folder for a fresh start)", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO / ".local", help="data directory (default .local/)")
    parser.add_argument("--publisher-port", type=int, default=0, help="default 8080 (or the last one used)")
    parser.add_argument("--cleanup-interval", type=float, default=60.0)
    parser.add_argument("--once", action="store_true", help="bring up, run the demo, stop (for checks)")
    args = parser.parse_args(argv)
    stack = LocalStack(args.data.resolve(), args.publisher_port, args.cleanup_interval)
    stopping = threading.Event()

    def on_signal(*_):
        stopping.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        stack.up()
        print(f"\n{BOLD}publisher listening on {stack.publisher_url}{RESET} "
              f"(action handler: {stack.publisher_url}/action/publish_async_request)")
        print("example call (this is how Hasura calls it; the secret is local to this data directory):\n")
        print(stack.example_call() + "\n", flush=True)
        print("rows (the table Hasura would serve as a subscription):\n")
        print(f"psql '{stack.pg.url}' -c 'SELECT request_id, client_id, status, response, error "
              f"FROM graphql.client_async_messages ORDER BY created_at DESC LIMIT 10'\n", flush=True)
        stack.demo()
        if not args.once:
            print(f"\n{BOLD}running; Ctrl-C stops everything{RESET} (logs in {stack.logs})", flush=True)
            stopping.wait()
        return 0
    except Exception as exc:  # noqa: BLE001 - report, then still stop what was started
        print(f"\nfailed: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        stack.down()


if __name__ == "__main__":
    sys.exit(main())
