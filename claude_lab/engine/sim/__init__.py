"""A real multi-node Docker Swarm on one machine, for trying the swarm backend and testing it.

The host engine is the manager; each worker is a Docker-in-Docker container (image
`claude-lab/swarm-worker`) on a private bridge network, with its own engine answering on
`tcp://<ip>:2375` and joined to the host's swarm. A registry container (`claude-lab/registry`)
on the same network is published on the host as `127.0.0.1:<port>` and forwarded to the same
port on every worker's loopback, so one reference `localhost:<port>/<image>` pulls everywhere
(Docker trusts 127.0.0.0/8 registries over plain HTTP without any daemon configuration).

Everything the sim makes carries the label `claude-lab.sim=<name>` (never `claude-lab.lab`,
which is for labs). The manager node's label `claude-lab.sim-init=<name>` records that this sim
initialised the swarm, so `sim_down` only leaves a swarm the sim made.

Modules: `common` (records, names, helpers), `setup` (network, registry, swarm, workers), `api` (the calls).
"""
from .api import push, sim_down, sim_nodes, sim_status, sim_up, start_worker, stop_worker
from .common import DEFAULT_NAME, SimNode, SimWorker, SwarmSim

__all__ = ["DEFAULT_NAME", "SimNode", "SimWorker", "SwarmSim", "push", "sim_down", "sim_nodes", "sim_status",
           "sim_up", "start_worker", "stop_worker"]
