"""The swarm sim's records, names and small helpers around docker-py (see the package's docstring)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable

import docker
import docker.errors

from ...errors import LabError
from ...naming import KIND, ROLE, SIM, sim_constraint, validate_label
from ...util.waiting import wait_until
from ..errors import DOCKER_ERRORS, call as _call
from ..local import Engine

DEFAULT_NAME = "claude-lab-sim"
TRANSIENT = (LabError, *DOCKER_ERRORS)  # while polling: "not yet"


def _poll(condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.2,
          retry_on: tuple[type[BaseException], ...] = TRANSIENT) -> Any:
    """Wait for a condition with a deadline; errors in `retry_on` count as "not yet"."""
    return wait_until(condition, timeout, f"{what} did not happen within {timeout:.0f} s", interval=interval,
                      retry_on=retry_on)


WORKER_PORT = 2375  # plain TCP: the sim network is a private bridge only this host reaches
SWARM_PORT = 2377
REGISTRY_INNER_PORT = 5000
WORKER_API = "1.41"  # the workers run Debian's docker.io 20.10
# Everything a Docker-in-Docker engine needs without --privileged (which fails on this kind of host).
WORKER_HOST_OPTIONS: dict[str, Any] = {
    "cap_add": ["ALL"],
    "cap_drop": ["SYS_RESOURCE"],
    "security_opt": ["seccomp=unconfined", "apparmor=unconfined"],
    "device_cgroup_rules": ["a *:* rwm"],
}
# `--security-opt systempaths=unconfined` is the CLI's spelling; the API wants the lists emptied.
UNMASKED_PATHS: dict[str, list[str]] = {"MaskedPaths": [], "ReadonlyPaths": []}
HEARTBEAT_NS = 2_000_000_000  # when the sim initialises the swarm: a stopped worker is Down in seconds, not ~15 s

Progress = Callable[[str], None]


@dataclass(frozen=True)
class SimWorker:
    name: str  # the container
    node_id: str
    hostname: str
    engine_url: str  # "tcp://<ip>:2375"


@dataclass(frozen=True)
class SwarmSim:
    name: str
    manager_url: str  # the host engine's base_url
    registry: str  # "localhost:<port>": the same reference works on the manager and every worker
    model_host: str  # IPv4 where containers on every node reach this host (the sim network's gateway)
    network: str  # the sim's bridge network
    workers: tuple[SimWorker, ...]

    @property
    def constraints(self) -> list[str]:
        """Placement that keeps a lab's services on this sim's nodes (`swarm_constraints`)."""
        return [sim_constraint(self.name)]


@dataclass(frozen=True)
class SimNode:
    """One node of the sim's swarm as the manager sees it (for `swarm-sim status`)."""

    hostname: str
    role: str  # manager | worker
    state: str  # ready | down | unknown | disconnected
    availability: str  # active | pause | drain
    engine_url: str  # "" for the manager: the swarm backend uses its own manager connection
    node_id: str


# -- names ----------------------------------------------------------------------------------
def network_name(name: str) -> str:
    return f"{name}_net"


def registry_name(name: str) -> str:
    return f"{name}_registry"


def registry_volume(name: str) -> str:
    return f"{name}_registry_data"


def worker_name(name: str, index: int) -> str:
    return f"{name}_worker-{index}"


def worker_volume(name: str, index: int) -> str:
    return f"{name}_worker-{index}_docker"


def worker_hostname(name: str, index: int) -> str:
    return f"{name}-worker-{index}"


def _check_name(name: str) -> str:
    validate_label(name, "swarm sim name")
    if len(worker_hostname(name, 99)) > 63:
        raise LabError(f"swarm sim name {name!r} is too long: worker hostnames {worker_hostname(name, 1)!r} "
                       f"must stay within 63 characters; use a name of at most 53")
    return name


def _labels(name: str, kind: str, **extra: str) -> dict[str, str]:
    return {SIM: name, KIND: kind, **extra}


def _worker_client(url: str, timeout: int = 5) -> docker.APIClient:
    return docker.APIClient(base_url=url, timeout=timeout, version=WORKER_API)  # fixed: no version request


def _ip(attrs: dict[str, Any], network: str) -> str | None:
    net = ((attrs.get("NetworkSettings") or {}).get("Networks") or {}).get(network) or {}
    return net.get("IPAddress") or None


def _engine(engine: Engine | None) -> Engine:
    return engine if engine is not None else Engine()


def _containers(api: docker.APIClient, name: str, role: str | None = None) -> list[dict[str, Any]]:
    labels = [f"{SIM}={name}"] + ([f"{ROLE}={role}"] if role else [])
    found = _call(api.containers, all=True, filters={"label": labels}, what=f"listing sim {name}'s containers")
    out = []
    for c in found:
        try:
            out.append(api.inspect_container(c["Id"]))
        except docker.errors.NotFound:
            continue
    return out


def _swarm_state(api: docker.APIClient) -> dict[str, Any]:
    return (_call(api.info, what="reading the engine's info").get("Swarm") or {})


def _nodes(api: docker.APIClient) -> list[dict[str, Any]]:
    return _call(api.nodes, what="listing swarm nodes")


def _set_node_labels(api: docker.APIClient, node_id: str, add: dict[str, str], drop: Iterable[str] = ()) -> None:
    """Update a node's labels; retried when another writer bumped the node's version meanwhile."""
    for attempt in range(5):
        node = _call(api.inspect_node, node_id, what=f"node {node_id}")
        spec = dict(node["Spec"])
        labels = dict(spec.get("Labels") or {})
        new = {k: v for k, v in {**labels, **add}.items() if k not in set(drop)}
        if new == labels:
            return
        spec["Labels"] = new
        try:
            api.update_node(node_id, node["Version"]["Index"], spec)
            return
        except docker.errors.APIError as exc:
            if "update out of sequence" not in str(exc) or attempt == 4:
                raise LabError(f"could not label swarm node {node_id}: {exc.explanation or exc}") from exc

