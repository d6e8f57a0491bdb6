"""The swarm sim for front ends: a real multi-node Docker Swarm on this machine.

`engine/sim` does the Docker work; this front builds the sim's two images first (the engine layer
builds nothing: images are the lab's image builder's), so the CLI, notebooks and tests import from here.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from .config import LabConfig
from .engine import Engine
from .engine.sim import (DEFAULT_NAME, SimNode, SimWorker, SwarmSim, push, sim_down, sim_nodes, sim_status,
                         start_worker, stop_worker)
from .engine.sim import sim_up as _sim_up
from .images import BuildEvent, ImageBuilder

__all__ = ["DEFAULT_NAME", "SimNode", "SimWorker", "SwarmSim", "build_images", "push", "sim_down", "sim_nodes",
           "sim_status", "sim_up", "start_worker", "stop_worker"]

Say = Callable[[str], None]


def build_images(engine: Engine, config: LabConfig | None = None, say: Say | None = None) -> tuple[str, str]:
    """Build the worker and registry images if missing or stale (parents first); their tags."""
    cfg = config if config is not None else LabConfig.load(Path(__file__).resolve().parent.parent)
    builder = ImageBuilder(engine, cfg)
    tell: Say = say or (lambda text: None)

    def report(event: BuildEvent) -> None:
        if event.kind in ("start", "done"):
            tell(f"image {event.image}: {event.text}")
        elif event.kind == "step":
            tell(f"image {event.image}: step {event.step}/{event.total} {event.text[:80]}")

    builder.build(["swarm-worker", "registry"], progress=report)
    return builder.tag("swarm-worker"), builder.tag("registry")


def sim_up(workers: int = 2, name: str = DEFAULT_NAME, registry_port: int = 5000, progress: Say | None = None,
           *, engine: Engine | None = None, config: Any = None, timeout: float = 120.0) -> SwarmSim:
    """Start (or adjust) a swarm of the host engine plus `workers` Docker-in-Docker workers; idempotent.

    A second call with the same `workers` finds everything in place; another number adds or removes
    workers. On failure everything this call made is removed again (what earlier calls made stays).
    `config` is a `LabConfig` for the image builds (default: the settings found from the environment).
    """
    eng = engine if engine is not None else Engine()
    images = build_images(eng, config, progress)
    return _sim_up(workers, name, registry_port, progress, images=images, engine=eng, timeout=timeout)
