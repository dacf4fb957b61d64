"""The offline connection-template check (app/hasura/connection_template.py): seeds, refusals, hostile input."""

from __future__ import annotations

import re

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


def test_session_keys_are_lower_cased_headers_kept_as_given_and_elif_chains_work():
    # SessionVariables' ToJSON lower-cases names; headers reach the context as the request names them
    template = ('{{ if $.request.headers?["x-consistency"] == "strong" }}{{ $.primary }}'
                '{{ elif $.request.session?["x-hasura-role"] == "service" }}{{ $.connection_set.dev_db }}'
                '{{ else }}{{ $.default }}{{ end }}')
    assert route(template, headers={"x-consistency": "strong"}) == "primary"
    assert route(template, headers={"X-Consistency": "strong"}) == "default"
    assert str(evaluate(parse(template), RequestContext({}, {"X-Hasura-Role": "service"}, "query"),
                        MEMBERS)) == "connection_set.dev_db"
    assert route(template) == "default"


# Grammar.y: every binary operator joins two atoms; `if` needs `{{ else }}`; one expression per branch
@pytest.mark.parametrize(("template", "message"), [
    ('{{ if $.request.query.operation_type == "query" && $.request.headers?["a"] == "b" }}{{ $.primary }}'
     '{{ else }}{{ $.default }}{{ end }}', "Unexpected token '&&'"),
    ('{{ if $.request.headers?["a"] ?? "x" == "y" }}{{ $.primary }}{{ else }}{{ $.default }}{{ end }}',
     "Unexpected token '=='"),
    ('{{ if 1 == 1 == true }}{{ $.primary }}{{ else }}{{ $.default }}{{ end }}', "Unexpected token '=='"),
    ('{{ if $.request.query.operation_type == "query" }}{{ $.primary }}{{ end }}', "Unexpected token 'end'"),
    ("{{ if true }}{{ $.primary }}{{ $.default }}{{ else }}{{ $.default }}{{ end }}",
     "Unexpected token '$'"),
    ("{{ if true }}{{ $.primary }}", "Empty token stream"),
    ("{{ $.primary }}{{ end }}", "Unexpected token '{{'"),
    ("route {{ $.primary }}", "Unexpected token '{{'"),
    ("{{ $.primary }} tail", "Unexpected token 'tail'"),
    ("{{ if true }}{{ $.primary }}{{ else if false }}{{ $.default }}{{ end }}", "Unexpected token 'if'"),
    ("{{ $.primary ", "Empty token stream"),
    ("{{ }}", "Unexpected token '}}'"),
    ('{{ "unterminated }}', "Empty token stream"),
    ('{{ "bad \\q escape" }}', "Invalid Lexeme"),
    ("", "empty"),
])
def test_what_kriti_rejects_is_refused_with_where_and_why(template, message):
    with pytest.raises(TemplateError, match=re.escape(message)):
        parse(template)


@pytest.mark.parametrize("template", [
    '{{ if ($.request.query.operation_type == "query") && ($.request.headers?["a"] == "b") }}{{ $.primary }}'
    "{{ else }}{{ $.default }}{{ end }}",
    '{{ if ($.request.headers?["a"] ?? "x") == "y" }}{{ $.primary }}{{ else }}{{ $.default }}{{ end }}',
    "# a comment line\n{{ $.default }}  # and one after",
    '{{ if "x-tier" in $.request.headers }}{{ $.primary }}{{ else }}{{ $.default }}{{ end }}',
    "{{ if $.request.headers?['x-tier'] == $.request.headers?[$.request.session?['x-hasura-tier-header']] }}"
    "{{ $.primary }}{{ else }}{{ $.default }}{{ end }}",
])
def test_what_kriti_accepts_parses(template):
    check_names(parse(template), MEMBERS)


# Eval.hs as Hasura runs it: no functions, both sides of && and ||, only booleans decide an if, JSON equality
@pytest.mark.parametrize(("template", "message"), [
    ('{{ if not($.request.headers?["a"] == "1") }}{{ $.primary }}{{ else }}{{ $.default }}{{ end }}',
     "Variable 'not' not in scope"),
    ('{{ if ($.request.query.operation_type == "mutation") && ($.request.session.x-hasura-tier == "gold") }}'
     "{{ $.primary }}{{ else }}{{ $.default }}{{ end }}", "has no attritubte 'x-hasura-tier'"),
    ('{{ if ($.request.query.operation_type == "query") || $.request.headers?["flag"] }}{{ $.primary }}'
     "{{ else }}{{ $.default }}{{ end }}", "expected type 'Boolean' with actual type 'Null'"),
    ('{{ if $.request.headers?["a"] }}{{ $.primary }}{{ else }}{{ $.default }}{{ end }}',
     "expected type 'Boolean' with actual type 'Null'"),
    ("{{ if 1 }}{{ $.primary }}{{ else }}{{ $.default }}{{ end }}", "actual type 'Number'"),
    ('{{ "primary" }}', 'renders "primary"'),
    ("{{ $.connection_set }}", "renders {"),
    ("{{ [$.primary] }}", "renders ["),
    ('{{ $.request.session.x-hasura-tier }}', "has no attritubte"),
    ("{{ $foo }}", "Variable '$foo' not in scope"),
])
def test_what_fails_in_hasura_fails_for_that_request(template, message):
    with pytest.raises(TemplateError, match=re.escape(message)):
        evaluate(parse(template), RequestContext({}, {"x-hasura-role": "user"}, "query"), MEMBERS)


@pytest.mark.parametrize(("template", "expected"), [
    # the context's values are Hasura's tags: a template may name them directly
    ('{{ "PRIMARY" }}', "primary"),
    ('{{ "READ_REPLICAS" }}', "read_replicas"),
    ('{{ {"type": "connection_set", "name": "fast_db"} }}', "connection_set.fast_db"),
    ('{{ if $.primary == "PRIMARY" }}{{ $.default }}{{ else }}{{ $.primary }}{{ end }}', "default"),
    ('{{ if $.connection_set.dev_db.name == "dev_db" }}{{ $.connection_set.dev_db }}{{ else }}{{ $.primary }}'
     "{{ end }}", "connection_set.dev_db"),
    # JSON equality: true is not 1, 1 is 1.0; ordering across types is aeson's (String < Number)
    ("{{ if true == 1 }}{{ $.primary }}{{ else }}{{ $.default }}{{ end }}", "default"),
    ("{{ if 1 == 1.0 }}{{ $.primary }}{{ else }}{{ $.default }}{{ end }}", "primary"),
    ('{{ if "a" < 1 }}{{ $.primary }}{{ else }}{{ $.default }}{{ end }}', "primary"),
    ('{{ if {"a": [1, true]} == {"a": [1.0, true]} }}{{ $.primary }}{{ else }}{{ $.default }}{{ end }}',
     "primary"),
    # ?? replaces null only
    ('{{ if (false ?? true) }}{{ $.primary }}{{ else }}{{ $.default }}{{ end }}', "default"),
    ('{{ if ("" ?? "x") == "" }}{{ $.primary }}{{ else }}{{ $.default }}{{ end }}', "primary"),
    ('{{ if ($.request.headers?["tier"] ?? "free") == "free" }}{{ $.default }}{{ else }}{{ $.primary }}{{ end }}',
     "default"),
    # optional paths: a missing step is null, and so is a failing base
    ('{{ if $.request.headers?.a.b.c == null }}{{ $.primary }}{{ else }}{{ $.default }}{{ end }}', "primary"),
    ('{{ if $.request.body?.x == null }}{{ $.primary }}{{ else }}{{ $.default }}{{ end }}', "primary"),
    ('{{ if $.request.query?.operation_name == null }}{{ $.read_replicas }}{{ else }}{{ $.primary }}{{ end }}',
     "read_replicas"),
    # Kriti's escapes: "\/" keeps its backslash
    ('{{ if "a\\/b" == "a/b" }}{{ $.primary }}{{ else }}{{ $.default }}{{ end }}', "default"),
    ('{{ if "a\\/b" == "a\\\\/b" }}{{ $.primary }}{{ else }}{{ $.default }}{{ end }}', "primary"),
    ('{{ if "\\u0041" == "A" }}{{ $.primary }}{{ else }}{{ $.default }}{{ end }}', "primary"),
    # in: a key of an object, an element of an array
    ('{{ if "x-tier" in $.request.headers }}{{ $.primary }}{{ else }}{{ $.default }}{{ end }}', "default"),
    ('{{ if $.request.query.operation_type in ["query", "subscription"] }}{{ $.default }}{{ else }}{{ $.primary }}'
     "{{ end }}", "default"),
])
def test_evaluates_as_kriti_with_hasuras_context(template, expected):
    assert route(template, role="user") == expected


def test_check_names_refuses_what_fails_every_request():
    for template, message in [
        ("{{ $.connection_set.missing }}", "not in the connection set"),
        ("{{ $.replicas }}", "the context has"),
        ('{{ if $.request.body == 1 }}{{ $.primary }}{{ else }}{{ $.default }}{{ end }}', "the request has"),
        ('{{ if $.request.query.variables == 1 }}{{ $.primary }}{{ else }}{{ $.default }}{{ end }}', "the query has"),
        ("{{ escapeUri($.primary) }}", "without functions"),
        ('{{ if not ($.request.headers?["a"] == "1") }}{{ $.primary }}{{ else }}{{ $.default }}{{ end }}',
         "without functions"),
        ("{{ x }}", "not in scope"),
        ("{{ $ }}", "bare $"),
    ]:
        with pytest.raises(TemplateError, match=re.escape(message)):
            check_names(parse(template), MEMBERS)
    check_names(parse("{{ range i, x := [1] }}{{ x }}{{ end }}"), MEMBERS)  # a range binds its names


def test_request_shapes_pg_test_connection_template_refuses():
    assert RequestContext({}, {"x-hasura-role": "user"}, "query", "MyQuery_1").problems() == []
    assert "no x-hasura-role" in RequestContext({}, {}, "query").problems()[0]
    assert "no x-hasura-role" in RequestContext({}, {"x-hasura-role": ""}, "query").problems()[0]
    assert "admin" in RequestContext({}, {"x-hasura-role": "admin"}, "query").problems()[0]
    assert RequestContext({}, {"X-Hasura-Role": "Admin"}, "query").problems() == []  # role names are exact
    assert "not a GraphQL name" in RequestContext({}, {"x-hasura-role": "u"}, "query", "my-query").problems()[0]
    assert "not query, mutation" in RequestContext({}, {"x-hasura-role": "u"}, "delete").problems()[0]


@pytest.mark.parametrize(("hostile", "message"), [
    ("{{ $.primary }}" + " " * 20_000, "over 16384 characters"),
    ("{{ " + "(" * 9000 + "$.primary" + ")" * 9000 + " }}", "over 16384 characters"),
    ("{{ " + "(" * 70 + "$.primary" + ")" * 70 + " }}", "nested over 64 deep"),
    ("{{ " + "[" * 70 + "]" * 70 + " }}", "nested over 64 deep"),
    ("{{ $" + ".a" * 5000 + " }}", "nests over 200 deep"),
])
def test_hostile_templates_are_refused_before_they_cost_anything(hostile, message):
    with pytest.raises(TemplateError, match=message):
        parse(hostile)


@pytest.mark.parametrize("hostile", [
    "{{ ((((((((((((((((((((((((((((((( }}",
    "{{ $.primary\x00 }}",
    "{{ \"\\ud800\" == \"\\ud800\" }}",
    "{{ $.request.headers[\"\\u0000\"] }}",
    "{{ range i, x := $.request.headers }}{{ x }}{{ end }}",
    "{{ 1 / 0 }}",
    "{{ 99999999999999999999999999999e99999999 }}",
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
