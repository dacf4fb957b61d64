"""scripts/generate_hasura_config.py on a captured fixture, and the env file's precedence in a real shell.

tests/fixtures/graphql-engine-strings.bin stands in for the graphql-engine binary (no image can be
pulled here): a NUL-separated string table with the engine's HASURA_GRAPHQL_* names among noise bytes.
"""

from __future__ import annotations

import subprocess

from scripts.generate_hasura_config import classify, inventory, main, render
from tests.conftest import REPO

FIXTURE = REPO / "tests" / "fixtures" / "graphql-engine-strings.bin"
COMMITTED = REPO / "config" / "hasura" / "hasura.env"


def test_inventory_reads_names_from_the_binary():
    names = inventory(FIXTURE.read_bytes())
    assert "HASURA_GRAPHQL_ENABLE_CONSOLE" in names and "HASURA_GRAPHQL_DATABASE_URL" in names
    assert names == sorted(set(names)) and all(n.startswith("HASURA_GRAPHQL_") for n in names)
    assert inventory(b"\x00HASURA_GRAPHQL_A_B\x00garbage HASURA_GRAPHQL_\x00") == ["HASURA_GRAPHQL_A_B"]


def test_secrets_connections_and_redis_stay_commented_out():
    text = render(inventory(FIXTURE.read_bytes()), "image@sha256:" + "0" * 64)
    active = [line for line in text.splitlines() if line and not line.startswith("#")]
    for sensitive in ("ADMIN_SECRET", "JWT_SECRET", "DATABASE_URL", "METADATA_DATABASE_URL", "REDIS_URL",
                      "RATE_LIMIT_REDIS_URL", "CACHING_REDIS_TLS_CERT"):
        assert not any(line.startswith(f"HASURA_GRAPHQL_{sensitive}=") for line in active), sensitive
        assert f"# HASURA_GRAPHQL_{sensitive}=" in text
    assert classify("HASURA_GRAPHQL_REDIS_URL").kind == "redis"
    assert classify("HASURA_GRAPHQL_JWT_SECRET").kind == "secret"
    assert 'HASURA_GRAPHQL_ENABLE_CONSOLE="${HASURA_GRAPHQL_ENABLE_CONSOLE:-false}"' in active


def test_committed_file_is_the_generators_output(tmp_path):
    out = tmp_path / "hasura.env"
    assert main(["--binary", str(FIXTURE), "--out", str(out)]) == 0
    assert out.read_text() == COMMITTED.read_text()


def source(env: dict[str, str], *names: str) -> dict[str, str]:
    """Source the committed file as the Hasura container does (`set -a; . file`) in a real POSIX shell."""
    script = f"set -a; . {COMMITTED}; set +a; " + "; ".join(f'echo "{n}=${{{n}-<unset>}}"' for n in names)
    out = subprocess.run(["/bin/sh", "-c", script], env={"PATH": "/usr/bin:/bin", **env}, capture_output=True,
                         text=True, check=True).stdout
    return dict(line.split("=", 1) for line in out.splitlines())


def test_container_env_wins_over_the_file_defaults():
    values = source({"HASURA_GRAPHQL_ENABLE_CONSOLE": "true", "HASURA_GRAPHQL_ENABLED_APIS": "graphql"},
                    "HASURA_GRAPHQL_ENABLE_CONSOLE", "HASURA_GRAPHQL_ENABLED_APIS", "HASURA_GRAPHQL_DEV_MODE")
    assert values == {"HASURA_GRAPHQL_ENABLE_CONSOLE": "true", "HASURA_GRAPHQL_ENABLED_APIS": "graphql",
                      "HASURA_GRAPHQL_DEV_MODE": "false"}


def test_file_fills_unset_variables_and_sets_no_secret():
    values = source({}, "HASURA_GRAPHQL_ENABLE_CONSOLE", "HASURA_GRAPHQL_ADMIN_SECRET", "HASURA_GRAPHQL_DATABASE_URL")
    assert values == {"HASURA_GRAPHQL_ENABLE_CONSOLE": "false", "HASURA_GRAPHQL_ADMIN_SECRET": "<unset>",
                      "HASURA_GRAPHQL_DATABASE_URL": "<unset>"}


def test_an_injected_secret_survives_sourcing():
    values = source({"HASURA_GRAPHQL_ADMIN_SECRET": "from-vault"}, "HASURA_GRAPHQL_ADMIN_SECRET")
    assert values == {"HASURA_GRAPHQL_ADMIN_SECRET": "from-vault"}
