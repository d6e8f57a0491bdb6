"""The CLI's lab commands: start, stop, restart, destroy, status, stats, list, create, remove, exec, enter, logs,
cleanup, build, doctor."""
from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict
from typing import TYPE_CHECKING, List, Optional

import typer

from ..errors import LabError, LabTimeout
from .app import _emit, _fail, _lab, _progress, _run, _verbose_progress, app, err, escape, out, state
from ..util.lazy import lazy

pd = lazy("pandas")  # loaded when a DataFrame is made (the CLI starts without it)

if TYPE_CHECKING:
    from rich.table import Table

STATUS_IMPORTANCE = ["name", "role", "state", "health", "agent", "group", "egress", "ports", "node", "created",
                     "secrets", "image"]


@app.command()
def start(
    target: Optional[str] = typer.Argument(None, help="One container (an agent id, dev, postgres, redis); "
                                           "default: the whole lab."),
    no_build: bool = typer.Option(False, "--no-build", help="Fail instead of building missing images."),
) -> None:
    """Start the lab (build what is missing -- every image an agent needs too --, start PostgreSQL, Redis and the
    dev container, wait until healthy), or one container of it."""
    lab = _run(_lab)
    if target:
        _run(lab.start, target)
        _emit(_short(lab, _one(lab, target)), f"lab {lab.name}: started {target}", importance=STATUS_IMPORTANCE)
        return
    df = _run(lab.up, build=not no_build, progress=_progress)
    _emit(_short(lab, df), f"lab {lab.name}: up", importance=STATUS_IMPORTANCE)


def _one(lab, target: str) -> pd.DataFrame:
    df = _run(lab.status)
    name = _run(lab.container_name, target)
    return df[df["name"] == name]


@app.command()
def stop(target: Optional[str] = typer.Argument(None, help="One container; default: every container of the lab.")) -> None:
    """Stop the lab's containers (volumes and networks stay), or one of them."""
    lab = _run(_lab)
    if target:
        _run(lab.stop, target)
        _emit(_short(lab, _one(lab, target)), f"lab {lab.name}: stopped {target}", importance=STATUS_IMPORTANCE)
        return
    _emit(_short(lab, _run(lab.down)), f"lab {lab.name}: stopped", importance=STATUS_IMPORTANCE)


@app.command()
def restart(target: str = typer.Argument(..., help="An agent id, dev, postgres or redis.")) -> None:
    """Restart one container (an agent's netguard comes back first, its rules applied)."""
    lab = _run(_lab)
    _run(lab.restart, target)
    _emit(_short(lab, _one(lab, target)), f"lab {lab.name}: restarted {target}", importance=STATUS_IMPORTANCE)


@app.command()
def destroy(
    volumes: bool = typer.Option(False, "--volumes", help="Also delete the volumes: agents' workspaces, the database."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask."),
) -> None:
    """Remove every container and network of the lab (and its volumes with --volumes)."""
    lab = _run(_lab)
    if not yes:
        what = "containers, networks and volumes (workspaces, the database)" if volumes else "containers and networks"
        if not sys.stdin.isatty():
            err.print(f"[red]error:[/] destroy removes lab {lab.name}'s {what}; pass --yes to confirm "
                      f"(no terminal here to ask)", highlight=False)
            raise typer.Exit(2)
        if not typer.confirm(f"Remove lab {lab.name}'s {what}?"):
            raise typer.Exit(1)
    removed = _run(lab.destroy, volumes=volumes)
    if state.json:
        print(json.dumps(removed))
    else:
        out.print(f"removed {len(removed['containers'])} containers, {len(removed['networks'])} networks, "
                  f"{len(removed['volumes'])} volumes of lab {lab.name}", highlight=False)


STATS_IMPORTANCE = ["name", "state", "cpu_percent", "mem_bytes", "mem_percent", "pids", "mem_limit", "net_rx", "net_tx",
                    "blk_read", "blk_write", "role", "agent", "group", "cpu_seconds", "timestamp"]


def _stats_frame(lab) -> pd.DataFrame:
    df = _run(lab.stats)
    mib = lambda v: f"{v / (1 << 20):,.1f} MiB" if pd.notna(v) and v else ""  # noqa: E731
    shown = df.copy()
    for col in ("mem_bytes", "mem_limit", "net_rx", "net_tx", "blk_read", "blk_write"):
        if col in shown.columns:
            shown[col] = shown[col].map(mib)
    if "cpu_percent" in shown.columns:
        shown["cpu_percent"] = shown["cpu_percent"].map(lambda v: f"{v:.1f}%" if pd.notna(v) else "")
    return shown


@app.command()
def stats(
    watch: bool = typer.Option(False, "--watch", "-w", help="Keep refreshing (a live table on a terminal)."),
    interval: float = typer.Option(2.0, "--interval", help="Seconds between refreshes with --watch."),
    count: int = typer.Option(0, "--count", help="With --watch: stop after this many refreshes (0: until Ctrl-C)."),
) -> None:
    """CPU, memory, network, block I/O and pids of every container of the lab, as docker stats means them."""
    lab = _run(_lab)
    if not watch:
        _emit(_stats_frame(lab), f"lab {lab.name}: stats", importance=STATS_IMPORTANCE)
        return
    import time

    from rich.live import Live

    shown = 0
    try:
        if out.is_terminal and not state.json:
            with Live(console=out.console, auto_refresh=False) as live:
                while not count or shown < count:
                    live.update(_stats_table(lab), refresh=True)
                    shown += 1
                    if not count or shown < count:
                        time.sleep(interval)
        else:  # a pipe: one table (or one JSON line) per refresh
            while not count or shown < count:
                df = _run(lab.stats)
                if state.json:
                    print(df.to_json(orient="records", date_format="iso"), flush=True)
                else:
                    _emit(_stats_frame(lab), f"lab {lab.name}: stats", importance=STATS_IMPORTANCE)
                shown += 1
                if not count or shown < count:
                    time.sleep(interval)
    except KeyboardInterrupt:
        pass


def _stats_table(lab) -> "Table":
    from .app import _table

    return _table(_stats_frame(lab), f"lab {lab.name}: stats", STATS_IMPORTANCE)[0]


def _short(lab, df: pd.DataFrame) -> pd.DataFrame:
    """Container names without the lab's prefix for a table (its title names the lab; --json keeps them whole)."""
    if state.json or "name" not in df.columns:
        return df
    return df.assign(name=df["name"].map(lambda v: v[len(lab.name) + 1:] if str(v).startswith(f"{lab.name}_") else v))


@app.command()
def status() -> None:
    """Every container of the lab: role, state, health, ports (names without the lab's prefix; --json has them)."""
    lab = _run(_lab)
    _emit(_short(lab, _run(lab.status)), f"lab {lab.name}", importance=STATUS_IMPORTANCE)


@app.command("list")
def list_agents(group: Optional[str] = typer.Option(None, "--group", "-g", help="Only this group.")) -> None:
    """The lab's agents."""
    lab = _run(_lab)
    df = _run(lab.status)
    df = df[df["role"] == "agent"]
    if group:
        df = df[df["group"] == group]
    cols = ["agent", "group", "state", "egress", "secrets", "created", "image", "name"]
    shown = df[cols] if state.json else df[cols[:-1]]  # the container's name: for scripts (the table has the id)
    _emit(shown, f"lab {lab.name}: agents", importance=["agent", "state", "group", "egress", "created", "secrets", "image"])


@app.command()
def create(
    agent_id: str = typer.Argument(..., help="Agent id: lowercase letters, digits and '-', e.g. agent-001."),
    group: Optional[str] = typer.Option(None, "--group", "-g", help="Put the agent on this group's own network."),
    memory: Optional[str] = typer.Option(None, help="Memory limit, e.g. 2g."),
    cpus: Optional[float] = typer.Option(None, help="CPU limit, e.g. 1.5."),
    pids: Optional[int] = typer.Option(None, help="Process limit."),
    source: str = typer.Option("auto", "--from", help="The workspace's start: project (a git clone of the project), "
                               "a folder, a git URL, or none (empty). Default: project in a git project."),
    ref: Optional[str] = typer.Option(None, "--ref", help="Branch, tag or commit to start from (default: HEAD)."),
    uncommitted: bool = typer.Option(False, "--uncommitted", help="Bring your uncommitted changes along too."),
    port: List[int] = typer.Option([], "--port", "-p", help="Publish this container port on the host (repeatable)."),
) -> None:
    """Create and start an agent container with its own workspace volume (seeded from your project)."""
    lab = _run(_lab)
    agent = _run(lab.create_agent, agent_id, group=group, memory=memory, cpus=cpus, pids=pids, progress=_progress,
                 source=None if source == "none" else source, ref=ref, include_uncommitted=uncommitted, ports=port)
    seeded = {k: agent.info.labels.get(f"claude-lab.{k}") for k in ("source", "base")}
    if state.json:
        print(json.dumps({"agent": agent.id, "group": agent.group, "container": agent.name, "state": agent.state,
                          "source": seeded["source"], "base": seeded["base"], "ports": list(port)}))
        return
    where = f", from {seeded['source']} at {seeded['base'][:12]}" if seeded["base"] else ", empty workspace"
    out.print(f"created agent [bold]{agent.id}[/] ({agent.name}, workspace volume {agent.workspace_volume}{where})")
    for p in port:
        out.print(f"  port {p}: {_run(lab.url, agent.id, p)}")


@app.command()
def remove(
    agent_id: str,
    volumes: bool = typer.Option(False, "--volumes", help="Also delete the agent's workspace volume."),
) -> None:
    """Remove an agent's container (its workspace volume stays unless --volumes)."""
    lab = _run(_lab)
    _run(lab.remove_agent, agent_id, volumes=volumes)
    if not state.json:
        out.print(f"removed agent {agent_id}" + (" and its workspace" if volumes else ""))


@app.command(context_settings={"allow_interspersed_args": False})
def exec(
    target: str = typer.Argument(..., help="Agent id, or dev / postgres / redis."),
    command: List[str] = typer.Argument(..., help="The command, after `--`: claude-lab exec agent-001 -- ls -la"),
    user: Optional[str] = typer.Option(None, "--user", "-u"),
    workdir: Optional[str] = typer.Option(None, "--workdir", "-w"),
    env: List[str] = typer.Option([], "--env", "-e", help="KEY=VALUE, repeatable."),
    timeout: Optional[float] = typer.Option(None, "--timeout", help="Seconds; the command is stopped after."),
) -> None:
    """Run a command in a container, streaming its output; exits with the command's exit code.

    Options go before TARGET; everything after `--` is the command: exec -u root agent-001 -- ls -la
    """
    environment = {}
    for item in env:
        if "=" not in item:
            err.print(f"[red]error:[/] --env {escape(repr(item))}: use KEY=VALUE")
            raise typer.Exit(2)
        key, value = item.split("=", 1)
        environment[key] = value
    if command and command[0] == "--":  # click keeps the separator when it follows the target
        command = command[1:]
    if not command:
        err.print("[red]error:[/] no command given: claude-lab exec TARGET -- COMMAND [ARGS...]")
        raise typer.Exit(2)
    lab = _run(_lab)
    stream = _run(lab.exec_stream, target, command, user=user, workdir=workdir, env=environment, timeout=timeout)
    try:
        for chunk in stream:
            if not state.json:
                sink = sys.stdout if chunk.stream == "stdout" else sys.stderr
                sink.write(chunk.text)
                sink.flush()
    except LabTimeout as exc:
        err.print(f"[red]error:[/] {escape(str(exc))}", highlight=False)
        raise typer.Exit(124)
    except LabError as exc:
        _fail(exc)
    result = stream.result
    if state.json:
        print(json.dumps({k: v for k, v in asdict(result).items()}))
    raise typer.Exit(result.exit_code if result.exit_code is not None else 1)


@app.command()
def enter(
    target: str = typer.Argument("dev", help="Agent id, or dev (default)."),
    shell: str = typer.Option("bash", "--shell"),
    user: Optional[str] = typer.Option(None, "--user", "-u"),
) -> None:
    """An interactive shell in a container (docker exec -it)."""
    lab = _run(_lab)
    argv = _run(lab.enter_argv, target, shell=shell, user=user)
    env = {**os.environ, **_run(lab.enter_env, target)}  # an agent's secrets, passed to docker by name
    try:
        os.execvpe(argv[0], argv, env)
    except FileNotFoundError:
        err.print("[red]error:[/] the docker command-line client is needed for `enter`; install docker.io "
                  "(or docker-ce-cli) and try again")
        raise typer.Exit(1)


@app.command()
def logs(
    target: str = typer.Argument(..., help="Agent id, or dev / postgres / redis."),
    tail: Optional[int] = typer.Option(None, "--tail", "-t", help="Only the last N lines."),
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing new lines."),
) -> None:
    """A container's log."""
    lab = _run(_lab)
    result = _run(lab.logs, target, tail=tail, follow=follow)
    if follow:
        try:
            for chunk in result:
                sys.stdout.write(chunk)
                sys.stdout.flush()
        except KeyboardInterrupt:
            pass
    else:
        sys.stdout.write(result)


@app.command()
def cleanup(volumes: bool = typer.Option(False, "--volumes", help="Also delete removed agents' workspaces.")) -> None:
    """Remove the lab's stopped containers and unused networks (never anything without the lab's label)."""
    lab = _run(_lab)
    removed = _run(lab.cleanup, volumes=volumes)
    if state.json:
        print(json.dumps(removed))
    else:
        for kind, names in removed.items():
            out.print(f"removed {len(names)} {kind}" + (f": {', '.join(names)}" if names else ""))


@app.command()
def build(
    images: List[str] = typer.Argument(None, help="Images to build (default: all): base dev agent postgres redis netguard."),
    force: bool = typer.Option(False, "--force", help="Rebuild even when the content hash matches."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show every line of build output."),
) -> None:
    """Build the lab's images in dependency order; unchanged images are skipped."""
    lab = _run(_lab)
    outcomes = _run(lab.build, images or None, force=force, progress=_verbose_progress if verbose else _progress)
    _emit(pd.DataFrame([asdict(o) for o in outcomes]), "images")


@app.command()
def doctor() -> None:
    """Check the engine, images, ports and CA certificates; print a fix for each problem."""
    from ..doctor import run_checks

    lab = _run(_lab)
    checks = run_checks(lab)
    if state.json:
        print(json.dumps([asdict(c) for c in checks]))
    else:
        from rich.table import Table

        table = Table(title="claude-lab doctor", title_justify="left")
        for col in ("check", "ok", "detail", "fix"):
            table.add_column(col)
        for c in checks:
            table.add_row(c.name, "[green]ok[/]" if c.ok else "[red]FAIL[/]", c.detail, c.fix)
        out.print(table)
    raise typer.Exit(0 if all(c.ok for c in checks) else 1)
