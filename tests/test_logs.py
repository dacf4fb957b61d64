"""The JSON log line's timestamp (app/logs.py): cached per second, the same text the datetime expression gives."""

from __future__ import annotations

import random
from datetime import UTC, datetime

from app.logs import JsonFormatter


def reference(created: float) -> str:
    return datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds")


def test_the_cached_timestamp_is_the_datetime_text_at_every_edge():
    formatter = JsonFormatter()
    edges = [1700000000.123, 1796256059.9999996, 1796256059.9995, 1796256059.0, 0.0, 1799999999.9999999,
             1700000000.0004995, 1700000000.0005, 86399.9999996]  # half-microsecond and second/day boundaries
    rng = random.Random(20261203)
    moments = edges + [rng.uniform(0, 4e9) for _ in range(200_000)]
    moments += [second + rng.random() for second in range(1700000000, 1700000100) for _ in range(100)]
    assert [m for m in moments if formatter._timestamp(m) != reference(m)] == []
