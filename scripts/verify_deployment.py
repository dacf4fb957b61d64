"""Post-deploy verification: does the public endpoint answer as the README promises?

    python -m scripts.verify_deployment --url https://graphql.example.com/v1/graphql [--token-file F]

Checks, each printed as one line, exit 1 if any fails:
  graphql-post        POST /v1/graphql answers a GraphQL result (JSON with data or errors), not from a cache
  ws graphql-transport-ws / ws graphql-ws
                      a WebSocket on the same URL completes connection_init -> connection_ack in both subprotocols
  other paths         every other path answers 404 at the edge
  round trip          (with a service token) publish_async_request reaches completed through a streaming
                      subscription within --round-trip-seconds
The stack runs it as a pulumi-command resource after the edge, Hasura and the async flow (components/verify.py).
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
from urllib.parse import urlsplit, urlunsplit

import httpx
import websockets

SUBPROTOCOLS = ("graphql-transport-ws", "graphql-ws")
CACHE_HITS = {"HIT", "STALE", "UPDATING", "REVALIDATED", "EXPIRED"}


@dataclass(frozen=True)
class VerifySettings:
    graphql_url: str
    timeout_seconds: float = 10.0
    other_paths: tuple[str, ...] = ("/", "/v1/metadata", "/v2/query", "/console", "/healthz")
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


def websocket_url(graphql_url: str) -> str:
    parts = urlsplit(graphql_url)
    return urlunsplit(("wss" if parts.scheme == "https" else "ws", *parts[1:]))


def _headers(settings: VerifySettings) -> dict[str, str]:
    return {"Authorization": f"Bearer {settings.service_token}"} if settings.service_token else {}


def check_graphql_post(settings: VerifySettings) -> Check:
    answer = httpx.post(settings.graphql_url, json={"query": "query { __typename }"}, headers=_headers(settings),
                        timeout=settings.timeout_seconds)
    try:
        body = answer.json()
    except ValueError:
        return Check("graphql-post", False, f"HTTP {answer.status_code}, not JSON")
    if not isinstance(body, dict) or not ({"data", "errors"} & set(body)):
        return Check("graphql-post", False, f"HTTP {answer.status_code}, not a GraphQL result")
    cache = answer.headers.get("cf-cache-status", "").upper()
    if cache in CACHE_HITS or "age" in answer.headers:
        return Check("graphql-post", False, f"served from a cache (cf-cache-status={cache or '-'}, "
                                            f"age={answer.headers.get('age', '-')})")
    return Check("graphql-post", True, f"HTTP {answer.status_code}, cf-cache-status={cache or '-'}")


async def _handshake(settings: VerifySettings, subprotocol: str) -> Check:
    name = f"ws {subprotocol}"
    try:
        async with asyncio.timeout(settings.timeout_seconds):
            async with websockets.connect(websocket_url(settings.graphql_url), subprotocols=[subprotocol],
                                          additional_headers=_headers(settings)) as socket:
                if socket.subprotocol != subprotocol:
                    return Check(name, False, f"server chose {socket.subprotocol!r}")
                await socket.send(json.dumps({"type": "connection_init", "payload": {"headers": _headers(settings)}}))
                while True:
                    message = json.loads(await socket.recv())
                    if message.get("type") == "connection_ack":
                        return Check(name, True, "connection_ack")
                    if message.get("type") in ("ka", "ping"):  # keep-alives may come first
                        continue
                    return Check(name, False, f"got {message.get('type')!r} instead of connection_ack")
    except TimeoutError:
        return Check(name, False, f"no connection_ack within {settings.timeout_seconds:g}s")
    except (websockets.WebSocketException, OSError) as exc:
        return Check(name, False, f"handshake refused: {type(exc).__name__}: {str(exc)[:120]}")


def check_other_paths(settings: VerifySettings) -> Check:
    parts = urlsplit(settings.graphql_url)
    wrong = []
    for path in settings.other_paths:
        url = urlunsplit((parts.scheme, parts.netloc, path, "", ""))
        status = httpx.get(url, timeout=settings.timeout_seconds).status_code
        if status != 404:
            wrong.append(f"{path} -> {status}")
    return Check("other paths 404", not wrong, ", ".join(wrong) or ", ".join(settings.other_paths))


SUBMIT = ("mutation Submit($input: json!) { publish_async_request(input: $input) { request_id status } }")
FOLLOW = ("subscription Follow($id: String!) { graphql_client_async_messages_stream(batch_size: 1, "
          "cursor: {initial_value: {updated_at: \"1970-01-01T00:00:00Z\"}, ordering: ASC}, "
          "where: {request_id: {_eq: $id}}) { request_id status } }")


async def _round_trip(settings: VerifySettings) -> Check:
    request_id = f"verify-{uuid.uuid4().hex}"
    answer = httpx.post(settings.graphql_url, headers=_headers(settings), timeout=settings.timeout_seconds, json={
        "query": SUBMIT, "variables": {"input": {"request_id": request_id, "handler": settings.handler,
                                                 "operation": settings.operation, "payload": {}}}})
    submitted = answer.json().get("data", {}) or {}
    if not submitted.get("publish_async_request"):
        return Check("round trip", False, f"submit failed: {json.dumps(answer.json())[:200]}")
    try:
        async with asyncio.timeout(settings.round_trip_seconds):
            async with websockets.connect(websocket_url(settings.graphql_url), subprotocols=["graphql-transport-ws"],
                                          additional_headers=_headers(settings)) as socket:
                await socket.send(json.dumps({"type": "connection_init", "payload": {"headers": _headers(settings)}}))
                await socket.send(json.dumps({"id": "1", "type": "subscribe",
                                              "payload": {"query": FOLLOW, "variables": {"id": request_id}}}))
                while True:
                    message = json.loads(await socket.recv())
                    if message.get("type") == "ping":
                        await socket.send(json.dumps({"type": "pong"}))
                    if message.get("type") == "error":
                        return Check("round trip", False, f"subscription error: {json.dumps(message)[:200]}")
                    rows = (message.get("payload", {}).get("data") or {}).get("graphql_client_async_messages_stream")
                    for row in rows or []:
                        if row["status"] in ("completed", "failed"):
                            return Check("round trip", row["status"] == "completed", f"{request_id}: {row['status']}")
    except TimeoutError:
        return Check("round trip", False, f"{request_id} not completed within {settings.round_trip_seconds:g}s")
    except (websockets.WebSocketException, OSError) as exc:
        return Check("round trip", False, f"subscription failed: {type(exc).__name__}")


def verify(settings: VerifySettings) -> Report:
    report = Report()
    for check in (check_graphql_post, check_other_paths):
        try:
            report.checks.append(check(settings))
        except httpx.HTTPError as exc:
            report.checks.append(Check(check.__name__.removeprefix("check_"), False, f"{type(exc).__name__}"))
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
