"""Waiting for a condition with a deadline: the one polling loop of the package (never a bare sleep)."""
from __future__ import annotations

import time
from typing import Callable, TypeVar

from ..errors import LabTimeout

T = TypeVar("T")


def wait_until(predicate: Callable[[], T], timeout: float, message: str | Callable[[], str], *,
               interval: float = 0.05, retry_on: tuple[type[BaseException], ...] = ()) -> T:
    """Call `predicate` until it returns something truthy, and return that; past `timeout` seconds raise
    `LabTimeout(message)` (`message` may be a callable, asked only then, for a message that says how far
    things got). Exceptions of the `retry_on` types count as "not yet"; the last one is named on timeout.
    Any other exception from `predicate` ends the wait at once: that is how a condition says "never"."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while True:
        try:
            value = predicate()
            if value:
                return value
        except retry_on as exc:
            last = exc
        if time.monotonic() >= deadline:
            text = message() if callable(message) else message
            raise LabTimeout(text + (f" (last error: {last})" if last else ""))
        time.sleep(interval)
