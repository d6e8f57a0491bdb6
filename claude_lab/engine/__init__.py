"""The engine layer: the only code that imports `docker`.

One face (`face.EngineFace`, a Protocol), two implementations: `Engine` talks to one Docker engine
(the local socket or DOCKER_HOST); `SwarmEngine` runs the same calls on a Docker Swarm (agents as
one-replica services, exec/logs/stats on the engine of the node running the task). The core sees
only the face, the records of `types` and `LabError`s (`errors` translates Docker's exceptions).
`sim` runs a real multi-node swarm on this machine for trying and testing the swarm backend.
"""
from __future__ import annotations

from .errors import ENGINE_HINT
from .face import EngineFace
from .local import Engine
from .parse import host_nameservers
from .types import (CgroupLayout, ContainerBrief, ContainerInfo, ContainerSpec, NetworkInfo, NodeInfo, StatsReading,
                    VersionInfo, VolumeInfo, memory_bytes)


def connect(backend: str = "local", *, manager_url: str | None = None, registry: str | None = None,
            model_host: str | None = None, node_engines: dict[str, str] | None = None,
            constraints: list[str] | None = None) -> EngineFace:
    """The engine for a backend: one Docker engine, or a Swarm through its manager."""
    if backend == "swarm":
        from .swarm import SwarmEngine

        return SwarmEngine(manager_url, registry=registry, model_host=model_host, node_engines=node_engines,
                           constraints=constraints)
    return Engine(manager_url)


__all__ = ["ENGINE_HINT", "CgroupLayout", "ContainerBrief", "ContainerInfo", "ContainerSpec", "Engine", "EngineFace",
           "NetworkInfo", "NodeInfo", "StatsReading", "VersionInfo", "VolumeInfo", "connect", "host_nameservers",
           "memory_bytes"]
