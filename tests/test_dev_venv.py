"""dev.sh installs into the project's virtual environment (`venv/`, the one Pulumi.yaml names), never into the
Python on PATH: a stock Debian/Ubuntu Python refuses global installs (PEP 668, "externally-managed-environment")."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO

SYSTEM_PYTHON = Path("/usr/bin/python3")


def refuses_global_installs(python: Path) -> bool:
    """PEP 668: the marker file sits in the interpreter's stdlib directory."""
    if not python.exists():
        return False
    stdlib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('stdlib'))"],
                            capture_output=True, text=True, check=True).stdout.strip()
    return (Path(stdlib) / "EXTERNALLY-MANAGED").exists()


def project_with(tmp_path: Path, requirements: str) -> Path:
    """A copy of dev.sh in a project folder whose requirements are tiny (the real ones take a minute to install)."""
    project = tmp_path / "project"
    (project / "scripts").mkdir(parents=True)
    (project / "app").mkdir()
    shutil.copy2(REPO / "scripts" / "dev.sh", project / "scripts" / "dev.sh")
    (project / "requirements.txt").write_text(requirements)
    (project / "app" / "requirements.txt").write_text("")
    return project


def dev_sh(project: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "scripts/dev.sh", *args], cwd=project, capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", "HOME": str(project)}, timeout=300)


def test_pulumi_and_dev_sh_name_the_same_venv():
    runtime = yaml.safe_load((REPO / "Pulumi.yaml").read_text())["runtime"]["options"]
    assert runtime["virtualenv"] == "venv"
    assert 'VENV="${DEV_VENV:-venv}"' in (REPO / "scripts" / "dev.sh").read_text()


def test_no_install_outside_the_venv():
    script = (REPO / "scripts" / "dev.sh").read_text()
    for line in script.splitlines():
        if "pip install" in line and not line.lstrip().startswith("#"):
            # the project's venv, or the one dev.sh keeps for checkov apart from the project's pins
            assert '"$PY" -m pip install' in line or '"$CHECKOV_VENV/bin/python" -m pip install' in line, line


@pytest.mark.skipif(not refuses_global_installs(SYSTEM_PYTHON), reason="no PEP 668 system Python on this machine")
def test_quick_start_installs_on_a_python_that_refuses_global_installs(tmp_path):
    # the premise: this Python really refuses `pip install` outside a virtual environment
    refused = subprocess.run([str(SYSTEM_PYTHON), "-m", "pip", "install", "--dry-run", "--no-index", "nothing-at-all"],
                             capture_output=True, text=True)
    assert refused.returncode != 0 and "externally-managed-environment" in refused.stdout + refused.stderr

    project = project_with(tmp_path, "# nothing to install\n")
    first = dev_sh(project, "venv")
    assert first.returncode == 0, first.stderr
    assert "installing Python dependencies into venv/" in first.stderr
    python = project / "venv" / "bin" / "python"
    prefix = subprocess.run([str(python), "-c", "import sys; print(sys.prefix, sys.base_prefix)"],
                            capture_output=True, text=True, check=True).stdout.split()
    assert Path(prefix[0]) == project / "venv" and prefix[0] != prefix[1]
    # plain output: no terminal, no colour codes
    assert "\033[" not in first.stderr

    # unchanged requirements: nothing is installed again
    second = dev_sh(project, "venv")
    assert second.returncode == 0 and "installing" not in second.stderr

    # a changed requirements file is installed again
    (project / "requirements.txt").write_text("# still nothing, but different\n")
    third = dev_sh(project, "venv")
    assert third.returncode == 0 and "installing Python dependencies" in third.stderr


def test_a_broken_venv_is_recreated(tmp_path):
    project = project_with(tmp_path, "")
    (project / "venv" / "bin").mkdir(parents=True)
    (project / "venv" / "bin" / "python").symlink_to("/nonexistent/python3")
    run = dev_sh(project, "venv")
    assert run.returncode == 0, run.stderr
    assert "creating the project's virtual environment" in run.stderr
    assert (project / "venv" / "bin" / "python").resolve().exists()


def test_unknown_command_says_so(tmp_path):
    run = dev_sh(project_with(tmp_path, ""), "frobnicate")
    assert run.returncode == 2
    assert "unknown command: frobnicate" in run.stderr
    assert "dev.sh up" in run.stderr

