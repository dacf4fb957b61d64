"""`dev.sh up --prometheus`: the local run prints where the metrics are, and a real Prometheus scrapes both
services with the stack's alert rules loaded; Ctrl-C stops it with the rest."""

from __future__ import annotations

import re
import signal
import subprocess
import sys

import httpx

from scripts.local_prometheus import PUBLISHER_JOB, WRITER_JOB
from scripts.servers import free_port
from tests.conftest import REPO
from tests.support.kafka_admin import wait_until
from tests.test_local_run import processes_mentioning, stop


def test_local_run_with_prometheus_scrapes_both_services_with_the_rules(tmp_path):
    data = tmp_path / "local"
    proc = subprocess.Popen([sys.executable, "-m", "scripts.local_run", "--data", str(data), "--publisher-port",
                             str(free_port()), "--no-worker", "--prometheus"], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    lines = []
    try:
        for line in proc.stdout:
            lines.append(line)
            if "Ctrl-C stops everything" in line:
                break
        output = "".join(lines)
        metrics = re.search(r"metrics: publisher (http://\S+/metrics), writer (http://\S+/metrics)", output)
        prometheus = re.search(r"Prometheus: (http://127\.0\.0\.1:\d+)/graph", output)
        assert metrics and prometheus, output
        for url in metrics.groups():
            assert "graphql_async_" in httpx.get(url, timeout=5).text
        base = prometheus.group(1)

        def targets_up() -> set[str]:
            answer = httpx.get(f"{base}/api/v1/query", params={"query": "up == 1"}, timeout=5).json()
            return {r["metric"]["job"] for r in answer["data"]["result"]}

        assert wait_until(lambda: targets_up() == {PUBLISHER_JOB, WRITER_JOB}, timeout=60, what="both targets up")
        rules = httpx.get(f"{base}/api/v1/rules", timeout=5).json()["data"]["groups"]
        alerts = {r["name"] for g in rules for r in g["rules"] if r["type"] == "alerting"}
        assert {"AsyncWriterLagGrowing", "AsyncOutboxBacklogOld", "AsyncCleanupNotRun"} <= alerts
        proc.send_signal(signal.SIGINT)
        proc.wait(90)
    finally:
        stop(proc)
    assert proc.returncode == 0
    assert processes_mentioning(str(data / "prometheus")) == []  # the Prometheus server stopped with the run
