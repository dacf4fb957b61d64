"""The README's local run: brings the flow up on real servers, runs the demo, stops cleanly on Ctrl-C."""

from __future__ import annotations

import signal
import subprocess
import sys

from scripts.servers import free_port
from tests.conftest import REPO


def processes_mentioning(text: str) -> list[str]:
    out = subprocess.run(["ps", "-ww", "-eo", "pid,args"], capture_output=True, text=True, check=True).stdout
    return [line for line in out.splitlines()[1:] if text in line and "ps -eo" not in line]


def test_local_run_demo_and_ctrl_c(tmp_path):
    data = tmp_path / "local"
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "scripts.local_run", "--data", str(data), "--publisher-port",
                             str(port)], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    try:
        for line in proc.stdout:  # ends when the process closes stdout
            lines.append(line)
            if "Ctrl-C stops everything" in line:
                assert processes_mentioning(str(data)), "services run while it is up"
                proc.send_signal(signal.SIGINT)
        proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
    output = "".join(lines)
    assert proc.returncode == 0, output
    assert f"publisher listening on http://127.0.0.1:{port}" in output
    assert "curl -s -X POST" in output and "X-Async-Action-Secret" in output
    assert '"status": "completed"' in output and '"handled_by": "demo-worker"' in output
    assert f"data lives in {data}" in output
    assert processes_mentioning(str(data)) == []  # nothing left running
    assert (data / "pg" / "PG_VERSION").exists() and (data / "kafka" / "data").is_dir()
