"""A real GraphQL server behind a router that answers like the Cloudflare tunnel, for the post-deploy verifier.

Origin: a Hasura-shaped ASGI app. /v1/graphql is a strawberry-graphql server (HTTP, and WebSockets in both
graphql-transport-ws and graphql-ws) with the slice of Hasura's schema the verifier uses
(`publish_async_request`, `graphql_client_async_messages_stream`, snake_case names); Hasura's admin routes
answer as Hasura does without the admin secret (400 access-denied, hasura/graphql-engine
server/src-lib/Hasura/Server/App.hs: `onlyAdmin`), anything else 404.

Edge: the tunnel's ingress rules as the program declares them (`components.public_ingress.tunnel_ingress`),
matched like cloudflared does (first rule whose hostname matches and whose path regex matches anywhere in the
path; `http_status:404` answers at the edge), with the `cf-cache-status` Cloudflare adds.

`Behaviour` switches one thing at a time to what a broken (or a stricter, still correct) deployment does.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import threading
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, NewType

import strawberry
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route, WebSocketRoute
from strawberry.asgi import GraphQL
from strawberry.schema.config import StrawberryConfig
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import BaseGraphQLTransportWSHandler

from components.config import CloudflareConfig
from components.public_ingress import tunnel_ingress
from scripts.servers import free_port
from tests.support.kafka_admin import wait_until

HOST = "127.0.0.1"
# Hasura's answers (App.hs): admin-only endpoints without the admin secret, and its catch-all
ACCESS_DENIED = {"path": "$", "error": "restricted access : admin only", "code": "access-denied"}
NOT_FOUND = {"path": "$", "error": "resource does not exist", "code": "not-found"}
ADMIN_POST = ("/v1/metadata", "/v1/query", "/v2/query", "/v1/graphql/explain", "/v1alpha1/graphql/explain",
              "/v1alpha1/pg_dump")


@dataclass
class Behaviour:
    outcome: str = "completed"  # the async request's final status
    ack_delay: float = 0.0  # >0: graphql-transport-ws acks that much later, handling messages meanwhile
    null_payloads: bool = False  # connection_ack and a server ping carry "payload": null (allowed by the spec)
    graphql_answer: tuple[int, dict] | None = None  # every POST /v1/graphql answered with this (status, body)
    submit_answer: tuple[int, str] | None = None  # the publish mutation answered with this (status, text)
    ingress: list[dict] | None = None  # the tunnel's rules; default: the program's own
    cache_status: dict[str, str] = field(default_factory=lambda: {"POST": "DYNAMIC", "GET": "DYNAMIC"})
    headers: dict[str, str] = field(default_factory=dict)  # added to every answer of the origin
    refuse_ws: bool = False  # the edge refuses WebSocket upgrades


def program_ingress(host: str = HOST) -> list[dict]:
    cf = CloudflareConfig(account_id="a", zone_id="z", tunnel_name="t")
    return tunnel_ingress(host, cf, "http://hasura.graphql.svc.cluster.local:8080")


# ------------------------------------------------------------------ the GraphQL server (strawberry)

Json = strawberry.scalar(NewType("json", object), name="json", serialize=lambda v: v, parse_value=lambda v: v)
Timestamptz = strawberry.scalar(NewType("timestamptz", str), name="timestamptz", serialize=str, parse_value=str)


@strawberry.enum(name="cursor_ordering")
class CursorOrdering(Enum):
    ASC = "ASC"
    DESC = "DESC"


@strawberry.input(name="graphql_client_async_messages_stream_cursor_value_input")
class CursorValue:
    updated_at: Timestamptz | None = None


@strawberry.input(name="graphql_client_async_messages_stream_cursor_input")
class CursorInput:
    initial_value: CursorValue
    ordering: CursorOrdering | None = None


@strawberry.input(name="String_comparison_exp")
class StringComparison:
    eq: str | None = strawberry.field(name="_eq", default=None)


@strawberry.input(name="graphql_client_async_messages_bool_exp")
class MessagesBoolExp:
    request_id: StringComparison | None = None


@strawberry.type(name="graphql_client_async_messages")
class Message:
    request_id: str
    status: str


@strawberry.type(name="PublishAsyncRequestOutput")
class Published:
    request_id: str
    status: str


def schema(behaviour: Behaviour) -> strawberry.Schema:
    submitted: dict[str, asyncio.Event] = {}

    @strawberry.type
    class Query:
        @strawberry.field
        def ok(self) -> bool:
            return True

    @strawberry.type
    class Mutation:
        @strawberry.mutation
        def publish_async_request(self, input: Json) -> Published:  # noqa: A002 - Hasura's argument name
            request_id = input["request_id"]
            submitted.setdefault(request_id, asyncio.Event())
            return Published(request_id=request_id, status="published")

    @strawberry.type
    class Subscription:
        @strawberry.subscription
        async def graphql_client_async_messages_stream(
                self, batch_size: int, cursor: list[CursorInput],
                where: MessagesBoolExp | None = None) -> AsyncGenerator[list[Message], None]:
            request_id = where.request_id.eq if where and where.request_id else None
            if request_id not in submitted:
                yield []
                return
            yield [Message(request_id=request_id, status="published")]
            await asyncio.sleep(0.05)
            yield [Message(request_id=request_id, status=behaviour.outcome)]
            await asyncio.Event().wait()  # a stream stays open until the client leaves

    return strawberry.Schema(Query, Mutation, Subscription, config=StrawberryConfig(auto_camel_case=False))


class LateAckHandler(BaseGraphQLTransportWSHandler):
    """graphql-transport-ws as the reference server (enisdenjo/graphql-ws src/server.ts) runs it: each message is
    handled as it arrives, so a subscribe sent while an asynchronous onConnect is still running finds the
    connection unacknowledged and the socket is closed with 4401."""

    ack_delay = 0.0
    null_payloads = False

    async def handle_message(self, message) -> None:
        if message.get("type") == "connection_init" and self.ack_delay:
            self.init_task = asyncio.create_task(super().handle_message(message))
            return
        await super().handle_message(message)

    async def send_message(self, message) -> None:
        await super().send_message(message)
        if self.null_payloads and message.get("type") == "connection_ack":
            await super().send_message({"type": "ping", "payload": None})


def graphql_app(behaviour: Behaviour) -> GraphQL:
    handler = type("Handler", (LateAckHandler,), {"ack_delay": behaviour.ack_delay,
                                                  "null_payloads": behaviour.null_payloads})

    class App(GraphQL):
        graphql_transport_ws_handler_class = handler

        async def on_ws_connect(self, context: dict[str, Any]):
            if behaviour.ack_delay:
                await asyncio.sleep(behaviour.ack_delay)  # e.g. a JWT check against a key set
            return None if behaviour.null_payloads else await super().on_ws_connect(context)

    return App(schema(behaviour), graphql_ide=None)


# ------------------------------------------------------------------ Hasura's routes around it


def origin(behaviour: Behaviour) -> Starlette:
    graphql = graphql_app(behaviour)

    class GraphQLHttp:  # an ASGI app (a class instance): Starlette's Route passes scope, receive, send
        async def __call__(self, scope, receive, send) -> None:
            await graphql_http(scope, receive, send)

    async def graphql_http(scope, receive, send) -> None:
        request = Request(scope, receive)
        override = behaviour.graphql_answer
        if request.method == "POST" and (override or behaviour.submit_answer):
            body = await request.body()
            if behaviour.submit_answer and b"publish_async_request" in body:
                status, text = behaviour.submit_answer
                await PlainTextResponse(text, status)(scope, receive, send)
                return
            if override:
                await JSONResponse(override[1], override[0])(scope, receive, send)
                return

            async def replay():
                return {"type": "http.request", "body": body, "more_body": False}

            receive = replay
        await graphql(scope, receive, send)

    async def admin(_: Request) -> Response:
        return JSONResponse(ACCESS_DENIED, 400)

    async def healthz(_: Request) -> Response:
        return PlainTextResponse("OK")

    async def version(_: Request) -> Response:
        return JSONResponse({"version": "v2.45.8"})

    async def not_found(_: Request, __: Exception) -> Response:
        return JSONResponse(NOT_FOUND, 404)

    app = Starlette(
        routes=[Route("/v1/graphql", GraphQLHttp(), methods=["GET", "POST"]), WebSocketRoute("/v1/graphql", graphql),
                Route("/v1alpha1/graphql", GraphQLHttp(), methods=["POST"]),
                Route("/v1beta1/relay", GraphQLHttp(), methods=["POST"]),
                *(Route(path, admin, methods=["POST"]) for path in ADMIN_POST),
                Route("/v1alpha1/config", admin), Route("/healthz", healthz), Route("/v1/version", version)],
        exception_handlers={404: not_found, 405: not_found})
    app.router.redirect_slashes = False  # Hasura answers a path it has no route for with 404, not a redirect
    return app


# ------------------------------------------------------------------ the edge


def matching_rule(rules: list[dict], host: str, path: str) -> dict:
    """cloudflared: the first rule whose hostname (no port) matches and whose path regex matches anywhere."""
    hostname = host.rsplit(":", 1)[0]
    for rule in rules:
        if rule.get("hostname", hostname) == hostname and re.search(rule.get("path") or "", path):
            return rule
    raise AssertionError("ingress rules must end with a catch-all")


def edge(behaviour: Behaviour):
    rules = behaviour.ingress if behaviour.ingress is not None else program_ingress()
    app = origin(behaviour)

    async def tunnel(scope, receive, send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await app(scope, receive, send)
            return
        host = dict(scope["headers"]).get(b"host", b"").decode()
        rule = matching_rule(rules, host, scope["path"])
        at_edge = rule["service"].startswith("http_status:")
        if scope["type"] == "websocket":
            if at_edge or behaviour.refuse_ws:
                await receive()  # websocket.connect
                await send({"type": "websocket.close", "code": 1008})
                return
            await app(scope, receive, send)
            return
        status = behaviour.cache_status.get(scope["method"], "DYNAMIC")
        extra = [(b"cf-cache-status", status.encode())]
        if status in ("HIT", "STALE"):
            extra.append((b"age", b"12"))

        async def edge_send(message) -> None:
            if message["type"] == "http.response.start":
                headers = [*message.get("headers", []), *extra]
                if not at_edge:
                    headers += [(k.lower().encode(), v.encode()) for k, v in behaviour.headers.items()]
                message = {**message, "headers": headers}
            await send(message)

        if at_edge:
            await Response(status_code=int(rule["service"].split(":")[1]))(scope, receive, edge_send)
        else:
            await app(scope, receive, edge_send)

    return tunnel


@contextlib.contextmanager
def serving(behaviour: Behaviour | None = None):
    """The stand-in edge on a loopback port; yields its /v1/graphql URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(edge(behaviour or Behaviour()), host=HOST, port=port, log_config=None,
                                           ws="websockets-sansio", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until(lambda: server.started, what="stand-in edge")
    try:
        yield f"http://{HOST}:{port}/v1/graphql"
    finally:
        server.should_exit = True
        thread.join(10)
