"""`SwarmEngine`: the engine face on a Docker Swarm (see the package's docstring)."""
from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterable, Iterator

import docker
import docker.errors
from docker.types import ServiceMode

from ...errors import AlreadyExists, LabError, LabTimeout, NotFound
from ...naming import MODEL_HOST_LABEL, NODE
from ..errors import conflict
from ..local import Engine
from ..parse import ipam, label_filters, network_info
from ...util.parallel import parallel, together
from ...util.waiting import wait_until
from ..types import CgroupLayout, ContainerBrief, ContainerInfo, ContainerSpec, NetworkInfo, StatsReading, VolumeInfo
from .services import service_template
from .tasks import SwarmTasks


NETWORK_GONE_TIMEOUT = 60.0  # seconds a removed lab's overlay may take to be released by its last tasks


class SwarmEngine(SwarmTasks):
    """A Docker Swarm behind the engine face: containers as one-replica services."""

    # -- containers ---------------------------------------------------------------------------
    def containers(self, labels: dict[str, str | None], all: bool = True) -> list[ContainerInfo]:
        services = self._call(self.api.services, filters=label_filters(labels))
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
        template, endpoint, pin_here = service_template(spec, image, self.node_id, self._volume_labels,
                                                        self.constraints)
        try:
            created = self.api.create_service(template, name=spec.name, labels=spec.labels,
                                              mode=ServiceMode("replicated", replicas=1 if start else 0),
                                              endpoint_spec=endpoint)
        except docker.errors.APIError as exc:
            if conflict(exc):
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

    def teardown(self, containers: Iterable[str], networks: Iterable[str] = (), volumes: Iterable[str] = ()) -> None:
        """Remove services, plain containers, overlays and volumes: the services first (one quick call each, at
        once), then their tasks' containers are awaited (and force-removed) on all nodes while the plain
        containers (the sidecars) are removed; then the overlays and volumes together. (The manager would take
        an overlay's removal right after its services', but then frees it only when the nodes report their
        tasks gone, seconds later: 3.4 s against 0.4 s for six agents.)"""
        work = list(containers)
        found = parallel(self._service, work)
        services = [(name, svc) for name, svc in zip(work, found) if svc is not None]
        plain = [name for name, svc in zip(work, found) if svc is None]

        def drop(item: tuple[str, dict[str, Any]]) -> str | None:
            name, svc = item
            try:
                self.api.remove_service(svc["ID"])
            except docker.errors.NotFound:
                return None
            except docker.errors.APIError as exc:
                raise LabError(f"could not remove service {name}: {exc.explanation or exc}") from exc
            return str(svc["ID"])

        ids = [i for i in parallel(drop, services) if i]
        together(lambda: self._wait_containers_gone(*ids), *(lambda name=name: self._remove_plain(name, True)
                                                            for name in plain))
        together(*(lambda net=net: self.remove_network(net) for net in networks),
                 *(lambda vol=vol: self.remove_volume(vol) for vol in volumes))

    def rename(self, name: str, new_name: str) -> None:
        if self._service(name) is not None:
            raise LabError(f"{name} is a swarm service, which Swarm cannot rename; remove it and create "
                           f"{new_name} instead")
        engine, ref = self.locate(name)
        engine.rename(ref, new_name)

    def _wait_containers_gone(self, *service_ids: str, timeout: float = 60.0) -> None:
        """A removed service's containers go away shortly after on their nodes; its volumes are free then."""
        if not service_ids:
            return
        key, wanted = "com.docker.swarm.service.id", set(service_ids)

        def gone() -> bool:  # one listing per node for all the services (Docker ANDs label filters)
            left = [(e, c["Id"]) for _, e in self._live_engines()
                    for c in e.api.containers(all=True, filters={"label": key})
                    if (c.get("Labels") or {}).get(key) in wanted]
            # the nodes' task reapers take seconds to remove a removed service's containers: do it for them
            parallel(lambda item: item[0].remove(item[1], force=True), left)
            return not left
        try:
            wait_until(gone, timeout, f"the containers of services {', '.join(service_ids)} are still there",
                       interval=0.1)
        except LabTimeout:
            pass  # best effort: the next call on their volumes says what is wrong

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

    def disconnect(self, network: str, container: str) -> None:
        svc = self._service(container)
        if svc is None:
            engine, ref = self.locate(container)
            return engine.disconnect(network, ref)
        net_id = self._call(self.api.inspect_network, network, what=f"network {network}")["Id"]
        template = svc["Spec"]["TaskTemplate"]
        template["Networks"] = [a for a in template.get("Networks") or [] if a.get("Target") not in (net_id, network)]
        before = frozenset(t["ID"] for t in self._tasks(svc["ID"]))
        self._update(svc, task_template=template)
        self._wait_running(svc["ID"], container, old=before)
        self._after_new_task(svc)

    def logs(self, name: str, tail: int | None = None, follow: bool = False,
             timestamps: bool = False) -> Iterator[bytes] | bytes:
        return self._on_node(name, lambda engine, ref: engine.logs(ref, tail=tail, follow=follow,
                                                                   timestamps=timestamps))

    def put_archive(self, name: str, path: str, data: bytes | Iterable[bytes]) -> None:
        engine, ref = self.locate(name)
        engine.put_archive(ref, path, data)

    def get_archive(self, name: str, path: str) -> tuple[Iterator[bytes], dict[str, Any]]:
        engine, ref = self.locate(name)
        return engine.get_archive(ref, path)

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
            if conflict(exc):  # a concurrent creator made it first: theirs is ours too
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
        return ipam(attrs)

    def gateways(self) -> list[str]:
        """Every gateway on every node (each an address of some node), and this machine's model host."""
        found: list[str] = []
        for _, engine in self._live_engines():
            found += engine.gateways()
        if self.model_host:
            found.append(self.model_host)
        return list(dict.fromkeys(found))

    def networks(self, labels: dict[str, str | None]) -> list[NetworkInfo]:
        return [network_info(n) for n in self._call(self.api.networks, filters=label_filters(labels))]

    def remove_network(self, name: str) -> None:
        """Remove an overlay and wait until the manager no longer lists it: right after a lab's services are
        removed, their tasks may still hold it on a node (the removal is then refused or does not take yet)."""
        last: list[LabError] = []
        timeout = NETWORK_GONE_TIMEOUT

        def listed() -> bool:  # the name filter matches parts of names: compare whole ones
            return any(n.get("Name") == name for n in self._call(self.api.networks, names=[name]))

        def gone() -> bool:
            if not listed():
                return True
            try:
                self.manager.remove_network(name)
            except LabError as exc:
                last[:] = [exc]
            return not listed()

        try:
            wait_until(gone, timeout, f"network {name} is still there {timeout:.0f}s after its removal", interval=0.05)
        except LabTimeout:
            raise last[0] if last else LabError(f"network {name} could not be removed; see `docker network "
                                                f"inspect {name}`") from None

    # -- volumes: each lives on one node ----------------------------------------------------------
    def volume_exists(self, name: str) -> bool:
        return name in self._volume_labels or any(e.volume_exists(name) for _, e in self._live_engines())

    def create_volume(self, name: str, labels: dict[str, str]) -> None:
        """Nothing to make yet: the volume appears on the node that runs the task that mounts it."""
        self._volume_labels[name] = dict(labels)

    def volumes(self, labels: dict[str, str | None]) -> list[VolumeInfo]:
        seen: dict[str, VolumeInfo] = {}
        for node_id, engine in self._live_engines():
            for vol in engine.volumes(labels):
                seen.setdefault(vol.name, replace(vol, node=node_id))
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
        return self._publisher.ref(ref, force=force)

    def preload(self, refs: list[str]) -> dict[str, float]:
        """Pull these images from the registry onto every ready node the lab's constraints allow, all nodes at
        once, so the first agent on a node does not wait for its pull; node hostname -> seconds it took."""
        allowed = set(self.placeable_nodes(self.constraints))
        published = [self.publish_ref(ref) for ref in refs]

        def one(item: tuple[str, Engine]) -> tuple[str, float]:
            node_id, engine = item
            started = time.monotonic()
            for ref in published:
                if engine.image_id(ref) is None and not engine.pull(ref):
                    raise LabError(f"node {engine.base_url} could not pull {ref}; is the registry {self.registry} "
                                   f"reachable from it?")
            return (self._node(node_id).get("Description") or {}).get("Hostname", node_id), time.monotonic() - started

        return dict(parallel(one, [item for item in self._live_engines() if item[0] in allowed]))

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

