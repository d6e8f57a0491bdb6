"""Where a service's task runs: its container on its node, found again when Swarm moves it; pods."""
from __future__ import annotations

import json
import re
import time
from dataclasses import asdict, replace
from typing import Any, Callable

import docker
import docker.errors
import requests.exceptions

from ...errors import EngineUnavailable, LabError, NotFound
from ...naming import NODE, SIDECAR_LABEL
from ...util.waiting import wait_until
from ..local import Engine
from ..parse import container_info, parse_time
from ..types import ContainerInfo, ContainerSpec
from .nodes import SwarmNodes

PENDING_STATES = {"new", "pending", "assigned", "accepted", "preparing", "ready", "starting"}
TASK_TIMEOUT = 300.0  # an image of GBs is pulled by the node on first use
UNPLACED_GRACE = 3.0  # seconds the scheduler may say "no suitable node" before a create fails with why


class SwarmTasks(SwarmNodes):
    """Services and their tasks: the ContainerInfo of a service, the node engine its task runs on."""

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
                info = container_info(attrs)
                return replace(info, name=name, labels={**info.labels, **labels})
            except (docker.errors.NotFound, LabError, requests.exceptions.RequestException):
                pass
        if not replicas:
            return self._synthetic(svc, labels, "exited", status)
        state = status.get("State", "pending")
        return self._synthetic(svc, labels, "created" if state in PENDING_STATES else "exited", status)

    def _synthetic(self, svc: dict[str, Any], labels: dict[str, str], state: str,
                   status: dict[str, Any]) -> ContainerInfo:
        spec = svc["Spec"]
        cspec = spec["TaskTemplate"]["ContainerSpec"]
        exit_code = (status.get("ContainerStatus") or {}).get("ExitCode")
        return ContainerInfo(id=svc["ID"], name=spec["Name"], state=state, health=None,
                             image=cspec.get("Image", "").split("@")[0], image_id="", labels=labels, ports={},
                             created=parse_time(svc.get("CreatedAt")), exit_code=exit_code,
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
            except LabError:
                there = cached[0].container(cached[1])
                if there is not None and there.running:  # the container is fine: the call itself failed
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

    def _wait_running(self, service_id: str, name: str, timeout: float = TASK_TIMEOUT,
                      old: frozenset[str] = frozenset()) -> dict[str, Any]:
        """Poll until the service has a running task that is not one of `old` (the tasks before an update:
        right after it the old one still reads running); errors say why not."""
        last = [""]
        unplaced: list[float] = []  # when the scheduler first said no node suits the task

        def running_task() -> dict[str, Any] | None:
            fresh = [t for t in self._tasks(service_id) if t["ID"] not in old]
            running = [t for t in fresh if t.get("DesiredState") == "running"
                       and (t.get("Status") or {}).get("State") == "running"
                       and (t.get("Status") or {}).get("ContainerStatus", {}).get("ContainerID")]
            if running:
                return self._current(running)
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
                last[0] = f"{st.get('State')}: {st.get('Err') or st.get('Message', '')}"
                if self._constraints_exclude_all(str(st.get("Err") or "")):
                    unplaced.append(time.monotonic())
                    if unplaced[-1] - unplaced[0] >= UNPLACED_GRACE:
                        raise LabError(self._unplaceable(name, str(st.get("Err"))))
                else:  # no node yet for a passing reason (a port still held, resources): Swarm retries
                    unplaced.clear()
            return None

        return wait_until(running_task, timeout, lambda: (
            f"{name} did not start within {timeout:.0f}s on the swarm (last task state {last[0]}); "
            f"`docker service ps {name} --no-trunc` tells why"), interval=0.1)

    def _constraints_exclude_all(self, err: str) -> bool:
        """Whether the scheduler's "no suitable node (...)" says the constraints rule out every node: that never
        passes. (Other reasons -- a host port still held, no resources -- do, and Swarm retries.)"""
        found = re.search(r"scheduling constraints not satisfied on (\d+) nodes?", err)
        if "no suitable node" not in err or found is None:
            return False
        return int(found.group(1)) >= len(self.api.nodes())

    def _unplaceable(self, name: str, why: str) -> str:
        nodes = []
        for node in self.api.nodes():
            spec, desc = node.get("Spec") or {}, node.get("Description") or {}
            labels = ", ".join(f"{k}={v}" for k, v in sorted((spec.get("Labels") or {}).items())
                               if not k.startswith(("claude-lab.engine", "claude-lab.dns", "claude-lab.model-host",
                                                    "claude-lab.registry")))
            nodes.append(f"{desc.get('Hostname', node['ID'][:12])} ({spec.get('Role')}, "
                         f"{(node.get('Status') or {}).get('State')}, {spec.get('Availability')}"
                         + (f"; {labels}" if labels else "") + ")")
        rules = ", ".join(self.constraints) or "none"
        return (f"{name} cannot be placed on the swarm: {why}. The lab's placement constraints: {rules} "
                f"(setting swarm_constraints); the nodes: {'; '.join(nodes)}. Label a node to match "
                f"(`docker node update --label-add KEY=VALUE NODE`), or change swarm_constraints")

    def _pin(self, service_id: str, node_id: str) -> None:
        """Keep the service on `node_id` (Swarm leaves a task whose node still matches where it is)."""
        svc = self._call(self.api.inspect_service, service_id)
        template = svc["Spec"]["TaskTemplate"]
        template.setdefault("Placement", {})["Constraints"] = [*self.constraints, f"node.id=={node_id}"]
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
                           extra_networks={**member.extra_networks, **anchor.extra_networks},
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
        engine.create_container(replace(anchor, image=image, network=f"container:{cid}", aliases=[], extra_networks={},
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
        wait_until(lambda: not any((t.get("Status") or {}).get("State") in ("running", *PENDING_STATES)
                                   for t in self._tasks(service_id)),
                   timeout, f"{name}'s task did not stop within {timeout:.0f}s", interval=0.1)

