"""The CLI's `swarm-sim` commands: a real multi-node Docker Swarm on this machine, for the swarm backend."""
from __future__ import annotations

import json
from dataclasses import asdict

import typer

from ..errors import NotFound
from .app import _emit, _fail, _run, app, err, escape, out, state
from ..util.lazy import lazy

pd = lazy("pandas")  # loaded when a DataFrame is made (the CLI starts without it)

# -- swarm-sim: a real multi-node Docker Swarm on this machine, for the swarm backend ------------------
swarm_sim = typer.Typer(help="A local Docker Swarm: the host engine as manager plus Docker-in-Docker workers.",
                        no_args_is_help=True)
app.add_typer(swarm_sim, name="swarm-sim")
SIM_NAME_HELP = "Name of the sim (prefix of its containers, volumes and network)."


def _sim_say(text: str) -> None:
    if not state.json:
        err.print(f"[cyan]swarm-sim[/] {escape(text)}", highlight=False)


def _emit_sim(sim_name: str) -> None:
    from .. import swarmsim

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
    from .. import swarmsim

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
    from .. import swarmsim

    removed = _run(swarmsim.sim_down, sim_name, force=force)
    if state.json:
        print(json.dumps(removed))
        return
    for kind, items in removed.items():
        if isinstance(items, list):
            out.print(f"removed {len(items)} {kind}" + (f": {', '.join(items)}" if items else ""))
    out.print("left the swarm (the sim had made it)" if removed.get("left_swarm")
              else "the host engine stays in its swarm (the sim did not make it, or another sim still uses it)")
