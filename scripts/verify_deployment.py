"""Post-deploy verification: does the public endpoint answer as the README promises?

    venv/bin/python -m scripts.verify_deployment --url https://graphql.example.com/v1/graphql [--token-env VAR]

Checks, each printed as one line, exit 1 if any fails (a broken answer is a FAIL line, never a traceback):
  graphql-post        POST /v1/graphql answers HTTP 200 with a GraphQL result that has data and no errors
                      (Hasura answers GraphQL errors with HTTP 200, so the status alone proves nothing)
  not cached          the POST answer and a GET /v1/graphql both say cf-cache-status DYNAMIC or BYPASS, carry no
                      Age and no cacheable Cache-Control (Cloudflare never caches POST: only the GET can show a
                      missing bypass rule)
  ws graphql-transport-ws / ws graphql-ws
                      a WebSocket on the same URL completes connection_init -> connection_ack in both subprotocols
  other paths 404     Hasura's admin APIs, each probed with the method that would reach it (POST for
                      /v1/metadata, /v1/query, /v2/query, /v1/graphql/explain, ...), and every other path answer
                      404 at the edge
  round trip          (with a service token) publish_async_request reaches completed through a streaming
                      subscription within --round-trip-seconds; the subscription is sent only after
                      connection_ack, as graphql-transport-ws requires
The stack runs it as a pulumi-command resource after the edge, Hasura and the async flow (components/verify.py),
with the project's virtualenv interpreter. The probes carry no credentials and change nothing: admin paths get
an empty JSON body, which Hasura refuses before doing anything.

graphql-transport-ws: enisdenjo/graphql-ws PROTOCOL.md (operations only after ConnectionAck, else 4401;
`payload` of ack/ping/pong optional and nullable). graphql-ws: the Apollo subscriptions-transport-ws protocol
(`ka` keep-alives, `connection_error`). Hasura's routes and its 200-for-GraphQL-errors: hasura/graphql-engine,
server/src-lib/Hasura/Server/App.hs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import websockets

SUBPROTOCOLS = ("graphql-transport-ws", "graphql-ws")
# what Cloudflare says of an answer it did not take from, and will not put in, its cache
NOT_CACHED = {"DYNAMIC", "BYPASS"}
TYPENAME = "query { __typename }"
# Hasura's admin and internal endpoints, with the method that reaches each, and paths that are not Hasura's at all
PROBES: tuple[tuple[str, str], ...] = (
    ("POST", "/v1/metadata"), ("POST", "/v1/query"), ("POST", "/v2/query"),
    ("POST", "/v1/graphql/explain"), ("POST", "/v1alpha1/graphql/explain"), ("POST", "/v1alpha1/pg_dump"),
    ("POST", "/v1alpha1/graphql"), ("POST", "/v1beta1/relay"), ("POST", "/v1/graphql/explain/"),
    ("GET", "/v1alpha1/config"), ("GET", "/v1/version"), ("GET", "/healthz"), ("GET", "/console"),
    ("GET", "/"),
)


@dataclass(frozen=True)
class VerifySettings:
    graphql_url: str
    timeout_seconds: float = 10.0
    probes: tuple[tuple[str, str], ...] = PROBES
    service_token: str | None = None
    round_trip_seconds: float = 60.0
    handler: str = "verify-deployment"
    operation: str = "ping"


@dataclass
class Check:
    name: str
    ok: bool
    detail: str = ""


@dataclass
class Report:
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks)


class Failed(Exception):
    """A check's verdict: the answer was not what a working deployment gives."""


def websocket_url(graphql_url: str) -> str:
    parts = urlsplit(graphql_url)
    return urlunsplit(("wss" if parts.scheme == "https" else "ws", *parts[1:]))


def _headers(settings: VerifySettings) -> dict[str, str]:
    return {"Authorization": f"Bearer {settings.service_token}"} if settings.service_token else {}


def _object(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def _short(value: Any) -> str:
    return json.dumps(value)[:200]


def graphql_result(answer: httpx.Response) -> dict:
    """The `data` of a successful GraphQL answer; Failed for anything else, whatever the status says."""
    try:
        body = answer.json()
    except ValueError:
        raise Failed(f"HTTP {answer.status_code}, not JSON") from None
    if not isinstance(body, dict) or not ({"data", "errors"} & set(body)):
        raise Failed(f"HTTP {answer.status_code}, not a GraphQL result")
    if body.get("errors"):
        raise Failed(f"HTTP {answer.status_code}, GraphQL errors: {_short(body['errors'])}")
    if answer.status_code != 200:
        raise Failed(f"HTTP {answer.status_code}")
    if not isinstance(body.get("data"), dict):
        raise Failed(f"HTTP {answer.status_code}, no data")
    return body["data"]


def cacheable(cache_control: str) -> bool:
    """Would a shared cache keep this answer? (RFC 9111: public, or a positive max-age / s-maxage)."""
    directives: dict[str, str] = {}
    for part in cache_control.lower().split(","):
        name, _, value = part.strip().partition("=")
        if name:
            directives[name] = value.strip().strip('"')
    # a field-named no-cache ("no-cache=Set-Cookie") still lets the rest be stored (RFC 9111 5.2.2.4)
    if {"no-store", "private"} & set(directives) or directives.get("no-cache") == "":
        return False
    # a shared cache takes s-maxage over max-age (RFC 9111 5.2.2.10)
    age = directives.get("s-maxage", directives.get("max-age"))
    if age is not None:
        return not age.isdigit() or int(age) > 0
    return "public" in directives


def cache_problem(label: str, answer: httpx.Response) -> str | None:
    status = answer.headers.get("cf-cache-status", "").upper()
    control = answer.headers.get("cache-control", "")
    if status not in NOT_CACHED:
        return f"{label} cf-cache-status={status or '-'} (want DYNAMIC or BYPASS)"
    if "age" in answer.headers:
        return f"{label} age={answer.headers['age']}"
    if cacheable(control):
        return f"{label} cache-control={control!r} is cacheable"
    return None


def check_graphql_post(settings: VerifySettings, client: httpx.Client) -> list[Check]:
    """POST is the GraphQL answer itself; its headers and a GET's show whether the edge caches /v1/graphql."""
    answer = client.post(settings.graphql_url, json={"query": TYPENAME}, headers=_headers(settings))
    try:
        typename = graphql_result(answer).get("__typename")
        post = (Check("graphql-post", True, f"HTTP 200, __typename={typename}") if isinstance(typename, str)
                else Check("graphql-post", False, "HTTP 200, no __typename in data"))
    except Failed as failed:
        post = Check("graphql-post", False, str(failed))
    fetched = client.get(settings.graphql_url, params={"query": TYPENAME}, headers=_headers(settings))
    problems = [p for p in (cache_problem("POST", answer), cache_problem("GET", fetched)) if p]
    return [post, Check("not cached", not problems, "; ".join(problems) or
                        f"POST {answer.headers['cf-cache-status']}, GET {fetched.headers['cf-cache-status']}")]


def check_other_paths(settings: VerifySettings, client: httpx.Client) -> list[Check]:
    parts = urlsplit(settings.graphql_url)
    wrong = []
    for method, path in settings.probes:
        url = urlunsplit((parts.scheme, parts.netloc, path, "", ""))
        status = client.request(method, url, json={} if method == "POST" else None).status_code
        if status != 404:
            wrong.append(f"{method} {path} -> {status}")
    return [Check("other paths 404", not wrong,
                  ", ".join(wrong) or f"{len(settings.probes)} probes, each 404")]


async def _receive(socket) -> dict:
    message = json.loads(await socket.recv())
    if not isinstance(message, dict):
        raise Failed(f"not a protocol message: {_short(message)}")
    return message


async def _acknowledged(socket, settings: VerifySettings) -> None:
    """connection_init, then wait for connection_ack (answering pings, skipping keep-alives)."""
    await socket.send(json.dumps({"type": "connection_init", "payload": {"headers": _headers(settings)}}))
    while True:
        message = await _receive(socket)
        kind = message.get("type")
        if kind == "connection_ack":
            return
        # each protocol's own keep-alives only: graphql-transport-ws ping/pong (PROTOCOL.md; a `ka` there is
        # an unknown type the graphql-ws server would close with 4400), the legacy graphql-ws `ka`
        transport_ws = socket.subprotocol == "graphql-transport-ws"
        if kind == "ping" and transport_ws:  # answer at once, payload optional
            await socket.send(json.dumps({"type": "pong"}))
        elif not ((transport_ws and kind == "pong") or (not transport_ws and kind == "ka")):
            raise Failed(f"got {kind!r} instead of connection_ack: {_short(message)}")


def _closed(exc: websockets.ConnectionClosed) -> str:
    frame = exc.rcvd or exc.sent
    return f"closed {frame.code} {frame.reason}".strip() if frame else "closed without a close frame"


async def _handshake(settings: VerifySettings, subprotocol: str) -> Check:
    name = f"ws {subprotocol}"
    try:
        async with asyncio.timeout(settings.timeout_seconds):
            async with websockets.connect(websocket_url(settings.graphql_url), subprotocols=[subprotocol],
                                          additional_headers=_headers(settings)) as socket:
                if socket.subprotocol != subprotocol:
                    return Check(name, False, f"server chose {socket.subprotocol!r}")
                await _acknowledged(socket, settings)
                return Check(name, True, "connection_ack")
    except TimeoutError:
        return Check(name, False, f"no connection_ack within {settings.timeout_seconds:g}s")
    except Failed as failed:
        return Check(name, False, str(failed))
    except websockets.ConnectionClosed as exc:
        return Check(name, False, f"before connection_ack: {_closed(exc)}")
    except ValueError:
        return Check(name, False, "a message that is not JSON")
    except (websockets.WebSocketException, OSError) as exc:
        return Check(name, False, f"handshake refused: {type(exc).__name__}: {str(exc)[:120]}")


SUBMIT = ("mutation Submit($input: json!) { publish_async_request(input: $input) { request_id status } }")
FOLLOW = ("subscription Follow($id: String!) { graphql_client_async_messages_stream(batch_size: 1, "
          "cursor: {initial_value: {updated_at: \"1970-01-01T00:00:00Z\"}, ordering: ASC}, "
          "where: {request_id: {_eq: $id}}) { request_id status } }")


async def _submit(settings: VerifySettings, request_id: str) -> None:
    async with httpx.AsyncClient(timeout=settings.timeout_seconds) as client:
        answer = await client.post(settings.graphql_url, headers=_headers(settings), json={
            "query": SUBMIT, "variables": {"input": {"request_id": request_id, "handler": settings.handler,
                                                     "operation": settings.operation, "payload": {}}}})
    try:
        data = graphql_result(answer)
    except Failed as failed:
        raise Failed(f"submit failed: {failed}") from None
    if not isinstance(data.get("publish_async_request"), dict):
        raise Failed(f"submit failed: {_short(data)}")


async def _follow(settings: VerifySettings, request_id: str) -> str:
    """The request's final status, read from a graphql-transport-ws streaming subscription."""
    async with websockets.connect(websocket_url(settings.graphql_url), subprotocols=["graphql-transport-ws"],
                                  additional_headers=_headers(settings)) as socket:
        await _acknowledged(socket, settings)
        await socket.send(json.dumps({"id": "1", "type": "subscribe",
                                      "payload": {"query": FOLLOW, "variables": {"id": request_id}}}))
        while True:
            message = await _receive(socket)
            kind = message.get("type")
            if kind == "ping":
                await socket.send(json.dumps({"type": "pong"}))
                continue
            if message.get("id") != "1":
                continue  # pong, or anything not about our operation
            if kind == "error":
                raise Failed(f"subscription error: {_short(message.get('payload'))}")
            if kind == "complete":
                raise Failed("subscription completed before the request did")
            payload = _object(message.get("payload"))
            if payload.get("errors"):
                raise Failed(f"subscription errors: {_short(payload['errors'])}")
            rows = _object(payload.get("data")).get("graphql_client_async_messages_stream")
            for row in rows if isinstance(rows, list) else []:
                status = _object(row).get("status")
                if status in ("completed", "failed"):
                    return status


async def _round_trip(settings: VerifySettings) -> Check:
    request_id = f"verify-{uuid.uuid4().hex}"
    try:
        async with asyncio.timeout(settings.round_trip_seconds):
            await _submit(settings, request_id)
            status = await _follow(settings, request_id)
        return Check("round trip", status == "completed", f"{request_id}: {status}")
    except TimeoutError:
        return Check("round trip", False, f"{request_id} not completed within {settings.round_trip_seconds:g}s")
    except Failed as failed:
        return Check("round trip", False, str(failed))
    except websockets.ConnectionClosed as exc:
        return Check("round trip", False, f"subscription {_closed(exc)}")
    except ValueError:
        return Check("round trip", False, "subscription sent a message that is not JSON")
    except (httpx.HTTPError, websockets.WebSocketException, OSError) as exc:
        return Check("round trip", False, f"{type(exc).__name__}: {str(exc)[:120]}")


def verify(settings: VerifySettings) -> Report:
    report = Report()
    with httpx.Client(timeout=settings.timeout_seconds) as client:
        for check, names in ((check_graphql_post, ("graphql-post", "not cached")),
                             (check_other_paths, ("other paths 404",))):
            try:
                report.checks += check(settings, client)
            except httpx.HTTPError as exc:
                report.checks += [Check(name, False, f"{type(exc).__name__}: {str(exc)[:120]}") for name in names]
    for subprotocol in SUBPROTOCOLS:
        report.checks.append(asyncio.run(_handshake(settings, subprotocol)))
    if settings.service_token:
        report.checks.append(asyncio.run(_round_trip(settings)))
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="the public GraphQL URL (https://host/v1/graphql)")
    parser.add_argument("--timeout", type=float, default=10.0)
    parser.add_argument("--token-file", type=Path, help="a service token (role service) for the round trip")
    parser.add_argument("--token-env", help="the name of an environment variable holding that token")
    parser.add_argument("--round-trip-seconds", type=float, default=60.0)
    args = parser.parse_args(argv)
    token = args.token_file.read_text().strip() if args.token_file else None
    if args.token_env:
        token = os.environ.get(args.token_env) or None
    report = verify(VerifySettings(args.url, args.timeout, service_token=token,
                                   round_trip_seconds=args.round_trip_seconds))
    for check in report.checks:
        print(f"{'ok  ' if check.ok else 'FAIL'} {check.name}: {check.detail}")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
