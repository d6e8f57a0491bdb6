"""The engine layer: the only code that imports `docker`.

One face, two implementations: `Engine` talks to one Docker engine (the local socket or
DOCKER_HOST); `SwarmEngine` runs the same calls on a Docker Swarm (agents as one-replica
services, exec/logs/stats on the engine of the node running the task). The core only sees the
face: `ContainerInfo`/`ContainerSpec` dataclasses and `LabError`s.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from .local import (ENGINE_HINT, CgroupLayout, ContainerBrief, ContainerInfo, ContainerSpec, Engine,
                    StatsReading, memory_bytes)



def connect(backend: str = "local", *, manager_url: str | None = None, registry: str | None = None,
            model_host: str | None = None, node_engines: dict[str, str] | None = None) -> "Engine | SwarmEngine":
    """The engine for a backend: one Docker engine, or a Swarm through its manager."""
    if backend == "swarm":
        from .swarm import SwarmEngine

        return SwarmEngine(manager_url, registry=registry, model_host=model_host, node_engines=node_engines)
    return Engine(manager_url)


__all__ = ["ENGINE_HINT", "CgroupLayout", "ContainerBrief", "ContainerInfo", "ContainerSpec", "Engine",
           "StatsReading", "connect", "memory_bytes"]

if TYPE_CHECKING:
    from .swarm import SwarmEngine
