"""One time budget for a graceful shutdown, shared by its phases.

Each phase waits at most what is left of the budget, so the sum stays under the pod's
terminationGracePeriodSeconds however many phases are slow. The waits never swallow the caller's own
cancellation: `asyncio.wait` returns on timeout instead of raising, unlike `wait_for` inside a suppress.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

log = logging.getLogger("app.shutdown")

# how long a cancelled phase gets to unwind (psycopg sends the server a cancel request, then reads its answer);
# one that takes longer (psycopg allows the cancel 5 s) is left behind, and asyncio.run's teardown cancels it again
CANCEL_GRACE_SECONDS = 1.0
# a pool's close always gets this much, even with the budget spent: it only waits for its own worker tasks
MIN_CLOSE_SECONDS = 0.5


@dataclass
class ShutdownBudget:
    """What is left of `seconds` since the budget was made; `spent` names each phase with its duration."""

    seconds: float
    started: float = field(default_factory=time.monotonic)
    spent: dict[str, float] = field(default_factory=dict)

    def remaining(self, at_most: float | None = None) -> float:
        left = max(0.0, self.seconds - (time.monotonic() - self.started))
        return left if at_most is None else min(left, at_most)

    @contextlib.contextmanager
    def timing(self, phase: str) -> Iterator[None]:
        """Records how long the phase inside took in `spent`."""
        since = time.monotonic()
        try:
            yield
        finally:
            self.spent[phase] = round(time.monotonic() - since, 3)

    async def finish(self, phase: str, task: asyncio.Future, at_most: float | None = None) -> bool:
        """Wait for `task` within the budget (and `at_most`); cancel it if it is still running then.
        True when it ended by itself. Its exception, if any, is logged, never raised."""
        with self.timing(phase):
            done, _ = await asyncio.wait({task}, timeout=self.remaining(at_most))
            if not done:
                task.cancel()
                await asyncio.wait({task}, timeout=CANCEL_GRACE_SECONDS)
        if task.done() and not task.cancelled() and task.exception() is not None:
            log.warning("shutdown phase failed", extra={"phase": phase, "error": repr(task.exception())[:300]})
        return bool(done)

    async def close_pool(self, phase: str, pool) -> None:
        """psycopg_pool's close, given what is left of the budget (at least MIN_CLOSE_SECONDS)."""
        with self.timing(phase):
            await pool.close(timeout=max(self.remaining(), MIN_CLOSE_SECONDS))
