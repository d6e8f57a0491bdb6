"""The swarm sim's public calls: up, status, nodes, down, a worker stopped and started, push."""
from __future__ import annotations

from functools import partial
from typing import Any

import docker
import docker.errors
from docker.utils import parse_repository_tag

from ...errors import LabError, NotFound
from ...naming import (DNS_LABEL, ENGINE_LABEL, LAB, MODEL_HOST_LABEL, REGISTRY_LABEL, ROLE, SIM, SIM_CONSTRAINT_LABEL,
                       SIM_GWBRIDGE, SIM_INIT, WORKER_INDEX, sim_constraint, sim_member_label)
from ...util.undo import Undo
from ..local import Engine
from ..errors import quietly as _quiet
from ..parse import host_nameservers
from .common import (DEFAULT_NAME, TRANSIENT, WORKER_PORT, Progress, SimNode, SimWorker, SwarmSim, _call, _check_name,
                     _containers, _engine, _ip, _nodes, _poll, _set_node_labels, _swarm_state, _worker_client,
                     network_name, worker_hostname, worker_name)
from .setup import (_create_worker, _ensure_network, _ensure_registry, _ensure_swarm, _join, _leave_swarm,
                    _manager_addr, _published_port, _remove_node, _remove_worker, _sim_node, _wait_engine, _wait_ready,
                    _wait_registry)

# -- public API -----------------------------------------------------------------------------------------
def sim_up(workers: int = 2, name: str = DEFAULT_NAME, registry_port: int = 5000, progress: Progress | None = None,
           *, images: tuple[str, str], engine: Engine | None = None, timeout: float = 120.0) -> SwarmSim:
    """Start (or adjust) a swarm of the host engine plus `workers` Docker-in-Docker workers; idempotent.

    A second call with the same `workers` finds everything in place; another number adds or removes
    workers. On failure everything this call made is removed again (what earlier calls made stays).
    `images` are the (swarm-worker, registry) image references, built beforehand (`claude_lab.swarmsim`
    builds them with the lab's image builder: the engine layer builds nothing).
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
    worker_image, registry_image = images
    undo = Undo(quiet=TRANSIENT)
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
                undo.push(f"node {node_id}", partial(_quiet, api.remove_node, node_id, force=True))
            found.append(SimWorker(worker_name(name, index), node_id, hostname, url))
        _wait_ready(api, [w.node_id for w in found], timeout, f"{len(found)} worker node(s) Ready on the manager")

        current = {w.node_id for w in found}
        for node in _nodes(api):  # nodes of this sim's earlier workers (re-created, removed): gone for good
            if _sim_node(node, name) and node["ID"] not in current and node["ID"] != manager_id:
                _remove_node(api, node["ID"], removed)
        for w in found:
            _set_node_labels(api, w.node_id, {ENGINE_LABEL: w.engine_url, SIM: name, sim_member_label(name): "member"})
        # What `Lab(backend="swarm")` needs to know, found on the manager node (engine/swarm.py); the manager
        # serves every sim on this machine, so it carries each one's member label.
        _set_node_labels(api, manager_id, {SIM: name, REGISTRY_LABEL: f"localhost:{registry_port}",
                                           MODEL_HOST_LABEL: gateway, DNS_LABEL: ",".join(host_nameservers()),
                                           sim_member_label(name): "member", SIM_CONSTRAINT_LABEL: sim_constraint(name)})
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
    if manager:
        mine = [SIM] if manager_labels.get(SIM) == name else []
        if manager_labels.get(SIM_CONSTRAINT_LABEL) == sim_constraint(name):
            mine.append(SIM_CONSTRAINT_LABEL)
        _set_node_labels(api, manager_id, {}, drop=[*mine, sim_member_label(name)])
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

