"""The bootstrap applies the source's pool, read replicas and dynamic routing (real PostgreSQL for the table,
the Hasura stand-in for the metadata API: see tests/support/hasura_standin.py), idempotently, and fails
loudly when Hasura routes a listed case elsewhere or is the Community Edition."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from app.bootstrap import HasuraError, RoutingMismatch, bootstrap_database, bootstrap_metadata
from app.hasura.connection_template import RequestContext, Route
from app.hasura.source import PoolSettings, RoutingCase, SourceSettings
from app.settings import BootstrapSettings
from components.config import HasuraConfig
from scripts.pulumi_harness import load_stack_file
from tests.conftest import REPO
from tests.support.hasura_standin import HasuraStandIn, serve
from tests.test_bootstrap import ADMIN, fresh_db, settings_for, table_columns  # noqa: F401 - fixture

TEMPLATE = ('{{ if $.request.query.operation_type == "mutation" }}{{ $.primary }}'
            '{{ elif $.request.headers?["x-route-to"] == "reporting" }}{{ $.connection_set.reporting }}'
            '{{ else }}{{ $.default }}{{ end }}')


def case(name: str, op: str, expect: str, headers: dict | None = None, role: str = "user") -> RoutingCase:
    request = RequestContext(headers or {}, {"x-hasura-role": role}, op, name.replace("-", "_"))
    return RoutingCase(name, request, expect=Route.parse(expect))


ENTERPRISE = SourceSettings(
    edition="ee", pool=PoolSettings(max_connections=15, idle_timeout=30, pool_timeout=5, connection_lifetime=300),
    isolation_level="repeatable-read",
    read_replica_envs=("HASURA_READ_REPLICA_1_URL", "HASURA_READ_REPLICA_2_URL"),
    connection_set=(("reporting", "HASURA_CONNECTION_SET_REPORTING_URL"),), template=TEMPLATE,
    cases=(case("mutation-primary", "mutation", "primary"), case("stream-default", "subscription", "default"),
           case("reporting", "query", "connection_set.reporting", {"x-route-to": "reporting"}, "service")))


@pytest.fixture
def standin(fresh_db):  # noqa: F811 - the fixture imported above
    bootstrap_database(BootstrapSettings(async_database_url=fresh_db, hasura_admin_secret=ADMIN))
    servers = []

    def start(edition: str) -> tuple[HasuraStandIn, str]:
        hasura = HasuraStandIn(ADMIN, table_columns(fresh_db), edition=edition)
        servers.append(serve(hasura))
        return hasura, f"http://127.0.0.1:{servers[-1].server_address[1]}"

    yield start, fresh_db
    for server in servers:
        server.shutdown()


def test_pool_replicas_and_routing_are_applied_once_then_nothing_is_sent(standin):
    start, url = standin
    hasura, endpoint = start("ee")
    sent = bootstrap_metadata(settings_for(endpoint, url, hasura_source_settings=ENTERPRISE))
    assert sent[0]["type"] == "pg_add_source" and sent[0]["args"]["replace_configuration"] is True
    config = hasura.metadata["sources"][0]["configuration"]
    primary = config["connection_info"]
    assert primary["database_url"] == {"from_env": "HASURA_GRAPHQL_DATABASE_URL"}  # kept as it was
    assert primary["pool_settings"] == {"max_connections": 15, "idle_timeout": 30, "pool_timeout": 5,
                                        "connection_lifetime": 300, "retries": 1}
    assert primary["isolation_level"] == "repeatable-read"
    assert [r["database_url"] for r in config["read_replicas"]] == [
        {"from_env": "HASURA_READ_REPLICA_1_URL"}, {"from_env": "HASURA_READ_REPLICA_2_URL"}]
    assert config["connection_set"] == [{"name": "reporting", "connection_info": {
        **primary, "database_url": {"from_env": "HASURA_CONNECTION_SET_REPORTING_URL"}}}]
    assert config["connection_template"] == {"version": 1, "template": TEMPLATE}
    # every listed case and both mutation probes were asked of Hasura (besides the edition probe)
    asked = [c["args"]["request_context"] for c in hasura.calls
             if c["type"] == "pg_test_connection_template" and "connection_template" not in c["args"]]
    assert len(asked) == len(ENTERPRISE.cases) + 2
    assert {a["session"]["x-hasura-role"] for a in asked if a["query"]["operation_type"] == "mutation"} == {
        "user", "service"}

    version, calls = hasura.resource_version, len(hasura.calls)
    assert bootstrap_metadata(settings_for(endpoint, url, hasura_source_settings=ENTERPRISE)) == []
    assert hasura.resource_version == version
    writes = [c for c in hasura.calls[calls:] if c["type"] not in ("export_metadata", "pg_test_connection_template")]
    assert writes == []


def test_a_changed_pool_or_a_dropped_replica_is_applied_as_one_replacement(standin):
    start, url = standin
    hasura, endpoint = start("ee")
    bootstrap_metadata(settings_for(endpoint, url, hasura_source_settings=ENTERPRISE))
    tables = json.dumps(hasura.metadata["sources"][0]["tables"])
    fewer = SourceSettings(**{**ENTERPRISE.__dict__, "read_replica_envs": ("HASURA_READ_REPLICA_1_URL",),
                              "pool": PoolSettings(max_connections=40)})
    sent = bootstrap_metadata(settings_for(endpoint, url, hasura_source_settings=fewer))
    assert [c["type"] for c in sent] == ["pg_add_source"]
    config = hasura.metadata["sources"][0]["configuration"]
    assert len(config["read_replicas"]) == 1 and config["connection_info"]["pool_settings"]["max_connections"] == 40
    assert json.dumps(hasura.metadata["sources"][0]["tables"]) == tables  # tracking and permissions untouched


def test_connection_settings_owned_elsewhere_survive_and_stay_idempotent(standin):
    start, url = standin
    hasura, endpoint = start("ee")
    source = hasura.metadata["sources"][0]
    source["configuration"]["connection_info"]["ssl_configuration"] = {"sslmode": "verify-full"}
    source["configuration"]["extensions_schema"] = "extensions"
    bootstrap_metadata(settings_for(endpoint, url, hasura_source_settings=ENTERPRISE))
    config = hasura.metadata["sources"][0]["configuration"]
    assert config["connection_info"]["ssl_configuration"] == {"sslmode": "verify-full"}
    assert config["extensions_schema"] == "extensions"
    assert bootstrap_metadata(settings_for(endpoint, url, hasura_source_settings=ENTERPRISE)) == []


def test_a_routing_mismatch_fails_the_job_naming_every_miss(standin):
    start, url = standin
    hasura, endpoint = start("ee")
    # the real Hasura disagrees with the offline check on one case: the Job must not pass
    hasura.route_overrides["reporting"] = {"routing_to": "primary", "value": None}
    with pytest.raises(RoutingMismatch, match=r"1 of 5 routing cases fail: reporting routes to primary, expected "
                                              r"connection_set\.reporting"):
        bootstrap_metadata(settings_for(endpoint, url, hasura_source_settings=ENTERPRISE))
    hasura.route_overrides = {"publish_async_request": {"routing_to": "read_replicas", "value": None}}
    with pytest.raises(RoutingMismatch, match=r"2 of 5 .*user-mutation-never-on-replica routes to read_replicas, "
                                              r"which is never allowed"):
        bootstrap_metadata(settings_for(endpoint, url, hasura_source_settings=ENTERPRISE))


def test_the_job_exits_non_zero_on_a_mismatch_and_says_which_case(standin):
    start, url = standin
    _, endpoint = start("ee")
    wrong = SourceSettings(**{**ENTERPRISE.__dict__,
                              "cases": (case("stream-default", "subscription", "read_replicas"),)})
    env = {**os.environ, "ASYNC_DATABASE_URL": url, "HASURA_ADMIN_SECRET": ADMIN, "HASURA_ENDPOINT": endpoint,
           "ASYNC_SECRETS_DIR": "/nonexistent", "HASURA_SOURCE_SETTINGS": wrong.to_json(),
           "HASURA_RETRY_SECONDS": "0"}
    run = subprocess.run([sys.executable, "-m", "app.bootstrap"], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=60)
    assert run.returncode == 1, run.stdout + run.stderr
    [failure] = [json.loads(line) for line in run.stdout.splitlines() if json.loads(line)["msg"] == "bootstrap failed"]
    assert "stream-default routes to default, expected read_replicas" in failure["error"]


def test_community_edition_refuses_enterprise_settings_with_a_clear_error_and_applies_nothing(standin):
    start, url = standin
    hasura, endpoint = start("ce")
    # CE's pg_add_source would store replicas, members and the template without a word: the Job asks first
    for as_ee in (ENTERPRISE, SourceSettings(edition="ee", read_replica_envs=("HASURA_READ_REPLICA_1_URL",))):
        with pytest.raises(HasuraError, match=r"pg_test_connection_template failed with 400.*not-supported.*"
                                              r"Community Edition"):
            bootstrap_metadata(settings_for(endpoint, url, hasura_source_settings=as_ee))
        assert hasura.metadata["sources"][0]["tables"] == [] and hasura.resource_version == 1
    # the plain pool settings are fine on CE, and no template is asked for
    sent = bootstrap_metadata(settings_for(endpoint, url, hasura_source_settings=SourceSettings()))
    assert sent[0]["type"] == "pg_add_source"
    assert hasura.metadata["sources"][0]["configuration"]["connection_info"]["pool_settings"]["max_connections"] == 20
    assert len([c for c in hasura.calls if c["type"] == "pg_test_connection_template"]) == 2


def _stack_settings(stack: str) -> SourceSettings:
    return HasuraConfig.model_validate(load_stack_file(stack)["graphql-entrypoint:hasura"]).source_settings()


EDGES = {
    "lifetime-0": SourceSettings(pool=PoolSettings(connection_lifetime=0)),
    "no-pool-timeout": SourceSettings(pool=PoolSettings(pool_timeout=None)),
    "ee-lifetime-0-no-timeout": SourceSettings(**{**ENTERPRISE.__dict__, "pool": PoolSettings(
        connection_lifetime=0, pool_timeout=None)}),
}
CUSTOMIZATION = {"root_fields": {"namespace": "reporting_team", "prefix": "rt_"},
                 "type_names": {"prefix": "Rt_"}, "naming_convention": "hasura-default"}


@pytest.mark.parametrize("name", ["stack:dev", "stack:prod", "stack:local", *EDGES])
def test_a_second_bootstrap_sends_nothing_and_the_first_keeps_what_it_does_not_own(standin, name):
    start, url = standin
    desired = _stack_settings(name[6:]) if name.startswith("stack:") else EDGES[name]
    hasura, endpoint = start(desired.edition)
    source = hasura.metadata["sources"][0]
    source["customization"] = CUSTOMIZATION  # another team's root-field namespace and prefixes
    source["configuration"]["connection_info"]["ssl_configuration"] = {"sslmode": "verify-full",
                                                                      "sslrootcert": {"from_env": "PG_CA"}}
    first = bootstrap_metadata(settings_for(endpoint, url, hasura_source_settings=desired))
    assert first[0]["type"] == "pg_add_source"
    source = hasura.metadata["sources"][0]
    assert source["customization"] == CUSTOMIZATION
    assert source["configuration"]["connection_info"]["ssl_configuration"]["sslmode"] == "verify-full"
    version, calls = hasura.resource_version, len(hasura.calls)
    assert bootstrap_metadata(settings_for(endpoint, url, hasura_source_settings=desired)) == []
    assert hasura.resource_version == version
    assert [c["type"] for c in hasura.calls[calls:] if c["type"] not in ("export_metadata",
                                                                           "pg_test_connection_template")] == []


def test_edge_pool_values_are_stored_as_hasura_stores_them(standin):
    start, url = standin
    hasura, endpoint = start("ce")
    bootstrap_metadata(settings_for(endpoint, url, hasura_source_settings=EDGES["lifetime-0"]))
    pool = hasura.metadata["sources"][0]["configuration"]["connection_info"]["pool_settings"]
    assert "connection_lifetime" not in pool  # parseConnLifeTime: 0 is "no lifetime", omitted on export
    bootstrap_metadata(settings_for(endpoint, url, hasura_source_settings=EDGES["no-pool-timeout"]))
    pool = hasura.metadata["sources"][0]["configuration"]["connection_info"]["pool_settings"]
    assert "pool_timeout" not in pool and pool["connection_lifetime"] == 600


def test_the_user_row_limit_caps_the_status_stream(standin):
    start, url = standin
    hasura, endpoint = start("ce")
    bootstrap_metadata(settings_for(endpoint, url, hasura_user_row_limit=25))
    [table] = hasura.metadata["sources"][0]["tables"]
    user = next(p["permission"] for p in table["select_permissions"] if p["role"] == "user")
    assert user["limit"] == 25 and "select_stream" in user["subscription_root_fields"]
    assert bootstrap_metadata(settings_for(endpoint, url, hasura_user_row_limit=25)) == []
    assert [c["type"] for c in bootstrap_metadata(settings_for(endpoint, url, hasura_user_row_limit=50))] == [
        "pg_drop_select_permission", "pg_create_select_permission"]


def test_a_malformed_source_settings_variable_is_refused_before_anything_is_sent():
    with pytest.raises(Exception, match="HASURA_SOURCE_SETTINGS"):
        BootstrapSettings.from_env(async_database_url="postgresql://x", hasura_admin_secret="y",
                                   hasura_source_settings='{"edition": "ce", "template": "{{ $.default }}"}')
