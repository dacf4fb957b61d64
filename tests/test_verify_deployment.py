"""The post-deploy verifier against a real GraphQL server behind a router that answers like the tunnel.

Hasura behind the Cloudflare edge cannot run here; `tests/support/graphql_edge.py` stands in: strawberry-graphql
(HTTP, graphql-transport-ws and graphql-ws) with Hasura's routes around it, behind the program's own tunnel
ingress rules. Each test switches one behaviour: a broken deployment the verifier must fail (a false pass
today would let it through), or a correct one it must pass (a false fail would block every `up`), the latter
confirmed with a real client library (gql) doing the same thing.
"""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import subprocess
import uuid

import pytest
from gql import Client, GraphQLRequest
from gql.transport.httpx import HTTPXAsyncTransport
from gql.transport.websockets import WebsocketsTransport

from components.config import CloudflareConfig
from components.public_ingress import tunnel_ingress
from scripts.servers import free_port
from scripts.verify_deployment import FOLLOW, PROBES, SUBMIT, VerifySettings, cacheable, verify
from tests.conftest import REPO
from tests.support.graphql_edge import HOST, Behaviour, matching_rule, program_ingress, serving

CHECKS = {"graphql-post", "not cached", "other paths 404", "ws graphql-transport-ws", "ws graphql-ws"}


def results(url: str, **settings) -> dict[str, tuple[bool, str]]:
    report = verify(VerifySettings(url, timeout_seconds=2, **settings))
    return {c.name: (c.ok, c.detail) for c in report.checks}


def failed(checks: dict[str, tuple[bool, str]]) -> dict[str, str]:
    return {name: detail for name, (ok, detail) in checks.items() if not ok}


def gql_round_trip(url: str, subprotocol: str) -> str:
    """A real client: submit over HTTP, follow over a WebSocket; the final status."""
    async def run() -> str:
        request_id = f"gql-{uuid.uuid4().hex}"
        async with Client(transport=HTTPXAsyncTransport(url=url)) as session:
            await session.execute(GraphQLRequest(SUBMIT, variable_values={"input": {
                "request_id": request_id, "handler": "h", "operation": "o", "payload": {}}}))
        ws = WebsocketsTransport(url=url.replace("http://", "ws://"), subprotocols=[subprotocol])
        async with Client(transport=ws) as session:
            async for result in session.subscribe(GraphQLRequest(FOLLOW, variable_values={"id": request_id})):
                for row in result["graphql_client_async_messages_stream"]:
                    if row["status"] in ("completed", "failed"):
                        return row["status"]
        raise AssertionError("stream ended")

    return asyncio.run(asyncio.wait_for(run(), 10))


# ------------------------------------------------------------------ a deployment that answers as promised


def test_a_deployment_that_answers_as_promised_passes():
    with serving() as url:
        checks = results(url, service_token="svc-token", round_trip_seconds=5)
    assert not failed(checks)
    assert set(checks) == CHECKS | {"round trip"}
    assert checks["graphql-post"] == (True, "HTTP 200, __typename=Query")
    assert checks["not cached"] == (True, "POST DYNAMIC, GET DYNAMIC")
    assert checks["other paths 404"] == (True, f"{len(PROBES)} probes, each 404")


@pytest.mark.parametrize("subprotocol", ["graphql-transport-ws", "graphql-ws"])
def test_the_stand_in_is_a_real_server_for_a_real_client(subprotocol):
    with serving() as url:
        assert gql_round_trip(url, subprotocol) == "completed"


@pytest.mark.parametrize(("outcome", "expected"), [("completed", True), ("failed", False)])
def test_round_trip_with_a_service_token(outcome, expected):
    with serving(Behaviour(outcome=outcome)) as url:
        ok, detail = results(url, service_token="svc-token", round_trip_seconds=5)["round trip"]
    assert ok is expected and detail.endswith(outcome)


# ------------------------------------------------------------------ false passes: broken, must fail


@pytest.mark.parametrize("status", [200, 502])
def test_a_graphql_answer_with_errors_fails_at_any_status(status):
    """Hasura answers GraphQL errors (an inconsistent metadata, a database down) with HTTP 200."""
    body = {"errors": [{"message": "database query error", "extensions": {"code": "unexpected"}}]}
    with serving(Behaviour(graphql_answer=(status, body))) as url:
        ok, detail = results(url)["graphql-post"]
    assert not ok and f"HTTP {status}, GraphQL errors" in detail


def test_an_edge_rule_as_wide_as_v1_fails():
    """Hasura's admin APIs are POST: a GET to /v1/metadata gets Hasura's own 404 even when the edge carries it."""
    wide = [{**program_ingress()[1], "path": "^/v1/"}, {"service": "http_status:404"}]
    with serving(Behaviour(ingress=wide)) as url:
        ok, detail = results(url)["other paths 404"]
    assert not ok
    for admin in ("POST /v1/metadata -> 400", "POST /v1/query -> 400", "POST /v1/graphql/explain -> 400"):
        assert admin in detail
    assert "/v2/query" not in detail and "/v1alpha1/" not in detail  # outside ^/v1/: the edge's 404


def test_the_graphql_rule_alone_carries_explain_and_fails():
    """`^/v1/graphql(/.*)?$` without the admin rule before it carries POST /v1/graphql/explain to Hasura."""
    without_admin_rule = program_ingress()[1:]
    with serving(Behaviour(ingress=without_admin_rule)) as url:
        ok, detail = results(url)["other paths 404"]
    assert not ok and detail == "POST /v1/graphql/explain -> 400"


@pytest.mark.parametrize(("behaviour", "reason"), [
    (Behaviour(cache_status={"POST": "HIT", "GET": "HIT"}), "POST cf-cache-status=HIT"),
    (Behaviour(cache_status={"POST": "MISS", "GET": "MISS"}), "POST cf-cache-status=MISS"),
    (Behaviour(headers={"Cache-Control": "public, max-age=60"}), "POST cache-control='public, max-age=60'"),
    # Cloudflare never caches POST: a cache-everything rule without the bypass shows on GET only
    (Behaviour(cache_status={"POST": "DYNAMIC", "GET": "MISS"}), "GET cf-cache-status=MISS"),
    (Behaviour(cache_status={"POST": "DYNAMIC", "GET": "HIT"}), "GET cf-cache-status=HIT"),
], ids=["hit", "miss", "cacheable-cache-control", "get-miss", "get-hit"])
def test_an_answer_a_cache_may_keep_fails(behaviour, reason):
    with serving(behaviour) as url:
        ok, detail = results(url)["not cached"]
    assert not ok and reason in detail


@pytest.mark.parametrize(("value", "expected"), [
    ("public, max-age=60", True), ("s-maxage=30", True), ("max-age=60", True), ("public", True),
    ("no-store", False), ("private, max-age=60", False), ("no-cache", False), ("max-age=0", False),
    ("public, max-age=0", False), ("", False), ("max-age=junk", True),
    # a shared cache takes s-maxage over max-age; a field-named no-cache still lets the rest be stored
    ("s-maxage=0, max-age=60", False), ("max-age=0, s-maxage=60", True), ('no-cache="Set-Cookie", max-age=60', True),
])
def test_cacheable_cache_control(value, expected):
    assert cacheable(value) is expected


def test_a_refused_handshake_fails_both_subprotocols():
    with serving(Behaviour(refuse_ws=True)) as url:
        checks = results(url)
    for subprotocol in ("graphql-transport-ws", "graphql-ws"):
        ok, detail = checks[f"ws {subprotocol}"]
        assert not ok and "handshake refused" in detail


def test_a_handshake_without_ack_times_out():
    with serving(Behaviour(ack_delay=3600)) as url:
        ok, detail = results(url)["ws graphql-transport-ws"]
    assert not ok and "no connection_ack within 2s" in detail


# ------------------------------------------------------------------ false fails: correct, must pass


def test_a_server_that_acks_asynchronously_passes_the_round_trip():
    """graphql-transport-ws allows operations only after connection_ack (PROTOCOL.md: else 4401 Unauthorized)."""
    with serving(Behaviour(ack_delay=0.3)) as url:
        assert gql_round_trip(url, "graphql-transport-ws") == "completed"
        checks = results(url, service_token="svc-token", round_trip_seconds=5)
    assert not failed(checks)


def test_null_payloads_pass():
    """connection_ack and ping may carry `"payload": null` (PROTOCOL.md: `payload?: Record | null`)."""
    with serving(Behaviour(null_payloads=True)) as url:
        assert gql_round_trip(url, "graphql-transport-ws") == "completed"
        checks = results(url, service_token="svc-token", round_trip_seconds=5)
    assert not failed(checks)


# ------------------------------------------------------------------ errors are FAIL lines, never tracebacks


def test_a_non_json_answer_to_the_submit_is_a_failed_round_trip():
    with serving(Behaviour(submit_answer=(502, "<html>Bad gateway</html>"))) as url:
        checks = results(url, service_token="svc-token", round_trip_seconds=5)
    assert failed(checks) == {"round trip": "submit failed: HTTP 502, not JSON"}


def test_nothing_listening_fails_every_check():
    url = f"http://{HOST}:{free_port()}/v1/graphql"
    checks = results(url, service_token="svc-token", round_trip_seconds=2)
    assert set(checks) == CHECKS | {"round trip"} and not any(ok for ok, _ in checks.values())
    assert "ConnectError" in checks["round trip"][1]


# ------------------------------------------------------------------ the edge rules the program declares


def test_the_program_s_edge_rules_answer_404_to_every_probe_and_carry_graphql():
    host = "graphql.example.test"
    rules = tunnel_ingress(host, CloudflareConfig(account_id="a", zone_id="z", tunnel_name="t"), "http://hasura:8080")
    for _, path in PROBES:
        assert matching_rule(rules, host, path)["service"] == "http_status:404", path
    for path in ("/v1/graphql//explain", "/v1/graphql/explain/x"):
        assert matching_rule(rules, host, path)["service"] == "http_status:404", path
    for path in ("/v1/graphql", "/v1/graphql/", "/v1/graphql/ws"):
        assert matching_rule(rules, host, path)["service"] == "http://hasura:8080", path
    assert matching_rule(rules, "other.example.test", "/v1/graphql")["service"] == "http_status:404"


# ------------------------------------------------------------------ run as Pulumi runs it


def test_the_verification_runs_as_the_command_plugin_runs_it_from_a_python_without_our_packages(run_dev):
    """pulumi-command's local.Command: `/bin/sh -c <create>` in the provider's working directory (the project
    root) with the engine's environment, which is the CLI's, not the program's virtualenv
    (provider/pkg/provider/local/commandOutputs.go). Here: PATH=/usr/bin:/bin, whose python3 lacks httpx."""
    bare = subprocess.run(["python3", "-c", "import httpx, websockets"], env={"PATH": "/usr/bin:/bin"},
                          capture_output=True)
    assert bare.returncode != 0, "this check needs a python3 on /usr/bin:/bin without the project's packages"
    verification = run_dev.one("command:local:Command", "verify-deployment").inputs
    words = shlex.split(verification["create"])
    with serving() as url:
        words[words.index("--url") + 1] = url  # the stack's URL is a real hostname; the command is unchanged
        env = {"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/root"),
               **(verification.get("environment") or {})}
        done = subprocess.run(["/bin/sh", "-c", shlex.join(words)], cwd=REPO, env=env, capture_output=True,
                              text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "ok   graphql-post" in done.stdout and "FAIL" not in done.stdout


@pytest.fixture(scope="module")
def run_dev():
    from scripts.pulumi_harness import run_stack

    asyncio.set_event_loop(asyncio.new_event_loop())  # asyncio.run in the tests above leaves none behind
    return run_stack("dev")


def test_the_rehearsal_s_project_copy_has_the_interpreter_the_command_names(tmp_path):
    """`dev.sh rehearse` applies a copy of the project: its venv/ must be the one with our packages."""
    from components.verify import venv_python
    from scripts.rehearse import project_copy

    project = project_copy(tmp_path)
    interpreter = project / venv_python()
    done = subprocess.run([str(interpreter), "-c", "import httpx, websockets"], env={"PATH": "/usr/bin:/bin"},
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


class _Socket:
    """Just enough of a websockets connection for the handshake: a subprotocol and a queue of frames."""

    def __init__(self, subprotocol: str, frames: list[dict]):
        self.subprotocol, self.frames, self.sent = subprotocol, list(frames), []

    async def send(self, text: str) -> None:
        self.sent.append(json.loads(text))

    async def recv(self) -> str:
        return json.dumps(self.frames.pop(0))


@pytest.mark.parametrize(("subprotocol", "frames", "accepted"), [
    ("graphql-transport-ws", [{"type": "ping"}, {"type": "connection_ack"}], True),
    ("graphql-transport-ws", [{"type": "ka"}, {"type": "connection_ack"}], False),  # not this protocol's
    ("graphql-ws", [{"type": "ka"}, {"type": "connection_ack"}], True),
    ("graphql-ws", [{"type": "ping"}, {"type": "connection_ack"}], False),  # Apollo's protocol has no ping
])
def test_keep_alives_are_each_protocols_own(subprotocol, frames, accepted):
    import asyncio

    from scripts.verify_deployment import Failed, _acknowledged

    socket = _Socket(subprotocol, frames)
    settings = VerifySettings(graphql_url="https://example.test/v1/graphql")
    if accepted:
        asyncio.run(_acknowledged(socket, settings))
    else:
        with pytest.raises(Failed):
            asyncio.run(_acknowledged(socket, settings))
