"""Is the process recording a run still alive? Its host, pid and start time, and a heartbeat it refreshes.

A run's row carries its owner (host name, pid, the process's start time) and `heartbeat_at`, refreshed
every 10 s by one daemon thread per process while the run lasts. On the same host a dead owner is
known exactly (that pid with that start time is gone, or a zombie); from another host, by a heartbeat
older than 60 s.
"""
from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path
from typing import Any, Protocol

import psutil

HEARTBEAT_S = 10.0
STALE_AFTER_S = 60.0


class Beating(Protocol):
    """What the heartbeat refreshes: a store with a path and a `beat(run_ids)` write."""

    path: Path

    def beat(self, run_ids: list[str]) -> None: ...


def owner() -> dict[str, Any]:
    me = psutil.Process()
    return {"owner_host": socket.gethostname(), "owner_pid": os.getpid(), "owner_started": me.create_time(),
            "heartbeat_at": time.time()}


def owner_alive(rec: dict[str, Any], now: float | None = None) -> bool:
    """Whether the process that wrote a `running` record still exists (see the module docstring)."""
    if rec.get("owner_host") == socket.gethostname() and rec.get("owner_pid"):
        try:
            proc = psutil.Process(int(rec["owner_pid"]))
            if proc.status() == psutil.STATUS_ZOMBIE:
                return False
            started = rec.get("owner_started")
            return started is None or abs(proc.create_time() - float(started)) < 1.0  # not a reused pid
        except psutil.NoSuchProcess:
            return False
        except psutil.Error:  # exists, but not ours to look at
            return True
    return (now or time.time()) - float(rec.get("heartbeat_at") or 0) < STALE_AFTER_S


class _Heartbeat:
    """One daemon thread per process refreshing `heartbeat_at` of the runs this process is recording."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._runs: dict[str, tuple[Beating, set[str]]] = {}
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()

    def add(self, store: Beating, run_id: str) -> None:
        with self._lock:
            if self._pid != os.getpid():  # forked: the parent's thread did not come along
                self._runs, self._thread, self._pid = {}, None, os.getpid()
            self._runs.setdefault(str(store.path), (store, set()))[1].add(run_id)
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="claude-lab-run-heartbeat", daemon=True)
                self._thread.start()

    def remove(self, store: Beating, run_id: str) -> None:
        with self._lock:
            entry = self._runs.get(str(store.path))
            if entry:
                entry[1].discard(run_id)

    def _loop(self) -> None:
        while True:
            self._wake.wait(HEARTBEAT_S)
            with self._lock:
                work = [(store, list(ids)) for store, ids in self._runs.values() if ids]
            for store, ids in work:
                try:
                    store.beat(ids)
                except Exception:  # noqa: BLE001 - a missed beat is retried in 10 s
                    pass


HEARTBEAT = _Heartbeat()
