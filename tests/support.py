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


def tool(name: str, **tool_input) -> list[dict]:
    """One scripted assistant turn: a single tool_use block (ids are filled in by ScriptedModel)."""
    return [{"type": "tool_use", "name": name, "input": tool_input}]


def leftovers(lab, agent: str) -> list[str]:
    """Processes of a run still alive in the agent: the CLI, or the tool it started."""
    out = lab.exec(agent, ["ps", "-eo", "pid=,stat=,args="]).stdout
    return [line for line in out.splitlines()
            if ("claude" in line or "time.sleep" in line) and " Z" not in line]
