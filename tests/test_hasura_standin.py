"""The Hasura stand-in behaves as graphql-engine's source says (see its docstring for the file behind each
behaviour), for the Community and the Enterprise Edition, so the suite fails when the project regresses."""

from __future__ import annotations

import pytest

from tests.support.hasura_standin import HasuraStandIn

SECRET = "s"
URL = {"from_env": "HASURA_GRAPHQL_DATABASE_URL"}
TEMPLATE = ('{{ if ($.request.query.operation_type == "mutation") && ($.request.session?["x-hasura-tier"] == '
            '"gold") }}{{ $.connection_set.fast }}{{ elif $.request.query.operation_type == "mutation" }}'
            "{{ $.primary }}{{ else }}{{ $.read_replicas }}{{ end }}")


def hasura(edition: str) -> HasuraStandIn:
    return HasuraStandIn(SECRET, {}, edition=edition)


def add_source(h: HasuraStandIn, configuration: dict, **extra) -> tuple[int, dict]:
    return h.handle({"type": "pg_add_source", "args": {"name": "default", "configuration": configuration,
                                                       "replace_configuration": True, **extra}}, SECRET)


def enterprise_config(template: str = TEMPLATE, **pool) -> dict:
    info = {"database_url": URL, "pool_settings": pool}
    return {"connection_info": info, "read_replicas": [{"database_url": {"from_env": "R1"}}],
            "connection_set": [{"name": "fast", "connection_info": {"database_url": {"from_env": "F"}}}],
            "connection_template": {"template": template}}


def test_pg_add_source_stores_what_hasura_exports():
    h = hasura("ee")
    assert add_source(h, enterprise_config(connection_lifetime=0, max_connections=5))[0] == 200
    config = h.metadata["sources"][0]["configuration"]
    assert config["connection_info"] == {"database_url": URL, "isolation_level": "read-committed",
                                         "use_prepared_statements": False, "pool_settings": {"max_connections": 5}}
    assert config["connection_template"] == {"version": 1, "template": TEMPLATE}
    add_source(h, enterprise_config(max_connections=5))
    assert h.metadata["sources"][0]["configuration"]["connection_info"]["pool_settings"] == {
        "max_connections": 5, "connection_lifetime": 600}  # absent lifetime: 600; no default pool_timeout


def test_replace_configuration_replaces_the_customization_too():
    h = hasura("ce")
    add_source(h, {"connection_info": {"database_url": URL}}, customization={"root_fields": {"namespace": "x"}})
    assert h.metadata["sources"][0]["customization"] == {"root_fields": {"namespace": "x"}}
    add_source(h, {"connection_info": {"database_url": URL}})
    assert "customization" not in h.metadata["sources"][0]


@pytest.mark.parametrize(("template", "code"), [
    ('{{ if $.a == "x" && $.b == "y" }}{{ $.primary }}{{ else }}{{ $.default }}{{ end }}', "parse-failed"),
    ("{{ if true }}{{ $.primary }}{{ end }}", "parse-failed"),
])
def test_a_template_that_is_not_kriti_fails_pg_add_source(template, code):
    status, answer = add_source(hasura("ee"), enterprise_config(template))
    assert (status, answer["code"]) == (400, code) and "Kriti template parsing failed" in answer["error"]


def test_only_version_1_and_a_non_empty_unique_connection_set():
    h = hasura("ee")
    config = enterprise_config()
    assert add_source(h, {**config, "connection_template": {"version": 2, "template": "{{ $.default }}"}})[1][
        "error"] == "Supported versions are [1]"
    assert add_source(h, {**config, "connection_set": []})[1]["error"] == "connection set cannot be empty"
    twice = config["connection_set"] * 2
    assert "duplicate names" in add_source(h, {**config, "connection_set": twice})[1]["error"]


def test_community_edition_stores_enterprise_settings_silently_and_only_test_template_says_so():
    h = hasura("ce")
    assert add_source(h, enterprise_config()) == (200, {"message": "success"})
    assert "connection_template" in h.metadata["sources"][0]["configuration"]
    status, answer = test_template(h, {"session": {"x-hasura-role": "user"}})
    assert (status, answer["code"]) == (400, "not-supported")


def test_template(h: HasuraStandIn, context: dict, **extra) -> tuple[int, dict]:
    return h.handle({"type": "pg_test_connection_template", "args": {"source_name": "default",
                                                                      "request_context": context, **extra}}, SECRET)


test_template.__test__ = False  # a helper, not a test


@pytest.mark.parametrize(("context", "code"), [
    ({"query": {"operation_type": "query"}}, "invalid-params"),
    ({"session": {"x-hasura-role": "admin"}, "query": {"operation_type": "query"}}, "invalid-params"),
    ({"session": {"x-hasura-role": "user"}, "query": {"operation_type": "query", "operation_name": "a-b"}},
     "parse-failed"),
    ({"session": {"x-hasura-role": "user"}, "query": {"operation_type": "delete"}}, "parse-failed"),
    ({"session": {"x-hasura-role": 1}}, "parse-failed"),
])
def test_request_contexts_hasura_refuses(context, code):
    h = hasura("ee")
    add_source(h, enterprise_config())
    status, answer = test_template(h, context)
    assert (status, answer["code"]) == (400, code)


@pytest.mark.parametrize(("session", "op", "expected"), [
    ({"X-Hasura-Role": "user", "X-Hasura-Tier": "gold"}, "mutation", {"routing_to": "connection_set", "value": "fast"}),
    ({"x-hasura-role": "user"}, "mutation", {"routing_to": "primary", "value": None}),
    ({"x-hasura-role": "user"}, "query", {"routing_to": "read_replicas", "value": None}),
])
def test_enterprise_routes_with_hasuras_context(session, op, expected):
    h = hasura("ee")
    add_source(h, enterprise_config())
    assert test_template(h, {"session": session, "query": {"operation_type": op}}) == (200, {"result": expected})


@pytest.mark.parametrize(("template", "code"), [
    ('{{ if not($.request.headers?["a"] == "b") }}{{ $.primary }}{{ else }}{{ $.default }}{{ end }}',
     "template-resolution-failed"),
    ('{{ if ($.request.query.operation_type == "query") || ($.request.session.x-hasura-tier == "gold") }}'
     "{{ $.primary }}{{ else }}{{ $.default }}{{ end }}", "template-resolution-failed"),
    ('{{ "primary" }}', "parse-failed"),
])
def test_what_fails_in_hasura_fails_here(template, code):
    h = hasura("ee")
    add_source(h, enterprise_config())
    status, answer = test_template(h, {"session": {"x-hasura-role": "user"}, "query": {"operation_type": "query"}},
                                   connection_template={"template": template})
    assert (status, answer["code"]) == (400, code)


def test_no_template_anywhere_is_a_resolution_failure():
    h = hasura("ee")
    status, answer = test_template(h, {"session": {"x-hasura-role": "user"}})
    assert (status, answer["code"]) == (400, "template-resolution-failed")
