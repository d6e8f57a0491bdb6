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


GIT_ENV = {"GIT_AUTHOR_NAME": "u", "GIT_AUTHOR_EMAIL": "u@x", "GIT_COMMITTER_NAME": "u", "GIT_COMMITTER_EMAIL": "u@x",
           "PATH": "/usr/bin:/bin"}


def git(repo, *args: str) -> str:
    """The host's real git in `repo`, as a user of the project would run it."""
    import subprocess

    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True,
                          env={**GIT_ENV, "HOME": str(repo)}).stdout


def git_project(path, files: dict[str, str]):
    """A git repository on branch main with `files` (relative path -> text) in one commit."""
    for name, text in files.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(text)
    git(path, "init", "-q", "-b", "main")
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "start")
    return path
