"""Hasura action handler for `publish_async_request`: store a pending row, publish the request envelope.

    POST /action/publish_async_request   the action (Hasura calls it with the shared secret header)
    GET  /healthz                        liveness
    GET  /readyz                         the database answers
    GET  /metrics                        Prometheus metrics, on METRICS_PORT (app/metrics.py)
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hmac
import logging
import time
from typing import Any

from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from app import logs, metrics, store
from app.db import async_pool, is_database_unavailable, is_value_error, lazy_commit_pool
from app.envelope import (
    ActionRefusal,
    AsyncRequest,
    PublishLimits,
    isoformat,
    parse_action_body,
    parse_action_call,
    request_message,
)
from app.group_commit import PendingInserter
from app.kafka_io import AsyncProducer, kafka_error, producer_config
from app.outbox import OutboxRelay
from app.settings import ACTION_NAME, ACTION_SECRET_HEADER, RELAY_SETTLE_SECONDS, PublisherSettings
from app.shutdown import ShutdownBudget

log = logging.getLogger("app.publisher")


def action_output(row: dict[str, Any], duplicate: bool) -> dict[str, Any]:
    """The action's output type `PublishAsyncRequestOutput`."""
    return {
        "request_id": row["request_id"],
        "client_id": row["client_id"],
        "status": row["status"],
        "duplicate": duplicate,
        "created_at": isoformat(row["created_at"]),
        "expires_at": isoformat(row["expires_at"]),
    }


class PublishedMarker:
    """Marks rows `published` in batches: ids gather for `linger_seconds` (or until `max_rows`), one UPDATE
    in flight at a time. The mark is bookkeeping, not a guarantee: a row left unmarked (a failed UPDATE, a
    crash) is published again by the relay, so the answer never waits for it and fewer, larger UPDATEs
    leave the database's commits to the inserts that clients wait for. `pool` is db.lazy_commit_pool: each
    mark is one statement whose commit does not wait for the WAL flush (a mark lost in a crash only makes
    the relay publish the row again)."""

    def __init__(self, pool, in_flight: set[str], *, linger_seconds: float, max_rows: int = 1000):
        self._pool, self._in_flight = pool, in_flight
        self._linger, self._max_rows = linger_seconds, max_rows
        self._waiting: list[str] = []
        self._wakeup = asyncio.Event()
        self._stopping = False

    def add(self, request_id: str) -> None:
        """Kafka acked this row's envelope."""
        self._waiting.append(request_id)
        self._wakeup.set()

    def stop(self) -> None:
        """run_forever marks what is waiting, without lingering, and returns."""
        self._stopping = True
        self._wakeup.set()

    async def run_forever(self) -> None:
        while True:
            await self._wakeup.wait()
            if self._linger and not self._stopping and len(self._waiting) < self._max_rows:
                await asyncio.sleep(self._linger)  # let more acks join this UPDATE
            self._wakeup.clear()
            batch, self._waiting = self._waiting[:self._max_rows], self._waiting[self._max_rows:]
            if self._waiting:
                self._wakeup.set()
            if batch:
                await self._mark(batch)
            if self._stopping and not self._waiting:
                return

    async def _mark(self, batch: list[str]) -> None:
        try:
            async with self._pool.connection() as conn:
                await store.mark_published(conn, batch)
        except Exception as exc:  # noqa: BLE001 - the relay publishes unmarked rows again after its grace period
            log.warning("published but not marked; the relay may publish again",
                        extra={"rows": len(batch), "error": type(exc).__name__})
        finally:
            self._in_flight.difference_update(batch)


class Publisher:
    """The handler's state: pool, producer, the set of request_ids this process is publishing."""

    def __init__(self, settings: PublisherSettings):
        self.settings = settings
        self.limits = PublishLimits(settings.max_payload_bytes, settings.default_expires_in_seconds,
                                    settings.max_expires_in_seconds, max_envelope_bytes=settings.max_envelope_bytes,
                                    max_body_bytes=settings.max_body_bytes, max_json_depth=settings.max_json_depth)
        self.pool = async_pool(settings)
        self.mark_pool = lazy_commit_pool(settings)  # the published marks' own session (PublishedMarker)
        self.in_flight: set[str] = set()  # published by this process, not yet marked: the relay skips them
        self._deliveries: set[asyncio.Future] = set()
        self.producer: AsyncProducer | None = None
        self.relay: OutboxRelay | None = None
        self.marker = PublishedMarker(self.mark_pool, self.in_flight,
                                      linger_seconds=settings.published_mark_linger_ms / 1000)
        self.inserter = PendingInserter(self.pool, max_rows=settings.group_commit_max_rows,
                                        window_seconds=settings.group_commit_window_ms / 1000,
                                        max_in_flight=settings.group_commit_max_in_flight)
        self.metrics = metrics.PublisherMetrics()
        self._metrics_server = None
        self._background: list[asyncio.Task] = []
        self.last_shutdown: ShutdownBudget | None = None  # each phase's duration, for the logs and tests

    async def start(self) -> None:
        await self.pool.open(wait=False)
        await self.mark_pool.open(wait=False)
        self.producer = AsyncProducer(
            producer_config(self.settings.client_config(), self.settings.publish_timeout_seconds),
            asyncio.get_running_loop())
        self.relay = OutboxRelay(
            self.pool, self.producer, topic=self.settings.async_requests_topic,
            reply_topic=self.settings.async_responses_topic, in_flight=self.in_flight,
            grace_seconds=self.settings.relay_grace_seconds, batch_size=self.settings.relay_batch_size,
            interval_seconds=self.settings.relay_interval_seconds, metrics=self.metrics)
        if self.settings.metrics_port:
            self._metrics_server = metrics.serve(self.metrics.registry, self.settings.metrics_port,
                                                 self.settings.publisher_host, ports=self.settings.publisher_processes)
        self._background = [asyncio.create_task(self.relay.run_forever(), name="outbox-relay"),
                            asyncio.create_task(self.marker.run_forever(), name="published-marker"),
                            asyncio.create_task(self.inserter.run_forever(), name="group-commit"),
                            asyncio.create_task(self._scan_outbox_forever(), name="outbox-scan")]
        log.info("publisher started", extra={"topic": self.settings.async_requests_topic})

    async def stop(self) -> None:
        """Graceful shutdown within SHUTDOWN_TIMEOUT_SECONDS: let the relay finish its pass (sends settled, claims
        marked), let in-flight publishes settle, flush, mark, close the pools. Each phase waits only for what is
        left of the budget, so the pod is never killed mid-way. Cancelling a pass mid-way would roll its claim
        back after the producer had sent the rows: the next pass would publish them twice, hence the wait."""
        budget = ShutdownBudget(self.settings.shutdown_timeout_seconds)
        wait = self.settings.publish_timeout_seconds
        relay, marker, inserter, scan = self._background or (None, None, None, None)
        try:
            if scan:
                scan.cancel()
                await budget.finish("outbox-scan", scan)
            if relay:
                self.relay.stop()
                await budget.finish("outbox-relay", relay, wait + RELAY_SETTLE_SECONDS)
            if self._deliveries:  # in-flight publishes still get marked before the marker stops
                with budget.timing("deliveries"):
                    await asyncio.wait(self._deliveries, timeout=budget.remaining(wait))
            if inserter:  # batches under way finish first (the inserter drains on cancel)
                inserter.cancel()
                await budget.finish("group-commit", inserter)
            if self.producer:  # before the marker stops: acks that flush() still serves get marked too
                with budget.timing("producer-flush"):  # no message outlives message.timeout.ms anyway
                    await self.producer.close(budget.remaining(wait))
            if marker:  # a mark stuck on a lock or a silent database must not hold the shutdown
                self.marker.stop()
                if not await budget.finish("published-marker", marker, wait):
                    log.warning("published marks not written at shutdown; the relay will publish those rows again")
            await budget.close_pool("mark-pool", self.mark_pool)
            await budget.close_pool("pool", self.pool)
        finally:  # the caller cut the shutdown short: nothing keeps running behind it
            for task in self._background:
                task.cancel()
        if self._metrics_server:
            self._metrics_server.shutdown()
            self._metrics_server.server_close()
        self.last_shutdown = budget
        log.info("publisher stopped", extra={"phases": budget.spent})

    async def _scan_outbox_forever(self) -> None:
        """The backlog gauges: one cheap query (the partial index on pending rows) per interval, not per request."""
        while True:
            try:
                async with self.pool.connection() as conn:
                    self.metrics.outbox(*await store.outbox_backlog(conn))
            except Exception as exc:  # noqa: BLE001 - the last values stay; their scan timestamp tells they aged
                log.warning("outbox scan failed", extra={"error": type(exc).__name__})
            await asyncio.sleep(self.settings.outbox_scan_interval_seconds)

    # ------------------------------------------------------------------ the action

    async def handle(self, body: Any, headers: dict[str, str]) -> dict[str, Any]:
        """The action's answer, or ActionRefusal; a replay returns the stored record and publishes nothing."""
        request = parse_action_call(body, headers, self.limits, ACTION_NAME,
                                    reply_topic=self.settings.async_responses_topic)
        for _ in range(2):  # second pass only if the existing row expired and vanished meanwhile
            row = await self.inserter.insert(request)  # group commit: one INSERT and commit for concurrent calls
            if row is not None:
                break
            async with self.pool.connection() as conn:
                existing = await store.select_row(conn, request.request_id)
            if existing is None:
                continue
            if existing["client_id"] != request.client_id:
                raise ActionRefusal(409, "request-id-conflict", "request_id belongs to another client")
            log.info("replayed request", extra=self._log_fields(request, existing))
            return action_output(existing, duplicate=True)
        else:
            raise ActionRefusal(409, "request-id-conflict", "request_id is being reused concurrently")
        row["status"] = "published" if await self._publish(request, row) else "pending"
        log.info("accepted request", extra=self._log_fields(request, row))
        return action_output(row, duplicate=False)

    async def _publish(self, request: AsyncRequest, row: dict[str, Any]) -> bool:
        """Hand the envelope to Kafka; True when acked within publish_wait_seconds. The row is marked
        `published` after the answer (batched): the answer does not wait for a second database round trip,
        and a mark that fails leaves the row to the relay, as before."""
        request_id = request.request_id
        self.in_flight.add(request_id)
        delivery = self.producer.send(self.settings.async_requests_topic, request_id,
                                      *request_message(row, self.settings.async_responses_topic))
        self._deliveries.add(delivery)
        delivery.add_done_callback(functools.partial(self._delivered, request_id))
        if not self.settings.publish_wait_seconds:
            return False  # answered from the committed row; the send goes on, the relay covers a failure
        try:
            await asyncio.wait_for(asyncio.shield(delivery), self.settings.publish_wait_seconds)
        except Exception:  # noqa: BLE001 - not acked in time, or refused: _settle logs it, the relay retries
            return False
        return True

    def _delivered(self, request_id: str, delivery: asyncio.Future) -> None:
        """Kafka's answer for one envelope: acked rows go to the marker, refused ones stay to the relay."""
        self._deliveries.discard(delivery)
        exc = delivery.exception()
        if exc is None:
            self.marker.add(request_id)
            return
        self.in_flight.discard(request_id)
        error = kafka_error(exc)
        self.metrics.delivery_failures.labels("action", error.name() if error else "unknown").inc()
        log.warning("publish failed; the outbox relay will retry", extra={"request_id": request_id,
                                                                          "error": str(exc)})

    @staticmethod
    def _log_fields(request: AsyncRequest, row: dict[str, Any]) -> dict[str, Any]:
        return {"request_id": request.request_id, "client_id": request.client_id, "handler": request.handler,
                "operation": request.operation, "status": row["status"], **request.correlation}


def refused(refusal: ActionRefusal) -> JSONResponse:
    log.info("refused request", extra={"code": refusal.code, "reason": refusal.message})
    # an oversized body is not drained for keep-alive: the connection closes, so the rest is never read
    headers = {"connection": "close"} if refusal.status in (408, 413) else None  # the rest of the body is unread
    return JSONResponse(refusal.body(), status_code=refusal.status, headers=headers)


async def read_body(request: Request, limit: int, seconds: float) -> bytes:
    """The body, refused on its declared length before reading, once it grows past `limit` (chunked too), and
    when it has not all arrived within `seconds` (a client trickling its body would hold a connection forever:
    uvicorn has no read timeout of its own)."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise ActionRefusal(400, "invalid-body", "Content-Length is not a number")
        if int(declared) > limit:
            raise ActionRefusal(413, "payload-too-large", f"body is {declared} bytes; the limit is {limit}")
    chunks, size = [], 0
    try:
        async with asyncio.timeout(seconds):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise ActionRefusal(413, "payload-too-large", f"body exceeds the limit of {limit} bytes")
                chunks.append(chunk)
    except TimeoutError:
        raise ActionRefusal(408, "body-timeout", f"the body did not arrive within {seconds:g} s") from None
    return b"".join(chunks)


def _where(exc: BaseException) -> str:
    tb = exc.__traceback__
    while tb and tb.tb_next:
        tb = tb.tb_next
    return f"{tb.tb_frame.f_code.co_filename}:{tb.tb_lineno}" if tb else "?"


def create_app(settings: PublisherSettings) -> Starlette:
    publisher = Publisher(settings)
    secret = settings.async_action_secret.get_secret_value().encode()

    async def action(request: Request) -> JSONResponse:
        started = time.perf_counter()
        answer, outcome, code = await answer_action(request)
        publisher.metrics.answered(outcome, started, code)
        return answer

    async def answer_action(request: Request) -> tuple[JSONResponse, str, str]:
        """The answer, its outcome (metrics.REQUEST_OUTCOMES) and the refusal's code."""
        supplied = request.headers.get(ACTION_SECRET_HEADER, "").encode()
        if not hmac.compare_digest(supplied, secret):
            return refused(ActionRefusal(401, "unauthorized", f"missing or wrong {ACTION_SECRET_HEADER}")), \
                "refused", "unauthorized"
        try:
            body = parse_action_body(await read_body(request, publisher.limits.max_body_bytes,
                                                               settings.body_read_timeout_seconds), publisher.limits)
            output = await publisher.handle(body, dict(request.headers))
            return JSONResponse(output), "replay" if output["duplicate"] else "accepted", ""
        except ActionRefusal as refusal:
            return refused(refusal), "refused", refusal.code
        except ClientDisconnect:  # the caller went away mid-body: nobody reads this answer
            return JSONResponse({"message": "client disconnected", "extensions": {"code": "invalid-body"}},
                                status_code=400), "refused", "invalid-body"
        except Exception as exc:  # noqa: BLE001 - every failure gets an action error; none echoes the input
            if is_value_error(exc):  # a value the checks let through but the database refuses: still the input
                return refused(ActionRefusal(400, "invalid-input", f"the database refused a value of this request "
                                                                   f"(SQLSTATE {exc.sqlstate})")), \
                    "refused", "invalid-input"
            if is_database_unavailable(exc):
                log.warning("database unavailable", extra={"error": type(exc).__name__,
                                                           "sqlstate": getattr(exc, "sqlstate", None)})
                # not a refusal: Hasura shows 5xx as an internal error, which the client may retry
                return JSONResponse({"message": "database unavailable, retry",
                                     "extensions": {"code": "unavailable"}}, status_code=503), "unavailable", ""
            # a bug, not the input: log where, never the message (it may quote the payload)
            log.error("action failed", extra={"error": type(exc).__name__, "at": _where(exc)})
            return JSONResponse({"message": "internal error", "extensions": {"code": "internal"}},
                                status_code=500), "internal", ""

    async def healthz(_: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    async def readyz(_: Request) -> JSONResponse:
        try:
            async with publisher.pool.connection(timeout=2) as conn:
                await conn.execute("SELECT 1")
            return JSONResponse({"status": "ready"})
        except Exception as exc:  # noqa: BLE001 - any failure means not ready
            return JSONResponse({"status": "not ready", "error": type(exc).__name__}, status_code=503)

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette):
        await publisher.start()
        try:
            yield
        finally:
            await publisher.stop()

    app = Starlette(routes=[
        Route(f"/action/{ACTION_NAME}", action, methods=["POST"]),
        Route("/healthz", healthz),
        Route("/readyz", readyz),
    ], lifespan=lifespan)
    app.state.publisher = publisher
    return app


def app_from_env() -> Starlette:
    """The app of one worker process (uvicorn's factory when PUBLISHER_PROCESSES > 1)."""
    logs.setup()
    return create_app(PublisherSettings.load_or_exit())


def main() -> None:
    import uvicorn

    logs.setup()
    settings = PublisherSettings.load_or_exit()
    # uvicorn turns SIGTERM into a graceful shutdown that runs the lifespan's stop(); ws none: an Upgrade header
    # is answered as the plain HTTP call it is (with WebSockets on, uvicorn switched protocols and never answered)
    if settings.publisher_processes > 1:  # each process: its own loop, pool, producer and relay on one socket
        uvicorn.run("app.publisher:app_from_env", factory=True, workers=settings.publisher_processes,
                    host=settings.publisher_host, port=settings.publisher_port, log_config=None, access_log=False,
                    timeout_keep_alive=settings.publisher_keep_alive_seconds,
                    timeout_graceful_shutdown=settings.shutdown_drain_seconds, ws="none")
        return
    uvicorn.run(create_app(settings), host=settings.publisher_host, port=settings.publisher_port,
                log_config=None, access_log=False, timeout_keep_alive=settings.publisher_keep_alive_seconds,
                timeout_graceful_shutdown=settings.shutdown_drain_seconds, ws="none")


if __name__ == "__main__":
    main()
