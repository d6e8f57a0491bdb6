"""Background refresh for the panels: a daemon thread per panel part, stopped on close and at exit.

Panels refresh from their own threads so the kernel stays free for the user's cells. Those
threads only ever set widget traits (or append to an Output widget's `outputs`), never
`with output:`, which captures whatever the kernel's main thread prints at that moment.
"""
from __future__ import annotations

import atexit
import threading
import weakref
from typing import Callable, Protocol

from ..errors import LabError

_live: "weakref.WeakSet[Refresher]" = weakref.WeakSet()
_live_lock = threading.Lock()


class Refresher:
    """Call `tick()` now and then every `interval` seconds until `stop()`; errors go to `on_error`."""

    def __init__(self, name: str, interval: float, tick: Callable[[], None],
                 on_error: Callable[[BaseException], None]):
        if interval <= 0:
            raise LabError(f"refresh interval {interval!r}: give a positive number of seconds, for example 2")
        self.interval = interval
        self._tick, self._on_error = tick, on_error
        self._stopped = threading.Event()
        self.thread = threading.Thread(target=self._loop, name=f"claude-lab-{name}", daemon=True)

    def start(self) -> "Refresher":
        with _live_lock:
            _live.add(self)
        self.thread.start()
        return self

    @property
    def running(self) -> bool:
        return self.thread.is_alive() and not self._stopped.is_set()

    def _loop(self) -> None:
        while not self._stopped.is_set():
            try:
                self._tick()
            except Exception as exc:  # shown in the panel; the loop goes on (the engine may come back)
                try:
                    self._on_error(exc)
                except Exception:
                    pass
            self._stopped.wait(self.interval)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the loop and wait (up to `timeout`) for a tick in progress to finish."""
        self._stopped.set()
        if self.thread.is_alive() and self.thread is not threading.current_thread():
            self.thread.join(timeout)
        with _live_lock:
            _live.discard(self)


_panels: "weakref.WeakSet[Stoppable]" = weakref.WeakSet()


class Stoppable(Protocol):
    def stop(self) -> None: ...


def track(panel: Stoppable) -> None:
    """Stop `panel`'s threads when the process exits (the kernel shuts down), unless stopped before."""
    with _live_lock:
        _panels.add(panel)


def untrack(panel: Stoppable) -> None:
    with _live_lock:
        _panels.discard(panel)


def stop_all() -> None:
    """Stop every panel's threads and every refresher of this process (atexit: the kernel is going away).

    Only threads: the widgets are not closed, since the kernel's connection may already be gone.
    """
    with _live_lock:
        panels, live = list(_panels), list(_live)
    for panel in panels:
        try:
            panel.stop()
        except Exception:
            pass
    for refresher in live:
        refresher.stop(timeout=2.0)


atexit.register(stop_all)
