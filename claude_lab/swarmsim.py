"""The swarm sim for front ends: a real multi-node Docker Swarm on this machine (engine/sim.py does the work).

The CLI and notebooks import from here, never from the engine layer: only `claude_lab.engine`
talks to Docker.
"""
from __future__ import annotations

from .engine.sim import (DEFAULT_NAME, SimNode, SimWorker, SwarmSim, push, sim_down, sim_nodes, sim_status,
                         sim_up, start_worker, stop_worker)

__all__ = ["DEFAULT_NAME", "SimNode", "SimWorker", "SwarmSim", "push", "sim_down", "sim_nodes", "sim_status",
           "sim_up", "start_worker", "stop_worker"]
