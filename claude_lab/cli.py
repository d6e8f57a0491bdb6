"""`claude-lab`: the command line over `Lab` (a thin front end: no Docker calls here)."""
from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict
from typing import Any, List, Optional

import pandas as pd
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ._version import __version__
from .doctor import run_checks
from .errors import (
    AlreadyExists,
    BuildError,
    ConfigError,
    EngineUnavailable,
    InvalidName,
    LabError,
    LabTimeout,
    NotFound,
    PortInUse,
)
from .images import BuildEvent
from .lab import Lab

app = typer.Typer(
    help="Run Claude Code agents in isolated Docker containers next to your dev services.",
    no_args_is_help=True,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
out = Console()
err = Console(stderr=True)

# Exit codes a script can rely on.
EXIT_CODES: list[tuple[type[LabError], int]] = [
    (EngineUnavailable, 3), (NotFound, 4), (PortInUse, 5), (BuildError, 6), (LabTimeout, 7),
    (InvalidName, 8), (ConfigError, 8), (AlreadyExists, 9), (LabError, 1),
]


class State:
    project_dir: str = "."
    name: Optional[str] = None
    json: bool = False


state = State()


def _lab() -> Lab:
    return Lab(state.project_dir, state.name)


def _fail(exc: LabError) -> None:
    code = next(c for kind, c in EXIT_CODES if isinstance(exc, kind))
    if state.json:
        print(json.dumps({"error": type(exc).__name__, "message": str(exc)}))
    else:
        err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, markup=True)
    raise typer.Exit(code)


def _emit(df: pd.DataFrame, title: str) -> None:
    if state.json:
        print(df.to_json(orient="records", date_format="iso"))
        return
    table = Table(title=title, title_justify="left")
    for col in df.columns:
        table.add_column(str(col))
    for _, row in df.iterrows():
        table.add_row(*("" if pd.isna(v) else str(v) for v in row.tolist()))
    out.print(table)


def _progress(event: BuildEvent) -> None:
    if state.json:
        return
    if event.kind == "step":
        err.print(f"[cyan]{event.image}[/] \\[{event.step}/{event.total}] {escape(event.text[:110])}",
                  highlight=False)
    elif event.kind in ("done", "skipped", "start"):
        err.print(f"[cyan]{event.image}[/] {escape(event.text)}", highlight=False)


def _verbose_progress(event: BuildEvent) -> None:
    _progress(event)
    if event.kind == "output" and not state.json:
        err.print(f"  {event.text}", highlight=False, markup=False)


def _run(fn, *args: Any, **kwargs: Any) -> Any:
    try:
        return fn(*args, **kwargs)
    except LabError as exc:
        _fail(exc)


def _print_version(value: bool) -> None:
    # Eager: a group's callback only runs when a command follows, so `--version` alone must act here.
    if value:
        print(__version__)
        raise typer.Exit(0)


@app.callback()
def main_options(
    project_dir: str = typer.Option(".", "--project-dir", "-C", help="The project folder (default: here)."),
    name: Optional[str] = typer.Option(None, "--name", "-n", help="Lab name (default: from the folder name)."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
    version: bool = typer.Option(False, "--version", help="Print the version and exit.",
                                 callback=_print_version, is_eager=True),
) -> None:
    state.project_dir, state.name, state.json = project_dir, name, as_json


@app.command()
def start(no_build: bool = typer.Option(False, "--no-build", help="Fail instead of building missing images.")) -> None:
    """Build what is missing, start PostgreSQL, Redis and the dev container, wait until healthy."""
    lab = _run(_lab)
    df = _run(lab.up, build=not no_build, progress=_progress)
    _emit(df, f"lab {lab.name}: up")


@app.command()
def stop() -> None:
    """Stop every container of the lab (volumes and networks stay)."""
    lab = _run(_lab)
    _emit(_run(lab.down), f"lab {lab.name}: stopped")


@app.command()
def status() -> None:
    """Every container of the lab: role, state, health, ports."""
    lab = _run(_lab)
    _emit(_run(lab.status), f"lab {lab.name}")


@app.command("list")
def list_agents(group: Optional[str] = typer.Option(None, "--group", "-g", help="Only this group.")) -> None:
    """The lab's agents."""
    lab = _run(_lab)
    df = _run(lab.status)
    df = df[df["role"] == "agent"]
    if group:
        df = df[df["group"] == group]
    _emit(df[["agent", "group", "state", "name", "image", "created"]], f"lab {lab.name}: agents")


@app.command()
def create(
    agent_id: str = typer.Argument(..., help="Agent id: lowercase letters, digits and '-', e.g. agent-001."),
    group: Optional[str] = typer.Option(None, "--group", "-g", help="Put the agent on this group's own network."),
    memory: Optional[str] = typer.Option(None, help="Memory limit, e.g. 2g."),
    cpus: Optional[float] = typer.Option(None, help="CPU limit, e.g. 1.5."),
    pids: Optional[int] = typer.Option(None, help="Process limit."),
) -> None:
    """Create and start an agent container with its own workspace volume."""
    lab = _run(_lab)
    agent = _run(lab.create_agent, agent_id, group=group, memory=memory, cpus=cpus, pids=pids, progress=_progress)
    if state.json:
        print(json.dumps({"agent": agent.id, "group": agent.group, "container": agent.name, "state": agent.state}))
    else:
        out.print(f"created agent [bold]{agent.id}[/] ({agent.name}, workspace volume {agent.workspace_volume})")


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
    try:
        os.execvp(argv[0], argv)
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
    images: List[str] = typer.Argument(None, help="Images to build (default: all): base dev agent postgres redis."),
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
    lab = _run(_lab)
    checks = run_checks(lab)
    if state.json:
        print(json.dumps([asdict(c) for c in checks]))
    else:
        table = Table(title="claude-lab doctor", title_justify="left")
        for col in ("check", "ok", "detail", "fix"):
            table.add_column(col)
        for c in checks:
            table.add_row(c.name, "[green]ok[/]" if c.ok else "[red]FAIL[/]", c.detail, c.fix)
        out.print(table)
    raise typer.Exit(0 if all(c.ok for c in checks) else 1)


# -- swarm-sim: a real multi-node Docker Swarm on this machine, for the swarm backend ------------------
swarm_sim = typer.Typer(help="A local Docker Swarm: the host engine as manager plus Docker-in-Docker workers.",
                        no_args_is_help=True)
app.add_typer(swarm_sim, name="swarm-sim")
SIM_NAME_HELP = "Name of the sim (prefix of its containers, volumes and network)."


def _sim_say(text: str) -> None:
    if not state.json:
        err.print(f"[cyan]swarm-sim[/] {escape(text)}", highlight=False)


def _emit_sim(sim_name: str) -> None:
    from . import swarmsim

    sim = _run(swarmsim.sim_status, sim_name)
    if sim is None:
        _fail(NotFound(f"no swarm sim named {sim_name}; start one with `claude-lab swarm-sim up --workers 2`"))
    nodes = _run(swarmsim.sim_nodes, sim_name)
    if state.json:
        print(json.dumps({**asdict(sim), "nodes": [asdict(node) for node in nodes]}))
        return
    df = pd.DataFrame([{"hostname": node.hostname, "role": node.role, "state": node.state,
                        "availability": node.availability, "engine": node.engine_url or "(manager: this engine)"}
                       for node in nodes], columns=["hostname", "role", "state", "availability", "engine"])
    _emit(df, f"swarm sim {sim.name}")
    out.print(f"registry [bold]{sim.registry}[/] (the same reference on every node) · model host "
              f"[bold]{sim.model_host}[/] · network {sim.network}", highlight=False)


@swarm_sim.command("up")
def swarm_sim_up(
    workers: int = typer.Option(2, "--workers", "-w", min=0, help="Number of worker nodes."),
    registry_port: int = typer.Option(5000, "--registry-port", help="Host port (127.0.0.1) of the sim's registry."),
    sim_name: str = typer.Option("claude-lab-sim", "--name", help=SIM_NAME_HELP),
) -> None:
    """Start the sim (idempotent; another --workers adds or removes workers), then show its nodes."""
    from . import swarmsim

    _run(swarmsim.sim_up, workers, name=sim_name, registry_port=registry_port, progress=_sim_say)
    _emit_sim(sim_name)


@swarm_sim.command("status")
def swarm_sim_status(sim_name: str = typer.Option("claude-lab-sim", "--name", help=SIM_NAME_HELP)) -> None:
    """The sim's nodes (hostname, role, state, availability, engine URL), its registry and model host."""
    _emit_sim(sim_name)


@swarm_sim.command("down")
def swarm_sim_down(
    force: bool = typer.Option(False, "--force", help="Leave the swarm even if lab services still run on it."),
    sim_name: str = typer.Option("claude-lab-sim", "--name", help=SIM_NAME_HELP),
) -> None:
    """Remove the sim's workers, registry, volumes and network; leave the swarm if the sim made it."""
    from . import swarmsim

    removed = _run(swarmsim.sim_down, sim_name, force=force)
    if state.json:
        print(json.dumps(removed))
        return
    for kind, items in removed.items():
        if isinstance(items, list):
            out.print(f"removed {len(items)} {kind}" + (f": {', '.join(items)}" if items else ""))
    out.print("left the swarm (the sim had made it)" if removed.get("left_swarm")
              else "the host engine stays in its swarm (the sim did not make it, or another sim still uses it)")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
