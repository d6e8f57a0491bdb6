"""Small helpers shared by the tests."""
from __future__ import annotations

import time


def poll(condition, timeout: float = 20.0, interval: float = 0.05):
    """Wait for a condition with a deadline (never a bare sleep); returns its truthy value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s")
