"""The offline connection-template check (app/hasura/connection_template.py): seeds, refusals, hostile input."""

from __future__ import annotations

import pytest

from app.hasura.connection_template import RequestContext, Route, TemplateError, check_names, evaluate, parse
from app.hasura.source import RoutingCase, SourceSettings, mutation_probes

# the seed's (shared/seeds/hasura-dynamic-routing.txt) last example, keys quoted as Kriti needs
SEED = """
{{ if ($.request.query.operation_type == "query") || ($.request.query.operation_type == "subscription") }}
  {{ if $.request.session?["x-hasura-role"] == "developer" }}
    {{if $.request.headers?["route-to-read-replicas"] == "true"}}
      {{$.read_replicas}}
    {{else}}
      {{$.connection_set.dev_db}}
    {{end}}
  {{else}}
    {{$.default}}
  {{ end }}
{{else}}
  {{ if $.request.session?["x-hasura-role"] == "priority-user" }}
    {{$.connection_set.fast_db}}
  {{else}}
    {{$.primary}}
  {{ end }}
{{ end }}
"""
MEMBERS = {"dev_db", "fast_db"}


def route(template: str, *, op: str = "query", role: str | None = None, headers: dict | None = None,
          members: set[str] = MEMBERS) -> str:
    session = {"x-hasura-role": role} if role else {}
    return str(evaluate(parse(template), RequestContext(headers or {}, session, op), members))


@pytest.mark.parametrize(("op", "role", "headers", "expected"), [
    ("query", "developer", {"route-to-read-replicas": "true"}, "read_replicas"),
    ("subscription", "developer", {}, "connection_set.dev_db"),
    ("query", "user", {}, "default"),
    ("mutation", "priority-user", {}, "connection_set.fast_db"),
    ("mutation", "user", {}, "primary"),
    ("mutation", None, {}, "primary"),
])
def test_the_seed_template_routes_as_the_seed_explains(op, role, headers, expected):
    check_names(parse(SEED), MEMBERS)
    assert route(SEED, op=op, role=role, headers=headers) == expected


def test_headers_and_session_keys_are_case_insensitive_and_elif_chains_work():
    template = ('{{ if $.request.headers?["x-consistency"] == "strong" }}{{ $.primary }}'
                '{{ elif $.request.session?["x-hasura-role"] == "service" }}{{ $.connection_set.dev_db }}'
                '{{ else }}{{ $.default }}{{ end }}')
    assert route(template, headers={"X-Consistency": "strong"}) == "primary"
    assert route(template, role="service") == "connection_set.dev_db"
    assert route(template) == "default"


@pytest.mark.parametrize(("template", "message"), [
    ("{{ if $.request.query.operation_type == \"query\" }}{{ $.primary }}", "never closed"),
    ("{{ $.primary }}{{ end }}", "without an open"),
    ("route {{ $.primary }}", "text outside"),
    ("{{ $.primary }} tail", "text outside"),
    ("{{ $.connection_set.missing }}", "not in the connection set"),
    ("{{ $.replicas }}", "the context has"),
    ("{{ if $.request.body == 1 }}{{ $.primary }}{{ end }}", "the request has headers, session, query"),
    ("{{ if $.request.query.variables == 1 }}{{ $.primary }}{{ end }}", "the query has"),
    ('{{ if $.request.headers?[no-stale-read] == "true" }}{{ $.primary }}{{ end }}', 'quote the key'),
    ("{{ range i, x := $.request.headers }}{{ $.primary }}{{ end }}", "range blocks are not supported"),
    ("{{ escapeUri($.primary) }}", "unsupported 'escapeUri'"),
    ("{{ if $.a }}{{ else }}{{ else }}{{ end }}", "after {{ else }}"),
    ("{{ if true }}{{ $.primary }}{{ else if false }}{{ $.default }}{{ end }}", "use {{ elif"),
    ("{{ $.primary ", "text outside"),
    ("", "empty"),
    ("{{ }}", "empty expression"),
    ("{{ \"unterminated }}", "unexpected"),
])
def test_malformed_templates_are_refused_with_where_and_why(template, message):
    with pytest.raises(TemplateError, match=message):
        check_names(parse(template), MEMBERS)


@pytest.mark.parametrize(("template", "message"), [
    ("{{ $.primary }}{{ $.default }}", "not exactly one route"),
    ("{{ if false }}{{ $.primary }}{{ end }}", "renders nothing"),
    ('{{ "primary" }}', "not exactly one route"),
    ("{{ if $.request.session.x-hasura-role == \"a\" }}{{ $.primary }}{{ end }}", "use \\?\\. or"),
    ("{{ if $.request.headers?[\"a\"] }}{{ $.primary }}{{ end }}", "not true or false"),
    ("{{ if 1 < \"a\" }}{{ $.primary }}{{ end }}", "two numbers or two strings"),
])
def test_a_template_that_renders_no_single_route_fails_for_that_request(template, message):
    with pytest.raises(TemplateError, match=message):
        route(template)


def test_operators_literals_and_defaults():
    assert route('{{ if not($.request.headers?["a"] == "1") && 2 >= 1 }}{{ $.primary }}{{ end }}') == "primary"
    assert route('{{ if ($.request.headers?["tier"] ?? "free") == "free" }}{{ $.default }}{{ end }}') == "default"
    assert route('{{ if $.request.query?.operation_name == null }}{{ $.read_replicas }}{{ end }}') == "read_replicas"


@pytest.mark.parametrize(("hostile", "message"), [
    ("{{ if true }}" * 40 + "{{ $.primary }}" + "{{ end }}" * 40, "nested over 32"),
    ("{{ $.primary }}" + " " * 20_000, "over 16384 characters"),
    ("{{ " + "(" * 9000 + "$.primary" + ")" * 9000 + " }}", "over 16384 characters"),
    ("{{ " + "(" * 40 + "$.primary" + ")" * 40 + " }}", "nested over 32"),
    ("{{ " + "not(" * 40 + "true" + ")" * 40 + " }}", "nested over 32"),
    ("{{ if " + " && ".join(["true"] * 200) + " }}{{ $.primary }}{{ end }}", "over 128 operators"),
])
def test_hostile_templates_are_refused_before_they_cost_anything(hostile, message):
    with pytest.raises(TemplateError, match=message):
        parse(hostile)


@pytest.mark.parametrize("hostile", [
    "{{ ((((((((((((((((((((((((((((((( }}",
    "{{ $.primary\x00 }}",
    "{{ \"\\ud800\" == \"\\ud800\" }}",
    "{{ $.request.headers[\"\\u0000\"] }}",
])
def test_hostile_templates_get_a_template_error_never_a_crash(hostile):
    try:
        template = parse(hostile)
        check_names(template, MEMBERS)
        evaluate(template, RequestContext({}, {}, "query"), MEMBERS)
    except TemplateError:
        pass


def test_route_spelling_round_trips_and_rejects_unknown_routes():
    for text in ("primary", "read_replicas", "default", "connection_set.dev_db"):
        assert str(Route.parse(text)) == text
    for bad in ("replica", "connection_set.", "connection_set.a b", "PRIMARY"):
        with pytest.raises(TemplateError):
            Route.parse(bad)


def test_mutation_probes_forbid_replicas_for_both_flow_roles():
    probes = mutation_probes()
    assert {p.request.session["x-hasura-role"] for p in probes} == {"user", "service"}
    assert all(p.request.operation_type == "mutation" for p in probes)
    assert probes[0].verdict(Route("read_replicas")) and probes[0].verdict(Route("primary")) is None
    assert probes[0].verdict(Route("default")) is None


def test_source_settings_survive_the_jobs_env_unchanged():
    case = RoutingCase("c", RequestContext({"x-a": "1"}, {"x-hasura-role": "user"}, "query", "Q"),
                       expect=Route("connection_set", "dev_db"))
    settings = SourceSettings(edition="ee", read_replica_envs=("HASURA_READ_REPLICA_1_URL",),
                              connection_set=(("dev_db", "HASURA_CONNECTION_SET_DEV_DB_URL"),),
                              template="{{ $.default }}", cases=(case,))
    assert SourceSettings.from_json(settings.to_json()) == settings
    assert settings.routing_cases()[-2:] == mutation_probes()
    with pytest.raises(ValueError, match="need Hasura Enterprise"):
        SourceSettings(edition="ce", template="{{ $.default }}")
    with pytest.raises(ValueError, match="not a source settings document"):
        SourceSettings.from_json('{"cases": [{"name": "x"}], "template": "{{ $.default }}", "edition": "ee"}')


@pytest.mark.parametrize("pool", [{"max_connections": 0}, {"idle_timeout": -1}, {"retries": "1"},
                                  {"pool_timeout": True}, {"bogus": 1}])
def test_a_malformed_pool_in_the_jobs_env_is_refused(pool):
    with pytest.raises(ValueError, match="pool|not a source settings document"):
        SourceSettings.from_dict({"pool": pool})
