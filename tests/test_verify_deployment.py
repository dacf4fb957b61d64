"""The post-deploy verifier against local servers that speak the protocols.

Stand-in: Hasura behind the Cloudflare edge cannot run here, so `edge_standin` (Starlette on uvicorn)
answers /v1/graphql over HTTP and WebSocket (graphql-transport-ws and graphql-ws), 404 elsewhere; each
test switches one behaviour to the broken variant the verifier must catch.
"""

from __future__ import annotations

import contextlib
import json
import threading

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from scripts.servers import free_port
from scripts.verify_deployment import VerifySettings, verify
from tests.support.kafka_admin import wait_until


def edge_standin(*, cached: bool = False, refuse_ws: bool = False, never_ack: bool = False,
                 open_paths: tuple[str, ...] = (), outcome: str = "completed") -> Starlette:
    async def graphql(request: Request) -> JSONResponse:
        body = await request.json()
        headers = {"cf-cache-status": "HIT", "age": "12"} if cached else {"cf-cache-status": "DYNAMIC"}
        if "publish_async_request" in body["query"]:
            rid = body["variables"]["input"]["request_id"]
            return JSONResponse({"data": {"publish_async_request": {"request_id": rid, "status": "published"}}},
                                headers=headers)
        return JSONResponse({"data": {"__typename": "query_root"}}, headers=headers)

    async def socket(ws: WebSocket) -> None:
        offered = ws.scope.get("subprotocols", [])
        if refuse_ws or not offered:
            await ws.close(code=4403)
            return
        await ws.accept(subprotocol=offered[0])
        init = json.loads(await ws.receive_text())
        assert init["type"] == "connection_init"
        if never_ack:
            await ws.receive_text()  # hold the socket open without answering
            return
        if offered[0] == "graphql-ws":
            await ws.send_text(json.dumps({"type": "ka"}))
        await ws.send_text(json.dumps({"type": "connection_ack"}))
        with contextlib.suppress(Exception):
            subscribe = json.loads(await ws.receive_text())
            rid = subscribe["payload"]["variables"]["id"]
            for status in ("published", outcome):
                await ws.send_text(json.dumps({"id": subscribe["id"], "type": "next", "payload": {"data": {
                    "graphql_client_async_messages_stream": [{"request_id": rid, "status": status}]}}}))
            await ws.receive_text()

    async def open_path(_: Request) -> JSONResponse:
        return JSONResponse({"ok": True})

    return Starlette(routes=[Route("/v1/graphql", graphql, methods=["POST"]), WebSocketRoute("/v1/graphql", socket),
                             *(Route(p, open_path) for p in open_paths)])


@contextlib.contextmanager
def serving(app: Starlette):
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, ws="websockets-sansio"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until(lambda: server.started, what="stand-in edge")
    try:
        yield f"http://127.0.0.1:{port}/v1/graphql"
    finally:
        server.should_exit = True
        thread.join(10)


def results(url: str, **settings) -> dict[str, tuple[bool, str]]:
    report = verify(VerifySettings(url, timeout_seconds=2, **settings))
    return {c.name: (c.ok, c.detail) for c in report.checks}


def test_a_deployment_that_answers_as_promised_passes():
    with serving(edge_standin()) as url:
        checks = results(url)
    assert checks == {"graphql-post": (True, "HTTP 200, cf-cache-status=DYNAMIC"),
                      "other paths 404": (True, "/, /v1/metadata, /v2/query, /console, /healthz"),
                      "ws graphql-transport-ws": (True, "connection_ack"), "ws graphql-ws": (True, "connection_ack")}


def test_a_cached_answer_fails():
    with serving(edge_standin(cached=True)) as url:
        ok, detail = results(url)["graphql-post"]
    assert not ok and "served from a cache" in detail


def test_a_refused_handshake_fails_both_subprotocols():
    with serving(edge_standin(refuse_ws=True)) as url:
        checks = results(url)
    for subprotocol in ("graphql-transport-ws", "graphql-ws"):
        ok, detail = checks[f"ws {subprotocol}"]
        assert not ok and "handshake refused" in detail


def test_a_handshake_without_ack_times_out():
    with serving(edge_standin(never_ack=True)) as url:
        ok, detail = results(url)["ws graphql-transport-ws"]
    assert not ok and "no connection_ack within 2s" in detail


def test_an_open_path_besides_graphql_fails():
    with serving(edge_standin(open_paths=("/v1/metadata", "/console"))) as url:
        ok, detail = results(url)["other paths 404"]
    assert not ok and detail == "/v1/metadata -> 200, /console -> 200"


@pytest.mark.parametrize(("outcome", "expected"), [("completed", True), ("failed", False)])
def test_round_trip_with_a_service_token(outcome, expected):
    with serving(edge_standin(outcome=outcome)) as url:
        ok, detail = results(url, service_token="svc-token", round_trip_seconds=5)["round trip"]
    assert ok is expected and detail.endswith(outcome)


def test_nothing_listening_fails_every_check():
    url = f"http://127.0.0.1:{free_port()}/v1/graphql"
    assert not any(ok for ok, _ in results(url).values())
