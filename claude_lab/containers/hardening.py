"""Hardening options of agent containers beyond the defaults: read-only root, alternative runtimes.

Every agent already runs as a non-root user with no capabilities, `no-new-privileges`, memory,
CPU and process limits, no Docker socket and no published ports (agent_spec.py). These are the opt-ins.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import ConfigError

if TYPE_CHECKING:
    from ..engine.face import EngineFace

# With a read-only root filesystem, what the tools of an agent write goes to memory (tmpfs, counted
# against the agent's memory limit) and the workspace stays a writable volume. Claude Code keeps
# its state in CLAUDE_CONFIG_DIR (set below), npm and pip their caches under ~/.npm and ~/.cache.
# The home scratch folders are sticky and open to all (1777) rather than owned by a uid we would have
# to guess: the agent's user, whichever `agent_user` names, owns what it writes there.
_SCRATCH = "rw,nosuid,nodev,mode=1777"
_HOME_SCRATCH = {".claude": "128m", ".cache": "512m", ".npm": "256m", ".config": "16m", ".local": "256m"}


def agent_home(user: str) -> str:
    """The home folder of the agent's user, as the images make it (`useradd --create-home`)."""
    name = user.split(":", 1)[0]
    return "/root" if name in ("root", "0") else f"/home/{name}"


def read_only_tmpfs(user: str) -> dict[str, str]:
    home = agent_home(user)
    return {
        "/tmp": "rw,nosuid,nodev,size=512m,mode=1777",
        "/var/tmp": "rw,nosuid,nodev,size=64m,mode=1777",
        "/run": "rw,nosuid,nodev,size=16m,mode=0755",
        **{f"{home}/{folder}": f"{_SCRATCH},size={size}" for folder, size in _HOME_SCRATCH.items()},
    }


def read_only_env(user: str) -> dict[str, str]:
    return {"CLAUDE_CONFIG_DIR": f"{agent_home(user)}/.claude"}


def check_runtime(engine: "EngineFace", runtime: str | None) -> str | None:
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
