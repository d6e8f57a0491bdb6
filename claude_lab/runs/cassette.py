"""The cassette: a recorded run's exchanges answering a replay's requests, and where they diverge."""
from __future__ import annotations

import re
import threading
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from ..model.proxy import Exchange, Reply
from ..model.wire import error_body, request_kind
from .normalize import conversation_key, digest, first_difference, normalized_request, shown

STOPPED_STATUSES = ("timeout", "cancelled")


@dataclass
class Divergence:
    """Where a replay's requests left the recording."""

    request: int  # 1-based, among the replay's requests
    kind: str  # main | side | count_tokens | other
    method: str
    path: str
    reason: str  # "differs" | "not recorded" | "ended early" | "recording ends"
    recorded_request: int | None = None  # 1-based, among the recording's requests
    where: str | None = None
    recorded: Any = None
    actual: Any = None

    def describe(self) -> str:
        what = f"request {self.request} ({self.kind}: {self.method} {self.path})"
        if self.reason == "differs":
            return (f"{what} differs from recorded request {self.recorded_request} at {self.where}: recorded "
                    f"{shown(self.recorded, self.actual)} but the replay sent {shown(self.actual, self.recorded)}")
        if self.reason == "not recorded":
            near = ""
            if self.where:
                near = (f"; nearest recorded request {self.recorded_request} differs at {self.where}: recorded "
                        f"{shown(self.recorded, self.actual)} but the replay sent {shown(self.actual, self.recorded)}")
            return f"{what} is not in the recording{near}"
        if self.reason == "recording ends":
            return (f"{what} goes past the end of the recording (the original run was stopped at recorded "
                    f"request {self.recorded_request})")
        return (f"the replay ended after {self.request - 1} requests, but recorded request {self.recorded_request} "
                f"({self.kind}: {self.method} {self.path}) was never asked for")


@dataclass
class _Entry:
    number: int  # 1-based, among the recording's requests
    exchange: Exchange
    norm: dict[str, Any]


class Cassette:
    """Answers a replay's requests from a recorded run's exchanges (matching rules: module docstring)."""

    def __init__(self, exchanges: list[Exchange], original_status: str | None = None,
                 ignore: Iterable[str] = ()):
        self.original_status = original_status
        self.ignore = tuple(re.compile(p) for p in ignore)
        self._lock = threading.Lock()
        self._threads: dict[str, deque[_Entry]] = {}
        self._mains: list[_Entry] = []
        self._pool: dict[str, deque[_Entry]] = {}
        self._last: dict[str, _Entry] = {}
        self._requests = 0
        self.divergence: Divergence | None = None
        self.on_divergence: Callable[[Divergence], None] | None = None
        for number, ex in enumerate(sorted(exchanges, key=lambda e: e.seq), 1):
            entry = _Entry(number, ex, normalized_request(ex, self.ignore))
            if ex.kind == "main":
                self._threads.setdefault(conversation_key(entry.norm), deque()).append(entry)
                self._mains.append(entry)
            else:
                self._pool.setdefault(digest(entry.norm), deque()).append(entry)

    @property
    def requests(self) -> int:
        """How many requests the replay has sent so far."""
        return self._requests

    def respond(self, exchange: Exchange) -> Reply:
        """The recorded reply for this request, or a 400 naming the divergence."""
        norm = normalized_request(exchange, self.ignore)
        kind = request_kind(exchange.method, exchange.path, norm["body"])
        with self._lock:
            self._requests += 1
            number = self._requests
            if self.divergence is not None:  # already off the recording: stop, do not guess
                return self._refuse(self.divergence)
            entry, divergence = self._match(norm, kind, number, exchange)
            if divergence is not None:
                self.divergence = divergence
        if divergence is not None:
            if self.on_divergence is not None:
                self.on_divergence(divergence)
            return self._refuse(divergence)
        assert entry is not None
        recorded = entry.exchange
        headers = {k: v for k, v in recorded.response_headers.items() if k not in ("content-length",)}
        return Reply(int(recorded.status or 502), headers, recorded.response_body)

    def _match(self, norm: dict[str, Any], kind: str, number: int, exchange: Exchange
               ) -> tuple[_Entry | None, Divergence | None]:
        def diverged(reason: str, near: _Entry | None) -> Divergence:
            where = recorded = actual = None
            if near is not None:
                found = first_difference(near.norm, norm)
                if found:
                    where, recorded, actual = found
            return Divergence(number, kind, exchange.method, exchange.path, reason,
                              near.number if near else None, where, recorded, actual)

        if kind == "main":
            queue = self._threads.get(conversation_key(norm))
            if queue is None:  # a conversation the recording does not have (another prompt, CLI, workspace)
                return None, diverged("not recorded", self._nearest_main())
            if not queue:  # this conversation's recorded requests are used up
                return None, diverged("not recorded", None)
            head = queue[0]
            if head.exchange.status is None:
                return None, Divergence(number, kind, exchange.method, exchange.path, "recording ends", head.number)
            if head.norm != norm:
                return None, diverged("differs", head)
            queue.popleft()
            return head, None
        key = digest(norm)
        pool = self._pool.get(key)
        if pool:
            entry = pool.popleft()
            self._last[key] = entry
            return entry, None
        if key in self._last:
            return self._last[key], None
        return None, diverged("not recorded", None)

    def _nearest_main(self) -> _Entry | None:
        """The first recorded main request nobody asked for yet (to show how a stray one differs)."""
        for entry in self._mains:
            queue = self._threads.get(conversation_key(entry.norm))
            if queue and any(e is entry for e in queue):
                return entry
        return self._mains[0] if self._mains else None

    def _refuse(self, divergence: Divergence) -> Reply:
        body = error_body(400, "claude-lab replay: " + divergence.describe(), "invalid_request_error")
        return Reply(400, {"content-type": "application/json"}, body)

    def leftover(self) -> Divergence | None:
        """After the replay ended: the first recorded main request never asked for, as a divergence.

        None when every one was used, or when the original run was itself stopped (its recording
        ends wherever the stop caught it).
        """
        if self.original_status in STOPPED_STATUSES:
            return None
        with self._lock:
            unused = [e for q in self._threads.values() for e in q if e.exchange.status is not None]
        if not unused:
            return None
        first = min(unused, key=lambda e: e.number)
        ex = first.exchange
        return Divergence(self._requests + 1, ex.kind, ex.method, ex.path, "ended early", first.number)


