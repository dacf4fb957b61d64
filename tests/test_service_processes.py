"""The services as the containers run them: `python -m app.<service>`, settings from env, SIGTERM shutdown."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid

import httpx

from app.settings import PublisherSettings
from scripts.servers import free_port
from tests.conftest import ACTION_SECRET, REPO
from tests.support.kafka_admin import wait_until
from tests.support.services import action_body, call_action


def service_env(pg, kafka, topics, **extra) -> dict:
    return {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "ASYNC_"))} | {
        "ASYNC_SECRETS_DIR": "/nonexistent",
        "ASYNC_DATABASE_URL": pg.url, "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap,
        "KAFKA_USERNAME": "admin", "KAFKA_PASSWORD": "admin-secret",
        "ASYNC_REQUESTS_TOPIC": topics.requests, "ASYNC_RESPONSES_TOPIC": topics.responses,
        "ASYNC_DLQ_TOPIC": topics.dlq, **extra}


def start(module: str, env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", module], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def json_logs(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def test_publisher_process_serves_and_stops_on_sigterm(pg, kafka, topics):
    port = free_port()
    proc = start("app.publisher", service_env(pg, kafka, topics, ASYNC_ACTION_SECRET=ACTION_SECRET,
                                              PUBLISHER_PORT=str(port), PUBLISHER_HOST="127.0.0.1"))
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: httpx.get(f"{url}/readyz").status_code == 200, what="publisher ready")
        answer = call_action(url, ACTION_SECRET, action_body({"handler": "h", "operation": "o",
                                                              "request_id": f"req-{uuid.uuid4().hex}"}),
                             headers={"CF-Ray": "ray-123", "CF-Connecting-IP": "198.51.100.4"})
        assert answer.status_code == 200 and answer.json()["status"] == "published"
        # found by a live probe: with an Upgrade header uvicorn switched to WebSockets and never answered
        upgrade = httpx.post(f"{url}/action/publish_async_request", content=b"{}", timeout=10,
                             headers={"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
                                      "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="})
        assert upgrade.status_code == 401
    finally:
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=30)
    # uvicorn re-raises the captured SIGTERM once its graceful shutdown is done
    assert proc.returncode in (0, -signal.SIGTERM), stderr
    logs = json_logs(stdout)
    accepted = next(e for e in logs if e["msg"] == "accepted request")
    assert accepted["cf-ray"] == "ray-123" and accepted["cf-connecting-ip"] == "198.51.100.4"
    assert "publisher stopped" in [e["msg"] for e in logs]
    assert ACTION_SECRET not in stdout + stderr and "admin-secret" not in stdout + stderr


def test_writer_process_stops_on_sigterm(pg, kafka, topics):
    health = free_port()
    proc = start("app.writer", service_env(pg, kafka, topics, HEALTH_PORT=str(health),
                                           WRITER_GROUP_ID=f"graphql-async-response-writer-{uuid.uuid4().hex[:6]}"))
    try:
        wait_until(lambda: httpx.get(f"http://127.0.0.1:{health}/healthz").status_code == 200, what="writer health")
    finally:
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    assert json_logs(stdout)[-1]["msg"] == "writer stopped"


def test_cleanup_process_reports_what_it_deleted(pg, db, kafka, topics):
    db.execute("DELETE FROM graphql.client_async_messages WHERE expires_at < now()")
    db.execute("INSERT INTO graphql.client_async_messages (request_id, client_id, handler, operation, expires_at) "
               "SELECT 'proc-' || g, 'c', 'h', 'o', now() - interval '1 second' FROM generate_series(1, 42) g")
    run = subprocess.run([sys.executable, "-m", "app.cleanup"], cwd=REPO, capture_output=True, text=True,
                         env=service_env(pg, kafka, topics, CLEANUP_BATCH_SIZE="10"), timeout=60)
    assert run.returncode == 0, run.stderr
    [report] = [e for e in json_logs(run.stdout) if e["msg"] == "cleanup finished"]
    assert report["deleted"] == 42 and report["batches"] == 5 and report["stopped_by"] == "done"


def test_writer_without_kafka_credentials_fails_clearly(pg, kafka, topics):
    env = service_env(pg, kafka, topics)
    del env["KAFKA_PASSWORD"]
    run = subprocess.run([sys.executable, "-m", "app.writer"], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=60)
    assert run.returncode != 0 and "KAFKA_PASSWORD" in run.stderr


def test_a_call_still_open_at_sigterm_is_cut_after_the_drain_and_the_process_ends(pg, kafka, topics):
    """A client that never finishes its body would hold uvicorn's graceful shutdown forever (it waits for open
    calls, uvicorn/server.py `shutdown`): SHUTDOWN_DRAIN_SECONDS reaches uvicorn's timeout_graceful_shutdown,
    so the call is cancelled, stop() runs within its own budget, and the pod ends before its SIGKILL."""
    port, drain, budget = free_port(), 2, 7
    proc = start("app.publisher", service_env(pg, kafka, topics, ASYNC_ACTION_SECRET=ACTION_SECRET,
                                              PUBLISHER_PORT=str(port), PUBLISHER_HOST="127.0.0.1",
                                              PUBLISH_TIMEOUT_SECONDS="1", PUBLISH_WAIT_SECONDS="1",
                                              RELAY_GRACE_SECONDS="3", SHUTDOWN_DRAIN_SECONDS=str(drain),
                                              SHUTDOWN_TIMEOUT_SECONDS=str(budget)))
    try:
        wait_until(lambda: httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200, what="publisher ready")
        with socket.create_connection(("127.0.0.1", port), timeout=30) as held:
            held.sendall(b"POST /action/publish_async_request HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                         b"Content-Type: application/json\r\nContent-Length: 1000\r\n"
                         b"X-Async-Action-Secret: " + ACTION_SECRET.encode() + b"\r\n\r\n")
            # uvicorn sends 100 Continue when the handler first asks for the body: the call is open, in the app
            assert held.recv(64).startswith(b"HTTP/1.1 100 Continue")
            proc.send_signal(signal.SIGTERM)
            stdout, stderr = proc.communicate(timeout=drain + budget + 15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode in (0, -signal.SIGTERM), stderr
    assert "timeout graceful shutdown exceeded" in stderr + stdout
    assert "publisher stopped" in [e["msg"] for e in json_logs(stdout)]


def test_publisher_closes_an_idle_connection_only_after_its_keep_alive(pg, kafka, topics):
    """Hasura's HTTP client (http-client, Data/KeyedPool.hs) reuses an idle connection until it is 30-35 s old:
    the publisher's default keep-alive must outlast that, and PUBLISHER_KEEP_ALIVE_SECONDS must reach uvicorn."""
    assert PublisherSettings.model_fields["publisher_keep_alive_seconds"].default > 35
    port = free_port()
    proc = start("app.publisher", service_env(pg, kafka, topics, ASYNC_ACTION_SECRET=ACTION_SECRET,
                                              PUBLISHER_PORT=str(port), PUBLISHER_HOST="127.0.0.1",
                                              PUBLISHER_KEEP_ALIVE_SECONDS="2"))
    try:
        wait_until(lambda: httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200, what="publisher ready")
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            connection.request("GET", "/readyz")
            answer = connection.getresponse()
            assert answer.status == 200 and answer.read()  # the whole answer: headers and body may come apart
            answered = time.monotonic()
            assert connection.sock.recv(1) == b""  # the server closes the idle connection (else recv times out)
            idle = time.monotonic() - answered
        finally:
            connection.close()
        assert 1.5 <= idle < 4.5, idle  # 2 s, not uvicorn's default of 5
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
