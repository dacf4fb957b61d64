"""Hasura as a data layer, from stack config to the plan (under mocks): pools, read replicas, dynamic routing,
subscription tuning and the tunnel's timeouts; malformed or contradictory settings stop the program."""

from __future__ import annotations

import json

import pytest

from app.hasura.source import SourceSettings
from components.async_flow import BOOTSTRAP
from components.config import ConfigError
from scripts.pulumi_harness import load_stack_file, run_stack
from tests.test_infra import P, env_of, k8s, policy_paths

PROD = load_stack_file("prod")


def hasura_with(**changes) -> dict:
    return {P + "hasura": {**PROD[P + "hasura"], **changes}}


def bootstrap_settings(run) -> SourceSettings:
    [job] = [o for o in run.kubernetes_objects() if o["kind"] == "Job" and o["metadata"]["name"].startswith(BOOTSTRAP)]
    return SourceSettings.from_json(env_of(job["spec"]["template"]["spec"]["containers"][0])["HASURA_SOURCE_SETTINGS"])


@pytest.fixture(scope="module")
def prod():
    return run_stack("prod")


def test_pool_replicas_and_routing_of_the_stack_file_reach_the_bootstrap(prod):
    hasura = PROD[P + "hasura"]
    settings = bootstrap_settings(prod)
    assert settings.edition == "ee"
    assert settings.pool.max_connections == hasura["pool"]["maxConnections"]
    assert settings.pool.idle_timeout == hasura["pool"]["idleTimeoutSeconds"]
    assert settings.pool.pool_timeout == hasura["pool"]["poolTimeoutSeconds"]
    assert settings.pool.connection_lifetime == hasura["pool"]["connectionLifetimeSeconds"]
    assert settings.isolation_level == hasura["pool"]["isolationLevel"]
    assert settings.read_replica_envs == ("HASURA_READ_REPLICA_1_URL", "HASURA_READ_REPLICA_2_URL")
    assert dict(settings.connection_set) == {"reporting": "HASURA_CONNECTION_SET_REPORTING_URL"}
    assert settings.template == hasura["routing"]["template"]
    assert [c.name for c in settings.cases] == [c["name"] for c in hasura["routing"]["cases"]]
    # env var names only: no URL, no secret in the Job
    assert "postgres" not in settings.to_json()


def test_replica_and_connection_set_urls_come_from_vault_into_hasura_only(prod):
    hasura = PROD[P + "hasura"]
    annotations = k8s(prod, "Deployment", "hasura")["spec"]["template"]["metadata"]["annotations"]
    expected = {"replica-1": ("HASURA_READ_REPLICA_1_URL", hasura["readReplicas"][0]),
                "replica-2": ("HASURA_READ_REPLICA_2_URL", hasura["readReplicas"][1]),
                "db-reporting": ("HASURA_CONNECTION_SET_REPORTING_URL",
                                 hasura["routing"]["connectionSet"]["reporting"]),
                "ee-license-key": ("HASURA_GRAPHQL_EE_LICENSE_KEY", hasura["eeLicenseKeyEntry"])}
    script = k8s(prod, "Deployment", "hasura")["spec"]["template"]["spec"]["containers"][0]["command"][-1]
    for file_name, (variable, entry) in expected.items():
        assert annotations[f"vault.hashicorp.com/agent-inject-secret-{file_name}"] == f"secret/data/{entry}"
        assert f'{variable}="$(cat /vault/secrets/{file_name})"' in script  # read as data, never sourced
        assert len(f"agent-inject-template-{file_name}") <= 63
    grants = {name: policy_paths(prod.one("vault:index/policy:Policy", name).inputs["policy"])
              for name in ("hasura", "graphql-async-bootstrap", "graphql-async-request-publisher",
                           "graphql-async-response-writer", "graphql-async-cleanup")}
    for _, entry in expected.values():
        assert grants["hasura"][f"secret/data/{entry}"] == ["read"]  # read only, nothing else
        assert all(f"secret/data/{entry}" not in g for name, g in grants.items() if name != "hasura")
    # the entries are the database team's: this program grants reads on them, it never writes them
    written = {r.inputs["name"] for r in prod.resources if r.type == "vault:kv/secretV2:SecretV2"}
    assert not {entry for _, entry in expected.values()} & written


def test_subscription_settings_are_pinned_on_hasura_and_the_tunnel_outlives_the_keep_alive(prod):
    subs = PROD[P + "hasura"]["subscriptions"]
    env = env_of(k8s(prod, "Deployment", "hasura")["spec"]["template"]["spec"]["containers"][0])
    assert env["HASURA_GRAPHQL_WEBSOCKET_KEEPALIVE"] == str(subs["websocketKeepAliveSeconds"])
    assert env["HASURA_GRAPHQL_WEBSOCKET_CONNECTION_INIT_TIMEOUT"] == str(subs["websocketConnectionInitTimeoutSeconds"])
    assert env["HASURA_GRAPHQL_LIVE_QUERIES_MULTIPLEXED_BATCH_SIZE"] == str(subs["liveQueriesBatchSize"])
    assert env["HASURA_GRAPHQL_LIVE_QUERIES_MULTIPLEXED_REFETCH_INTERVAL"] == str(subs["liveQueriesRefetchIntervalMs"])
    assert env["HASURA_GRAPHQL_STREAMING_QUERIES_MULTIPLEXED_BATCH_SIZE"] == str(subs["streamingBatchSize"])
    assert env["HASURA_GRAPHQL_STREAMING_QUERIES_MULTIPLEXED_REFETCH_INTERVAL"] == str(
        subs["streamingRefetchIntervalMs"])
    assert env["HASURA_GRAPHQL_CLOSE_WEBSOCKETS_ON_METADATA_CHANGE"] == "false"
    assert env["HASURA_GRAPHQL_UNAUTHORIZED_ROLE"] == "anonymous"
    [_, graphql_rule, _] = prod.one(
        "cloudflare:index/zeroTrustTunnelCloudflaredConfig:ZeroTrustTunnelCloudflaredConfig",
        "tunnel-ingress").inputs["config"]["ingresses"]
    origin = graphql_rule["originRequest"]
    cloudflare = PROD[P + "cloudflare"]
    assert origin["keepAliveTimeout"] == cloudflare["originKeepAliveTimeoutSeconds"] > subs[
        "websocketKeepAliveSeconds"]
    assert origin["tcpKeepAlive"] == cloudflare["originTcpKeepAliveSeconds"]
    [job] = [o for o in prod.kubernetes_objects() if o["kind"] == "Job" and o["metadata"]["name"].startswith(BOOTSTRAP)]
    assert env_of(job["spec"]["template"]["spec"]["containers"][0])["HASURA_USER_ROW_LIMIT"] == str(
        subs["userRowLimit"])


def test_a_changed_setting_re_runs_the_bootstrap_and_the_verification(prod):
    pool = {**PROD[P + "hasura"]["pool"], "maxConnections": 7}
    changed = run_stack("prod", hasura_with(pool=pool))
    old, new = ([o for o in r.kubernetes_objects() if o["kind"] == "Job" and o["metadata"]["name"].startswith(
                BOOTSTRAP)][0]["metadata"]["name"] for r in (prod, changed))
    assert old != new and bootstrap_settings(changed).pool.max_connections == 7
    subs = {**PROD[P + "hasura"]["subscriptions"], "websocketKeepAliveSeconds": 20}
    resubscribed = run_stack("prod", hasura_with(subscriptions=subs))
    triggers = [r.one("command:local:Command", "verify-deployment").inputs["triggers"]
                for r in (prod, resubscribed)]
    assert triggers[0] != triggers[1]
    # a cloudflared rollout (one more replica here) is a new path to the edge: verified again
    cloudflare = {**PROD[P + "cloudflare"], "cloudflaredReplicas": PROD[P + "cloudflare"]["cloudflaredReplicas"] + 1}
    scaled = run_stack("prod", {P + "cloudflare": cloudflare})
    assert scaled.one("command:local:Command", "verify-deployment").inputs["triggers"] != triggers[0]


def test_defaults_suit_many_short_lived_clients():
    dev = run_stack("dev", {P + "hasura": {"image": PROD[P + "hasura"]["image"]}})
    settings = bootstrap_settings(dev)
    assert settings.edition == "ce" and not settings.read_replica_envs and settings.template is None
    assert (settings.pool.max_connections, settings.pool.idle_timeout, settings.pool.pool_timeout) == (20, 60, 10)
    assert settings.pool.pool_timeout < 30  # a busy pool fails before the action's 30 s timeout


def routing(**changes) -> dict:
    return {**PROD[P + "hasura"]["routing"], **changes}


QUERIES_ON_REPLICAS = ('{{ if $.request.query.operation_type == "query" }}{{ $.read_replicas }}'
                       '{{ else }}{{ $.primary }}{{ end }}')
UNPARENTHESISED = ('{{ if $.request.query.operation_type == "mutation" }}{{ $.primary }}'
                   '{{ elif $.request.session?["x-hasura-role"] == "service" && $.request.headers?["x-route-to"] == '
                   '"reporting" }}{{ $.connection_set.reporting }}{{ else }}{{ $.default }}{{ end }}')
CASE = {"name": "c", "operationType": "query", "session": {"x-hasura-role": "user"}, "expect": "primary"}


@pytest.mark.parametrize(("overrides", "message"), [
    # Enterprise settings on the Community Edition
    (hasura_with(edition="ce", eeLicenseKeyEntry=None), r"hasura\.readReplicas and hasura\.routing need Hasura "
                                                         r"Enterprise"),
    (hasura_with(edition="ce", eeLicenseKeyEntry=None, readReplicas=[]), r"hasura\.routing need Hasura Enterprise"),
    (hasura_with(eeLicenseKeyEntry=None), r"hasura\.edition ee needs hasura\.eeLicenseKeyEntry"),
    # a template that does not parse, names an unknown member, or disagrees with its cases
    (hasura_with(routing=routing(template="{{ if true }}{{ $.primary }}")), r"hasura\.routing: .*not Kriti"),
    # the prod template as it was: an unparenthesised && chain is not Kriti, so pg_add_source would fail
    (hasura_with(routing=routing(template=UNPARENTHESISED)), r"hasura\.routing: .*Unexpected token '&&'"),
    (hasura_with(routing=routing(template='{{ if not ($.request.headers?["a"] == "b") }}{{ $.primary }}'
                                          "{{ else }}{{ $.default }}{{ end }}")), r"without functions"),
    # cases pg_test_connection_template answers 400 for
    (hasura_with(routing=routing(cases=[{**CASE, "session": {}}])), r"case 'c': the session has no x-hasura-role"),
    (hasura_with(routing=routing(cases=[{**CASE, "session": {"x-hasura-role": "admin"}}])),
     r"case 'c': x-hasura-role is admin"),
    (hasura_with(routing=routing(cases=[{**CASE, "operationName": "my-query"}])), r"not a GraphQL name"),
    (hasura_with(routing=routing(template="{{ $.connection_set.archive }}")),
     r"hasura\.routing: .*connection_set\.archive .* is not in the connection set \(reporting\)"),
    (hasura_with(routing=routing(cases=[{**CASE, "expect": "connection_set.reporting"}])),
     r"case 'c': the template routes to default, expected connection_set\.reporting"),
    (hasura_with(routing=routing(template="{{ $.read_replicas }}", cases=[{**CASE, "expect": "read_replicas"}])),
     r"case 'user-mutation-never-on-replica': the template routes to read_replicas, which is never allowed"),
    (hasura_with(readReplicas=[], routing=routing(template=QUERIES_ON_REPLICAS, cases=[{**CASE, "expect":
                                                                                          "read_replicas"}])),
     r"routes to read_replicas, but hasura\.readReplicas is empty"),
    (hasura_with(routing=routing(cases=[])), r"hasura\.routing\.cases: List should have at least 1 item"),
    (hasura_with(routing=routing(cases=[CASE, CASE])), r"cases: names must be unique"),
    (hasura_with(routing=routing(cases=[{**CASE, "expect": "replicas"}])), r"'replicas' is not a route"),
    (hasura_with(routing=routing(connectionSet={"Bad-Name": "x"})), r"member 'Bad-Name'"),
    (hasura_with(routing=routing(cases=[{**CASE, "session": {"role": "user"}}])), r"start with x-hasura-"),
    (hasura_with(readReplicas=["postgres://u:p@db/x"]), r"is not a KV entry name"),
    (hasura_with(pool={"maxConnections": 0}), r"hasura\.pool\.maxConnections: Input should be greater than"),
    # Hasura keeps 0 as an absent key, read back as 600 after its next metadata load: it could never converge
    (hasura_with(pool={"connectionLifetimeSeconds": 0}),
     r"hasura\.pool\.connectionLifetimeSeconds: Input should be greater than or equal to 1"),
    # header names reach the template as spelled (makeRequestContext: CI.original): a template reading only the
    # lower-case name does not see a client's canonical "X-Consistency"
    (hasura_with(routing=routing(
        template='{{ if $.request.headers?["x-consistency"] == "strong" }}{{ $.primary }}{{ else }}{{ $.default }}'
                 '{{ end }}',
        cases=[{**CASE, "headers": {"X-Consistency": "strong"}}])),
     r"case 'c': the template routes to default, expected primary"),
    (hasura_with(pool={"isolationLevel": "chaos"}), r"hasura\.pool\.isolationLevel"),
    (hasura_with(pool={"maxConnection": 5}), r"hasura\.pool\.maxConnection: Extra inputs are not permitted"),
    # keep-alive longer than the tunnel keeps an idle connection, or than Cloudflare keeps a WebSocket
    (hasura_with(subscriptions={"websocketKeepAliveSeconds": 120}),
     r"hasura\.subscriptions\.websocketKeepAliveSeconds \(120\) must be shorter than the tunnel's idle timeout "
     r"\(90 s"),
    ({P + "cloudflare": {**PROD[P + "cloudflare"], "originKeepAliveTimeoutSeconds": 600},
      **hasura_with(subscriptions={"websocketKeepAliveSeconds": 100})}, r"\(100\) must be shorter .*\(100 s"),
    (hasura_with(subscriptions={"streamingBatchSize": 0}), r"hasura\.subscriptions\.streamingBatchSize"),
])
def test_malformed_or_contradictory_settings_stop_the_program_naming_key_and_stack(overrides, message):
    with pytest.raises(ConfigError, match=r"stack 'prod'") as caught:
        run_stack("prod", overrides)
    assert caught.match(message), str(caught.value)


def test_the_plan_shows_every_setting_a_reviewer_would_look_for():
    plans = {stack: (load_stack_file(stack), (__import__("scripts.plan", fromlist=["plan_path"])
                                             .plan_path(stack).read_text())) for stack in ("dev", "prod")}
    for stack, (config, plan) in plans.items():
        hasura = config[P + "hasura"]
        for key in ("HASURA_GRAPHQL_WEBSOCKET_KEEPALIVE", "HASURA_GRAPHQL_STREAMING_QUERIES_MULTIPLEXED_BATCH_SIZE",
                    "HASURA_SOURCE_SETTINGS", "HASURA_USER_ROW_LIMIT", "keepAliveTimeout", "tcpKeepAlive"):
            assert key in plan, (stack, key)
        assert f'"max_connections": {hasura["pool"]["maxConnections"]}' in plan
        for entry in hasura.get("readReplicas", []):
            assert f"secret/data/{entry}" in plan
    assert json.dumps("x-route-to") in plans["prod"][1].replace('\\"', '"')


def test_the_readme_documents_every_data_layer_setting():
    from pydantic.alias_generators import to_camel

    from components.config import CloudflareConfig, HasuraConfig, PoolConfig, RoutingConfig, SubscriptionsConfig
    from scripts.pulumi_harness import REPO

    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("## Hasura as a data layer"):readme.index("## Stack outputs")]
    for model, prefix in ((PoolConfig, "pool."), (SubscriptionsConfig, "subscriptions."), (RoutingConfig, "routing.")):
        for field in model.model_fields:
            assert f"`{prefix}{to_camel(field)}`" in section or f"/ `.{to_camel(field)}`" in section, (prefix, field)
    for field in ("edition", "ee_license_key_entry", "read_replicas"):
        assert to_camel(field) in readme and field in HasuraConfig.model_fields
    for field in [f for f in CloudflareConfig.model_fields if f.startswith("origin_")]:
        assert to_camel(field) in readme, field


def test_no_pool_timeout_and_no_lifetime_reach_the_bootstrap_as_such():
    from components.config import HasuraConfig

    raw = {**PROD[P + "hasura"], "pool": {"poolTimeoutSeconds": None}}
    settings = SourceSettings.from_json(HasuraConfig.model_validate(raw).source_settings().to_json())
    assert settings.pool.pool_timeout is None and settings.pool.connection_lifetime == 600
    assert "pool_timeout" not in settings.configuration()["connection_info"]["pool_settings"]
