"""Run the real publisher (uvicorn on a loopback port) and writer (thread) inside the test process."""

from __future__ import annotations

import contextlib
import threading

import httpx
import uvicorn

from app.publisher import create_app
from app.settings import ACTION_NAME, ACTION_SECRET_HEADER, PublisherSettings, WriterSettings
from app.writer import ResponseWriter
from scripts.servers import free_port
from tests.support.kafka_admin import wait_until


@contextlib.contextmanager
def running_publisher(settings: PublisherSettings):
    """Yields (base_url, app); stops with uvicorn's graceful shutdown, as SIGTERM would."""
    port = free_port()
    app = create_app(settings)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False,
                                           lifespan="on", timeout_keep_alive=settings.publisher_keep_alive_seconds))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until(lambda: server.started, timeout=30, what="publisher start")
    try:
        yield f"http://127.0.0.1:{port}", app
    finally:
        server.should_exit = True
        thread.join(30)


@contextlib.contextmanager
def running_writer(settings: WriterSettings, writer_class=ResponseWriter):
    writer = writer_class(settings)
    failure: list[BaseException] = []

    def run() -> None:
        try:
            writer.run()
        except BaseException as exc:  # noqa: BLE001 - surfaced to the test below
            failure.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield writer, failure
    finally:
        writer.stop_event.set()
        thread.join(60)


def action_body(input_: dict, role: str = "user", user_id: str | None = "user-1") -> dict:
    session = {"x-hasura-role": role}
    if user_id is not None:
        session["x-hasura-user-id"] = user_id
    return {"action": {"name": ACTION_NAME}, "input": {"input": input_}, "session_variables": session,
            "request_query": "mutation { publish_async_request(input: $input) { request_id } }"}


def call_action(base_url: str, secret: str | None, body: dict, headers: dict | None = None) -> httpx.Response:
    sent = dict(headers or {})
    if secret is not None:
        sent[ACTION_SECRET_HEADER] = secret
    return httpx.post(f"{base_url}/action/{ACTION_NAME}", json=body, headers=sent, timeout=30)
