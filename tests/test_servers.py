"""The real-server helpers themselves: a second start() of a running server must not spawn (and lose) another."""

from __future__ import annotations

import os


def test_broker_start_is_a_no_op_while_it_runs(kafka):
    pid = kafka.pid
    kafka.start()
    assert kafka.pid == pid
    os.kill(pid, 0)  # still the same, live process


def test_postgres_start_is_a_no_op_while_it_runs(pg):
    before = pg.pid
    pg.start()
    assert pg.pid == before
