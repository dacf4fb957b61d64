"""Vault-rendered secrets are loaded as data, never evaluated by a shell: a `$(...)` in a Vault value (prod's
replica URLs are written by another team) must not run in the pod that holds the admin secret, and a JSON value
(a JWT secret) must keep its quotes. Hasura: its real start command runs on files rendered from its real
templates. The services: their settings read the same files."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from app.settings import BootstrapSettings, CleanupSettings, PublisherSettings, WriterSettings
from scripts.pulumi_harness import load_stack_file, run_stack

P = "graphql-entrypoint:"
TEMPLATE = re.compile(r'\{\{- with secret "([^"]+)" -\}\}(.*)\{\{- end -\}\}', re.DOTALL)


def hostile_values(marker: Path) -> dict[str, str]:
    """kv path -> value: command substitutions, backticks, quotes, a newline, and a JSON JWT secret."""
    payload = f'$(touch {marker}) `touch {marker}` "quoted" \'single\' ${{HOME}} \\ end'
    jwt = '{"type": "HS256", "key": "k-$(touch ' + str(marker) + ')-\\"q\\"-0123456789abcdef0123456789"}'
    return {"jwt": jwt, "other": payload + "\nsecond line"}


def render(template: str, value: str) -> str:
    """What the agent writes for `{{- with secret "p" -}}BODY{{- end -}}` with .Data.data.value = value."""
    match = TEMPLATE.fullmatch(template)
    assert match, template
    return match.group(2).replace("{{ .Data.data.value }}", value)


def test_hasura_start_command_reads_vault_values_without_evaluating_them(tmp_path):
    stack = {**load_stack_file("prod")[P + "hasura"],
             "secretEnvFromVault": {"HASURA_GRAPHQL_JWT_SECRET": "graphql-hasura-jwt-secret"}}
    run = run_stack("prod", {P + "hasura": stack})
    [deployment] = [o for o in run.kubernetes_objects() if o["kind"] == "Deployment"
                    and o["metadata"]["name"] == "hasura"]
    pod = deployment["spec"]["template"]
    annotations = pod["metadata"]["annotations"]
    marker = tmp_path / "pwned"
    values = hostile_values(marker)
    secrets, expected = tmp_path / "secrets", {}
    secrets.mkdir()
    for key, template in annotations.items():
        if not key.startswith("vault.hashicorp.com/agent-inject-template-"):
            continue
        file_name = key.removeprefix("vault.hashicorp.com/agent-inject-template-")
        value = values["jwt"] if "jwt" in file_name else values["other"] + f" ({file_name})"
        (secrets / file_name).write_text(render(template, value))
        expected[file_name] = value
    env_file = tmp_path / "hasura.env"
    env_file.write_text('HASURA_GRAPHQL_LOG_LEVEL="${HASURA_GRAPHQL_LOG_LEVEL:-info}"\n')
    [container] = pod["spec"]["containers"]
    shell, flag, script = container["command"]
    # the deployed script, pointed at this folder, ending in `env -0` instead of the engine
    script = (script.replace("/vault/secrets", str(secrets)).replace("/etc/hasura/hasura.env", str(env_file))
              .replace("exec graphql-engine serve", "exec env -0"))
    result = subprocess.run([shell, flag, script], capture_output=True, text=True, timeout=30,
                            env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    env = dict(item.split("=", 1) for item in result.stdout.split("\0") if item)
    assert not marker.exists(), "a Vault value was executed by Hasura's start command"
    loaded = set(expected.values()) & set(env.values())
    assert loaded == set(expected.values()), sorted(set(expected.values()) - loaded)[:2]
    assert env["HASURA_GRAPHQL_JWT_SECRET"] == values["jwt"]  # quotes and all: still valid JSON
    assert env["HASURA_GRAPHQL_LOG_LEVEL"] == "info"  # the env file still fills the defaults


def test_hasura_start_fails_when_a_rendered_file_is_missing(tmp_path):
    run = run_stack("dev")
    [deployment] = [o for o in run.kubernetes_objects() if o["kind"] == "Deployment"
                    and o["metadata"]["name"] == "hasura"]
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    script = container["command"][2].replace("/vault/secrets", str(tmp_path)).replace(
        "exec graphql-engine serve", "exec env")
    result = subprocess.run(["/bin/sh", "-c", script], capture_output=True, text=True, timeout=30)
    assert result.returncode != 0 and "database-url" in result.stderr


@pytest.mark.parametrize("settings_type", [PublisherSettings, WriterSettings, CleanupSettings, BootstrapSettings])
def test_services_read_vault_files_as_data(settings_type, tmp_path, monkeypatch):
    marker = tmp_path / "pwned"
    values = hostile_values(marker)
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    database_url = "postgresql://svc:p%24%28touch%29@db.example.test/app"
    files = {"async_database_url": database_url, "async_action_secret": values["other"],
             "hasura_admin_secret": values["jwt"], "kafka_username": "user", "kafka_password": values["other"]}
    for name, value in files.items():
        (secrets / name).write_text(value)
    for name in ("KAFKA_BOOTSTRAP_SERVERS",):
        monkeypatch.setenv(name, "127.0.0.1:9092")
    settings = settings_type.from_env(_secrets_dir=secrets)
    for name, value in files.items():
        if name in type(settings).model_fields:
            loaded = getattr(settings, name)
            loaded = loaded.get_secret_value() if hasattr(loaded, "get_secret_value") else loaded
            assert loaded == value.strip(), name
    assert not marker.exists()
