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
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import docker
import docker.errors
import requests.exceptions
from docker.utils import parse_repository_tag

from ..errors import EngineUnavailable, LabError, LabTimeout, NotFound, PortInUse
from ..naming import validate_label
from .local import Engine, host_nameservers

DEFAULT_NAME = "claude-lab-sim"
SIM = "claude-lab.sim"  # on every container, volume, network and node of a sim
SIM_INIT = "claude-lab.sim-init"  # manager node label: the sim that ran `docker swarm init`
SIM_GWBRIDGE = "claude-lab.sim-gwbridge"  # manager node label: "created" when that init made docker_gwbridge
ENGINE_LABEL = "claude-lab.engine"  # node label: the URL of the node's engine API
ROLE = "claude-lab.role"
KIND = "claude-lab.kind"
WORKER_INDEX = "claude-lab.sim-worker"
LAB = "claude-lab.lab"  # services of labs: leaving the swarm would orphan them

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


# -- small helpers around docker-py ---------------------------------------------------------
def _call(fn: Callable[..., Any], *args: Any, what: str, **kwargs: Any) -> Any:
    """Run one API call; Docker's exceptions become LabErrors that name the object."""
    try:
        return fn(*args, **kwargs)
    except docker.errors.NotFound as exc:
        raise NotFound(f"{what} not found: {exc.explanation or exc}") from exc
    except docker.errors.APIError as exc:
        raise LabError(f"Docker refused {what}: {exc.explanation or exc}") from exc
    except requests.exceptions.RequestException as exc:
        raise EngineUnavailable(f"no answer from the engine while {what}: {exc}") from exc


def _quiet(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
    """Best-effort cleanup: a missing object is already what we wanted."""
    try:
        fn(*args, **kwargs)
    except (docker.errors.DockerException, requests.exceptions.RequestException):
        pass


_TRANSIENT = (LabError, docker.errors.DockerException, requests.exceptions.RequestException)


def _poll(condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.2,
          retry_on: tuple[type[BaseException], ...] = _TRANSIENT) -> Any:
    """Wait for a condition with a deadline (no fixed sleeps); errors in `retry_on` count as "not yet"."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while True:
        try:
            value = condition()
            if value:
                return value
        except retry_on as exc:
            last = exc
        if time.monotonic() >= deadline:
            detail = f" (last error: {last})" if last else ""
            raise LabTimeout(f"{what} did not happen within {timeout:.0f} s{detail}")
        time.sleep(interval)


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


class _Undo:
    """What one `sim_up` call made, removed again (newest first) when the call fails."""

    def __init__(self, api: docker.APIClient):
        self.api = api
        self.containers: list[str] = []
        self.volumes: list[str] = []
        self.networks: list[str] = []
        self.nodes: list[str] = []
        self.swarm = False
        self.gwbridge = False  # the swarm init made docker_gwbridge

    def rollback(self) -> None:
        api = self.api
        for node in self.nodes:
            _quiet(api.remove_node, node, force=True)
        for container in reversed(self.containers):
            _quiet(api.remove_container, container, force=True, v=False)
        for volume in reversed(self.volumes):
            _quiet(api.remove_volume, volume, force=True)
        for network in reversed(self.networks):
            _quiet(api.remove_network, network)
        if self.swarm:
            try:
                _leave_swarm(api, self.gwbridge)
            except LabError:
                pass


# -- images -----------------------------------------------------------------------------------
def _ensure_images(engine: Engine, config: Any, say: Progress) -> tuple[str, str]:
    """Build the worker and registry images if missing or stale (parents first); their tags."""
    from ..config import LabConfig  # the core's config and builder, imported late: the core imports the engine
    from ..images import ImageBuilder

    cfg = config if config is not None else LabConfig.load(Path(__file__).resolve().parent.parent)
    builder = ImageBuilder(engine, cfg)

    def report(event: Any) -> None:
        if event.kind in ("start", "done"):
            say(f"image {event.image}: {event.text}")
        elif event.kind == "step":
            say(f"image {event.image}: step {event.step}/{event.total} {event.text[:80]}")

    builder.build(["swarm-worker", "registry"], progress=report)
    return builder.tag("swarm-worker"), builder.tag("registry")


# -- the sim network and the registry -------------------------------------------------------------
def _ensure_network(api: docker.APIClient, name: str, undo: _Undo) -> str:
    """The sim's bridge network (created if missing); returns its IPv4 gateway, the host's address on it."""
    net = network_name(name)
    found = [n for n in _call(api.networks, names=[net], what=f"network {net}") if n["Name"] == net]
    if found:
        attrs = _call(api.inspect_network, found[0]["Id"], what=f"network {net}")
        if (attrs.get("Labels") or {}).get(SIM) != name:
            raise LabError(f"network {net} exists but is not swarm sim {name}'s (no label {SIM}={name}); "
                           f"remove it (`docker network rm {net}`) or pick another sim name")
    else:
        _call(api.create_network, net, driver="bridge", labels=_labels(name, "network"), check_duplicate=True,
              what=f"creating network {net}")
        undo.networks.append(net)
        attrs = _call(api.inspect_network, net, what=f"network {net}")
    for cfg in (attrs.get("IPAM") or {}).get("Config") or []:
        gateway = (cfg.get("Gateway") or "").split("/")[0]
        if gateway and ":" not in gateway:
            return gateway
    raise LabError(f"network {net} has no IPv4 gateway; remove it (`claude-lab swarm-sim down`) and try again")


def _published_port(attrs: dict[str, Any]) -> int | None:
    bindings = ((attrs.get("HostConfig") or {}).get("PortBindings") or {}).get(f"{REGISTRY_INNER_PORT}/tcp") or []
    for b in bindings:
        if b.get("HostPort"):
            return int(b["HostPort"])
    return None


def _ensure_registry(api: docker.APIClient, name: str, image: str, port: int, undo: _Undo, say: Progress) -> None:
    from ..ports import port_free, port_holder  # stdlib-only helpers of the core

    cname = registry_name(name)
    existing = _containers(api, name, "registry")
    if existing:
        attrs = existing[0]
        have = _published_port(attrs)
        if have != port:
            raise LabError(f"swarm sim {name} already runs its registry on port {have}, not {port}; "
                           f"use --registry-port {have}, or `claude-lab swarm-sim down` first to change it")
        if attrs.get("Image") == _call(api.inspect_image, image, what=f"image {image}")["Id"]:
            if not (attrs.get("State") or {}).get("Running"):
                _call(api.start, attrs["Id"], what=f"starting {cname}")
            return
        say(f"re-creating {cname} on its rebuilt image (the images stay on its volume)")
        _call(api.remove_container, attrs["Id"], force=True, what=f"removing {cname}")
    elif not port_free(port, "127.0.0.1"):
        holder = port_holder(port)
        raise PortInUse(f"port {port} on 127.0.0.1 is taken{' by ' + holder if holder else ''}; the sim's registry "
                        f"needs it: pass another with --registry-port (registry_port=...)", port=port)
    vol = registry_volume(name)
    if not any(v["Name"] == vol for v in (api.volumes(filters={"name": vol}).get("Volumes") or [])):
        _call(api.create_volume, vol, labels=_labels(name, "volume"), what=f"creating volume {vol}")
        undo.volumes.append(vol)
    say(f"starting registry {cname} on 127.0.0.1:{port}")
    host_config = api.create_host_config(
        binds={vol: {"bind": "/var/lib/docker-registry", "mode": "rw"}},
        port_bindings={f"{REGISTRY_INNER_PORT}/tcp": [("127.0.0.1", port)]},
        restart_policy={"Name": "unless-stopped"},
        network_mode=network_name(name),
    )
    created = _call(api.create_container, image=image, name=cname, hostname=cname,
                    labels=_labels(name, "container", **{ROLE: "registry"}),
                    ports=[REGISTRY_INNER_PORT], host_config=host_config, detach=True,
                    what=f"creating container {cname}")
    undo.containers.append(created["Id"])
    _call(api.start, created["Id"], what=f"starting {cname}")


def _wait_registry(port: int, timeout: float) -> None:
    """The registry answers its API root (`/v2/`) on the host's loopback."""
    def answers() -> bool:
        try:
            return requests.get(f"http://127.0.0.1:{port}/v2/", timeout=2).status_code == 200
        except requests.exceptions.RequestException:
            return False

    _poll(answers, timeout, f"the sim's registry answering on 127.0.0.1:{port}")


# -- the swarm on the host --------------------------------------------------------------------------
def _ensure_swarm(api: docker.APIClient, name: str, gateway: str, undo: _Undo, say: Progress) -> dict[str, Any]:
    """Make the host engine a swarm manager (init on the sim gateway) or reuse the swarm it manages."""
    state = _swarm_state(api)
    local = state.get("LocalNodeState")
    if local == "active":
        if not state.get("ControlAvailable"):
            raise LabError("the host engine is a swarm *worker*; the sim needs it to be a manager. Leave that swarm "
                           "(`docker swarm leave`) or run the sim against a manager (DOCKER_HOST)")
        return state
    if local not in ("inactive", None, ""):
        raise LabError(f"the host engine's swarm state is {local!r}; wait for it to settle, or "
                       f"`docker swarm leave --force` if it is stuck, then try again")
    had_gwbridge = bool([n for n in api.networks(names=["docker_gwbridge"]) if n["Name"] == "docker_gwbridge"])
    say(f"docker swarm init on the host engine (advertised at {gateway}:{SWARM_PORT})")
    spec = api.create_swarm_spec(dispatcher_heartbeat_period=HEARTBEAT_NS)
    _call(api.init_swarm, advertise_addr=gateway, listen_addr=f"{gateway}:{SWARM_PORT}", swarm_spec=spec,
          what="initialising a swarm on the host engine")
    undo.swarm, undo.gwbridge = True, not had_gwbridge
    # Leaving while the engine still sets up the ingress network leaves a stale `ingress` behind
    # (moby/moby#24400): let it finish, so a rollback or `sim_down` leaves the engine clean.
    try:
        _poll(lambda: "ingress-sbox" in (api.inspect_network("ingress").get("Containers") or {}), 20,
              "the swarm's ingress network set up")
    except LabTimeout:
        pass  # an engine without an ingress sandbox: nothing to wait for
    state = _swarm_state(api)
    _set_node_labels(api, state["NodeID"], {SIM_INIT: name, **({} if had_gwbridge else {SIM_GWBRIDGE: "created"})})
    return state


def _leave_swarm(api: docker.APIClient, remove_gwbridge: bool) -> list[str]:
    """`docker swarm leave --force` on the host; then the networks the init made go. Returns those removed."""
    _call(api.leave_swarm, force=True, what="leaving the swarm the sim made")
    removed = []

    def ingress_gone() -> bool:
        return not [n for n in api.networks(names=["ingress"]) if n["Name"] == "ingress"]

    try:
        _poll(ingress_gone, 20, "the ingress network removed after leaving the swarm")
    except LabTimeout:
        pass  # a stale ingress does no harm: the next `swarm init` replaces it
    if remove_gwbridge:
        for net in [n for n in api.networks(names=["docker_gwbridge"]) if n["Name"] == "docker_gwbridge"]:
            if not (api.inspect_network(net["Id"]).get("Containers") or {}):
                _quiet(api.remove_network, net["Id"])
                removed.append("docker_gwbridge")
    return removed


def _manager_addr(api: docker.APIClient, node_id: str) -> str:
    node = _call(api.inspect_node, node_id, what="the manager node")
    addr = (node.get("ManagerStatus") or {}).get("Addr")
    if not addr:
        raise LabError("the host engine's node has no manager address; is it a swarm manager?")
    return addr


# -- workers -------------------------------------------------------------------------------------------
def _create_worker(api: docker.APIClient, name: str, index: int, image: str, registry_port: int,
                   undo: _Undo) -> None:
    cname, vol = worker_name(name, index), worker_volume(name, index)
    if not any(v["Name"] == vol for v in (api.volumes(filters={"name": vol}).get("Volumes") or [])):
        _call(api.create_volume, vol, labels=_labels(name, "volume", **{WORKER_INDEX: str(index)}),
              what=f"creating volume {vol}")
        undo.volumes.append(vol)
    host_config = api.create_host_config(
        binds={vol: {"bind": "/var/lib/docker", "mode": "rw"}},  # overlay2 cannot stack on the container's overlay
        restart_policy={"Name": "unless-stopped"},
        init=True,  # dockerd gets SIGTERM and reaps; a stop does not wait out the grace period
        network_mode=network_name(name),
        **WORKER_HOST_OPTIONS,
    )
    host_config.update(UNMASKED_PATHS)
    created = _call(
        api.create_container, image=image, name=cname, hostname=worker_hostname(name, index),
        labels=_labels(name, "container", **{ROLE: "worker", WORKER_INDEX: str(index)}),
        environment={"REGISTRY_HOST": registry_name(name), "REGISTRY_PORT": str(registry_port),
                     "DNS_SERVERS": " ".join(host_nameservers()),
                     "REGISTRY_UPSTREAM_PORT": str(REGISTRY_INNER_PORT)},
        ports=[WORKER_PORT], host_config=host_config, detach=True, stop_signal="SIGTERM",
        what=f"creating container {cname}",
    )
    undo.containers.append(created["Id"])
    _call(api.start, created["Id"], what=f"starting {cname}")


def _worker_url(api: docker.APIClient, name: str, index: int) -> str:
    attrs = _call(api.inspect_container, worker_name(name, index), what=f"container {worker_name(name, index)}")
    if not (attrs.get("State") or {}).get("Running"):
        state = (attrs.get("State") or {}).get("Status")
        raise LabError(f"worker {worker_name(name, index)} is {state}, not running; see `docker logs "
                       f"{worker_name(name, index)}`")
    ip = _ip(attrs, network_name(name))
    if not ip:
        raise LabError(f"worker {worker_name(name, index)} has no address on {network_name(name)}")
    return f"tcp://{ip}:{WORKER_PORT}"


def _wait_engine(api: docker.APIClient, name: str, index: int, timeout: float) -> str:
    """Poll until the worker's own engine answers on its TCP port; returns its URL."""
    def answers() -> str | None:
        url = _worker_url(api, name, index)  # raises (and is retried) while the container is not running
        client = _worker_client(url, timeout=2)
        try:
            client.ping()
            return url
        finally:
            client.close()

    try:
        return _poll(answers, timeout, f"the engine of worker {worker_name(name, index)} answering")
    except LabTimeout as exc:
        tail = b""
        try:
            tail = api.logs(worker_name(name, index), tail=15)
        except docker.errors.DockerException:
            pass
        raise LabTimeout(f"{exc}; last lines of its log:\n{tail.decode(errors='replace')}") from exc


def _join(url: str, manager_id: str, manager_addr: str, token: str, hostname: str, known: set[str]) -> str:
    """Join the worker's engine to the host's swarm (leaving a stale one first); returns its node id.

    `known`: the node ids the manager has; a worker whose node the manager forgot joins anew.
    """
    client = _worker_client(url, timeout=60)
    try:
        state = (client.info().get("Swarm") or {})
        managers = {m.get("NodeID") for m in state.get("RemoteManagers") or []}  # a worker sees no cluster id
        if state.get("LocalNodeState") == "active" and manager_id in managers and state.get("NodeID") in known:
            return state["NodeID"]
        if state.get("LocalNodeState") not in ("inactive", None, ""):
            client.leave_swarm(force=True)  # a swarm the host no longer runs (a re-initialised manager)
        # The interface, not an IP: the worker's address on the sim network may change when it restarts.
        _call(client.join_swarm, remote_addrs=[manager_addr], join_token=token,
              listen_addr=f"0.0.0.0:{SWARM_PORT}", advertise_addr=f"eth0:{SWARM_PORT}",
              what=f"joining {hostname} to the swarm at {manager_addr}")
        return (client.info().get("Swarm") or {})["NodeID"]
    finally:
        client.close()


def _wait_ready(api: docker.APIClient, node_ids: Iterable[str], timeout: float, what: str) -> None:
    wanted = set(node_ids)

    def ready() -> bool:
        states = {n["ID"]: (n.get("Status") or {}).get("State") for n in _nodes(api) if n["ID"] in wanted}
        return len(states) == len(wanted) and all(s == "ready" for s in states.values())

    _poll(ready, timeout, what)


def _remove_worker(api: docker.APIClient, name: str, index: int, removed: dict[str, list[str]]) -> None:
    """Take one worker out: its container and volume go, and the manager forgets its node(s).

    No `swarm leave` on the worker first: it costs ~6 s and its swarm state is on the volume,
    which goes too; the manager removes the node by force instead.
    """
    cname, hostname = worker_name(name, index), worker_hostname(name, index)
    _quiet(api.remove_container, cname, force=True, v=False)
    removed["containers"].append(cname)
    if _swarm_state(api).get("ControlAvailable"):
        for node in _nodes(api):
            if (node.get("Description") or {}).get("Hostname") == hostname:
                _remove_node(api, node["ID"], removed)
    vol = worker_volume(name, index)
    try:
        api.remove_volume(vol, force=True)
        removed["volumes"].append(vol)
    except docker.errors.NotFound:
        pass
    except docker.errors.APIError as exc:
        raise LabError(f"could not remove volume {vol}: {exc.explanation or exc}") from exc


def _sim_node(node: dict[str, Any], name: str) -> bool:
    """A node of the sim's workers: labelled so, or named like one (joined, but never labelled)."""
    if (node["Spec"].get("Labels") or {}).get(SIM) == name:
        return True
    return re.fullmatch(rf"{re.escape(name)}-worker-\d+", (node.get("Description") or {}).get("Hostname", "")) is not None


def _remove_node(api: docker.APIClient, node_id: str, removed: dict[str, list[str]]) -> None:
    try:
        api.remove_node(node_id, force=True)
        removed["nodes"].append(node_id)
    except docker.errors.NotFound:
        pass
    except docker.errors.APIError as exc:
        raise LabError(f"could not remove swarm node {node_id}: {exc.explanation or exc}") from exc


# -- public API -----------------------------------------------------------------------------------------
def sim_up(workers: int = 2, name: str = DEFAULT_NAME, registry_port: int = 5000, progress: Progress | None = None,
           *, engine: Engine | None = None, config: Any = None, timeout: float = 120.0) -> SwarmSim:
    """Start (or adjust) a swarm of the host engine plus `workers` Docker-in-Docker workers; idempotent.

    A second call with the same `workers` finds everything in place; another number adds or removes
    workers. On failure everything this call made is removed again (what earlier calls made stays).
    `config` is a `LabConfig` for the image builds (default: the settings found from the environment).
    """
    _check_name(name)
    if not isinstance(workers, int) or workers < 0:
        raise LabError(f"workers={workers!r}: give a number of worker nodes, 0 or more (for example 2)")
    if not isinstance(registry_port, int) or not 1 <= registry_port <= 65535:
        raise LabError(f"registry_port={registry_port!r} is not a TCP port; use a number from 1 to 65535")
    say: Progress = progress or (lambda text: None)
    eng = _engine(engine)
    if not eng.is_local:
        raise LabError(f"the swarm sim runs on this machine's engine, but the engine is {eng.base_url}; unset "
                       f"DOCKER_HOST (or point it at the local socket) to use the sim")
    api = eng.api
    worker_image, registry_image = _ensure_images(eng, config, say)
    undo = _Undo(api)
    try:
        gateway = _ensure_network(api, name, undo)
        _ensure_registry(api, name, registry_image, registry_port, undo, say)
        swarm = _ensure_swarm(api, name, gateway, undo, say)
        manager_id = swarm["NodeID"]
        manager_addr = _manager_addr(api, manager_id)
        token = _call(api.inspect_swarm, what="the swarm")["JoinTokens"]["Worker"]

        have = {int(c["Config"]["Labels"][WORKER_INDEX]): c for c in _containers(api, name, "worker")}
        removed: dict[str, list[str]] = {"nodes": [], "containers": [], "volumes": []}
        for index in sorted(i for i in have if i > workers):
            say(f"removing worker {worker_name(name, index)}")
            _remove_worker(api, name, index, removed)
        current_image = _call(api.inspect_image, worker_image, what=f"image {worker_image}")["Id"]
        for index in range(1, workers + 1):
            attrs = have.get(index)
            if attrs is not None and attrs.get("Image") != current_image:
                # Its image was rebuilt: a new container on the same volume keeps the node's swarm identity.
                say(f"re-creating worker {worker_name(name, index)} on its rebuilt image")
                _call(api.remove_container, attrs["Id"], force=True, what=f"removing {worker_name(name, index)}")
                attrs = None
            if attrs is None:
                say(f"starting worker {worker_name(name, index)}")
                _create_worker(api, name, index, worker_image, registry_port, undo)
            elif not (attrs.get("State") or {}).get("Running"):
                say(f"starting stopped worker {worker_name(name, index)}")
                _call(api.start, attrs["Id"], what=f"starting {worker_name(name, index)}")
        _wait_registry(registry_port, timeout)

        found: list[SimWorker] = []
        for index in range(1, workers + 1):
            url = _wait_engine(api, name, index, timeout)
            hostname = worker_hostname(name, index)
            say(f"joining {hostname} ({url})")
            known = {n["ID"] for n in _nodes(api)}
            node_id = _join(url, manager_id, manager_addr, token, hostname, known)
            if node_id not in known:
                undo.nodes.append(node_id)
            found.append(SimWorker(worker_name(name, index), node_id, hostname, url))
        _wait_ready(api, [w.node_id for w in found], timeout, f"{len(found)} worker node(s) Ready on the manager")

        current = {w.node_id for w in found}
        for node in _nodes(api):  # nodes of this sim's earlier workers (re-created, removed): gone for good
            if _sim_node(node, name) and node["ID"] not in current and node["ID"] != manager_id:
                _remove_node(api, node["ID"], removed)
        for w in found:
            _set_node_labels(api, w.node_id, {ENGINE_LABEL: w.engine_url, SIM: name})
        # What `Lab(backend="swarm")` needs to know, found on the manager node (engine/swarm.py).
        _set_node_labels(api, manager_id, {SIM: name, "claude-lab.registry": f"localhost:{registry_port}",
                                           "claude-lab.model-host": gateway,
                                           "claude-lab.dns": ",".join(host_nameservers())})
    except BaseException:
        undo.rollback()
        raise
    say(f"swarm sim {name}: manager + {workers} worker(s), registry localhost:{registry_port}")
    return SwarmSim(name=name, manager_url=eng.base_url, registry=f"localhost:{registry_port}", model_host=gateway,
                    network=network_name(name), workers=tuple(found))


def sim_status(name: str = DEFAULT_NAME, *, engine: Engine | None = None) -> SwarmSim | None:
    """The sim as it is now (None when nothing of it exists); workers whose engine is down keep their URL."""
    _check_name(name)
    eng = _engine(engine)
    api = eng.api
    containers = _containers(api, name)
    if not containers:  # (a network alone is one kept for the manager's address after a hand-over)
        return None
    nets = [n for n in _call(api.networks, filters={"label": f"{SIM}={name}"}, what="listing networks")
            if n["Name"] == network_name(name)]
    gateway = ""
    if nets:
        attrs = _call(api.inspect_network, nets[0]["Id"], what=f"network {network_name(name)}")
        for cfg in (attrs.get("IPAM") or {}).get("Config") or []:
            if cfg.get("Gateway") and ":" not in cfg["Gateway"]:
                gateway = cfg["Gateway"].split("/")[0]
    port = next((_published_port(c) for c in containers if c["Config"]["Labels"].get(ROLE) == "registry"), None)
    nodes = {}
    if (_swarm_state(api).get("ControlAvailable")):
        ranked = sorted((n for n in _nodes(api) if _sim_node(n, name)),  # a ready node wins over a stale one
                        key=lambda n: (n.get("Status") or {}).get("State") == "ready")
        nodes = {n["Description"].get("Hostname"): n for n in ranked}
    workers = []
    for c in sorted((c for c in containers if c["Config"]["Labels"].get(ROLE) == "worker"),
                    key=lambda c: int(c["Config"]["Labels"][WORKER_INDEX])):
        hostname = c["Config"].get("Hostname") or ""
        node = nodes.get(hostname) or {}
        ip = _ip(c, network_name(name))
        url = f"tcp://{ip}:{WORKER_PORT}" if ip else ((node.get("Spec") or {}).get("Labels") or {}).get(ENGINE_LABEL, "")
        workers.append(SimWorker(c["Name"].lstrip("/"), node.get("ID", ""), hostname, url))
    return SwarmSim(name=name, manager_url=eng.base_url, registry=f"localhost:{port}" if port else "",
                    model_host=gateway, network=network_name(name), workers=tuple(workers))


def sim_nodes(name: str = DEFAULT_NAME, *, engine: Engine | None = None) -> list[SimNode]:
    """The sim's nodes (the manager, the host engine, first), as the manager sees them."""
    _check_name(name)
    api = _engine(engine).api
    state = _swarm_state(api)
    if not state.get("ControlAvailable"):
        return []
    out = []
    for n in _nodes(api):
        labels = n["Spec"].get("Labels") or {}
        if labels.get(SIM) != name and n["ID"] != state.get("NodeID"):  # the manager serves every sim
            continue
        out.append(SimNode(hostname=n["Description"].get("Hostname", ""), role=n["Spec"].get("Role", ""),
                           state=(n.get("Status") or {}).get("State", ""),
                           availability=n["Spec"].get("Availability", ""), engine_url=labels.get(ENGINE_LABEL, ""),
                           node_id=n["ID"]))
    return sorted(out, key=lambda node: (node.role != "manager", node.hostname))


def sim_down(name: str = DEFAULT_NAME, force: bool = False, *, engine: Engine | None = None) -> dict[str, Any]:
    """Remove the sim: worker nodes, containers, volumes, registry, network; leave the swarm if the sim made it.

    Lab services (label `claude-lab.lab`) are the labs' to remove; when leaving the swarm would
    orphan some, this refuses and names them, unless `force`.
    """
    _check_name(name)
    eng = _engine(engine)
    api = eng.api
    removed: dict[str, Any] = {"nodes": [], "containers": [], "volumes": [], "networks": [], "left_swarm": False}
    state = _swarm_state(api)
    manager = state.get("ControlAvailable")
    manager_id = state.get("NodeID") if manager else None
    manager_labels: dict[str, str] = {}
    others: set[str] = set()
    if manager:
        manager_labels = _call(api.inspect_node, manager_id, what="the manager node")["Spec"].get("Labels") or {}
        others = {(n["Spec"].get("Labels") or {}).get(SIM) for n in _nodes(api) if n["ID"] != manager_id} - {None, name}
    leave = bool(manager) and manager_labels.get(SIM_INIT) == name and not others
    if leave and not force:
        services = [s["Spec"]["Name"] for s in _call(api.services, filters={"label": LAB}, what="listing services")]
        if services:
            raise LabError(f"swarm sim {name} made the host's swarm, and lab services still run on it: "
                           f"{', '.join(sorted(services))}. Remove them first (destroy their labs), or pass "
                           f"force=True (--force) to leave the swarm anyway")

    if manager:  # services the sim's own users (tests) labelled claude-lab.sim=<name>
        for svc in _call(api.services, filters={"label": f"{SIM}={name}"}, what="listing services"):
            _quiet(api.remove_service, svc["ID"])
            removed.setdefault("services", []).append(svc["Spec"]["Name"])

    for c in _containers(api, name, "worker"):
        _remove_worker(api, name, int(c["Config"]["Labels"][WORKER_INDEX]), removed)
    if manager:  # nodes of workers whose containers were already gone
        for n in _nodes(api):
            if _sim_node(n, name) and n["ID"] != manager_id:
                _remove_node(api, n["ID"], removed)
    for c in _containers(api, name):  # the registry, and anything else of the sim
        port = _published_port(c) if c["Config"]["Labels"].get(ROLE) == "registry" else None
        _quiet(api.remove_container, c["Id"], force=True, v=False)
        removed["containers"].append(c["Name"].lstrip("/"))
        if port:  # the host's `localhost:<port>/...` tags that `push` made: untagged (the images stay)
            for image in _call(api.images, what="listing images"):
                for tag in image.get("RepoTags") or []:
                    if tag.startswith(f"localhost:{port}/"):
                        _quiet(api.remove_image, tag, noprune=True)
                        removed.setdefault("tags", []).append(tag)
    for v in _call(api.volumes, filters={"label": f"{SIM}={name}"}, what="listing volumes").get("Volumes") or []:
        try:
            api.remove_volume(v["Name"], force=True)
            removed["volumes"].append(v["Name"])
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as exc:
            raise LabError(f"could not remove volume {v['Name']}: {exc.explanation or exc}") from exc

    if manager and manager_labels.get(SIM_INIT) == name and others:
        # Other sims' workers still use the swarm: hand it over to one of them, which leaves it
        # (and removes this sim's network, see below) when it goes down.
        heir = sorted(others)[0]
        _set_node_labels(api, manager_id, {SIM_INIT: heir})
        removed["handed_over_to"] = heir
    if manager and manager_labels.get(SIM) == name:
        _set_node_labels(api, manager_id, {}, drop=[SIM])
    # While the swarm stays, the network holding the manager's advertised address stays too:
    # every worker of every sim reaches the manager there.
    manager_ip = _manager_addr(api, manager_id).rsplit(":", 1)[0] if manager and not leave else None
    if leave:
        removed["networks"] += _leave_swarm(api, manager_labels.get(SIM_GWBRIDGE) == "created")
        removed["left_swarm"] = True
    for net in _call(api.networks, filters={"label": SIM}, what="listing networks"):
        owner = (net.get("Labels") or {}).get(SIM)
        mine = owner == name
        orphan = leave and owner != name and not _containers(api, owner)  # kept for us by a sim that handed over
        if not (mine or orphan):
            continue
        if manager_ip and manager_ip in _gateways(api, net["Id"]):
            removed["kept_network"] = net["Name"]
            continue
        _remove_network(api, net["Id"], net["Name"])
        removed["networks"].append(net["Name"])
    return removed


def _gateways(api: docker.APIClient, net_id: str) -> set[str]:
    try:
        attrs = api.inspect_network(net_id)
    except docker.errors.NotFound:
        return set()
    return {(cfg.get("Gateway") or "").split("/")[0] for cfg in (attrs.get("IPAM") or {}).get("Config") or []}


def _remove_network(api: docker.APIClient, net_id: str, net_name: str, timeout: float = 30.0) -> None:
    """Remove a network, retrying while endpoints of just-removed tasks or containers still hold it."""
    def gone() -> bool:
        try:
            api.remove_network(net_id)
        except docker.errors.NotFound:
            return True
        except docker.errors.APIError as exc:
            if "active endpoints" not in str(exc):
                raise LabError(f"could not remove network {net_name}: {exc.explanation or exc}") from exc
            return False
        return True

    _poll(gone, timeout, f"network {net_name} released by its last endpoint", retry_on=())


def stop_worker(name: str, index: int, *, engine: Engine | None = None, timeout: int = 10) -> None:
    """Stop one worker's container (its node goes Down on the manager): a node failure, for tests."""
    _check_name(name)
    api = _engine(engine).api
    _call(api.stop, worker_name(name, index), timeout=timeout, what=f"stopping {worker_name(name, index)}")


def start_worker(name: str, index: int, *, engine: Engine | None = None, timeout: float = 120.0) -> SimWorker:
    """Start a stopped worker again; waits for its engine and for the manager to see its node Ready."""
    _check_name(name)
    api = _engine(engine).api
    _call(api.start, worker_name(name, index), what=f"starting {worker_name(name, index)}")
    url = _wait_engine(api, name, index, timeout)
    client = _worker_client(url, timeout=10)
    try:
        node_id = (client.info().get("Swarm") or {}).get("NodeID")
    finally:
        client.close()
    if not node_id:
        raise LabError(f"worker {worker_name(name, index)} came back outside the swarm; run "
                       f"`claude-lab swarm-sim up` again to rejoin it")
    _wait_ready(api, [node_id], timeout, f"node {worker_hostname(name, index)} Ready again")
    _set_node_labels(api, node_id, {ENGINE_LABEL: url})  # its address may have changed
    return SimWorker(worker_name(name, index), node_id, worker_hostname(name, index), url)


def push(ref: str, name: str = DEFAULT_NAME, *, engine: Engine | None = None,
         progress: Progress | None = None) -> str:
    """Push a host image to the sim's registry; returns `localhost:<port>/<ref>`, which every node can pull."""
    _check_name(name)
    eng = _engine(engine)
    api = eng.api
    sim = sim_status(name, engine=eng)
    if sim is None or not sim.registry:
        raise NotFound(f"swarm sim {name} has no registry; start it with `claude-lab swarm-sim up`")
    repo, tag = parse_repository_tag(ref)
    if "@" in ref or (tag or "").startswith("sha256:"):
        raise LabError(f"cannot push {ref!r}: give a tag (repo:tag), not a digest")
    tag = tag or "latest"
    target = f"{sim.registry}/{repo}"
    _call(api.tag, ref, target, tag, force=True, what=f"tagging {ref} as {target}:{tag}")
    say: Progress = progress or (lambda text: None)
    say(f"pushing {target}:{tag}")
    try:
        for message in api.push(target, tag, stream=True, decode=True):
            if "error" in message or "errorDetail" in message:
                error = message.get("error") or (message.get("errorDetail") or {}).get("message", "")
                raise LabError(f"pushing {target}:{tag} to the sim's registry failed: {error}; is the registry "
                               f"running (`claude-lab swarm-sim status`)?")
    except docker.errors.APIError as exc:
        raise LabError(f"pushing {target}:{tag} failed: {exc.explanation or exc}") from exc
    return f"{target}:{tag}"
