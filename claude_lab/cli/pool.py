"""The CLI's `pool` commands: the warm pool of ready agents (setting agent_pool; README, Warm pool)."""
from __future__ import annotations

import threading

import typer

from .app import _emit, _lab, _run, app, err

pool_app = typer.Typer(help="The warm pool: agents kept ready, claimed by `create` in a few engine calls.",
                       no_args_is_help=True)
app.add_typer(pool_app, name="pool")


@pool_app.command("fill")
def pool_fill(
    watch: bool = typer.Option(False, "--watch", help="Keep the pool topped up until Ctrl-C (claims from other "
                                                      "processes are refilled within seconds)."),
) -> None:
    """Top the pool up to the agent_pool setting now (pods of an old commit or image are replaced)."""
    lab = _lab()
    if not watch:
        _emit(_run(lab.fill_pool), f"pool of {lab.name}")
        return
    _run(lab.start_pool)
    err.print(f"keeping the pool of {lab.name} topped up; Ctrl-C stops (the pool stays)")
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        lab.stop_pool()
        raise typer.Exit(130)


@pool_app.command("status")
def pool_status() -> None:
    """The pooled pods: name, group, state (filling, ready, draining), the commit they are seeded at."""
    lab = _lab()
    _emit(_run(lab.pool), f"pool of {lab.name}")


@pool_app.command("drain")
def pool_drain() -> None:
    """Remove every unclaimed pod (nothing of yours is in them)."""
    lab = _lab()
    gone = _run(lab.drain_pool)
    err.print(f"removed {len(gone)} pooled agent(s)")
