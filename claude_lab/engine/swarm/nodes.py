"""A swarm's nodes and a connection to each node's engine (Swarm has no exec, logs or stats API)."""
from __future__ import annotations

import re
import threading
from typing import Any

import docker

from ...errors import EngineUnavailable, LabError
from ...naming import DNS_LABEL, ENGINE_LABEL, MODEL_HOST_LABEL, REGISTRY_LABEL, SIM_CONSTRAINT_LABEL
from ..local import Engine
from ..parse import node_info
from ..types import NodeInfo, VersionInfo
from .registry import Publisher


class SwarmNodes:
    """A Docker Swarm, reached through one of its managers: its nodes, and their engines."""

    backend = "swarm"
    pods_anchor_first = False  # create_pod: the member (agent service) owns the namespace, see there
    is_local = False  # containers run on other machines: stats come from each node's stats API

    def __init__(self, manager_url: str | None = None, *, node_engines: dict[str, str] | None = None,
                 registry: str | None = None, model_host: str | None = None, dns: str | None = None,
                 timeout: int = 120, constraints: list[str] | None = None):
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
        labels = self._node(self.node_id)["Spec"].get("Labels") or {}
        self.registry = registry or labels.get(REGISTRY_LABEL)
        # Where the lab's services may run: the `swarm_constraints` setting, and, with the registry of the last
        # sim brought up on this manager (its labels), that sim's nodes only -- two sims never cross.
        self.constraints = list(constraints or [])
        if not registry and labels.get(SIM_CONSTRAINT_LABEL) and labels[SIM_CONSTRAINT_LABEL] not in self.constraints:
            self.constraints.append(labels[SIM_CONSTRAINT_LABEL])
        self._publisher = Publisher(self.manager, self.registry)
        self.model_host = model_host or labels.get(MODEL_HOST_LABEL)
        # The resolvers the nodes' containers use (their `--dns`): a netguard lets DNS through to them.
        self._dns = [d for d in (dns or labels.get(DNS_LABEL, "")).split(",") if d]

    # -- engine -----------------------------------------------------------------------------
    def version(self) -> VersionInfo:
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

    def nodes(self) -> list[NodeInfo]:
        """Every node: id, hostname, role, state (ready/down), availability, engine endpoint."""
        out = [node_info(node, self._endpoint(node, required=False) or "") for node in self._call(self.api.nodes)]
        return sorted(out, key=lambda n: (n.role != "manager", n.hostname))

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
            if node.state != "ready" or not node.engine:
                continue
            try:
                out.append((node.id, self.node_engine(node.id)))
            except LabError:
                continue  # a node that just went away: its containers read as lost
        return out

    def placeable_nodes(self, constraints: list[str]) -> list[str]:
        """The ids of the nodes a service with these placement constraints may run on (the forms Swarm takes:
        node.labels.K, node.role, node.hostname, node.id, engine.labels.K with == or !=; any other form is
        left to Swarm, counted as met)."""
        found = []
        for node in self._call(self.api.nodes):
            spec, desc = node.get("Spec") or {}, node.get("Description") or {}
            facts = {"node.role": spec.get("Role"), "node.hostname": desc.get("Hostname"), "node.id": node.get("ID")}
            facts.update({f"node.labels.{k}": v for k, v in (spec.get("Labels") or {}).items()})
            facts.update({f"engine.labels.{k}": v for k, v in ((desc.get("Engine") or {}).get("Labels") or {}).items()})
            ok = True
            for rule in constraints:
                m = re.match(r"\s*([\w.\-]+)\s*(==|!=)\s*(.*?)\s*$", rule)
                if m is None or not m[1].startswith(("node.", "engine.labels.")):
                    continue
                if (facts.get(m[1]) == m[3]) != (m[2] == "=="):
                    ok = False
            if ok:
                found.append(node["ID"])
        return found

    def _safe_node(self, node_id: str) -> dict[str, Any] | None:
        try:
            return self._node(node_id)
        except LabError:
            return None

