"""The swarm backend: the same face as `Engine`, on a Docker Swarm.

A lab's containers become one-replica services (the dev services and agents) placed by Swarm's
scheduler; an agent is pinned to the node of its first task, because its workspace volume lives
there. Swarm has no exec, stats or archive API, so those calls go to the engine of the node that
runs the task: its endpoint comes from the `node_engines` setting (hostname or node id -> URL) or
from the node label `claude-lab.engine`; the manager's own node is the manager connection.

Containers that must share a task's network namespace (an agent's netguard sidecar) cannot be
services, so they are plain containers on the task's node, made by `create_pod`.

What the core sees does not change: `container("lab_agent-1")` is the service's current task
container, named like the service; a task whose node is down reads state "lost".
"""
from __future__ import annotations

import json
import threading
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Callable, Iterator

import docker
import docker.errors
import requests.exceptions
from docker.types import (ContainerSpec as SvcContainerSpec, EndpointSpec, Healthcheck, Mount,
                          NetworkAttachmentConfig, Placement, Resources, RestartPolicy, ServiceMode, TaskTemplate)

from ..errors import AlreadyExists, EngineUnavailable, LabError, LabTimeout, NotFound
from .local import (CgroupLayout, ContainerBrief, ContainerInfo, ContainerSpec, Engine, StatsReading, _filters,
                    _info, _ipam, _parse_time, memory_bytes)

ENGINE_LABEL = "claude-lab.engine"  # node label: the node's engine endpoint (tcp://host:2376, ssh://user@host)
REGISTRY_LABEL = "claude-lab.registry"  # manager node label: where images go (host:port)
MODEL_HOST_LABEL = "claude-lab.model-host"  # manager node label: where every node's containers reach this host
DNS_LABEL = "claude-lab.dns"  # manager node label: the nodes' upstream resolvers, comma-separated
SIDECAR_LABEL = "claude-lab.pod-sidecar"  # service label: the spec of the container sharing its netns (JSON)
NODE = "claude-lab.node"  # label the core may read: hostname of the node running the container
PENDING_STATES = {"new", "pending", "assigned", "accepted", "preparing", "ready", "starting"}
TASK_TIMEOUT = 300.0  # an image of GBs is pulled by the node on first use
STOP_GRACE_NS = 5_000_000_000


def _conflict(exc: docker.errors.APIError) -> bool:
    """The name is taken (Swarm's raft store says so with a 500, not a 409)."""
    return exc.status_code == 409 or "already exists" in str(exc) or "name conflicts" in str(exc)


class SwarmEngine:
    """A Docker Swarm, reached through one of its managers."""

    backend = "swarm"
    pods_anchor_first = False  # create_pod: the member (agent service) owns the namespace, see there
    is_local = False  # containers run on other machines: stats come from each node's stats API

    def __init__(self, manager_url: str | None = None, *, node_engines: dict[str, str] | None = None,
                 registry: str | None = None, model_host: str | None = None, dns: str | None = None,
                 timeout: int = 120):
        self.manager = Engine(manager_url, timeout=timeout)
        self.api = self.manager.api
        self.base_url = self.manager.base_url
        info = self.manager.info()
        swarm = info.get("Swarm") or {}
        if swarm.get("LocalNodeState") != "active" or not swarm.get("ControlAvailable"):
            raise EngineUnavailable(
                f"the engine at {self.base_url} is not a Swarm manager (swarm state "
                f"{swarm.get('LocalNodeState') or 'inactive'}): run `docker swarm init` there, point "
                f"`swarm_manager` at a manager, or try one on this machine with `claude-lab swarm-sim up`")
        self.node_id: str = swarm["NodeID"]
        self._timeout = timeout
        self._node_engine_urls = dict(node_engines or {})
        self._engines: dict[str, Engine] = {self.node_id: self.manager}
        self._urls: dict[str, str] = {self.node_id: self.base_url}
        self._lock = threading.Lock()
        self._exec_engines: dict[str, Engine] = {}
        self._where: dict[str, str] = {}  # plain container name or id -> node id (a cache, checked on use)
        self._tasks_seen: dict[str, tuple[Engine, str]] = {}  # name -> where it last ran (checked on use)
        self._volume_labels: dict[str, dict[str, str]] = {}
        self._published: dict[str, str] = {}  # local image ref -> registry ref
        labels = self._node(self.node_id)["Spec"].get("Labels") or {}
        self.registry = registry or labels.get(REGISTRY_LABEL)
        self.model_host = model_host or labels.get(MODEL_HOST_LABEL)
        # The resolvers the nodes' containers use (their `--dns`): a netguard lets DNS through to them.
        self._dns = [d for d in (dns or labels.get(DNS_LABEL, "")).split(",") if d]

    # -- engine -----------------------------------------------------------------------------
    def version(self) -> dict[str, Any]:
        return self.manager.version()

    def info(self) -> dict[str, Any]:
        return self.manager.info()

    def close(self) -> None:
        for engine in self._engines.values():
            engine.close()

    def _call(self, fn, *args, what: str | None = None, **kwargs):
        return self.manager._call(fn, *args, what=what, **kwargs)

    @property
    def raw(self) -> "docker.DockerClient":
        return self.manager.raw

    def dns_servers(self) -> list[str]:
        """The resolvers the nodes' containers use (their engines' `--dns`): a netguard lets DNS through."""
        return list(self._dns)

    def runtimes(self) -> list[str]:
        return []  # services run with each node's default runtime (Swarm has no runtime option)

    # -- nodes ----------------------------------------------------------------------------
    def _node(self, node_id: str) -> dict[str, Any]:
        return self._call(self.api.inspect_node, node_id, what=f"swarm node {node_id}")

    def nodes(self) -> list[dict[str, Any]]:
        """One dict a node: id, hostname, role, state (ready/down), availability, engine endpoint."""
        out = []
        for node in self._call(self.api.nodes):
            spec, desc = node.get("Spec") or {}, node.get("Description") or {}
            out.append({
                "id": node["ID"], "hostname": desc.get("Hostname", ""), "role": spec.get("Role", ""),
                "state": (node.get("Status") or {}).get("State", "unknown"),
                "availability": spec.get("Availability", ""),
                "address": (node.get("Status") or {}).get("Addr", ""),
                "engine": self._endpoint(node, required=False) or "",
                "labels": dict(spec.get("Labels") or {}),
            })
        return sorted(out, key=lambda n: (n["role"] != "manager", n["hostname"]))

    def _endpoint(self, node: dict[str, Any], required: bool = True) -> str | None:
        if node["ID"] == self.node_id:
            return self.base_url
        hostname = (node.get("Description") or {}).get("Hostname", "")
        url = (self._node_engine_urls.get(node["ID"]) or self._node_engine_urls.get(hostname)
               or ((node.get("Spec") or {}).get("Labels") or {}).get(ENGINE_LABEL))
        if not url and required:
            raise LabError(
                f"no engine endpoint for swarm node {hostname or node['ID']}: Swarm has no exec, logs or stats "
                f"API, so claude-lab talks to each node's engine. Set node_engines = {{{hostname!r} = "
                f"\"tcp://HOST:2376\"}} in claude-lab.toml, or label the node: docker node update "
                f"--label-add {ENGINE_LABEL}=tcp://HOST:2376 {hostname or node['ID']} (docs/scale-out.md)")
        return url

    def node_engine(self, node_id: str) -> Engine:
        """The engine of one node (connected once, then shared)."""
        with self._lock:
            found = self._engines.get(node_id)
        if found is not None:
            return found
        url = self._endpoint(self._node(node_id))
        assert url is not None
        engine = Engine(url, timeout=self._timeout)
        with self._lock:
            self._urls[node_id] = url
            return self._engines.setdefault(node_id, engine)

    def _live_engines(self) -> list[tuple[str, Engine]]:
        """(node id, engine) of every ready node whose engine we can reach."""
        out = []
        for node in self.nodes():
            if node["state"] != "ready" or not node["engine"]:
                continue
            try:
                out.append((node["id"], self.node_engine(node["id"])))
            except LabError:
                continue  # a node that just went away: its containers read as lost
        return out

    # -- locating a container ---------------------------------------------------------------
    def _service(self, name: str) -> dict[str, Any] | None:
        try:
            svc = self._call(self.api.inspect_service, name, what=f"service {name}")
        except NotFound:
            return None
        return svc if svc["Spec"]["Name"] == name else None  # inspect also matches id prefixes

    def _tasks(self, service_id: str | None = None) -> list[dict[str, Any]]:
        filters = {"service": service_id} if service_id else None
        return self._call(self.api.tasks, filters=filters)

    @staticmethod
    def _current(tasks: list[dict[str, Any]]) -> dict[str, Any] | None:
        """The task that stands for the service now: the newest that should run, else the newest."""
        if not tasks:
            return None
        wanted = [t for t in tasks if t.get("DesiredState") == "running"]
        return max(wanted or tasks, key=lambda t: (t.get("Meta", {}).get("Version", {}).get("Index", 0),
                                                   t.get("CreatedAt", "")))

    def _task_info(self, svc: dict[str, Any], task: dict[str, Any] | None,
                   nodes: dict[str, dict[str, Any]] | None = None) -> ContainerInfo:
        """The ContainerInfo of a service: its task's container on its node, or what Swarm says of it."""
        spec = svc["Spec"]
        name = spec["Name"]
        cspec = spec["TaskTemplate"]["ContainerSpec"]
        labels = {**(cspec.get("Labels") or {}), **(spec.get("Labels") or {})}
        replicas = ((spec.get("Mode") or {}).get("Replicated") or {}).get("Replicas", 1)
        node_id = (task or {}).get("NodeID") or self._pinned_node(svc)
        node = None
        if node_id:
            node = (nodes or {}).get(node_id) or self._safe_node(node_id)
        hostname = ((node or {}).get("Description") or {}).get("Hostname")
        if hostname:
            labels[NODE] = hostname
        status = (task or {}).get("Status") or {}
        cid = (status.get("ContainerStatus") or {}).get("ContainerID")
        node_down = node is not None and (node.get("Status") or {}).get("State") != "ready"
        if task is not None and replicas and node_down:
            return self._synthetic(svc, labels, "lost", status)
        if task is not None and cid and node_id and status.get("State") not in PENDING_STATES:
            try:
                attrs = self.node_engine(node_id).api.inspect_container(cid)
                info = _info(attrs)
                return replace(info, name=name, labels={**info.labels, **labels})
            except (docker.errors.NotFound, LabError, requests.exceptions.RequestException):
                pass
        if not replicas:
            return self._synthetic(svc, labels, "exited", status)
        state = status.get("State", "pending")
        return self._synthetic(svc, labels, "created" if state in PENDING_STATES else "exited", status)

    def _safe_node(self, node_id: str) -> dict[str, Any] | None:
        try:
            return self._node(node_id)
        except LabError:
            return None

    def _synthetic(self, svc: dict[str, Any], labels: dict[str, str], state: str,
                   status: dict[str, Any]) -> ContainerInfo:
        spec = svc["Spec"]
        cspec = spec["TaskTemplate"]["ContainerSpec"]
        exit_code = (status.get("ContainerStatus") or {}).get("ExitCode")
        return ContainerInfo(id=svc["ID"], name=spec["Name"], state=state, health=None,
                             image=cspec.get("Image", "").split("@")[0], image_id="", labels=labels, ports={},
                             created=_parse_time(svc.get("CreatedAt")), exit_code=exit_code,
                             networks=tuple(sorted(self._network_names(spec))))

    def _network_names(self, spec: dict[str, Any]) -> list[str]:
        out = []
        for att in spec["TaskTemplate"].get("Networks") or []:
            try:
                out.append(self.api.inspect_network(att["Target"])["Name"])
            except docker.errors.APIError:
                continue
        return out

    @staticmethod
    def _pinned_node(svc: dict[str, Any]) -> str | None:
        for c in ((svc["Spec"]["TaskTemplate"].get("Placement") or {}).get("Constraints") or []):
            if c.replace(" ", "").startswith("node.id=="):
                return c.replace(" ", "").split("==", 1)[1]
        return None

    def _on_node(self, name: str, call: Callable[[Engine, str], Any]) -> Any:
        """Run `call(engine, container)` where `name` runs: from the last known place first (one request,
        as on one engine), found again through the manager when that container is gone or stopped."""
        cached = self._tasks_seen.get(name)
        if cached is not None:
            try:
                return call(*cached)
            except (NotFound, EngineUnavailable):
                pass
            except LabError as exc:
                if "is not running" not in str(exc) and "is restarting" not in str(exc):
                    raise
        self._tasks_seen.pop(name, None)
        return call(*self.locate(name))

    def locate(self, name: str) -> tuple[Engine, str]:
        """(engine of the node, container id) for a service's running task or a plain container."""
        found = self._find(name)
        self._tasks_seen[name] = found
        return found

    def _find(self, name: str) -> tuple[Engine, str]:
        svc = self._service(name)
        if svc is not None:
            task = self._current(self._tasks(svc["ID"]))
            info = self._task_info(svc, task)
            if info.state == "lost":
                raise LabError(f"{name} is lost: its node {info.labels.get(NODE, '?')} is down. Bring the node "
                               f"back, or remove it and create it again (its workspace stays on that node)")
            status = (task or {}).get("Status") or {}
            cid = (status.get("ContainerStatus") or {}).get("ContainerID")
            if task is None or not cid or status.get("State") != "running":
                raise LabError(f"container {name} is not running (its task is "
                               f"{status.get('State', 'not scheduled')}{': ' + status['Err'] if status.get('Err') else ''})")
            engine = self.node_engine(task["NodeID"])
            sidecar = self._sidecar_of(svc)
            if sidecar is not None:
                self._ensure_sidecar(engine, cid, sidecar)
            return engine, cid
        node_id = self._where.get(name)
        if node_id is not None:
            engine = self.node_engine(node_id)
            if engine.container(name) is not None:
                return engine, name
        for node_id, engine in self._live_engines():
            if engine.container(name) is not None:
                self._where[name] = node_id
                return engine, name
        raise NotFound(f"container {name} not found on any node of the swarm")

    # -- containers ---------------------------------------------------------------------------
    def containers(self, labels: dict[str, str | None], all: bool = True) -> list[ContainerInfo]:
        services = self._call(self.api.services, filters=_filters(labels))
        out: list[ContainerInfo] = []
        if services:
            nodes = {n["ID"]: n for n in self._call(self.api.nodes)}
            by_service: dict[str, list[dict[str, Any]]] = {}
            for task in self._tasks():
                by_service.setdefault(task.get("ServiceID", ""), []).append(task)
            for svc in services:
                info = self._task_info(svc, self._current(by_service.get(svc["ID"], [])), nodes)
                if all or info.running:
                    out.append(info)
        for node_id, engine in self._live_engines():
            hostname = None
            for info in engine.containers(labels, all=all):
                if "com.docker.swarm.service.id" in info.labels:
                    continue  # a task container: reported as its service above
                if hostname is None:
                    hostname = (self._node(node_id).get("Description") or {}).get("Hostname", "")
                self._where[info.name] = node_id
                out.append(replace(info, labels={**info.labels, NODE: hostname}))
        return out

    def container(self, name: str) -> ContainerInfo | None:
        svc = self._service(name)
        if svc is not None:
            return self._task_info(svc, self._current(self._tasks(svc["ID"])))
        try:
            engine, ref = self.locate(name)
        except NotFound:
            return None
        return engine.container(ref)

    def create_container(self, spec: ContainerSpec, start: bool = True) -> ContainerInfo:
        """A one-replica service for `spec`, running once this returns (or a clear error, nothing left)."""
        if spec.network.startswith("container:"):
            raise LabError("on a swarm a container that shares another's network namespace is made by "
                           "create_pod (Swarm services cannot join a container's namespace)")
        if spec.runtime:
            raise LabError(f"runtime={spec.runtime!r}: Swarm services run with each node's default runtime; "
                           f"set it as the default runtime in the nodes' daemon.json instead")
        image = self.publish_ref(spec.image)
        mounts = []
        pin_here = bool(spec.ports)  # published dev ports are this machine's (the manager's) ports
        for source, v in spec.volumes.items():
            if source.startswith("/"):
                mounts.append(Mount(v["bind"], source, type="bind", read_only=v.get("mode") == "ro"))
                pin_here = True  # a folder of this machine
            else:
                mounts.append(Mount(v["bind"], source, type="volume", read_only=v.get("mode") == "ro",
                                    labels=self._volume_labels.get(source) or {"claude-lab.lab": spec.labels.get(
                                        "claude-lab.lab", "")}))
        for target, opts in (spec.tmpfs or {}).items():
            size = next((o.split("=", 1)[1] for o in opts.split(",") if o.startswith("size=")), None)
            mounts.append(Mount(target, None, type="tmpfs", tmpfs_size=memory_bytes(size) if size else None))
        healthcheck = Healthcheck(**spec.healthcheck) if spec.healthcheck else None
        cspec = SvcContainerSpec(
            image=image, command=spec.command, hostname=spec.hostname, env=spec.environment or None,
            workdir=spec.working_dir, user=spec.user, labels=spec.labels, mounts=mounts or None,
            stop_grace_period=STOP_GRACE_NS, read_only=spec.read_only or None, init=spec.init or None,
            cap_add=spec.cap_add, cap_drop=spec.cap_drop, healthcheck=healthcheck,
        )
        mem = memory_bytes(spec.mem_limit)
        resources = Resources(cpu_limit=spec.nano_cpus, mem_limit=mem,
                              cpu_reservation=spec.nano_cpus // 4 if spec.nano_cpus else None,
                              mem_reservation=mem // 4 if mem else None)
        if spec.pids_limit:
            resources.setdefault("Limits", {})["Pids"] = spec.pids_limit  # API 1.41 (Engine 20.10)
        placement = Placement(constraints=[f"node.id=={self.node_id}"]) if pin_here else None
        networks = [NetworkAttachmentConfig(spec.network, aliases=spec.aliases or None)]
        networks += [NetworkAttachmentConfig(net, aliases=al or None) for net, al in spec.extra_networks.items()]
        template = TaskTemplate(cspec, resources=resources, placement=placement, networks=networks,
                                restart_policy=RestartPolicy(condition="any", delay=1_000_000_000))
        endpoint = None
        if spec.ports:
            endpoint = EndpointSpec(ports={port: (int(cport.split("/")[0]), cport.split("/")[1] if "/" in cport
                                                  else "tcp", "host") for cport, (_ip, port) in spec.ports.items()})
        try:
            created = self.api.create_service(template, name=spec.name, labels=spec.labels,
                                              mode=ServiceMode("replicated", replicas=1 if start else 0),
                                              endpoint_spec=endpoint)
        except docker.errors.APIError as exc:
            if _conflict(exc):
                raise AlreadyExists(f"service {spec.name} already exists: {exc.explanation}") from exc
            raise LabError(f"Swarm refused service {spec.name} (image {image}): {exc.explanation or exc}") from exc
        try:
            if start:
                task = self._wait_running(created["ID"], spec.name)
                if not pin_here and any(not s.startswith("/") for s in spec.volumes):
                    self._pin(created["ID"], task["NodeID"])  # its volume lives on this node from now on
        except BaseException:
            self.remove(spec.name, force=True)
            raise
        info = self.container(spec.name)
        assert info is not None
        return info

    def _wait_running(self, service_id: str, name: str, timeout: float = TASK_TIMEOUT,
                      old: frozenset[str] = frozenset()) -> dict[str, Any]:
        """Poll until the service has a running task that is not one of `old` (the tasks before an update:
        right after it the old one still reads running); errors say why not."""
        deadline = time.monotonic() + timeout
        last = ""
        while True:
            tasks = self._tasks(service_id)
            fresh = [t for t in tasks if t["ID"] not in old]
            running = [t for t in fresh if t.get("DesiredState") == "running"
                       and (t.get("Status") or {}).get("State") == "running"
                       and (t.get("Status") or {}).get("ContainerStatus", {}).get("ContainerID")]
            if running:
                return self._current(running)  # type: ignore[return-value]
            failed = [t for t in fresh if (t.get("Status") or {}).get("State") in ("failed", "rejected")]
            if failed:
                st = self._current(failed)["Status"]  # type: ignore[index]
                why = st.get("Err") or st.get("Message")
                if "No such image" in str(why) or "pull access denied" in str(why) or "manifest unknown" in str(why):
                    raise LabError(f"{name}: a node could not get its image ({why}); build and push with "
                                   f"lab.build() (images reach nodes through the `registry` setting)")
                if len(failed) >= 3:
                    raise LabError(f"{name} failed to start on the swarm: {why}")
            current = self._current(fresh)
            if current is not None:
                st = current.get("Status") or {}
                last = f"{st.get('State')}: {st.get('Err') or st.get('Message', '')}"
            if time.monotonic() > deadline:
                raise LabTimeout(f"{name} did not start within {timeout:.0f}s on the swarm (last task state {last}); "
                                 f"`docker service ps {name} --no-trunc` tells why")
            time.sleep(0.1)

    def _pin(self, service_id: str, node_id: str) -> None:
        """Keep the service on `node_id` (Swarm leaves a task whose node still matches where it is)."""
        svc = self._call(self.api.inspect_service, service_id)
        template = svc["Spec"]["TaskTemplate"]
        template.setdefault("Placement", {})["Constraints"] = [f"node.id=={node_id}"]
        self._update(svc, task_template=template)

    def _update(self, svc: dict[str, Any], **changes: Any) -> None:
        spec = svc["Spec"]
        self._call(self.api.update_service, svc["ID"], svc["Version"]["Index"],
                   task_template=changes.get("task_template", spec["TaskTemplate"]), name=spec["Name"],
                   labels=changes.get("labels", spec.get("Labels")), mode=changes.get("mode", spec.get("Mode")),
                   endpoint_spec=spec.get("EndpointSpec"), what=f"service {spec['Name']}")

    def create_pod(self, anchor: ContainerSpec, member: ContainerSpec, ready: Callable[[], Any]) -> ContainerInfo:
        """The member (an agent) as a service, and the anchor (its netguard) in the task's network namespace.

        On one engine the anchor owns the namespace and the member joins it; a service cannot join a
        container, so here the member owns it (taking the anchor's network, aliases and hostname) and the
        anchor is a plain container on the same node. Nothing runs in the member but its idle PID 1 until
        `ready()` (the firewall's self-check) returns. The anchor's spec is kept in a service label so a
        new task (start, restart, node reboot) gets its anchor again.
        """
        svc_spec = replace(member, network=anchor.network, aliases=list(anchor.aliases),
                           hostname=anchor.hostname or member.hostname, init=True,
                           labels={**member.labels, SIDECAR_LABEL: json.dumps(asdict(anchor))})
        info = self.create_container(svc_spec)
        try:
            self.locate(member.name)  # attaches the sidecar to the task
            ready()
        except BaseException:
            self.remove(anchor.name, force=True)
            raise
        return self.container(member.name) or info

    def _ensure_sidecar(self, engine: Engine, cid: str, anchor: ContainerSpec) -> None:
        """Every task of a pod's service gets its sidecar: a new task (start, restart, a node back from
        down, Swarm's own restart) is found here before anything runs in it through the lab."""
        current = engine.container(anchor.name)
        if current is not None and current.running and current.network_mode == f"container:{cid}":
            return
        engine.remove(anchor.name, force=True)  # one from the task before
        image = self.publish_ref(anchor.image)
        if engine is not self.manager and engine.image_id(image) is None and not engine.pull(image):
            raise LabError(f"node {engine.base_url} could not pull {image} for {anchor.name}; "
                           f"is the registry {self.registry} reachable from it?")
        engine.create_container(replace(anchor, image=image, network=f"container:{cid}", aliases=[],
                                        hostname=None, restart_policy="no"))
        self._where[anchor.name] = next(n for n, e in self._engines.items() if e is engine)

    def _sidecar_of(self, svc: dict[str, Any]) -> ContainerSpec | None:
        raw = (svc["Spec"].get("Labels") or {}).get(SIDECAR_LABEL)
        return ContainerSpec(**json.loads(raw)) if raw else None

    def _scale(self, name: str, replicas: int) -> None:
        svc = self._service(name)
        if svc is None:
            raise NotFound(f"service {name} not found on the swarm")
        before = frozenset(t["ID"] for t in self._tasks(svc["ID"]))
        self._update(svc, mode={"Replicated": {"Replicas": replicas}})
        if replicas:
            self._wait_running(svc["ID"], name, old=before)
            self._after_new_task(svc)
        else:
            self._wait_gone(svc["ID"], name)

    def _after_new_task(self, svc: dict[str, Any]) -> None:
        self.locate(svc["Spec"]["Name"])  # the new task's sidecar, before the call returns

    def _wait_gone(self, service_id: str, name: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while any((t.get("Status") or {}).get("State") in ("running", *PENDING_STATES)
                  for t in self._tasks(service_id)):
            if time.monotonic() > deadline:
                raise LabTimeout(f"{name}'s task did not stop within {timeout:.0f}s")
            time.sleep(0.1)

    def start(self, name: str) -> None:
        svc = self._service(name)
        if svc is None:
            engine, ref = self.locate(name)
            return engine.start(ref)
        replicas = ((svc["Spec"].get("Mode") or {}).get("Replicated") or {}).get("Replicas", 0)
        if replicas:
            info = self._task_info(svc, self._current(self._tasks(svc["ID"])))
            if info.state == "lost":
                raise LabError(f"{name} is lost: its node {info.labels.get(NODE, '?')} is down")
            if info.running:
                return
        self._scale(name, 1)

    def stop(self, name: str, timeout: int = 10) -> None:
        svc = self._service(name)
        if svc is None:
            engine, ref = self.locate(name)
            return engine.stop(ref, timeout=timeout)
        self._scale(name, 0)
        sidecar = self._sidecar_of(svc)
        if sidecar is not None:
            self._remove_plain(sidecar.name)

    def restart(self, name: str, timeout: int = 10) -> None:
        svc = self._service(name)
        if svc is None:
            engine, ref = self.locate(name)
            return engine.restart(ref, timeout=timeout)
        before = frozenset(t["ID"] for t in self._tasks(svc["ID"]))
        template = svc["Spec"]["TaskTemplate"]
        template["ForceUpdate"] = int(template.get("ForceUpdate", 0)) + 1
        self._update(svc, task_template=template, mode={"Replicated": {"Replicas": 1}})
        self._wait_running(svc["ID"], name, old=before)
        self._after_new_task(svc)

    def remove(self, name: str, force: bool = False) -> None:
        svc = self._service(name)
        if svc is None:
            self._remove_plain(name, force)
            return
        try:
            self.api.remove_service(svc["ID"])
        except docker.errors.NotFound:
            return
        except docker.errors.APIError as exc:
            raise LabError(f"could not remove service {name}: {exc.explanation or exc}") from exc
        self._wait_containers_gone(svc["ID"])

    def _wait_containers_gone(self, service_id: str, timeout: float = 60.0) -> None:
        """A removed service's containers go away shortly after on their nodes; its volumes are free then."""
        deadline = time.monotonic() + timeout
        while True:
            left = [e for _, e in self._live_engines()
                    if e.api.containers(all=True, filters={"label": f"com.docker.swarm.service.id={service_id}"})]
            if not left or time.monotonic() > deadline:
                return
            time.sleep(0.1)

    def _remove_plain(self, name: str, force: bool = True) -> None:
        for _, engine in self._live_engines():
            engine.remove(name, force=force)
        self._where.pop(name, None)

    def connect(self, network: str, container: str, aliases: list[str] | None = None) -> None:
        """Attach a service to one more network (Swarm replaces its task: wait until the new one runs)."""
        svc = self._service(container)
        if svc is None:
            engine, ref = self.locate(container)
            return engine.connect(network, ref, aliases)
        net_id = self._call(self.api.inspect_network, network, what=f"network {network}")["Id"]
        template = svc["Spec"]["TaskTemplate"]
        attached = template.get("Networks") or []
        if any(a.get("Target") in (net_id, network) for a in attached):
            return
        template["Networks"] = attached + [{"Target": net_id, "Aliases": aliases or []}]
        before = frozenset(t["ID"] for t in self._tasks(svc["ID"]))
        self._update(svc, task_template=template)
        self._wait_running(svc["ID"], container, old=before)
        self._after_new_task(svc)

    def logs(self, name: str, tail: int | None = None, follow: bool = False,
             timestamps: bool = False) -> Iterator[bytes] | bytes:
        return self._on_node(name, lambda engine, ref: engine.logs(ref, tail=tail, follow=follow,
                                                                   timestamps=timestamps))

    def put_archive(self, name: str, path: str, data: bytes) -> None:
        engine, ref = self.locate(name)
        engine.put_archive(ref, path, data)

    # -- exec: on the node's engine --------------------------------------------------------------
    def exec_start(self, container: str, cmd: list[str], user: str | None = None, workdir: str | None = None,
                   env: dict[str, str] | None = None, stdin: bool = False, tty: bool = False
                   ) -> tuple[str, Iterator[tuple[bytes | None, bytes | None]]]:
        def start(engine: Engine, ref: str) -> tuple[Engine, str, Any]:
            return (engine, *engine.exec_start(ref, cmd, user=user, workdir=workdir, env=env, stdin=stdin, tty=tty))

        engine, exec_id, stream = self._on_node(container, start)
        self._exec_engines[exec_id] = engine
        return exec_id, stream

    def exec_output(self, container: str, cmd: list[str], user: str | None = None, workdir: str | None = None,
                    env: dict[str, str] | None = None) -> tuple[str, bytes, bytes]:
        engine, exec_id, out, err = self._on_node(
            container, lambda engine, ref: (engine, *engine.exec_output(ref, cmd, user=user, workdir=workdir, env=env)))
        self._exec_engines[exec_id] = engine
        return exec_id, out, err

    def exec_exit_code(self, exec_id: str) -> int | None:
        engine = self._exec_engines.get(exec_id)
        if engine is None:
            raise NotFound(f"exec {exec_id} was not started through this connection")
        return engine.exec_exit_code(exec_id)

    def oom_events(self, container: str, since: float, until: float) -> int:
        engine, ref = self.locate(container)
        return engine.oom_events(ref, since, until)

    def interactive_argv(self, container: str, command: list[str], user: str | None = None,
                         workdir: str | None = None) -> list[str]:
        engine, ref = self.locate(container)
        argv = engine.interactive_argv(ref, command, user=user, workdir=workdir)
        if engine is self.manager:
            return argv
        url = next(self._urls[n] for n, e in self._engines.items() if e is engine)
        rest = argv[argv.index("exec"):]
        return ["docker", "-H", url, *rest]

    # -- networks: attachable overlays ------------------------------------------------------------
    def network_exists(self, name: str) -> bool:
        return any(net["Name"] == name for net in self._call(self.api.networks, names=[name]))

    def create_network(self, name: str, labels: dict[str, str], internal: bool = False) -> bool:
        try:
            self.api.create_network(name, driver="overlay", attachable=True, labels=labels, internal=internal,
                                    scope="swarm", check_duplicate=True)
        except docker.errors.APIError as exc:
            if _conflict(exc):  # a concurrent creator made it first: theirs is ours too
                return False
            raise LabError(f"could not create overlay network {name}: {exc.explanation or exc}") from exc
        return True

    def dedupe_network(self, name: str) -> str | None:
        same = [n for n in self._call(self.api.networks, names=[name]) if n["Name"] == name]
        return min(same, key=lambda n: (n.get("Created", ""), n["Id"]))["Id"] if same else None

    def ensure_network(self, name: str, labels: dict[str, str], internal: bool = False) -> bool:
        if self.network_exists(name):
            return False
        return self.create_network(name, labels, internal)

    def network_gateway(self, name: str) -> str | None:
        """Where containers on `name` reach this machine (the model server, the recording proxy).

        An overlay's gateway is virtual, so this is the `model_host` setting (or the manager node's
        claude-lab.model-host label): an address of this machine that every node's containers reach.
        """
        if not self.model_host:
            raise LabError("the swarm backend needs `model_host`: an address of this machine that containers on "
                           "every node can reach, for the lab's model server and recording proxy. Set model_host "
                           "in claude-lab.toml (or CLAUDE_LAB_MODEL_HOST), or label the manager node: docker node "
                           f"update --label-add {MODEL_HOST_LABEL}=ADDRESS <manager>")
        return self.model_host

    def network_addresses(self, name: str) -> tuple[list[str], list[str]]:
        attrs = self._call(self.api.inspect_network, name, what=f"network {name}")
        return _ipam(attrs)

    def gateways(self) -> list[str]:
        """Every gateway on every node (each an address of some node), and this machine's model host."""
        found: list[str] = []
        for _, engine in self._live_engines():
            found += engine.gateways()
        if self.model_host:
            found.append(self.model_host)
        return list(dict.fromkeys(found))

    def networks(self, labels: dict[str, str | None]) -> list[dict[str, Any]]:
        return self._call(self.api.networks, filters=_filters(labels))

    def remove_network(self, name: str) -> None:
        self.manager.remove_network(name)

    # -- volumes: each lives on one node ----------------------------------------------------------
    def volume_exists(self, name: str) -> bool:
        return name in self._volume_labels or any(e.volume_exists(name) for _, e in self._live_engines())

    def create_volume(self, name: str, labels: dict[str, str]) -> None:
        """Nothing to make yet: the volume appears on the node that runs the task that mounts it."""
        self._volume_labels[name] = dict(labels)

    def volumes(self, labels: dict[str, str | None]) -> list[dict[str, Any]]:
        seen: dict[str, dict[str, Any]] = {}
        for node_id, engine in self._live_engines():
            for vol in engine.volumes(labels):
                seen.setdefault(vol["Name"], {**vol, "Node": node_id})
        return list(seen.values())

    def remove_volume(self, name: str) -> None:
        self._volume_labels.pop(name, None)
        for _, engine in self._live_engines():
            engine.remove_volume(name)

    # -- images: built on the manager, reach the nodes through the registry ------------------------
    def image_labels(self, ref: str) -> dict[str, str] | None:
        return self.manager.image_labels(ref)

    def image_id(self, ref: str) -> str | None:
        return self.manager.image_id(ref)

    def tag_image(self, ref: str, repository: str, tag: str) -> None:
        self.manager.tag_image(ref, repository, tag)

    def build(self, context: Path, tag: str, buildargs: dict[str, str], labels: dict[str, str]) -> Iterator[dict]:
        return self.manager.build(context, tag, buildargs, labels)

    def pull(self, ref: str) -> bool:
        return self.manager.pull(ref)

    def publish(self, refs: list[str]) -> dict[str, str]:
        """Push local images to the registry so every node can pull them; local ref -> registry ref."""
        return {ref: self.publish_ref(ref, force=True) for ref in refs}

    def publish_ref(self, ref: str, force: bool = False) -> str:
        image_id = self.manager.image_id(ref)
        if image_id is None:
            return ref  # not ours to push (a registry reference already, or absent: Swarm says which)
        if not self.registry:
            raise LabError("the swarm backend needs a registry to bring images to its nodes: set `registry` "
                           "(host:port) in claude-lab.toml or CLAUDE_LAB_REGISTRY, or label the manager node "
                           f"{REGISTRY_LABEL}=host:port; docs/scale-out.md shows how to run one")
        if not force and self._published.get(ref + "@" + image_id):
            return self._published[ref + "@" + image_id]
        if ref.startswith("sha256:"):
            repository, tag = "claude-lab/by-id", image_id.split(":", 1)[1][:12]
        else:
            repository, _, tag = ref.rpartition(":") if ":" in ref.rsplit("/", 1)[-1] else (ref, "", "latest")
        remote = f"{self.registry}/{repository}"
        self.manager.tag_image(image_id, remote, tag)
        try:
            for line in self.api.push(remote, tag=tag, stream=True, decode=True):
                if line.get("error"):
                    raise LabError(f"pushing {ref} to {self.registry} failed: {line['error']}")
        except (docker.errors.APIError, requests.exceptions.ConnectionError) as exc:
            raise LabError(f"pushing {ref} to {self.registry} failed: {exc}; is the registry running "
                           f"(`claude-lab swarm-sim status`)?") from exc
        self._published[ref + "@" + image_id] = f"{remote}:{tag}"
        return f"{remote}:{tag}"

    # -- resource stats: the stats API of each node ------------------------------------------------
    def container_briefs(self, labels: dict[str, str | None], all: bool = True) -> list[ContainerBrief]:
        out = []
        for info in self.containers(labels, all=all):
            out.append(ContainerBrief(id=info.name, name=info.name, state=info.state, labels=info.labels))
        return out

    def cgroup_layout(self) -> CgroupLayout:
        return self.manager.cgroup_layout()

    def container_stats(self, container: str) -> StatsReading:
        return self._on_node(container, lambda engine, ref: engine.container_stats(ref))
