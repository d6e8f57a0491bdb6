"""The helpers written once (claude_lab/util): waiting, undo, redaction. Pure logic, no engine."""
from __future__ import annotations

import time

import pytest

from claude_lab import LabError, LabTimeout
from claude_lab.util.redaction import REDACTED, redact_bytes, redact_headers, redact_text
from claude_lab.util.undo import Undo
from claude_lab.util.waiting import wait_until


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
