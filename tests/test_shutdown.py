"""app/shutdown.py: one budget across the shutdown's phases, and the caller's cancellation is never swallowed."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from app.shutdown import CANCEL_GRACE_SECONDS, ShutdownBudget


async def forever() -> None:
    await asyncio.Event().wait()


async def deaf() -> None:
    """Ignores cancellation, as a task stuck in a blocking call would."""
    while True:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            continue


def test_a_phase_past_the_budget_is_cancelled_and_the_next_phase_gets_nothing():
    async def run():
        budget = ShutdownBudget(0.3)
        first = asyncio.create_task(forever())
        ended = await budget.finish("first", first)
        second = asyncio.create_task(forever())
        ended_second = await budget.finish("second", second, at_most=10)
        return ended, first.cancelled(), ended_second, second.cancelled(), budget.spent

    ended, first_cancelled, ended_second, second_cancelled, spent = asyncio.run(run())
    assert (ended, first_cancelled, ended_second, second_cancelled) == (False, True, False, True)
    assert spent["second"] < 2  # nothing was left for it: cancelled at once, not after its own 10 s
    assert spent["first"] >= 0.3


def test_a_phase_that_ends_by_itself_reports_so_and_its_failure_is_logged_not_raised(caplog):
    async def fails():
        raise RuntimeError("boom")

    async def run():
        budget = ShutdownBudget(5)
        return await budget.finish("ok", asyncio.create_task(asyncio.sleep(0))), \
            await budget.finish("fails", asyncio.create_task(fails()))

    with caplog.at_level(logging.WARNING, logger="app.shutdown"):
        assert asyncio.run(run()) == (True, True)
    assert [r.phase for r in caplog.records] == ["fails"]


def test_a_task_deaf_to_cancellation_holds_the_shutdown_only_for_the_cancel_grace():
    async def run():
        budget = ShutdownBudget(0.2)
        task = asyncio.create_task(deaf())
        started = time.monotonic()
        ended = await budget.finish("deaf", task)
        waited = time.monotonic() - started
        return ended, task.done(), waited

    ended, done, waited = _run_leaving_deaf(run)
    assert (ended, done) == (False, False)
    assert waited < 0.2 + CANCEL_GRACE_SECONDS + 3  # not forever: the deaf task is left behind


def _run_leaving_deaf(run):
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(run())
    finally:
        for task in asyncio.all_tasks(loop):  # the deaf task: dropped with its loop
            task._log_destroy_pending = False
        loop.close()


def test_the_callers_cancellation_propagates_out_of_a_phase():
    """A shutdown cut short by its caller (wait_for around stop()) must stop, not swallow it and go on."""
    async def stop(reached: list[str]):
        budget = ShutdownBudget(30)
        await budget.finish("long", asyncio.create_task(forever()))
        reached.append("after")

    async def run():
        reached: list[str] = []
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(stop(reached), 0.2)
        return reached

    assert asyncio.run(run()) == []


def test_close_pool_gets_at_least_the_minimum_when_the_budget_is_spent():
    class Pool:
        timeout = None

        async def close(self, timeout: float) -> None:
            self.timeout = timeout

    async def run():
        budget = ShutdownBudget(0)
        pool = Pool()
        await budget.close_pool("pool", pool)
        return pool.timeout, budget.spent

    timeout, spent = asyncio.run(run())
    assert timeout == 0.5 and "pool" in spent
