"""Names and labels: how a lab's containers, networks and volumes are called and found.

All state lives in Docker labels, so a new process finds a lab again from the engine alone.
Container names use `_` as separator, which lab names and agent ids cannot contain, so two
labs never collide (lab `a` agent `b-dev` vs lab `a-b` service `dev`).
"""
from __future__ import annotations

import re

from .errors import InvalidName

PREFIX = "claude-lab"
LAB = f"{PREFIX}.lab"
ROLE = f"{PREFIX}.role"
AGENT = f"{PREFIX}.agent"
GROUP = f"{PREFIX}.group"
KIND = f"{PREFIX}.kind"  # container | network | volume
VERSION = f"{PREFIX}.version"
CONTENT_HASH = f"{PREFIX}.content-hash"
IMAGE_NAME = f"{PREFIX}.image"
PROJECT = f"{PREFIX}.project"
DOCKER_SOCKET = f"{PREFIX}.docker-socket"
NODE = f"{PREFIX}.node"  # set by the swarm backend on what it reports: the node running the container
EGRESS = f"{PREFIX}.egress"  # an agent's egress mode (and its netguard's)
NETGUARD = f"{PREFIX}.netguard"  # on an agent: the name of its netguard sidecar
# An agent's seed (on its workspace volume, fixed when it is made, and copied onto the agent container).
SOURCE = f"{PREFIX}.source"  # "project", a folder or a URL the workspace was seeded from
BASE = f"{PREFIX}.base"  # the commit the workspace started from (diff, replay)
REF_COMMIT = f"{PREFIX}.ref-commit"  # the repository's own commit under it (differs with uncommitted changes)
REF = f"{PREFIX}.ref"  # the ref asked for
SEED_LABELS = {"source": SOURCE, "base": BASE, "ref_commit": REF_COMMIT, "ref": REF}  # a seed's keys -> labels
PORTS = f"{PREFIX}.ports"  # an agent's published container ports, comma-separated
CREATOR = f"{PREFIX}.creator"  # the create call that made a container (a random token): undo removes only its own
# Swarm nodes and services (engine/swarm, engine/sim).
ENGINE_LABEL = f"{PREFIX}.engine"  # node label: the node's engine endpoint (tcp://host:2376, ssh://user@host)
REGISTRY_LABEL = f"{PREFIX}.registry"  # manager node label: where images go (host:port)
MODEL_HOST_LABEL = f"{PREFIX}.model-host"  # manager node label: where every node's containers reach this host
DNS_LABEL = f"{PREFIX}.dns"  # manager node label: the nodes' upstream resolvers, comma-separated
SIDECAR_LABEL = f"{PREFIX}.pod-sidecar"  # service label: the spec of the container sharing its netns (JSON)
# The swarm sim (engine/sim): never `claude-lab.lab`, which is for labs.
SIM = f"{PREFIX}.sim"  # on every container, volume, network and node of a sim
SIM_INIT = f"{PREFIX}.sim-init"  # manager node label: the sim that ran `docker swarm init`
SIM_GWBRIDGE = f"{PREFIX}.sim-gwbridge"  # manager node label: "created" when that init made docker_gwbridge
WORKER_INDEX = f"{PREFIX}.sim-worker"  # a sim worker's number
SIM_CONSTRAINT_LABEL = f"{PREFIX}.sim-constraint"  # manager node label: the placement of the last sim brought up


def sim_member_label(sim: str) -> str:
    """The node label every node of sim `sim` carries (the manager too: it serves every sim on this machine)."""
    return f"{PREFIX}.sim.{sim}"


def sim_constraint(sim: str) -> str:
    """The placement constraint that keeps a lab's services on sim `sim`'s nodes."""
    return f"node.labels.{sim_member_label(sim)}==member"

# Roles of a lab's containers.
DEV, POSTGRES, REDIS, AGENT_ROLE = "dev", "postgres", "redis", "agent"
NETGUARD_ROLE, POOL_ROLE = "netguard", "pool"
SERVICE_ROLES = (POSTGRES, REDIS, DEV)
RESERVED_IDS = frozenset(SERVICE_ROLES) | {"default", "lab"}

_DNS_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


def validate_label(value: str, what: str = "agent id") -> str:
    """Agent ids, group and lab names are DNS labels: they become hostnames and name parts."""
    if not isinstance(value, str) or not _DNS_LABEL.match(value):
        shown = value if isinstance(value, str) else repr(value)
        raise InvalidName(
            f"invalid {what} {shown!r}: use 1-63 lowercase letters, digits and '-', "
            f"starting and ending with a letter or digit (for example 'agent-001')"
        )
    return value


def validate_agent_id(agent_id: str) -> str:
    validate_label(agent_id, "agent id")
    if agent_id in RESERVED_IDS:
        raise InvalidName(
            f"agent id {agent_id!r} is reserved for the lab's own containers "
            f"({', '.join(sorted(RESERVED_IDS))}); pick another, for example 'agent-001'"
        )
    return agent_id


def lab_name_from_folder(folder_name: str) -> str:
    """Turn a folder name into a valid lab name ('My Project_2' -> 'my-project-2')."""
    name = re.sub(r"[^a-z0-9-]+", "-", folder_name.lower()).strip("-")[:63].strip("-")
    return name or "lab"


def container_name(lab: str, role: str, agent_id: str | None = None) -> str:
    return f"{lab}_{agent_id}" if role == AGENT_ROLE else f"{lab}_{role}"


def network_name(lab: str, group: str | None = None) -> str:
    return f"{lab}_net" if group is None else f"{lab}_group_{group}"


def services_network(lab: str) -> str:
    """The network every group's agents share with the services when `services_network = "shared"`; on it an
    agent's netguard lets through only the services' own addresses (netguard/policy.py)."""
    return f"{lab}_services"


# The warm pool (containers/pool.py). A pooled pod is made as agent `pool.<token>` (a dot: never an agent id), so
# its containers are `<lab>_pool.<token>` and `<lab>_pool.<token>_netguard`. Docker's labels are fixed when a
# container is made, so a claim gives the pod its agent's identity by the one thing that can change atomically:
# its names (`<lab>_<agent>`, `<lab>_<agent>_netguard`). `identity()` reads labels and name together.
POOL = f"{PREFIX}.pool"  # not a Docker label: added by identity(), the pool name a pool-born container was made as
POOL_PREFIX = "pool."


def pool_id(token: str) -> str:
    return f"{POOL_PREFIX}{token}"


def identity(name: str, labels: dict[str, str]) -> dict[str, str]:
    """A container's labels as the lab reads them: Docker's, with a pool-born container's identity taken from
    its name -- role `pool` (and no agent) until claimed, then the agent's id and role as a cold agent has."""
    born, lab = labels.get(AGENT, ""), labels.get(LAB)
    if not born.startswith(POOL_PREFIX) or not lab or not name.startswith(f"{lab}_"):
        return labels
    rest = name[len(lab) + 1:]
    sidecar = rest.endswith("_netguard")
    agent = rest[:-len("_netguard")] if sidecar else rest
    out = {**labels, POOL: born}
    if agent == born or agent.startswith(f"{born}."):  # still in the pool: filling, .ready or .drain
        out.pop(AGENT)
        if not sidecar:
            out[ROLE] = POOL_ROLE
        return out
    out[AGENT] = agent
    if not sidecar and NETGUARD in labels:
        out[NETGUARD] = f"{lab}_{agent}_netguard"
    return out


def workspace_volume(lab: str, agent_id: str) -> str:
    return f"{lab}_{agent_id}_workspace"


def agent_volume(lab: str, agent_id: str, labels: dict[str, str]) -> str:
    """An agent's workspace volume: a pool-born agent keeps the one it was made with (volumes have fixed names)."""
    return workspace_volume(lab, labels.get(POOL) or agent_id)


def postgres_volume(lab: str) -> str:
    return f"{lab}_postgres_data"


def labels(lab: str, kind: str, **extra: str | None) -> dict[str, str]:
    out = {LAB: lab, KIND: kind}
    for key, value in extra.items():
        if value is not None:
            out[f"{PREFIX}.{key.replace('_', '-')}"] = str(value)
    return out
