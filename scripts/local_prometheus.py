"""A real Prometheus server (and Pushgateway) beside local services: Debian's `prometheus` 2.42 and
`prometheus-pushgateway`, on loopback ports, with their own config and data directory.

Used by `dev.sh up --prometheus` (scripts/local_run.py), by the tests that let a real Prometheus scrape the real
services, and for `promtool`. The alert rules are config/prometheus/rules.yaml: the file the stack deploys as
its PrometheusRule, loaded here unchanged.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import yaml

from scripts.servers import REPO, free_port, wait_for

RULES = REPO / "config" / "prometheus" / "rules.yaml"
RULE_TESTS = REPO / "tests" / "prometheus" / "rules_test.yaml"
PUBLISHER_JOB = "graphql-async-request-publisher"  # the job names the stack's PodMonitors give (jobLabel)
WRITER_JOB = "graphql-async-response-writer"
PUSHGATEWAY_JOB = "pushgateway"


def binary(name: str) -> str:
    """`prometheus`, `promtool` or `prometheus-pushgateway` from PATH (Debian packages of the same names)."""
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"{name} not found: apt-get install prometheus prometheus-pushgateway "
                                "(bash scripts/dev.sh test installs them)")
    return found


def _die_with_parent() -> None:
    """In the child: SIGTERM when the process that started it dies, even by SIGKILL (no orphaned servers)."""
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG


PARENT_DEATH = _die_with_parent if sys.platform == "linux" else None


def promtool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([binary("promtool"), *args], capture_output=True, text=True, timeout=120)


@dataclass
class ScrapeTarget:
    job: str
    address: str  # host:port
    metrics_path: str = "/metrics"
    honor_labels: bool = False  # the Pushgateway's pushed `job` label must win


@dataclass
class PrometheusServer:
    """One Prometheus server: scrapes `targets` every `scrape_interval`, evaluates RULES as often."""

    data: Path
    targets: list[ScrapeTarget]
    scrape_interval: str = "1s"
    port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def config(self) -> dict:
        return {"global": {"scrape_interval": self.scrape_interval, "evaluation_interval": self.scrape_interval,
                           "scrape_timeout": self.scrape_interval},
                "rule_files": [str(RULES)],
                "scrape_configs": [{"job_name": t.job, "metrics_path": t.metrics_path, "honor_labels": t.honor_labels,
                                    "static_configs": [{"targets": [t.address]}]} for t in self.targets]}

    def start(self, timeout: float = 60.0) -> None:
        self.data.mkdir(parents=True, exist_ok=True)
        config = self.data / "prometheus.yml"
        config.write_text(yaml.safe_dump(self.config(), sort_keys=False))
        log = self.data / "prometheus.log"
        self.process = subprocess.Popen(
            [binary("prometheus"), f"--config.file={config}", f"--storage.tsdb.path={self.data / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--storage.tsdb.retention.time=1d"],
            stdout=log.open("ab"), stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=PARENT_DEATH)
        wait_for(lambda: httpx.get(f"{self.url}/-/ready", timeout=1).status_code == 200, timeout, "prometheus",
                 self.process, log)

    def query(self, promql: str) -> list[dict]:
        """The instant vector (or scalar as one sample) of `promql`; each result {'metric': {...}, 'value': float}."""
        answer = httpx.get(f"{self.url}/api/v1/query", params={"query": promql}, timeout=10).json()
        if answer["status"] != "success":
            raise RuntimeError(f"{promql}: {answer}")
        data = answer["data"]
        if data["resultType"] == "scalar":
            return [{"metric": {}, "value": float(data["result"][1])}]
        return [{"metric": r["metric"], "value": float(r["value"][1])} for r in data["result"]]

    def alerts(self) -> dict[str, str]:
        """Alert name -> state (pending | firing) of every active alert."""
        answer = httpx.get(f"{self.url}/api/v1/alerts", timeout=10).json()
        return {a["labels"]["alertname"]: a["state"] for a in answer["data"]["alerts"]}

    def stop(self) -> None:
        _stop(self.process)


@dataclass
class Pushgateway:
    """Where a batch job (the cleanup) leaves its figures for Prometheus to scrape."""

    data: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> None:
        self.data.mkdir(parents=True, exist_ok=True)
        log = self.data / "pushgateway.log"
        self.process = subprocess.Popen(
            [binary("prometheus-pushgateway"), f"--web.listen-address=127.0.0.1:{self.port}"],
            stdout=log.open("ab"), stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=PARENT_DEATH)
        wait_for(lambda: httpx.get(f"{self.url}/-/ready", timeout=1).status_code == 200, timeout, "pushgateway",
                 self.process, log)

    def stop(self) -> None:
        _stop(self.process)


def _stop(process: subprocess.Popen | None) -> None:
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def wait_for_value(prometheus: PrometheusServer, promql: str, accept, timeout: float, what: str) -> list[dict]:
    """Poll `promql` until `accept(result)` holds; fail with the last result after `timeout`."""
    deadline, result = time.monotonic() + timeout, []
    while time.monotonic() < deadline:
        result = prometheus.query(promql)
        if accept(result):
            return result
        time.sleep(0.5)
    raise TimeoutError(f"{what}: {promql} gave {result} for {timeout:.0f}s")


class LocalMonitoring:
    """The local run's metrics: a fixed metrics port for the publisher (kept in local-state.json), where to read
    them, and with `--prometheus` a Prometheus server scraping both services with the stack's rules loaded."""

    def __init__(self, data: Path, state: dict, with_prometheus: bool):
        state.setdefault("publisher_metrics_port", free_port())
        self.state = state
        self.prometheus = PrometheusServer(data / "prometheus", [
            ScrapeTarget(PUBLISHER_JOB, f"127.0.0.1:{state['publisher_metrics_port']}"),
            ScrapeTarget(WRITER_JOB, f"127.0.0.1:{state['writer_health_port']}")],
            scrape_interval="5s", port=state.setdefault("prometheus_port", free_port())) if with_prometheus else None

    def publisher_env(self) -> dict[str, str]:
        return {"METRICS_PORT": str(self.state["publisher_metrics_port"])}

    def start(self, step, done) -> None:
        if self.prometheus is None:
            return
        step(f"Prometheus on {self.prometheus.url} (scrapes every 5s; rules: {RULES.relative_to(REPO)})")
        self.prometheus.start()
        done()

    def describe(self) -> list[str]:
        lines = [f"metrics: publisher http://127.0.0.1:{self.state['publisher_metrics_port']}/metrics, "
                 f"writer http://127.0.0.1:{self.state['writer_health_port']}/metrics"]
        if self.prometheus:
            lines.append(f"Prometheus: {self.prometheus.url}/graph  alerts: {self.prometheus.url}/alerts")
        else:
            lines.append("(--prometheus starts a Prometheus server scraping them, with the stack's alert rules)")
        return lines

    def stop(self) -> None:
        if self.prometheus:
            self.prometheus.stop()
