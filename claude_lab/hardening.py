"""Hardening options of agent containers beyond the defaults: read-only root, alternative runtimes.

Every agent already runs as a non-root user with no capabilities, `no-new-privileges`, memory,
CPU and process limits, no Docker socket and no published ports (lab.py). These are the opt-ins.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from .errors import ConfigError

if TYPE_CHECKING:
    from .engine import Engine

# With a read-only root filesystem, what the tools of an agent write goes to memory (tmpfs, counted
# against the agent's memory limit) and the workspace stays a writable volume. Claude Code keeps
# its state in CLAUDE_CONFIG_DIR (set below), npm and pip their caches under ~/.npm and ~/.cache.
HOME = "/home/developer"
_SCRATCH = "rw,nosuid,nodev,uid=1000,gid=1000,mode=0755"
READ_ONLY_TMPFS: dict[str, str] = {
    "/tmp": "rw,nosuid,nodev,size=512m,mode=1777",
    "/var/tmp": "rw,nosuid,nodev,size=64m,mode=1777",
    "/run": "rw,nosuid,nodev,size=16m,mode=0755",
    f"{HOME}/.claude": f"{_SCRATCH},size=128m",
    f"{HOME}/.cache": f"{_SCRATCH},size=512m",
    f"{HOME}/.npm": f"{_SCRATCH},size=256m",
    f"{HOME}/.config": f"{_SCRATCH},size=16m",
    f"{HOME}/.local": f"{_SCRATCH},size=256m",
}
READ_ONLY_ENV = {"CLAUDE_CONFIG_DIR": f"{HOME}/.claude"}


def check_runtime(engine: "Engine", runtime: str | None) -> str | None:
    """`runtime` if the engine has it, else a ConfigError that says how to get it."""
    if not runtime:
        return None
    known = engine.runtimes()
    if runtime not in known:
        hint = (" Install gVisor (https://gvisor.dev/docs/user_guide/install/) and register it: "
                "`runsc install` adds it to /etc/docker/daemon.json, then restart dockerd."
                if runtime.startswith("runsc") else
                " Register it under \"runtimes\" in /etc/docker/daemon.json and restart dockerd.")
        raise ConfigError(f"runtime={runtime!r}: the Docker engine has no such runtime (it has: "
                          f"{', '.join(known) or 'none listed'}).{hint} Or leave runtime unset for runc.")
    return runtime
