"""The rough edges a new user hit with the local run (issue 18): ports, folders, stale errors, a stopped stack,
a writer taking over its own identity, a wrong stack setting, plain output off a terminal."""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import stat
import subprocess
import sys

import pytest

from app.logs import JsonFormatter
from scripts.local_run import DEFAULT_PUBLISHER_PORT, PortTaken, choose_publisher_port, publisher_port_arg
from scripts.local_service import service_env
from scripts.servers import free_port, wait_for
from tests.conftest import REPO


@pytest.fixture
def taken_port():
    """A port something else listens on, as another stack's publisher would."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", free_port()))
        sock.listen()
        yield sock.getsockname()[1]


def local_run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "scripts.local_run", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.parametrize("text", ["70000", "-1", "http"])
def test_a_port_that_is_not_one_is_refused_by_the_argument_check(text):
    with pytest.raises(argparse.ArgumentTypeError):
        publisher_port_arg(text)


def test_bad_port_stops_before_any_server_starts(reachable_tmp):
    data = reachable_tmp / "local"
    run = local_run("--data", str(data), "--publisher-port", "70000", "--once")
    assert run.returncode == 2 and "not a TCP port" in run.stderr
    assert not (data / "pg").exists()


def test_an_explicit_port_in_use_is_refused_before_anything_starts(reachable_tmp, taken_port):
    data = reachable_tmp / "second"
    run = local_run("--data", str(data), "--publisher-port", str(taken_port), "--once")
    assert run.returncode == 2, run.stdout + run.stderr
    assert f"publisher port {taken_port} is in use" in run.stderr
    assert not (data / "pg").exists() and not (data / "local-state.json").exists()


def test_a_second_data_directory_never_lands_on_a_port_in_use(taken_port):
    port, why = choose_publisher_port(None, last=taken_port)
    assert port != taken_port and port > 0
    assert why in {"the default", f"a free port ({taken_port} is in use, e.g. by another stack)"}
    if why == "the default":
        assert port == DEFAULT_PUBLISHER_PORT


def test_port_zero_means_any_free_port_and_a_busy_explicit_port_raises(taken_port):
    port, _ = choose_publisher_port(0, last=None)
    assert port not in (0, taken_port)
    with pytest.raises(PortTaken):
        choose_publisher_port(taken_port, last=None)


@pytest.mark.skipif(os.geteuid() != 0, reason="only root chmods folders for the postgres user")
def test_a_folder_we_did_not_create_is_never_opened_up(reachable_tmp):
    home = reachable_tmp / "home"
    home.mkdir(mode=0o700)
    home.chmod(0o700)
    run = local_run("--data", str(home / "stack"), "--once")
    assert run.returncode == 2, run.stdout + run.stderr
    assert f"cannot enter {home}" in run.stderr and "chmod o+x" in run.stderr
    assert stat.S_IMODE(home.stat().st_mode) == 0o700


def test_a_failed_start_shows_this_runs_log_not_an_earlier_one(tmp_path):
    log = tmp_path / "service.log"
    log.write_text("old failure from yesterday\n")
    offset = log.stat().st_size
    with log.open("ab") as out:
        process = subprocess.Popen([sys.executable, "-c", "print('address already in use', flush=True); exit(3)"],
                                   stdout=out)
        with pytest.raises(RuntimeError) as failure:
            wait_for(lambda: False, 30, "service", process, log, offset)
    assert "address already in use" in str(failure.value)
    assert "old failure" not in str(failure.value)


def write_state(folder, bootstrap: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    admin = {"username": "admin", "password": "x"}
    (folder / "local-state.json").write_text(json.dumps({
        "kafka_bootstrap": bootstrap, "database_url": "postgresql://u:p@127.0.0.1:1/db",
        "kafka_security": {}, "topics": {"dlq": "graphql.async.responses.dlq.v1"}, "action_secret": "s" * 20,
        "kafka_principals": {"admin (super user)": admin, "writer": admin, "publisher": admin}}))


@pytest.mark.parametrize("service", ["dlq", "writer"])
def test_service_against_a_stopped_stack_says_so_in_one_line(tmp_path, service):
    write_state(tmp_path, f"127.0.0.1:{free_port()}")  # nothing listens there
    run = subprocess.run([sys.executable, "-m", "scripts.local_service", service, "--data", str(tmp_path)],
                         cwd=REPO, capture_output=True, text=True, timeout=30)
    assert run.returncode == 2
    assert run.stderr.strip().splitlines() == [run.stderr.strip()]
    assert "no running local stack" in run.stderr and "Traceback" not in run.stderr


def test_a_writer_can_take_over_an_identity_or_get_a_fresh_one():
    state = {"kafka_bootstrap": "127.0.0.1:1", "database_url": "postgresql://x",
             "kafka_principals": {"writer": {"username": "w", "password": "p"}}}
    assert service_env(state, "writer", 1, "local")["WRITER_INSTANCE_ID"] == "local"
    fresh = {service_env(state, "writer", 1)["WRITER_INSTANCE_ID"] for _ in range(3)}
    assert len(fresh) == 3 and "local" not in fresh


def test_a_wrong_stack_setting_is_one_line(tmp_path):
    stack_file = REPO / "Pulumi.edgecase.yaml"
    dev = (REPO / "Pulumi.dev.yaml").read_text()
    stack_file.write_text(dev.replace("publisherReplicas:", "publisherReplicas: -3 #"))
    try:
        run = subprocess.run([sys.executable, "-W", "ignore", "-m", "scripts.plan", "edgecase"], cwd=REPO,
                             capture_output=True, text=True, timeout=120)
    finally:
        stack_file.unlink()
    assert run.returncode == 2
    assert run.stderr.strip().count("\n") == 0 and "publisherReplicas" in run.stderr, run.stderr


def test_uvicorn_color_message_never_reaches_the_json_logs():
    record = logging.LogRecord("uvicorn.error", logging.INFO, __file__, 1, "Started server process", None, None)
    record.color_message = "Started server process [\033[36m42\033[0m]"
    line = json.loads(JsonFormatter().format(record))
    assert "color_message" not in line and "\033" not in json.dumps(line)
