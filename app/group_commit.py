"""Group commit of pending rows: concurrent action calls share one multi-row INSERT and one commit.

Each call still gets exactly its own answer: its stored row, None when its request_id exists already (a
replay or a conflict, decided as before by the caller), or the database's error. A batch closes when it
holds `max_rows` calls or `window_seconds` after its first call; up to `max_in_flight` batches run at once,
and calls arriving meanwhile form the next batch, so under load batches grow by themselves and at low
load a call waits at most the window. A value the database refuses fails the whole statement: that batch
is retried one row at a time, so only the offending call gets the error.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from psycopg_pool import AsyncConnectionPool

from app import store
from app.db import is_value_error
from app.envelope import AsyncRequest


@dataclass
class _Call:
    request: AsyncRequest
    answer: asyncio.Future = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class PendingInserter:
    def __init__(self, pool: AsyncConnectionPool, *, max_rows: int, window_seconds: float, max_in_flight: int):
        self._pool = pool
        self._max_rows, self._window = max_rows, window_seconds
        self._slots = asyncio.Semaphore(max_in_flight)
        self._queue: list[_Call] = []
        self._arrived = asyncio.Event()
        self._batches: set[asyncio.Task] = set()
        self.batches_total = 0
        self.rows_total = 0

    async def insert(self, request: AsyncRequest) -> dict[str, Any] | None:
        """The stored row, or None when the request_id exists already; raises what the database raised."""
        call = _Call(request)
        self._queue.append(call)
        self._arrived.set()
        return await call.answer

    async def run_forever(self) -> None:
        try:
            while True:
                await self._arrived.wait()
                await self._slots.acquire()
                if self._window and len(self._queue) < self._max_rows:
                    await asyncio.sleep(self._window)  # let concurrent calls join the batch
                batch, self._queue = self._queue[:self._max_rows], self._queue[self._max_rows:]
                if not self._queue:
                    self._arrived.clear()
                if not batch:
                    self._slots.release()
                    continue
                task = asyncio.create_task(self._commit(batch))
                self._batches.add(task)
                task.add_done_callback(self._batches.discard)
        finally:
            await self._drain()

    async def _drain(self) -> None:
        """On shutdown: batches under way finish; calls that never got a batch are told so."""
        if self._batches:
            await asyncio.wait(self._batches)
        for call in self._queue:
            if not call.answer.done():
                call.answer.set_exception(RuntimeError("publisher stopping"))
        self._queue = []

    async def _commit(self, batch: list[_Call]) -> None:
        try:
            async with self._pool.connection() as conn:
                try:
                    rows = await store.insert_pending_many(conn, [call.request for call in batch])
                except Exception as exc:
                    if not is_value_error(exc) or len(batch) == 1:
                        raise
                    await self._one_by_one(conn, batch)
                    return
            self.batches_total += 1
            self.rows_total += len(rows)
            by_id = {row["request_id"]: row for row in rows}
            for call in batch:  # a request_id twice in one batch: the first call gets the row, the other None
                if not call.answer.done():
                    call.answer.set_result(by_id.pop(call.request.request_id, None))
        except Exception as exc:  # noqa: BLE001 - every call of the batch gets the database's answer
            for call in batch:
                if not call.answer.done():
                    call.answer.set_exception(exc)
        finally:
            self._slots.release()

    @staticmethod
    async def _one_by_one(conn, batch: list[_Call]) -> None:
        for call in batch:
            if call.answer.done():
                continue
            try:
                call.answer.set_result(await store.insert_pending(conn, call.request))
            except Exception as exc:  # noqa: BLE001 - this call's own error; the others go on
                if is_value_error(exc):
                    call.answer.set_exception(exc)
                    continue
                raise

