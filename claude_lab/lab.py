"""`Lab`: one project's dev environment and agent containers on a Docker engine.

Everything the lab knows lives in labels on the engine's containers, networks and volumes,
so any process (a notebook kernel, the CLI, a service) finds the same lab again.
"""
from __future__ import annotations

import html
import os
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator

import pandas as pd

from . import hardening, netpolicy
from . import naming as n
from .config import LabConfig
from .engine import ContainerInfo, ContainerSpec, Engine, connect, memory_bytes
from .errors import AlreadyExists, LabError, LabTimeout, NotFound, PortInUse
from .execution import DEFAULT_MAX_OUTPUT, ExecResult, ExecStream
from .images import BuildEvent, BuildOutcome, ImageBuilder, TqdmProgress
from .ports import port_free, port_holder

if TYPE_CHECKING:
    from .agents import Agent
    from .claude import Run
    from .engine.swarm import SwarmEngine
    from .model import ScriptedModel
    from .runs import RunEvent, RunResult
    from .store import RunStore
    from .stats import StatsSampler
    from .widgets import LabPanel

STATUS_COLUMNS = ["name", "role", "state", "health", "image", "ports", "created", "agent", "group", "egress",
                  "node"]
WORKSPACE = "/workspace"
SERVICE_IMAGES = ("dev", "postgres", "redis", "agent")

Progress = Callable[[BuildEvent], None]
_ENGINE_LOCK = threading.Lock()


def _command(command: str | Iterable[str]) -> list[str]:
    """A string runs through `sh -c` (pipes, globs); a list runs as it is."""
    if isinstance(command, str):
        if not command.strip():
            raise LabError("empty command: give a command to run, for example 'ls -la'")
        return ["sh", "-c", command]
    argv = [str(a) for a in command]
    if not argv:
        raise LabError("empty command: give a command to run, for example ['ls', '-la']")
    return argv


@dataclass
class _Undo:
    """What one call created, to be removed again if the call fails half-way."""

    engine: Engine
    containers: list[str]
    networks: list[str]
    volumes: list[str]

    def network(self, name: str, labels: dict[str, str]) -> bool:
        """Create a network unless it exists, noting it for undo *before* the call (Ctrl-C safe)."""
        if self.engine.network_exists(name):
            return False
        self.networks.append(name)
        if not self.engine.create_network(name, labels):
            self.networks.remove(name)  # another creator won the race: the network is theirs
            return False
        return True

    def volume(self, name: str, labels: dict[str, str]) -> bool:
        if self.engine.volume_exists(name):
            return False
        self.volumes.append(name)
        self.engine.create_volume(name, labels)
        return True

    def rollback(self) -> None:
        for name in reversed(self.containers):
            self.engine.remove(name, force=True)
        for name in reversed(self.volumes):
            try:
                self.engine.remove_volume(name)
            except LabError:
                pass
        for name in reversed(self.networks):
            try:
                self.engine.remove_network(name)
            except LabError:
                pass


class Lab:
    """A project's lab: PostgreSQL, Redis, a dev container and any number of agents.

    >>> lab = Lab()                      # the project in the working directory
    >>> lab.up()                         # build if needed, start services, wait until healthy
    >>> lab.create_agent("agent-001")
    >>> lab.exec("agent-001", "id").stdout
    """

    def __init__(self, project_dir: str | os.PathLike = ".", name: str | None = None, *,
                 engine: Engine | None = None, model: "ScriptedModel | None" = None, **overrides: Any):
        self.config = LabConfig.load(project_dir, name, **overrides)
        self.name: str = self.config.name  # type: ignore[assignment]
        self._engine = engine
        self._images_checked: set[str] = set()
        self.model = model  # a ScriptedModel for lab.claude runs (an object, so not a config setting)

    # -- plumbing ------------------------------------------------------------------------
    @property
    def engine(self) -> "Engine | SwarmEngine":
        if self._engine is None:
            with _ENGINE_LOCK:  # threads (the async service, panels) share one connection
                if self._engine is None:
                    c = self.config
                    self._engine = connect(c.backend, manager_url=c.swarm_manager, registry=c.registry,
                                           model_host=c.model_host, node_engines=c.node_engines)
        return self._engine

    def __repr__(self) -> str:
        return f"Lab(name={self.name!r}, project_dir={str(self.config.project_dir)!r})"

    def _repr_html_(self) -> str:
        try:
            table = self.status().to_html(index=False, na_rep="")
        except LabError as exc:
            table = f"<i>{html.escape(str(exc))}</i>"
        return (f"<div><b>claude-lab</b> <code>{html.escape(self.name)}</code> "
                f"&middot; project <code>{html.escape(str(self.config.project_dir))}</code></div>{table}")

    def _labels(self, kind: str, **extra: str | None) -> dict[str, str]:
        return n.labels(self.name, kind, **extra)

    def _mine(self, **extra: str | None) -> dict[str, str | None]:
        filt: dict[str, str | None] = {n.LAB: self.name}
        for key, value in extra.items():
            filt[f"{n.PREFIX}.{key}"] = value
        return filt

    # -- images --------------------------------------------------------------------------
    def build(self, images: Iterable[str] | None = None, force: bool = False,
              progress: Progress | bool | None = True) -> list[BuildOutcome]:
        """Build the lab's images (parents first), skipping those whose content hash matches."""
        reporter: Progress | None
        if progress is True:
            reporter = TqdmProgress()
        elif progress is False or progress is None:
            reporter = None
        else:
            reporter = progress
        outcomes = ImageBuilder(self.engine, self.config).build(images, force=force, progress=reporter)
        self.engine.publish([o.tag for o in outcomes])  # a swarm's nodes pull them from its registry
        self._images_checked.update(o.image for o in outcomes)
        return outcomes

    def _ensure_images(self, names: Iterable[str], progress: Progress | bool | None) -> None:
        missing = [name for name in names if name not in self._images_checked]
        if missing:
            self.build(missing, progress=progress)

    # -- lifecycle -----------------------------------------------------------------------
    def up(self, build: bool = True, wait: bool = True, progress: Progress | bool | None = True) -> pd.DataFrame:
        """Start PostgreSQL, Redis and the dev container (building images if needed); idempotent."""
        engine = self.engine
        existing = {c.name: c for c in self.containers()}
        self._check_ports(existing)
        if build:
            self._ensure_images(SERVICE_IMAGES, progress)
        undo = _Undo(engine, [], [], [])
        try:
            net = n.network_name(self.name)
            undo.network(net, self._labels("network"))
            for role in n.SERVICE_ROLES:
                name = n.container_name(self.name, role)
                info = existing.get(name)
                current = engine.image_id(self.config.image(role)) if info is not None else None
                if info is not None and current is not None and info.image_id != current:
                    engine.remove(name, force=True)  # its image was rebuilt: recreate (data lives in volumes)
                    info = None
                if info is None:
                    spec = self._service_spec(role, undo)
                    undo.containers.append(name)
                    engine.create_container(spec)
                elif not info.running:
                    engine.start(name)
            self._attach_services_to_groups()
            if wait:
                self.wait_healthy()
        except BaseException:
            undo.rollback()
            raise
        return self.status()

    def _check_ports(self, existing: dict[str, ContainerInfo]) -> None:
        ours = {c.ports.get(p, "").rpartition(":")[2] for c in existing.values() for p in c.ports}
        for key in ("postgres_port", "redis_port"):
            port = getattr(self.config, key)
            if str(port) in ours or port_free(port, self.config.bind_address):
                continue
            holder = port_holder(port)
            raise PortInUse(
                f"host port {port} ({key}) is already in use"
                + (f" by {holder}" if holder else "")
                + f"; stop that or choose another port: Lab({key}=...), `{key} = ...` in claude-lab.toml, "
                  f"or CLAUDE_LAB_{key.upper()}",
                port=port,
            )

    def _service_spec(self, role: str, undo: _Undo) -> ContainerSpec:
        cfg = self.config
        common = dict(
            name=n.container_name(self.name, role),
            labels=self._labels("container", role=role),
            network=n.network_name(self.name),
            aliases=[role],
            hostname=role,
        )
        if role == n.POSTGRES:
            vol = n.postgres_volume(self.name)
            undo.volume(vol, self._labels("volume", role=role))
            return ContainerSpec(
                image=cfg.image("postgres"), **common,
                environment={"POSTGRES_USER": cfg.postgres_user, "POSTGRES_PASSWORD": cfg.postgres_password,
                             "POSTGRES_DB": cfg.postgres_db},
                volumes={vol: {"bind": "/var/lib/postgresql/data", "mode": "rw"}},
                ports={"5432/tcp": (cfg.bind_address, cfg.postgres_port)},
            )
        if role == n.REDIS:
            return ContainerSpec(image=cfg.image("redis"), **common,
                                 ports={"6379/tcp": (cfg.bind_address, cfg.redis_port)})
        workdir = f"{WORKSPACE}/{cfg.project_name}"
        return ContainerSpec(
            image=cfg.image("dev"), **common,
            working_dir=workdir,
            volumes={str(cfg.project_dir): {"bind": workdir, "mode": "rw"}},
            environment=self._service_env(),
            mem_limit=cfg.dev_memory,
            nano_cpus=int(cfg.dev_cpus * 1e9) if cfg.dev_cpus else None,
        )

    def _service_env(self) -> dict[str, str]:
        c = self.config
        return {
            "DATABASE_URL": f"postgresql://{c.postgres_user}:{c.postgres_password}@postgres:5432/{c.postgres_db}",
            "REDIS_URL": "redis://redis:6379/0",
            "PGHOST": "postgres", "PGPORT": "5432", "PGUSER": c.postgres_user, "PGDATABASE": c.postgres_db,
        }

    def _attach_services_to_groups(self) -> None:
        """Services are reachable by name from every group's network."""
        for net in self.engine.networks(self._mine(kind="network")):
            group = (net.get("Labels") or {}).get(n.GROUP)
            if group:
                self._attach_services(net["Name"])

    def _attach_services(self, network: str) -> None:
        for role in n.SERVICE_ROLES:
            name = n.container_name(self.name, role)
            if self.engine.container(name) is not None:
                self.engine.connect(network, name, aliases=[role])

    def wait_healthy(self, timeout: float | None = None) -> None:
        """Poll until every service with a healthcheck is healthy; a crashed one fails at once."""
        deadline = time.monotonic() + (timeout if timeout is not None else self.config.health_timeout)
        names = [n.container_name(self.name, role) for role in n.SERVICE_ROLES]
        while True:
            pending = []
            for name in names:
                info = self.engine.container(name)
                if info is None:
                    raise NotFound(f"service container {name} is gone; run lab.up() again")
                if info.state in ("exited", "dead"):
                    raise LabError(f"{name} stopped (exit {info.exit_code}); its last log lines:\n"
                                   + self.logs(name, tail=20))
                if info.health not in (None, "healthy") or not info.running:
                    pending.append(f"{name} ({info.health or info.state})")
            if not pending:
                return
            if time.monotonic() > deadline:
                raise LabTimeout(f"not healthy in time: {', '.join(pending)}; see `claude-lab logs <name>`")
            time.sleep(0.2)

    def down(self) -> pd.DataFrame:
        """Stop every container of the lab (agents too); volumes and networks stay."""
        for info in self.containers():
            if info.running:
                self.engine.stop(info.name, timeout=5)
        return self.status()

    def destroy(self, volumes: bool = False) -> dict[str, list[str]]:
        """Remove every container and network of the lab, and its volumes when asked."""
        removed: dict[str, list[str]] = {"containers": [], "networks": [], "volumes": []}
        for info in self.containers():
            self.engine.remove(info.name, force=True)
            removed["containers"].append(info.name)
        for net in self.engine.networks(self._mine()):
            self.engine.remove_network(net["Name"])
            removed["networks"].append(net["Name"])
        if volumes:
            for vol in self.engine.volumes(self._mine()):
                self.engine.remove_volume(vol["Name"])
                removed["volumes"].append(vol["Name"])
        self._images_checked.clear()
        return removed

    def cleanup(self, volumes: bool = False) -> dict[str, list[str]]:
        """Remove the lab's stopped containers and unused networks (and those agents' volumes if asked)."""
        removed: dict[str, list[str]] = {"containers": [], "networks": [], "volumes": []}
        gone: list[ContainerInfo] = []
        for info in self.containers():
            if info.state in ("exited", "created", "dead"):
                self.engine.remove(info.name, force=False)
                removed["containers"].append(info.name)
                gone.append(info)
        in_use = {net for c in self.containers() for net in c.networks}
        for net in self.engine.networks(self._mine()):
            if net["Name"] not in in_use:
                self.engine.remove_network(net["Name"])
                removed["networks"].append(net["Name"])
        if volumes:
            for info in gone:
                role = info.labels.get(n.ROLE)
                if role == n.AGENT_ROLE:
                    vol = n.workspace_volume(self.name, info.labels[n.AGENT])
                elif role == n.POSTGRES:
                    vol = n.postgres_volume(self.name)
                else:
                    continue
                self.engine.remove_volume(vol)
                removed["volumes"].append(vol)
        return removed

    # -- looking ---------------------------------------------------------------------------
    def containers(self) -> list[ContainerInfo]:
        return sorted(self.engine.containers(self._mine(kind="container")), key=lambda c: c.name)

    def status(self) -> pd.DataFrame:
        """One row per container; an agent's netguard sidecar is folded into its row's `egress` column."""
        rows = []
        containers = self.containers()
        guards = {c.labels.get(n.AGENT): c for c in containers if c.labels.get(n.ROLE) == netpolicy.NETGUARD_ROLE}
        for c in containers:
            if c.labels.get(n.ROLE) == netpolicy.NETGUARD_ROLE:
                continue
            egress = None
            if c.labels.get(n.ROLE) == n.AGENT_ROLE:
                egress = netpolicy.state_of(self.engine, c, guards.get(c.labels.get(n.AGENT))).text
            rows.append({
                "egress": egress,
                "name": c.name,
                "role": c.labels.get(n.ROLE),
                "state": c.state,
                "health": c.health,
                "image": c.image,
                "ports": ", ".join(f"{host}->{cport}" for cport, host in sorted(c.ports.items())),
                "created": pd.Timestamp(c.created) if c.created else pd.NaT,
                "agent": c.labels.get(n.AGENT),
                "group": c.labels.get(n.GROUP),
                "node": c.labels.get(n.NODE),  # the swarm node running it (None on one engine)
            })
        return pd.DataFrame(rows, columns=STATUS_COLUMNS)

    # -- agents --------------------------------------------------------------------------
    def create_agent(self, agent_id: str, group: str | None = None, *, memory: str | int | None = None,
                     cpus: float | None = None, pids: int | None = None, env: dict[str, str] | None = None,
                     mount_docker_socket: bool | None = None, progress: Progress | bool | None = True,
                     image: str | None = None, egress: str | None = None, egress_allow: Iterable[str] | None = None,
                     read_only: bool | None = None, runtime: str | None = None) -> "Agent":
        """Start an agent container with its own workspace volume (kept across down/up/cleanup).

        `image` (an image id or reference) replaces the lab's agent image, e.g. the one a recorded run used.
        The agent joins the network namespace of its netguard sidecar, which enforces its egress policy
        (`egress`, `egress_allow`: these keywords > the group's table > the lab's settings; SECURITY.md).
        `read_only` gives it a read-only root with tmpfs scratch; `runtime` an OCI runtime such as "runsc".
        """
        from .agents import Agent

        n.validate_agent_id(agent_id)
        if group is not None:
            n.validate_label(group, "group name")
        cfg = self.config
        name = n.container_name(self.name, n.AGENT_ROLE, agent_id)
        mem = memory if memory is not None else cfg.agent_memory
        cpu = cpus if cpus is not None else cfg.agent_cpus
        pid_limit = pids if pids is not None else cfg.agent_pids
        memory_bytes(mem)  # a bad size fails here, before anything is made
        if cpu is not None and cpu <= 0:
            raise LabError(f"cpus={cpu!r}: give a positive number of CPUs, for example 1 or 0.5")
        ro = cfg.read_only if read_only is None else read_only
        rt = hardening.check_runtime(self.engine, runtime if runtime is not None else cfg.runtime)
        if rt and "runc" not in rt and (egress or netpolicy.group_settings(cfg, group).get("egress")
                                         or cfg.egress) != "open":
            warnings.warn(f"runtime={rt!r}: a sandbox with its own network stack (gVisor's runsc) may send "
                          f"packets past the netguard's iptables rules; see SECURITY.md", stacklevel=2)
        if self.engine.container(name) is not None:
            raise self._exists(agent_id)
        self._ensure_images(["agent", "netguard"] if image is None else ["netguard"], progress)
        engine = self.engine
        undo = _Undo(engine, [], [], [])
        try:
            net = n.network_name(self.name, group)
            if undo.network(net, self._labels("network", group=group)):
                if group is not None:
                    self._attach_services(net)
            vol = n.workspace_volume(self.name, agent_id)
            undo.volume(vol, self._labels("volume", role="workspace", agent=agent_id))
            volumes = {vol: {"bind": WORKSPACE, "mode": "rw"}}
            socket = cfg.mount_docker_socket if mount_docker_socket is None else mount_docker_socket
            if socket:
                warnings.warn(
                    f"agent {agent_id} gets the Docker socket: it can control the whole engine "
                    f"(and so the host). Only do this for trusted work.", stacklevel=2)
                volumes["/var/run/docker.sock"] = {"bind": "/var/run/docker.sock", "mode": "rw"}
            policy = netpolicy.policy_for(self, group, net, egress, egress_allow)
            guard = netpolicy.sidecar_spec(self, agent_id, group, net, policy)
            spec = ContainerSpec(
                name=name, image=image or cfg.image("agent"),
                labels=self._labels("container", role=n.AGENT_ROLE, agent=agent_id, group=group,
                                    docker_socket="1" if socket else None, egress=policy.mode,
                                    netguard=guard.name),
                network=f"container:{guard.name}",  # no network, hostname or capability of its own
                user=cfg.agent_user, working_dir=WORKSPACE,
                environment={**self._service_env(), **cfg.agent_env, **(env or {}),
                             **(hardening.READ_ONLY_ENV if ro else {})},
                read_only=ro, tmpfs=dict(hardening.READ_ONLY_TMPFS) if ro else None, runtime=rt,
                volumes=volumes,
                mem_limit=str(mem) if mem is not None else None,
                nano_cpus=int(cpu * 1e9) if cpu else None,
                pids_limit=pid_limit,
                cap_drop=["ALL"],
                security_opt=["no-new-privileges:true"],
            )
            # The sidecar and the agent share one network namespace; its rules are checked before the
            # agent runs anything. Both noted before the call: an interrupted create is undone too.
            undo.containers += [guard.name, name]
            info = engine.create_pod(guard, spec, ready=lambda: netpolicy.wait_applied(engine, guard.name))
        except AlreadyExists as exc:  # Docker's names are unique: never a duplicate, whoever raced us
            undo.containers = [c for c in undo.containers if c != name]  # that name is the winner's, not ours
            undo.networks.clear()  # network and volume are shared by name with the winner: keep them
            undo.volumes.clear()
            undo.rollback()
            raise self._exists(agent_id) from exc
        except BaseException:
            undo.rollback()
            raise
        return Agent(self, info)

    def _exists(self, agent_id: str) -> AlreadyExists:
        return AlreadyExists(f"agent {agent_id!r} already exists in lab {self.name!r}; use lab.agent({agent_id!r}), "
                             f"or remove it first with lab.remove_agent({agent_id!r})")

    def egress(self, agent_id: str) -> netpolicy.EgressState:
        """What the agent's netguard last reported: mode, self-check, unresolved names (`.text`: one line)."""
        info = self.agent(agent_id).info
        return netpolicy.state_of(self.engine, info, netpolicy.guard_of(self.engine, info))

    def agent(self, agent_id: str) -> "Agent":
        from .agents import Agent

        info = self.engine.container(n.container_name(self.name, n.AGENT_ROLE, agent_id))
        if info is None or info.labels.get(n.LAB) != self.name or info.labels.get(n.ROLE) != n.AGENT_ROLE:
            raise self._not_found(agent_id)
        return Agent(self, info)

    def agents(self, group: str | None = None) -> list["Agent"]:
        from .agents import Agent

        infos = self.engine.containers(self._mine(role=n.AGENT_ROLE, **({"group": group} if group else {})))
        return [Agent(self, info) for info in sorted(infos, key=lambda c: c.name)]

    def remove_agent(self, agent_id: str, volumes: bool = False) -> None:
        """Remove an agent's container; its workspace volume too when `volumes=True`."""
        self.agent(agent_id)  # NotFound with the list of agents
        self.engine.remove(n.container_name(self.name, n.AGENT_ROLE, agent_id), force=True)
        self.engine.remove(netpolicy.sidecar_name(self.name, agent_id), force=True)  # after the agent: its netns
        if volumes:
            self.engine.remove_volume(n.workspace_volume(self.name, agent_id))

    # -- targets ---------------------------------------------------------------------------
    def container_name(self, target: str) -> str:
        """Map a target (agent id, 'dev'/'postgres'/'redis', or a full container name) to its name."""
        if not isinstance(target, str) or not target:
            raise LabError(f"target {target!r}: give an agent id or one of dev, postgres, redis")
        if target in n.SERVICE_ROLES:
            return n.container_name(self.name, target)
        if target.startswith(f"{self.name}_"):
            return target
        n.validate_label(target, "agent id or container name")
        return n.container_name(self.name, n.AGENT_ROLE, target)

    def _not_found(self, target: str) -> NotFound:
        agents = [a.id for a in self.agents()]
        others = [c.name for c in self.containers()
                  if c.labels.get(n.ROLE) not in (n.AGENT_ROLE, netpolicy.NETGUARD_ROLE)]
        return NotFound(
            f"no container {target!r} in lab {self.name!r}. "
            f"Agents: {', '.join(agents) or 'none (create one with lab.create_agent)'}; "
            f"services: {', '.join(others) or 'none (start them with lab.up)'}"
        )

    # -- running things ----------------------------------------------------------------------
    def exec_stream(self, target: str, command: str | Iterable[str], user: str | None = None,
                    workdir: str | None = None, env: dict[str, str] | None = None,
                    timeout: float | None = None, max_output: int = DEFAULT_MAX_OUTPUT) -> ExecStream:
        """Start a command and iterate over its output as it comes; `.result` once drained."""
        name = self.container_name(target)
        try:
            return ExecStream(self.engine, name, target, _command(command), user=user,
                              workdir=workdir, env=env, timeout=timeout, max_output=max_output)
        except NotFound:
            raise self._not_found(target) from None
        except LabError as exc:
            if "is not running" in str(exc):
                raise LabError(f"{target} is not running; start it with lab.start({target!r}) "
                               f"or `claude-lab start`") from None
            raise

    def exec(self, target: str, command: str | Iterable[str], user: str | None = None,
             workdir: str | None = None, env: dict[str, str] | None = None,
             timeout: float | None = None, max_output: int = DEFAULT_MAX_OUTPUT) -> ExecResult:
        """Run a command to its end; a string goes through `sh -c`. Raises `LabTimeout` past `timeout`."""
        return self.exec_stream(target, command, user, workdir, env, timeout, max_output).wait()

    def logs(self, target: str, tail: int | None = None, follow: bool = False) -> str | Iterator[str]:
        """A container's log as text, or (follow=True) an iterator of new lines."""
        name = self.container_name(target)
        try:
            out = self.engine.logs(name, tail=tail, follow=follow)
        except NotFound:
            raise self._not_found(target) from None
        if follow:
            return (chunk.decode("utf-8", "replace") for chunk in out)  # type: ignore[union-attr]
        return out.decode("utf-8", "replace")  # type: ignore[union-attr]

    def start(self, target: str) -> None:
        self._lifecycle(target, self.engine.start)

    def stop(self, target: str) -> None:
        self._lifecycle(target, lambda name: self.engine.stop(name, timeout=5), stop=True)

    def restart(self, target: str) -> None:
        self._lifecycle(target, lambda name: self.engine.restart(name, timeout=5))

    def _lifecycle(self, target: str, action: Callable[[str], None], stop: bool = False) -> None:
        name = self.container_name(target)
        info = self.engine.container(name)
        if info is None or info.labels.get(n.LAB) != self.name:
            raise self._not_found(target)
        if stop:  # an agent first, then the netguard whose network namespace it uses
            action(name)
            guard = netpolicy.guard_of(self.engine, info)
            if guard is not None and guard.running:
                self.engine.stop(guard.name, timeout=5)
            return
        netpolicy.before_start(self.engine, info)  # an agent's netguard runs, its rules applied
        action(name)
        netpolicy.after_start(self.engine, info)  # (a swarm re-attaches the netguard to the new task)

    def enter_argv(self, target: str = "dev", shell: str = "bash", user: str | None = None) -> list[str]:
        """The command line of an interactive shell in a container (used by `claude-lab enter`)."""
        name = self.container_name(target)
        info = self.engine.container(name)
        if info is None:
            raise self._not_found(target)
        if not info.running:
            raise LabError(f"{target} is not running; start it first (`claude-lab start`)")
        return self.engine.interactive_argv(name, [shell], user=user)

    # -- Claude Code runs (claude.py holds the runner; these only delegate) ------------------
    def claude(self, agent_id: str, prompt: str, max_turns: int | None = None,
               model: "str | ScriptedModel | None" = None, allowed_tools: str | Iterable[str] | None = None,
               permission_mode: str | None = None, timeout: float | None = None, resume: str | None = None,
               on_event: "Callable[[RunEvent], None] | None" = None, record: bool | None = None) -> "RunResult":
        """Run Claude Code on `prompt` in the agent's workspace; events go to `on_event` as they come.

        `model` is a model name ("sonnet", "claude-...") or a ScriptedModel to talk to. Ctrl-C or
        `timeout` stop the CLI inside the container and return a "cancelled"/"timeout" result.
        The run is recorded in the run store (`record=False`, or `record_runs = false`, does not).
        """
        return self.claude_stream(agent_id, prompt, max_turns=max_turns, model=model, allowed_tools=allowed_tools,
                                  permission_mode=permission_mode, timeout=timeout, resume=resume,
                                  on_event=on_event, record=record).wait()

    def claude_stream(self, agent_id: str, prompt: str, max_turns: int | None = None,
                      model: "str | ScriptedModel | None" = None, allowed_tools: str | Iterable[str] | None = None,
                      permission_mode: str | None = None, timeout: float | None = None, resume: str | None = None,
                      on_event: "Callable[[RunEvent], None] | None" = None, record: bool | None = None) -> "Run":
        """Start a Claude Code run; iterate it for typed events, `.result` at the end, `.cancel()` to stop."""
        from .claude import claude_stream

        return claude_stream(self, agent_id, prompt, max_turns=max_turns, model=model, allowed_tools=allowed_tools,
                             permission_mode=permission_mode, timeout=timeout, resume=resume, on_event=on_event,
                             record=record)

    def shell(self, agent_id: str, command: str | Iterable[str], timeout: float | None = None,
              on_event: "Callable[[RunEvent], None] | None" = None, record: bool | None = None) -> "RunResult":
        """Run a plain command in the agent's workspace as a recorded run (kind "shell": output, exit code, diff)."""
        from .claude import shell_stream

        return shell_stream(self, agent_id, command, timeout=timeout, on_event=on_event, record=record).wait()

    # -- resource stats (stats.py holds the readers and the sampler; these only delegate) -----
    def stats(self, interval: float = 0.2, source: str = "auto") -> pd.DataFrame:
        """One row per container of the lab: CPU %, memory, network, block I/O, pids, as docker stats means them.

        CPU % is measured over `interval` seconds. `source` is "auto" (cgroup files where the engine is
        local, else the stats API), "cgroup" or "api". Stopped containers are rows of zeros.
        """
        from .stats import snapshot

        return snapshot(self, interval=interval, source=source)

    def watch_stats(self, interval: float = 1.0, source: str = "auto",
                    max_rows: int | None = 1_000_000) -> "StatsSampler":
        """Sample the lab's containers every `interval` seconds in the background.

        `.frame()` is the long-format DataFrame so far, `.latest()` the last sample, `.stop()` ends it
        (or use it in a `with` block). Runs while it samples carry `RunResult.resources`.
        """
        from .stats import StatsSampler

        return StatsSampler(self.engine, self.name, interval=interval, source=source, max_rows=max_rows)

    def _run_resources(self, container: str, started_at: Any) -> dict[str, Any] | None:
        """A run's peak memory and CPU seconds from a sampler running for this lab, else None (never raises)."""
        from .stats import run_resources

        try:
            return run_resources(self.engine, self.name, container, started_at)
        except Exception:  # noqa: BLE001 - a summary must never fail the run it describes
            return None

    # -- notebook panel (claude_lab.widgets; imported here, lazily: the core never needs ipywidgets) ----
    def panel(self, refresh: float = 2.0, stats_interval: float = 2.0, window: float = 300.0) -> "LabPanel":
        """A live panel for a notebook: containers with actions, an agent runner, CPU/memory charts.

        Its parts refresh every `refresh` seconds on their own threads (the kernel stays free);
        `panel.close()`, its × button, or the kernel shutting down stops them.
        """
        try:
            from .widgets import LabPanel
        except ImportError as exc:
            raise LabError(f"lab.panel() needs the notebook extras ({exc}): "
                           f"pip install 'claude-lab[notebook]'") from None
        return LabPanel(self, refresh=refresh, stats_interval=stats_interval, window=window)

    # -- run store: every run recorded, every run replayable (store.py, proxy.py, replay.py) -------
    @property
    def run_store(self) -> "RunStore":
        """The project's run store (`run_store` setting, default .claude-lab/runs.sqlite), shared in this process."""
        from .store import RunStore

        path = Path(self.config.run_store).expanduser()
        return RunStore.at(path if path.is_absolute() else self.config.project_dir / path)

    def runs(self, agent: str | None = None, kind: str | None = None, status: str | None = None,
             lab: str | None = None) -> pd.DataFrame:
        """Every recorded run of the project, one row a run, oldest first (a run whose process died reads
        "interrupted"); filter by agent, kind (claude/shell/exec), status or lab name."""
        return self.run_store.frame(agent=agent, kind=kind, status=status, lab=lab)

    def run(self, run_id: str) -> "RunResult":
        """A recorded run as its `RunResult` (events, tool calls, diff...), from any process that recorded it."""
        return self.run_store.result(run_id)

    def export_run(self, run_id: str, path: str | os.PathLike) -> Path:
        """Write a run (record, cassette, transcript, workspace snapshot) to a portable tar file; returns its path."""
        return self.run_store.export_run(run_id, path)

    def import_run(self, path: str | os.PathLike) -> "RunResult":
        """Read a bundle written by `export_run` into this project's store (AlreadyExists if it is there)."""
        return self.run_store.result(self.run_store.import_run(path))

    def replay(self, run_id: str, *, keep: bool = False, timeout: float | None = None, prompt: str | None = None,
               setup: "Callable[[str], Any] | None" = None, image: str | None = None, ignore: Iterable[str] = (),
               on_event: "Callable[[RunEvent], None] | None" = None) -> "RunResult":
        """Run a recorded run again and say whether it reproduced: a fresh agent from the recorded image,
        the workspace restored at the start commit, the same command line, the model answered from the
        cassette (no upstream, no key). Raises `ReplayDivergence` when the CLI's requests leave the recording.

        `prompt` and `setup` (called with the replay agent's id once the workspace is restored) change
        the replay on purpose, to see where it departs; `ignore` adds regexes that request matching
        masks (volatile output of your own tools); `keep=True` leaves the replay agent running.
        """
        from .replay import replay

        return replay(self, run_id, keep=keep, timeout=timeout, prompt=prompt, setup=setup, image=image,
                      ignore=ignore, on_event=on_event)

    def record_exec(self, target: str, command: str | Iterable[str], user: str | None = None,
                    workdir: str | None = None, env: dict[str, str] | None = None, timeout: float | None = None,
                    on_event: "Callable[[RunEvent], None] | None" = None) -> "RunResult":
        """`exec` recorded as a run of kind "exec": any container (the dev container too), no workspace commits."""
        from .store import record_exec

        return record_exec(self, target, command, user=user, workdir=workdir, env=env, timeout=timeout,
                           on_event=on_event)
