"""Bootstrap: idempotent SQL on real PostgreSQL; Hasura metadata against the local stand-in (see its docstring)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

import httpx
import psycopg
import pytest

from app.bootstrap import HasuraError, bootstrap_database, bootstrap_metadata
from app.hasura.metadata import USER_COLUMNS
from app.settings import BootstrapSettings
from tests.conftest import REPO
from tests.support.hasura_standin import HasuraStandIn, serve

ADMIN = "standin-admin-secret"


@pytest.fixture
def fresh_db(pg):
    """An empty database on the real server, so the bootstrap starts from nothing."""
    name = f"boot_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg.url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    yield pg.url.rsplit("/", 1)[0] + f"/{name}"
    with psycopg.connect(pg.url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE {name} WITH (FORCE)")


def table_columns(url: str) -> dict[tuple[str, str], set[str]]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT table_schema, table_name, column_name FROM information_schema.columns "
                            "WHERE table_schema = 'graphql'").fetchall()
    columns: dict[tuple[str, str], set[str]] = {}
    for schema, table, column in rows:
        columns.setdefault((schema, table), set()).add(column)
    return columns


def schema_fingerprint(url: str) -> list:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT 'idx', indexname, indexdef FROM pg_indexes WHERE schemaname = 'graphql' "
            "UNION ALL SELECT 'con', conname, pg_get_constraintdef(oid) FROM pg_constraint "
            "WHERE conrelid = 'graphql.client_async_messages'::regclass ORDER BY 1, 2").fetchall()


@pytest.fixture
def hasura(fresh_db):
    bootstrap_database(BootstrapSettings(async_database_url=fresh_db, hasura_admin_secret=ADMIN))
    standin = HasuraStandIn(ADMIN, table_columns(fresh_db))
    server = serve(standin)
    yield standin, f"http://127.0.0.1:{server.server_address[1]}", fresh_db
    server.shutdown()


def settings_for(endpoint: str, url: str, **extra) -> BootstrapSettings:
    return BootstrapSettings(async_database_url=url, hasura_admin_secret=ADMIN, hasura_endpoint=endpoint,
                             hasura_retry_seconds=0, **extra)


def test_sql_is_idempotent(fresh_db):
    settings = BootstrapSettings(async_database_url=fresh_db, hasura_admin_secret=ADMIN)
    bootstrap_database(settings)
    first = schema_fingerprint(fresh_db)
    bootstrap_database(settings)
    assert schema_fingerprint(fresh_db) == first
    names = {row[1] for row in first}
    assert {"client_async_messages_pkey", "client_async_messages_client_recent_idx",
            "client_async_messages_expires_idx", "client_async_messages_unpublished_idx",
            "client_async_messages_status_check", "client_async_messages_priority_check"} <= names
    with psycopg.connect(fresh_db) as conn, pytest.raises(psycopg.errors.CheckViolation):
        conn.execute("INSERT INTO graphql.client_async_messages (request_id, client_id, handler, operation, status, "
                     "expires_at) VALUES ('r', 'c', 'h', 'o', 'lost', now())")


def test_metadata_applied_once_then_nothing_changes(hasura):
    standin, endpoint, url = hasura
    sent = bootstrap_metadata(settings_for(endpoint, url))
    assert [c["type"] for c in sent] == [
        "pg_add_source", "pg_track_table", "pg_create_select_permission", "pg_create_select_permission",
        "set_custom_types", "create_action", "create_action_permission", "create_action_permission"]
    md = standin.metadata
    [table] = md["sources"][0]["tables"]
    perms = {p["role"]: p["permission"] for p in table["select_permissions"]}
    assert perms["user"]["filter"] == {"client_id": {"_eq": "X-Hasura-User-Id"}}
    assert perms["user"]["limit"] == 100  # also caps the status stream's batch_size
    assert "correlation" not in perms["user"]["columns"] and set(perms["user"]["columns"]) == set(USER_COLUMNS)
    assert "select_stream" in perms["user"]["subscription_root_fields"]
    assert perms["service"]["filter"] == {} and perms["service"]["allow_aggregations"] is True
    [action] = md["actions"]
    definition = action["definition"]
    assert action["name"] == "publish_async_request"
    assert definition["arguments"] == [{"name": "input", "type": "json!"}]
    assert definition["headers"] == [{"name": "X-Async-Action-Secret", "value_from_env": "ASYNC_ACTION_SECRET"}]
    assert definition["forward_client_headers"] is True
    assert definition["handler"].endswith("/action/publish_async_request")
    assert {p["role"] for p in action["permissions"]} == {"user", "service"}

    version = standin.resource_version
    assert bootstrap_metadata(settings_for(endpoint, url)) == []
    assert standin.resource_version == version


def test_drift_is_repaired_and_foreign_custom_types_kept(hasura):
    standin, endpoint, url = hasura
    bootstrap_metadata(settings_for(endpoint, url))
    table = standin.metadata["sources"][0]["tables"][0]
    user = next(p for p in table["select_permissions"] if p["role"] == "user")
    user["permission"]["filter"] = {}  # someone widened the user's rows by hand
    standin.metadata["custom_types"]["objects"].append({"name": "OtherTeamType",
                                                        "fields": [{"name": "id", "type": "String!"}]})
    standin.metadata["actions"][0]["permissions"] = [{"role": "user"}]
    sent = bootstrap_metadata(settings_for(endpoint, url, action_timeout_seconds=45))
    assert [c["type"] for c in sent] == ["pg_drop_select_permission", "pg_create_select_permission",
                                         "update_action", "create_action_permission"]
    assert standin.metadata["sources"][0]["tables"][0]["select_permissions"][-1]["permission"]["filter"] == {
        "client_id": {"_eq": "X-Hasura-User-Id"}}
    assert {o["name"] for o in standin.metadata["custom_types"]["objects"]} == {
        "OtherTeamType", "PublishAsyncRequestOutput"}
    assert standin.metadata["actions"][0]["definition"]["timeout"] == 45


def test_standin_rejects_malformed_calls(hasura):
    standin, endpoint, _ = hasura
    bad = [
        {"type": "pg_track_table", "args": {"source": "default", "table": "client_async_messages"}},
        {"type": "pg_track_table", "args": {"source": "default", "table": {"schema": "graphql", "name": "nope"}}},
        {"type": "create_action", "args": {"name": "a", "definition": {"arguments": [], "output_type": "Missing",
                                                                        "handler": "http://x"}}},
        {"type": "pg_create_select_permission", "args": {"source": "default", "table": {
            "schema": "graphql", "name": "client_async_messages"}, "role": "user",
            "permission": {"columns": ["*"], "filter": {}}}},
        {"type": "no_such_command", "args": {}},
    ]
    for body in bad:
        answer = httpx.post(f"{endpoint}/v1/metadata", json=body, headers={"X-Hasura-Admin-Secret": ADMIN})
        assert answer.status_code == 400, body
    assert httpx.post(f"{endpoint}/v1/metadata", json={"type": "export_metadata", "args": {}}).status_code == 401
    assert standin.resource_version == 1


def test_wrong_admin_secret_is_a_clear_error(hasura):
    _, endpoint, url = hasura
    settings = BootstrapSettings(async_database_url=url, hasura_admin_secret="wrong", hasura_endpoint=endpoint,
                                 hasura_retry_seconds=0)
    with pytest.raises(HasuraError, match="export_metadata failed with 401"):
        bootstrap_metadata(settings)


def test_bootstrap_job_entrypoint_from_environment(hasura):
    standin, endpoint, url = hasura
    env = {**os.environ, "ASYNC_DATABASE_URL": url, "HASURA_ADMIN_SECRET": ADMIN, "HASURA_ENDPOINT": endpoint,
           "ASYNC_SECRETS_DIR": "/nonexistent"}
    for expected in ("hasura metadata updated", "hasura metadata already up to date"):
        run = subprocess.run([sys.executable, "-m", "app.bootstrap"], cwd=REPO, env=env, capture_output=True,
                             text=True, timeout=60)
        assert run.returncode == 0, run.stdout + run.stderr
        messages = [json.loads(line)["msg"] for line in run.stdout.splitlines()]
        assert expected in messages
        assert ADMIN not in run.stdout


def test_missing_setting_names_the_variable():
    env = {k: v for k, v in os.environ.items() if k not in ("ASYNC_DATABASE_URL", "HASURA_ADMIN_SECRET")}
    run = subprocess.run([sys.executable, "-m", "app.bootstrap"], cwd=REPO, env=env | {"ASYNC_SECRETS_DIR": "/x"},
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert "ASYNC_DATABASE_URL" in run.stderr and "HASURA_ADMIN_SECRET" in run.stderr
