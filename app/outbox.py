"""Transactional outbox relay: publishes pending rows the action handler could not hand to Kafka.

The row is the outbox record (it is committed before any publish). In the normal path the
handler publishes right away and marks the row `published`; the relay only claims rows older
than a grace period that no publish in this process still holds, so it never doubles the normal
path. Replicas share the work with FOR UPDATE SKIP LOCKED (no advisory locks: YugabyteDB).
"""

from __future__ import annotations

import asyncio
import logging

from confluent_kafka import KafkaException
from psycopg_pool import AsyncConnectionPool

from app import store
from app.db import is_transient
from app.envelope import request_message
from app.kafka_io import AsyncProducer

log = logging.getLogger(__name__)


class OutboxRelay:
    def __init__(self, pool: AsyncConnectionPool, producer: AsyncProducer, *, topic: str, reply_topic: str,
                 in_flight: set[str], grace_seconds: float, batch_size: int, interval_seconds: float):
        self._pool, self._producer = pool, producer
        self._topic, self._reply_topic = topic, reply_topic
        self._in_flight = in_flight
        self._grace, self._batch, self._interval = grace_seconds, batch_size, interval_seconds
        self.published_total = 0

    async def run_once(self) -> int:
        """Claim, publish and mark one batch; the claim's locks are held until Kafka has acked."""
        async with self._pool.connection() as conn, conn.transaction():
            rows = [r for r in await store.claim_unpublished(conn, self._grace, self._batch)
                    if r["request_id"] not in self._in_flight]
            if not rows:
                return 0
            deliveries = [self._producer.send(self._topic, r["request_id"], *request_message(r, self._reply_topic))
                          for r in rows]
            results = await asyncio.gather(*deliveries, return_exceptions=True)
            delivered = [r["request_id"] for r, res in zip(rows, results, strict=True)
                         if not isinstance(res, BaseException)]
            if delivered:
                await store.mark_published(conn, delivered)
        self.published_total += len(delivered)
        if delivered:
            log.info("outbox relay published pending rows", extra={"published": len(delivered),
                                                                   "claimed": len(rows)})
        if len(delivered) < len(rows):
            log.warning("outbox relay could not publish; will retry",
                        extra={"undelivered": len(rows) - len(delivered)})
        return len(delivered)

    async def run_forever(self) -> None:
        while True:
            try:
                published = await self.run_once()
            except asyncio.CancelledError:
                raise
            except KafkaException as exc:
                log.warning("outbox relay: kafka unavailable", extra={"error": str(exc)})
                published = 0
            except Exception as exc:  # noqa: BLE001 - a relay loop must outlive any single failure
                level = logging.WARNING if is_transient(exc) else logging.ERROR
                log.log(level, "outbox relay pass failed; retrying", extra={"error": repr(exc)})
                published = 0
            if not published:
                await asyncio.sleep(self._interval)
