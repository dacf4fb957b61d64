"""Stop signals set the services' stop Event without deadlocking (app/stop_signals.py)."""

from __future__ import annotations

import os
import signal
import threading

from app.stop_signals import set_on_stop_signals, setting_handler


def test_a_signal_while_the_main_thread_holds_the_events_lock_does_not_hang():
    """Where Event.wait() can be when the signal lands: inside `with self._cond` (CPython Lib/threading.py). A handler
    calling event.set() there takes the same lock again and never returns; run on a helper thread so a hang shows
    as a thread still alive instead of a stuck test."""
    event = threading.Event()
    handler = setting_handler(event)
    returned = threading.Event()

    def interrupted_wait() -> None:
        with event._cond:  # noqa: SLF001 - the lock Event.wait holds, which is the point
            handler(signal.SIGTERM, None)
            returned.set()
            assert not event.is_set()  # not yet: the lock is still ours

    waiter = threading.Thread(target=interrupted_wait, daemon=True)
    waiter.start()
    waiter.join(5)
    assert returned.is_set() and not waiter.is_alive()
    assert event.wait(5)  # set as soon as the lock was let go


def test_a_real_sigterm_sets_the_event_and_the_handlers_are_restored():
    event = threading.Event()
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    try:
        set_on_stop_signals(event)
        os.kill(os.getpid(), signal.SIGTERM)
        assert event.wait(5)
    finally:
        signal.signal(signal.SIGTERM, before[0])
        signal.signal(signal.SIGINT, before[1])
