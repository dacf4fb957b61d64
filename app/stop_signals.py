"""Stop signals (SIGTERM, SIGINT) into a threading.Event without deadlocking.

A signal handler runs in the main thread between two bytecodes. When the main thread is inside `Event.wait()` it
may hold the Event's lock at that moment (CPython Lib/threading.py: Event.wait enters `with self._cond`), and
`Event.set()` takes the same non-reentrant lock: the process hangs until it is killed. A CI run caught
`scripts/local_run.py` hung exactly there (py-spy: on_signal -> Event.set -> Condition.__enter__ inside
Condition.wait). The services wait on their stop Event too (the writer's back-off, the cleanup's pacing).
"""

from __future__ import annotations

import _thread
import signal
import threading
from collections.abc import Callable
from typing import Any


def setting_handler(event: threading.Event) -> Callable[[int, Any], None]:
    """A handler that sets `event` from a new thread, which takes the lock once the interrupted main thread lets
    go of it. `_thread` directly: threading.Thread.start() itself waits on an Event and takes threading's locks."""

    def handler(_signum: int, _frame: Any) -> None:
        _thread.start_new_thread(event.set, ())

    return handler


def set_on_stop_signals(event: threading.Event, signums: tuple[int, ...] = (signal.SIGTERM, signal.SIGINT)) -> None:
    """Install the handler for each signal (main thread only, as signal.signal requires)."""
    handler = setting_handler(event)
    for signum in signums:
        signal.signal(signum, handler)
