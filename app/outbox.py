"""Transactional outbox relay: publishes pending rows the action handler could not hand to Kafka.

The row is the outbox record (it is committed before any publish). In the normal path the
handler publishes right away and marks the row `published`; the relay only claims rows older
than a grace period that no publish in this process still holds, so it never doubles the normal
path. Replicas share the work with FOR UPDATE SKIP LOCKED (no advisory locks: YugabyteDB).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from confluent_kafka import KafkaError, KafkaException
from psycopg_pool import AsyncConnectionPool

from app import store
from app.db import is_database_unavailable
from app.envelope import request_message
from app.kafka_io import AsyncProducer, is_permanent, kafka_error
from app.metrics import PublisherMetrics

log = logging.getLogger(__name__)


class OutboxRelay:
    def __init__(self, pool: AsyncConnectionPool, producer: AsyncProducer, *, topic: str, reply_topic: str,
                 in_flight: set[str], grace_seconds: float, batch_size: int, interval_seconds: float,
                 metrics: PublisherMetrics | None = None):
        self._pool, self._producer = pool, producer
        self._topic, self._reply_topic = topic, reply_topic
        self._in_flight = in_flight
        self._grace, self._batch, self._interval = grace_seconds, batch_size, interval_seconds
        self._stopping = asyncio.Event()
        self.published_total = 0
        self.parked_total = 0
        self._metrics = metrics or PublisherMetrics()

    def stop(self) -> None:
        """Finish the pass under way (its sends settle and are marked), then return from run_forever."""
        self._stopping.set()

    async def run_once(self) -> int:
        """Claim, publish and mark one batch; the claim's locks are held until Kafka has answered for every row.
        Rows Kafka refuses for good are parked (`failed`, error code `unpublishable`), never retried."""
        async with self._pool.connection() as conn, conn.transaction():
            rows = [r for r in await store.claim_unpublished(conn, self._grace, self._batch)
                    if r["request_id"] not in self._in_flight]
            if not rows:
                return 0
            results = await asyncio.gather(*(self._send(r) for r in rows), return_exceptions=True)
            delivered = [r["request_id"] for r, res in zip(rows, results, strict=True)
                         if not isinstance(res, BaseException)]
            parked = {r["request_id"]: f"Kafka refuses this request for good: {res}"[:300]
                      for r, res in zip(rows, results, strict=True) if is_permanent(res)}
            if delivered:
                await store.mark_published(conn, delivered)
            if parked:
                await store.park_unpublishable(conn, parked)
        self.published_total += len(delivered)
        self.parked_total += len(parked)
        self._metrics.relay_published.inc(len(delivered))
        self._metrics.relay_parked.inc(len(parked))
        for res in results:
            if isinstance(res, BaseException):
                error = kafka_error(res)
                self._metrics.delivery_failures.labels("relay", error.name() if error else type(res).__name__).inc()
        if delivered:
            log.info("outbox relay published pending rows", extra={"published": len(delivered),
                                                                   "claimed": len(rows)})
        if parked:
            log.error("outbox relay parked unpublishable rows", extra={"request_ids": sorted(parked)[:20],
                                                                       "parked": len(parked)})
        if len(delivered) + len(parked) < len(rows):
            log.warning("outbox relay could not publish; will retry",
                        extra={"undelivered": len(rows) - len(delivered) - len(parked)})
        return len(delivered) + len(parked)

    async def _send(self, row: dict) -> None:
        try:
            value, headers = request_message(row, self._reply_topic)
        except Exception as exc:  # noqa: BLE001 - a row that cannot be encoded can never be published
            raise KafkaException(KafkaError(KafkaError._INVALID_ARG, f"cannot encode: {type(exc).__name__}")) from None
        await self._producer.send(self._topic, row["request_id"], value, headers)

    async def run_forever(self) -> None:
        while not self._stopping.is_set():
            try:
                published = await self.run_once()
            except asyncio.CancelledError:
                raise
            except KafkaException as exc:
                log.warning("outbox relay: kafka unavailable", extra={"error": str(exc)})
                published = 0
            except Exception as exc:  # noqa: BLE001 - a relay loop must outlive any single failure
                level = logging.WARNING if is_database_unavailable(exc) else logging.ERROR
                log.log(level, "outbox relay pass failed; retrying", extra={"error": repr(exc)[:300]})
                published = 0
            if not published:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), self._interval)
