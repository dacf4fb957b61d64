"""The README's local run: brings the flow up on real servers, runs the demo, stops cleanly on Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from scripts.servers import free_port
from tests.conftest import REPO
from tests.support.kafka_admin import wait_until


def processes_mentioning(text: str) -> list[int]:
    """Processes whose command line or environment names `text` (the services get the data dir in their env)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if text.encode() in (entry / "cmdline").read_bytes() + (entry / "environ").read_bytes():
                found.append(int(entry.name))
        except OSError:  # gone meanwhile, or a process we may not read
            continue
    return found


def stop(proc: subprocess.Popen) -> None:
    """Ctrl-C first, as a person would; kill only if it does not stop."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_local_run_demo_and_ctrl_c(reachable_tmp):
    data = reachable_tmp / "local"
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "scripts.local_run", "--data", str(data), "--publisher-port",
                             str(port)], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    try:
        for line in proc.stdout:  # ends when the process closes stdout
            lines.append(line)
            if "Ctrl-C stops everything" in line:
                assert len(processes_mentioning(str(data))) >= 4, "publisher, writer, worker and broker run"
                proc.send_signal(signal.SIGINT)
        proc.wait(60)
    finally:
        stop(proc)
    output = "".join(lines)
    assert proc.returncode == 0, output
    assert f"publisher listening on http://127.0.0.1:{port}" in output
    assert "curl -s -X POST" in output and "X-Async-Action-Secret" in output
    assert '"request_id": "curl-' in output  # pasting the call twice replays it instead of making a second row
    assert "\033[" not in output  # not a terminal: no colour codes
    assert '"status": "completed"' in output and '"handled_by": "demo-worker"' in output
    assert f"data lives in {data}" in output
    assert processes_mentioning(str(data)) == []  # nothing left running


def test_services_do_not_outlive_a_killed_local_run(reachable_tmp):
    """Even a SIGKILLed orchestrator (no chance to clean up) takes its service processes with it."""
    data = reachable_tmp / "local"
    proc = subprocess.Popen([sys.executable, "-m", "scripts.local_run", "--data", str(data), "--publisher-port",
                             str(free_port())], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        for line in proc.stdout:
            if "Ctrl-C stops everything" in line:
                break
        services = processes_mentioning(str(data / "no-vault"))
        assert len(services) == 3  # publisher, writer, demo worker
        proc.kill()
        proc.wait(10)
        wait_until(lambda: not any(Path(f"/proc/{pid}").exists() for pid in services), timeout=30,
                   what="services to exit after their parent died")
    finally:
        stop(proc)
        # the data servers are daemons by design; stop them the way an operator would
        subprocess.run([sys.executable, "-m", "scripts.servers", "stop", str(data)], cwd=REPO, check=True,
                       capture_output=True)
    assert processes_mentioning(str(data)) == []
    assert (data / "pg" / "PG_VERSION").exists() and (data / "kafka" / "data").is_dir()


def start_up(data: Path, *extra: str) -> tuple[subprocess.Popen, list[str]]:
    """`up` until it says it is running; returns the process and the lines so far."""
    proc = subprocess.Popen([sys.executable, "-m", "scripts.local_run", "--data", str(data), "--publisher-port",
                             str(free_port()), *extra], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if "Ctrl-C stops everything" in line:
            return proc, lines
    raise AssertionError("".join(lines))


def test_second_up_is_refused_state_names_every_principal_and_extra_services_run(reachable_tmp):
    import json

    data = reachable_tmp / "local"
    first, _ = start_up(data, "--no-worker")
    try:
        second = subprocess.run([sys.executable, "-m", "scripts.local_run", "--data", str(data), "--once"], cwd=REPO,
                                capture_output=True, text=True, timeout=60)
        assert second.returncode == 2 and "in use by another `dev.sh up`" in second.stderr, second.stderr
        state = json.loads((data / "local-state.json").read_text())
        principals = state["kafka_principals"]
        assert principals["admin (super user)"] == {"username": "admin", "password": "admin-secret"}
        assert {"publisher", "writer"} <= set(principals) and state["kafka_bootstrap"] and state["database_url"]
        # the demo worker is a least-privilege worker principal, not the super user
        assert principals["worker"]["username"] == "graphql-async-worker-demo"
        assert {"pg_port", "kafka_port", "controller_port", "publisher_port", "writer_health_port"} <= set(state)
        # the documented extra-service command: the DLQ reader connects with the stored super-user credentials
        dlq = subprocess.run([sys.executable, "-m", "scripts.local_service", "dlq", "--data", str(data)], cwd=REPO,
                             capture_output=True, text=True, timeout=60)
        assert dlq.returncode == 0 and "message(s) in graphql.async.responses.dlq.v1" in dlq.stderr, dlq.stderr
        # a second writer in the foreground joins the group with its own identity
        health = free_port()
        extra = subprocess.Popen([sys.executable, "-m", "scripts.local_service", "writer", "--data", str(data),
                                  "--port", str(health)], cwd=REPO, stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True)
        try:
            import httpx

            wait_until(lambda: httpx.get(f"http://127.0.0.1:{health}/healthz").status_code == 200, what="2nd writer")
        finally:
            extra.send_signal(signal.SIGINT)
            extra.wait(60)
        assert extra.returncode == 0
        assert processes_mentioning(str(data / "no-vault")) and len(processes_mentioning("scripts.demo_worker")) == 0
    finally:
        stop(first)
    assert first.returncode == 0
    assert processes_mentioning(str(data)) == []


def test_shutdown_does_not_depend_on_the_terminal(reachable_tmp):
    """`up | tee log`, then Ctrl-C kills tee first: every print after that hits a closed pipe."""
    data = reachable_tmp / "local"
    proc, _ = start_up(data)
    proc.stdout.close()  # the reader is gone
    proc.send_signal(signal.SIGINT)
    proc.wait(90)
    assert proc.returncode == 0
    assert processes_mentioning(str(data)) == []


def test_an_orphaned_broker_of_a_killed_run_is_stopped_not_reported_ready(reachable_tmp):
    data = reachable_tmp / "local"
    proc, _ = start_up(data)
    proc.kill()  # no cleanup: PostgreSQL and the broker stay behind
    proc.wait(10)
    broker_pid = int((data / "kafka" / "broker.pid").read_text())
    assert Path(f"/proc/{broker_pid}").exists()
    run = subprocess.run([sys.executable, "-m", "scripts.local_run", "--data", str(data), "--once"], cwd=REPO,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    assert f"stopping an orphaned broker of an earlier run on this data directory (pid {broker_pid})" in run.stdout
    assert '"status": "completed"' in run.stdout
    assert processes_mentioning(str(data)) == []
