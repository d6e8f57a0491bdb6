"""The swarm backend: the engine face on a Docker Swarm.

A lab's containers become one-replica services (the dev services and agents) placed by Swarm's
scheduler; an agent is pinned to the node of its first task, because its workspace volume lives
there. Swarm has no exec, stats or archive API, so those calls go to the engine of the node that
runs the task: its endpoint comes from the `node_engines` setting (hostname or node id -> URL) or
from the node label `claude-lab.engine`; the manager's own node is the manager connection.

Containers that must share a task's network namespace (an agent's netguard sidecar) cannot be
services, so they are plain containers on the task's node, made by `create_pod`.

What the core sees does not change: `container("lab_agent-1")` is the service's current task
container, named like the service; a task whose node is down reads state "lost".

Modules: `nodes` (the nodes and their engines), `tasks` (where a service's task runs, pods),
`engine` (`SwarmEngine`: the face), `services` (a spec as a task template), `registry` (images to nodes).
"""
from .engine import SwarmEngine

__all__ = ["SwarmEngine"]
