"""`claude-lab`: the command line over `Lab` (a thin front end: no Docker calls here).

Modules: `app` (the Typer app, exit codes, tables), `lab` (the lab's commands), `workspace` (agents on the
project: diff, merge, cp, ...), `swarm` (swarm-sim)."""
from __future__ import annotations

from . import experiment, lab, pool, runs, swarm, workspace  # noqa: F401 - registering their commands on the app
from .app import app

__all__ = ["app", "main"]


def main() -> None:
    app()

