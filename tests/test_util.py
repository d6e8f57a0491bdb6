"""The helpers written once (claude_lab/util): waiting, undo, redaction. Pure logic, no engine."""
from __future__ import annotations

import threading
import time

import pytest

from claude_lab import LabError, LabTimeout
from claude_lab.util.redaction import REDACTED, redact_bytes, redact_headers, redact_text
from claude_lab.util.undo import Undo
from claude_lab.util.waiting import first_of, wait_until


def test_wait_until_returns_the_first_truthy_value():
    calls = iter([None, 0, "", "ready"])
    assert wait_until(lambda: next(calls), 5, "never") == "ready"


def test_wait_until_times_out_with_its_message_and_the_last_retried_error():
    def flaky() -> bool:
        raise ConnectionError("refused")

    started = time.monotonic()
    with pytest.raises(LabTimeout, match=r"the thing did not come \(last error: refused\)"):
        wait_until(flaky, 0.2, lambda: "the thing did not come", interval=0.01, retry_on=(ConnectionError,))
    assert time.monotonic() - started < 2


def test_wait_until_stops_at_once_on_an_error_it_does_not_retry():
    def broken() -> bool:
        raise LabError("it crashed")

    with pytest.raises(LabError, match="it crashed"):
        wait_until(broken, 30, "never")


class Blocking:
    """A stream like a followed log: items as they are fed, blocking in between, ended by close()."""

    def __init__(self, *items: str) -> None:
        self.items, self.ready, self.closed = list(items), threading.Condition(), False

    def feed(self, item: str) -> None:
        with self.ready:
            self.items.append(item)
            self.ready.notify()

    def close(self) -> None:
        with self.ready:
            self.closed = True
            self.ready.notify()

    def __iter__(self):
        while True:
            with self.ready:
                self.ready.wait_for(lambda: self.items or self.closed)
                if self.closed:
                    return
                item = self.items.pop(0)
            yield item


def test_first_of_returns_the_first_picked_item_as_it_arrives_and_closes_the_stream():
    stream = Blocking("noise", "x=1")
    threading.Timer(0.05, stream.feed, ["ready=yes"]).start()  # arrives later: read when it comes
    picked = first_of(stream, lambda line: line.split("=")[1] if line.startswith("ready") else None, 5, "never",
                      close=stream.close)
    assert picked == "yes"
    assert stream.closed


def test_first_of_gives_none_when_the_stream_ends_and_raises_what_pick_raises():
    assert first_of(iter(["a", "b"]), lambda line: None, 5, "never") is None

    def pick(line: str) -> None:
        raise LabError(f"bad line {line}")

    stream = Blocking("boom")
    with pytest.raises(LabError, match="bad line boom"):
        first_of(stream, pick, 5, "never", close=stream.close)
    assert stream.closed


def test_first_of_times_out_with_its_message_and_unblocks_the_reader():
    stream = Blocking("nothing wanted")
    started = time.monotonic()
    with pytest.raises(LabTimeout, match="no report after 0.2 s"):
        first_of(stream, lambda line: None, 0.2, lambda: "no report after 0.2 s", close=stream.close)
    assert 0.15 < time.monotonic() - started < 2
    assert stream.closed


def test_undo_runs_newest_first_and_forgets_what_was_dropped():
    done: list[str] = []
    undo = Undo()
    for name in ("network n", "volume v", "container a", "container b"):
        undo.push(name, lambda name=name: done.append(name))
    undo.drop("container a")
    undo.rollback()
    assert done == ["container b", "volume v", "network n"]
    undo.rollback()  # nothing twice
    assert len(done) == 3


def test_undo_as_a_context_rolls_back_on_failure_only_and_ignores_lab_errors():
    done: list[str] = []

    def failing() -> None:
        raise LabError("already gone")

    with pytest.raises(KeyboardInterrupt):
        with Undo() as undo:
            undo.push("volume v", lambda: done.append("volume v"))
            undo.push("container c", failing)
            raise KeyboardInterrupt
    assert done == ["volume v"]
    with Undo() as undo:
        undo.push("network n", lambda: done.append("network n"))
    assert done == ["volume v"]  # no failure: nothing undone


def test_undo_keep_only():
    done: list[str] = []
    undo = Undo()
    for name in ("network n", "volume v", "container c"):
        undo.push(name, lambda name=name: done.append(name))
    undo.keep_only("container ")
    undo.rollback()
    assert done == ["container c"]


def test_redaction_in_text_bytes_and_headers():
    assert redact_text("key sk-1 and sk-1", ["sk-1", None, ""]) == f"key {REDACTED} and {REDACTED}"
    assert redact_bytes(b"x sk-1 y", ["sk-1"]) == f"x {REDACTED} y".encode()
    headers = redact_headers([("X-Api-Key", "sk-1"), ("Authorization", "Bearer t"), ("Cookie", "c"),
                              ("X-Echo", "has sk-1 inside"), ("Accept", "json")], ["sk-1"])
    assert headers == {"x-api-key": REDACTED, "authorization": REDACTED, "cookie": REDACTED,
                       "x-echo": f"has {REDACTED} inside", "accept": "json"}


def test_together_runs_every_call_then_raises_the_first_error():
    from claude_lab.util.parallel import together

    ran: list[str] = []

    def fail(what: str) -> None:
        ran.append(what)
        raise LabError(f"{what} failed")

    with pytest.raises(LabError, match="a failed"):
        together(lambda: fail("a"), lambda: ran.append("b"), lambda: fail("c"))
    assert sorted(ran) == ["a", "b", "c"]
