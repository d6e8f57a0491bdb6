"""Waiting with a deadline: for a condition (`wait_until`, the one polling loop of the package: never a
bare sleep), or for the first wanted item of a blocking stream (`first_of`: no polling at all)."""
from __future__ import annotations

import queue
import threading
import time
from typing import Callable, Iterable, TypeVar

from ..errors import LabTimeout

T = TypeVar("T")
R = TypeVar("R")
_END = object()


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


def first_of(stream: Iterable[T], pick: Callable[[T], R | None], timeout: float, message: str | Callable[[], str],
             *, close: Callable[[], object] | None = None) -> R | None:
    """Read a blocking `stream` (a followed log, say) on a helper thread and return the first `pick(item)`
    that is not None; None if the stream ends first. Past `timeout` seconds raise `LabTimeout(message)`.
    An exception from `pick` or the stream ends the wait and is raised here. `close` (the stream's own, to
    unblock its reader) is called however the wait ends; the reader thread is a daemon either way."""
    items: "queue.Queue[object]" = queue.Queue()

    def read() -> None:
        try:
            for item in stream:
                items.put(item)
        except BaseException as exc:  # handed to the waiting thread, which decides
            items.put(exc)
        items.put(_END)

    threading.Thread(target=read, name="first_of", daemon=True).start()
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                item = items.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise LabTimeout(message() if callable(message) else message) from None
            if item is _END:
                return None
            if isinstance(item, BaseException):
                raise item
            found = pick(item)  # type: ignore[arg-type]
            if found is not None:
                return found
    finally:
        if close is not None:
            try:
                close()
            except Exception:  # the stream is being dropped; a failing close changes nothing
                pass
