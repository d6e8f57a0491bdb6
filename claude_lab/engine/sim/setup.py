"""Making the swarm sim's parts: its network, registry, the swarm on the host, and the workers."""
from __future__ import annotations

import re
from functools import partial
from typing import Any, Iterable

import docker
import docker.errors
import requests

from ...errors import LabError, LabTimeout, PortInUse
from ...naming import ROLE, SIM, SIM_GWBRIDGE, SIM_INIT, WORKER_INDEX
from ...util.ports import port_free, port_holder
from ...util.undo import Undo
from ..errors import quietly as _quiet
from ..parse import host_nameservers
from .common import (HEARTBEAT_NS, REGISTRY_INNER_PORT, SWARM_PORT, UNMASKED_PATHS, WORKER_HOST_OPTIONS, WORKER_PORT,
                     Progress, _call, _containers, _ip, _labels, _nodes, _poll, _set_node_labels, _swarm_state,
                     _worker_client, network_name, registry_name, registry_volume, worker_hostname, worker_name,
                     worker_volume)

# -- the sim network and the registry -------------------------------------------------------------
def _ensure_network(api: docker.APIClient, name: str, undo: Undo) -> str:
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
        undo.push(f"network {net}", partial(_quiet, api.remove_network, net))
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


def _ensure_registry(api: docker.APIClient, name: str, image: str, port: int, undo: Undo, say: Progress) -> None:

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
        undo.push(f"volume {vol}", partial(_quiet, api.remove_volume, vol, force=True))
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
    undo.push(f"container {cname}", partial(_quiet, api.remove_container, created["Id"], force=True, v=False))
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
def _ensure_swarm(api: docker.APIClient, name: str, gateway: str, undo: Undo, say: Progress) -> dict[str, Any]:
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
    undo.push("swarm", partial(_leave_swarm, api, not had_gwbridge))
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
                   undo: Undo) -> None:
    cname, vol = worker_name(name, index), worker_volume(name, index)
    if not any(v["Name"] == vol for v in (api.volumes(filters={"name": vol}).get("Volumes") or [])):
        _call(api.create_volume, vol, labels=_labels(name, "volume", **{WORKER_INDEX: str(index)}),
              what=f"creating volume {vol}")
        undo.push(f"volume {vol}", partial(_quiet, api.remove_volume, vol, force=True))
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
    undo.push(f"container {cname}", partial(_quiet, api.remove_container, created["Id"], force=True, v=False))
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


