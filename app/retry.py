"""Retry a one-shot Job's step while its dependency is still starting: transient errors only, doubling waits."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def retry_transient(what: str, attempt: Callable[[], T], deadline: float,
                    transient: Callable[[BaseException], bool], log: logging.Logger) -> T:
    """`attempt()` until it returns; a transient error before `deadline` (time.monotonic) waits 0.5 s, doubling up
    to 5 s; any other error, or one past the deadline, is raised."""
    delay = 0.5
    while True:
        try:
            return attempt()
        except Exception as exc:
            if not transient(exc) or time.monotonic() > deadline:
                raise
            log.warning(f"{what} not ready; retrying", extra={"error": repr(exc)})
            time.sleep(delay)
            delay = min(delay * 2, 5)
