"""The outbox relay on real PostgreSQL and Kafka: replicas share the backlog, each row published once."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import Counter

from app.db import async_pool
from app.kafka_io import AsyncProducer, producer_config
from app.outbox import OutboxRelay
from tests.support.kafka_admin import read_all


def seed_pending(db, prefix: str, count: int, age: str = "1 minute") -> None:
    db.execute("INSERT INTO graphql.client_async_messages (request_id, client_id, handler, operation, payload, "
               "created_at, expires_at) SELECT %s || g, 'c', 'h', 'op', jsonb_build_object('n', g), "
               f"now() - interval '{age}', now() + interval '1 hour' FROM generate_series(1, %s) g", (prefix, count))


async def drain_with_two_relays(settings, in_flight: set[str]) -> list[int]:
    relays, resources = [], []
    for _ in range(2):
        pool = async_pool(settings)
        await pool.open()
        producer = AsyncProducer(producer_config(settings.client_config(), 10), asyncio.get_running_loop())
        resources.append((pool, producer))
        relays.append(OutboxRelay(pool, producer, topic=settings.async_requests_topic,
                                  reply_topic=settings.async_responses_topic, in_flight=in_flight,
                                  grace_seconds=5, batch_size=50, interval_seconds=0.1))
    try:
        async def drain(relay: OutboxRelay) -> None:
            while await relay.run_once():
                pass

        await asyncio.gather(*(drain(r) for r in relays))
        return [r.published_total for r in relays]
    finally:
        for pool, producer in resources:
            await producer.close()
            await pool.close()


def test_two_relays_share_the_backlog_and_publish_each_row_once(db, kafka, publisher_settings, topics):
    prefix = f"outbox-{uuid.uuid4().hex[:8]}-"
    seed_pending(db, prefix, 300)
    seed_pending(db, f"{prefix}young-", 5, age="0 seconds")  # still in some publisher's hands: left alone
    in_flight = {f"{prefix}7"}  # this process is publishing it right now: left alone
    totals = asyncio.run(drain_with_two_relays(publisher_settings, in_flight))

    assert sum(totals) >= 299 and all(totals), totals  # both replicas took part
    messages = [m for m in read_all(kafka.client_config(), topics.requests, expect=299)
                if m.key().decode().startswith(prefix)]
    keys = Counter(m.key().decode() for m in messages)
    assert len(keys) == 299 and set(keys.values()) == {1}  # each row once, none twice
    assert f"{prefix}7" not in keys and not any(k.startswith(f"{prefix}young-") for k in keys)
    envelope = json.loads(messages[0].value())
    assert envelope["spec_version"] == "async.request.v1" and envelope["payload"]["n"] >= 1
    statuses = dict(db.execute("SELECT status, count(*) FROM graphql.client_async_messages WHERE request_id LIKE %s "
                               "GROUP BY status", (prefix + "%",)).fetchall())
    assert statuses == {"published": 299, "pending": 6}
