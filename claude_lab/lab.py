"""`Lab`: one project's dev environment and agent containers on a Docker engine -- the facade.

It wires the features together and holds no mechanism of its own: the engine (`engine/`), the service
and agent specs (`containers/`), the firewall (`netguard/`), images (`images/`), the model endpoint
(`model/`), runs and the run store (`runs/`), stats (`stats/`). Everything the lab knows lives in
labels on the engine's containers, networks and volumes, so any process (a notebook kernel, the CLI,
a service) finds the same lab again.
"""
from __future__ import annotations

import dataclasses
import html
import os
import threading
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator


from . import naming as n
from .agents import Agent
from .config import LabConfig
from .containers import pool
from .containers.pods import AgentRequest, create_pod
from .containers.status import status_frame
from .containers.execution import DEFAULT_MAX_OUTPUT, ExecResult, ExecStream, command_argv
from .containers.services import (SERVICE_IMAGES, check_ports, published_ports, settle_ports, start_services,
                                  wait_healthy)
from .engine import ContainerInfo, EngineFace, connect
from .errors import AlreadyExists, LabError, NotFound, NotRunning
from .images import BuildOutcome, ImageBuilder, Progress, reporter
from .lab_experiments import ExperimentsRoom
from .lab_pool import PoolRoom
from .lab_runs import RunsRoom
from .lab_secrets import SecretsRoom
from .lab_workspace import WorkspaceRoom
from .model.scripted import ScriptedModel
from .netguard import sidecar as guard
from .stats import StatsSampler, run_resources, snapshot
from .util import views
from .util.parallel import parallel
from .util.undo import Undo
from .workspace import seed as seeding
from .util.lazy import lazy

pd = lazy("pandas")  # loaded when a DataFrame is made (the CLI starts without it)

PORT_HINT = "Lab({key}=...), `{key} = ...` in claude-lab.toml, or CLAUDE_LAB_{KEY}"
_ENGINE_LOCK = threading.Lock()


class Lab(RunsRoom, WorkspaceRoom, SecretsRoom, ExperimentsRoom, PoolRoom):
    """A project's lab: PostgreSQL, Redis, a dev container and any number of agents.

    >>> lab = Lab()                      # the project in the working directory
    >>> lab.up()                         # build if needed, start services, wait until healthy
    >>> lab.create_agent("agent-001")
    >>> lab.exec("agent-001", "id").stdout
    """

    def __init__(self, project_dir: str | os.PathLike = ".", name: str | None = None, *,
                 engine: EngineFace | None = None, model: "ScriptedModel | None" = None, **overrides: Any):
        self.config = LabConfig.load(project_dir, name, **overrides)
        self.name: str = self.config.name  # type: ignore[assignment]
        self._engine = engine
        self._images_checked: set[str] = set()
        self.model = model  # a ScriptedModel for lab.claude runs (an object, so not a config setting)
        self._book  # the `secrets` setting is checked now, not at the first command
        if 0 in (self.config.postgres_port, self.config.redis_port):
            try:
                engine: EngineFace | None = self.engine
            except LabError:  # no engine yet: free ports now; `up` says what is wrong with the engine
                engine = None
            settle_ports(engine, self.config, self.name)  # 0: the running lab's ports, else free ones

    @property
    def engine(self) -> EngineFace:
        if self._engine is None:
            with _ENGINE_LOCK:  # threads (the async service, panels) share one connection
                if self._engine is None:
                    c = self.config
                    self._engine = connect(c.backend, manager_url=c.swarm_manager, registry=c.registry,
                                           model_host=c.model_host, node_engines=c.node_engines,
                                           constraints=c.swarm_constraints)
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

    def _mine(self, **extra: str | None) -> dict[str, str | None]:
        return {n.LAB: self.name, **{f"{n.PREFIX}.{key}": value for key, value in extra.items()}}

    # -- images --------------------------------------------------------------------------
    def build(self, images: Iterable[str] | None = None, force: bool = False,
              progress: Progress | bool | None = True) -> list[BuildOutcome]:
        """Build the lab's images (parents first), skipping those whose content hash matches.

        `progress`: True prints a line per step, a callable gets each `BuildEvent`, False is quiet."""
        outcomes = ImageBuilder(self.engine, self.config).build(images, force=force, progress=reporter(progress))
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
        check_ports(self.config, published_ports(list(existing.values())), PORT_HINT)
        if build:
            self._ensure_images(SERVICE_IMAGES, progress)
        if engine.backend != "local":  # every node the lab may use gets the agents' images now, all at once
            self._ensure_images(["agent", "netguard"], progress)
            engine.preload([self.config.image("agent"), self.config.image("netguard")])
        with Undo() as undo:
            start_services(engine, self.config, self.name, existing, undo)
            if wait:
                self.wait_healthy()
        if self.config.pool_sizes() and engine.backend == "local":
            self.start_pool()  # the warm pool, topped up from this process while it holds the lab
        return self.status()

    def wait_healthy(self, timeout: float | None = None) -> None:
        """Poll until every service with a healthcheck is healthy; a crashed one fails at once."""
        wait_healthy(self.engine, self.name, timeout if timeout is not None else self.config.health_timeout,
                     logs=lambda name: self.logs(name, tail=20))  # type: ignore[arg-type, return-value]

    def down(self) -> pd.DataFrame:
        """Stop every container of the lab (agents too); volumes and networks stay. The warm pool is removed."""
        self.drain_pool()
        parallel(lambda name: self.engine.stop(name, timeout=5), [c.name for c in self.containers() if c.running])
        return self.status()

    def destroy(self, volumes: bool = False) -> dict[str, list[str]]:
        """Remove every container and network of the lab, and its volumes when asked."""
        self.stop_pool()  # nothing made after this; the pool's volumes go with its pods, `volumes` or not
        containers = self.containers()
        pooled = [n.workspace_volume(self.name, c.labels[n.POOL]) for c in containers
                  if c.labels.get(n.ROLE) == n.POOL_ROLE]
        removed: dict[str, list[str]] = {
            "containers": [c.name for c in containers],
            "networks": [net.name for net in self.engine.networks(self._mine())],
            "volumes": [vol.name for vol in self.engine.volumes(self._mine())] if volumes
            else [v for v in pooled if self.engine.volume_exists(v)]}
        self.engine.teardown(removed["containers"], removed["networks"], removed["volumes"])  # as long as the slowest
        self._images_checked.clear()
        return removed

    def cleanup(self, volumes: bool = False) -> dict[str, list[str]]:
        """Remove the lab's stopped containers and unused networks (and those agents' volumes if asked)."""
        removed: dict[str, list[str]] = {"containers": [], "networks": [], "volumes": []}
        gone: list[ContainerInfo] = []
        for info in self.containers():
            if info.state in ("exited", "created", "dead") and info.labels.get(n.ROLE) != pool.LOCK_ROLE:
                self.engine.remove(info.name, force=False)
                removed["containers"].append(info.name)
                gone.append(info)
        in_use = {net for c in self.containers() for net in c.networks}
        for net in self.engine.networks(self._mine()):
            if net.name not in in_use:
                self.engine.remove_network(net.name)
                removed["networks"].append(net.name)
        for info in gone if volumes else ():
            role = info.labels.get(n.ROLE)
            vol = (n.agent_volume(self.name, info.labels[n.AGENT], info.labels) if role == n.AGENT_ROLE
                   else n.postgres_volume(self.name) if role == n.POSTGRES else None)
            if vol is not None:
                self.engine.remove_volume(vol)
                removed["volumes"].append(vol)
        return removed

    # -- looking ---------------------------------------------------------------------------
    def containers(self) -> list[ContainerInfo]:
        return sorted(self.engine.containers(self._mine(kind="container")), key=lambda c: c.name)

    def status(self) -> pd.DataFrame:
        """One row per container; an agent's netguard sidecar is folded into its row's `egress` column."""
        return status_frame(self.engine, self.containers(), self._secret_names)

    # -- agents --------------------------------------------------------------------------
    def create_agent(self, agent_id: str, group: str | None = None, *, memory: str | int | None = None,
                     cpus: float | None = None, pids: int | None = None, env: dict[str, str] | None = None,
                     mount_docker_socket: bool | None = None, progress: Progress | bool | None = True,
                     image: str | None = None, egress: str | None = None, egress_allow: Iterable[str] | None = None,
                     read_only: bool | None = None, runtime: str | None = None, source: str | None = "auto",
                     ref: str | None = None, include_uncommitted: bool = False, ports: Iterable[int] = ()) -> Agent:
        """Start an agent container with its own workspace volume (kept across down/up/cleanup).

        `source`: what the workspace starts as -- "project" (a git clone of the project at `ref`, default HEAD,
        on the branch claude-lab/<agent-id>; `include_uncommitted=True` adds your uncommitted changes as one
        commit), a folder or git URL (cloned on this machine), or None (empty). "auto": the `agent_source`
        setting, else "project" in a git project. `ports` are published on `bind_address` (`lab.url`).

        `image` (an image id or reference) replaces the lab's agent image, e.g. the one a recorded run used.
        The agent joins the network namespace of its netguard sidecar, which enforces its egress policy
        (`egress`, `egress_allow`: these keywords > the group's table > the lab's settings; SECURITY.md).
        `read_only` gives it a read-only root with tmpfs scratch; `runtime` an OCI runtime such as "runsc".
        """
        n.validate_agent_id(agent_id)
        if group is not None:
            n.validate_label(group, "group name")
        engine = self.engine
        req = AgentRequest.of(engine, self.config, agent_id, group, memory=memory, cpus=cpus, pids=pids, image=image,
                              env=env, socket=mount_docker_socket, read_only=read_only, runtime=runtime,
                              egress=egress, egress_allow=egress_allow, ports=ports)
        if engine.container(n.container_name(self.name, n.AGENT_ROLE, agent_id)) is not None:
            raise self._exists(agent_id)
        try:
            claimed = self._claim(req, source, ref, include_uncommitted)  # a warm one, when the pool serves this
        except AlreadyExists as exc:
            raise self._exists(agent_id) from exc
        if claimed is not None:
            return Agent(self, claimed)
        with seeding.temporary_folder() as folder:
            seed, labels = self._seed(agent_id, source, ref, include_uncommitted, Path(folder))
            self._ensure_images(["agent", "netguard"] if image is None else ["netguard"], progress)
            try:
                info = create_pod(engine, self.config, self.name, req, None,  # the model: through the lab's proxy
                                  workspace_labels=labels, then=self._install(seed, agent_id) if seed else None)
            except AlreadyExists as exc:
                raise self._exists(agent_id) from exc
        return Agent(self, info)

    def _exists(self, agent_id: str) -> AlreadyExists:
        return AlreadyExists(f"agent {agent_id!r} already exists in lab {self.name!r}; use lab.agent({agent_id!r}), "
                             f"or remove it first with lab.remove_agent({agent_id!r})")

    def egress(self, agent_id: str) -> guard.EgressState:
        """What the agent's netguard last reported: mode, self-check, unresolved names (`.text`: one line)."""
        info = self.agent(agent_id).info
        state = guard.state_of(self.engine, info, guard.guard_of(self.engine, info))
        return dataclasses.replace(state, secrets=tuple(self._secret_names(agent_id, info.labels.get(n.GROUP))))

    def agent(self, agent_id: str) -> Agent:
        info = self.engine.container(n.container_name(self.name, n.AGENT_ROLE, agent_id))
        if info is None or info.labels.get(n.LAB) != self.name or info.labels.get(n.ROLE) != n.AGENT_ROLE:
            raise self._not_found(agent_id)
        return Agent(self, info)

    def agents(self, group: str | None = None) -> list[Agent]:
        infos = self.engine.containers(self._mine(role=n.AGENT_ROLE, **({"group": group} if group else {})))
        return [Agent(self, info) for info in sorted(infos, key=lambda c: c.name)
                if info.labels.get(n.ROLE) == n.AGENT_ROLE]  # not the warm pool's (role pool until claimed)

    def remove_agent(self, agent_id: str, volumes: bool = False) -> None:
        """Remove an agent's container; its workspace volume too when `volumes=True`."""
        info = self.agent(agent_id).info  # NotFound with the list of agents
        self.engine.remove(n.container_name(self.name, n.AGENT_ROLE, agent_id), force=True)
        self.engine.remove(guard.sidecar_name(self.name, agent_id), force=True)  # after the agent: its netns
        if volumes:
            self.engine.remove_volume(n.agent_volume(self.name, agent_id, info.labels))

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
                  if c.labels.get(n.ROLE) not in (n.AGENT_ROLE, guard.NETGUARD_ROLE)]
        return NotFound(
            f"no container {target!r} in lab {self.name!r}. "
            f"Agents: {', '.join(agents) or 'none (create one with lab.create_agent)'}; "
            f"services: {', '.join(others) or 'none (start them with lab.up)'}"
        )

    def _not_running(self, target: str, state: str) -> NotRunning:
        return NotRunning(f"{target} is not running ({state}); start it with lab.start({target!r}) or "
                          f"`claude-lab start`", state)

    def _target(self, target: str) -> ContainerInfo:
        """The container of a target, running (NotFound naming what exists; LabError when it is not running)."""
        info = self.engine.container(self.container_name(target))
        if info is None or info.labels.get(n.LAB) != self.name:
            raise self._not_found(target)
        if not info.running:
            raise self._not_running(target, info.state)
        return info

    # -- running things ----------------------------------------------------------------------
    def exec_stream(self, target: str, command: str | Iterable[str], user: str | None = None,
                    workdir: str | None = None, env: dict[str, str] | None = None,
                    timeout: float | None = None, max_output: int = DEFAULT_MAX_OUTPUT) -> ExecStream:
        """Start a command and iterate over its output as it comes; `.result` once drained."""
        name, argv = self.container_name(target), command_argv(command)
        if len(self._book) and target not in n.SERVICE_ROLES:  # an agent's secrets, under what the caller gives
            info = self.engine.container(name)
            env = {**(self._secret_env(info) if info is not None else {}), **(env or {})}
        try:
            return ExecStream(self.engine, name, target, argv, user=user, workdir=workdir, env=env,
                              timeout=timeout, max_output=max_output)
        except LabError as exc:  # why it failed, from the engine's state rather than the error's text
            info = self.engine.container(name)
            if info is None:
                raise self._not_found(target) from None
            if not info.running:
                raise self._not_running(target, info.state) from None
            raise exc

    def exec(self, target: str, command: str | Iterable[str], user: str | None = None,
             workdir: str | None = None, env: dict[str, str] | None = None,
             timeout: float | None = None, max_output: int = DEFAULT_MAX_OUTPUT) -> ExecResult:
        """Run a command to its end; a string goes through `sh -c`. Raises `LabTimeout` past `timeout`."""
        return self.exec_stream(target, command, user, workdir, env, timeout, max_output).wait()

    def logs(self, target: str, tail: int | None = None, follow: bool = False) -> str | Iterator[str]:
        """A container's log as text, or (follow=True) an iterator of new lines."""
        try:
            out = self.engine.logs(self.container_name(target), tail=tail, follow=follow)
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
            sidecar = guard.guard_of(self.engine, info)
            if sidecar is not None and sidecar.running:
                self.engine.stop(sidecar.name, timeout=5)
            return
        guard.before_start(self.engine, info)  # an agent's netguard runs, its rules applied
        action(name)
        guard.after_start(self.engine, info)  # (a swarm re-attaches the netguard to the new task)

    def enter_argv(self, target: str = "dev", shell: str = "bash", user: str | None = None) -> list[str]:
        """The command line of an interactive shell in a container (used by `claude-lab enter`). An agent's
        secrets are passed by name (`-e NAME`): run it with `enter_env(target)` added to the environment."""
        info = self._target(target)
        argv = self.engine.interactive_argv(self.container_name(target), [shell], user=user)
        names = list(self._secret_env(info))
        if names:  # by name only: the values never show on a command line (ps)
            at = argv.index("-it") + 1
            argv[at:at] = [part for name in names for part in ("-e", name)]
        return argv

    def enter_env(self, target: str = "dev") -> dict[str, str]:
        """The secrets an interactive shell in `target` gets (see `enter_argv`)."""
        return self._secret_env(self._target(target))

    # -- resource stats (stats/ holds the readers and the sampler; these only delegate) -----
    def stats(self, interval: float = 0.2, source: str = "auto") -> pd.DataFrame:
        """One row per container of the lab: CPU %, memory, network, block I/O, pids, as docker stats means them.

        CPU % is measured over `interval` seconds. `source` is "auto" (cgroup files where the engine is
        local, else the stats API), "cgroup" or "api". Stopped containers are rows of zeros.
        """
        return snapshot(self.engine, self.name, interval=interval, source=source)

    def watch_stats(self, interval: float = 1.0, source: str = "auto",
                    max_rows: int | None = 1_000_000) -> StatsSampler:
        """Sample the lab's containers every `interval` seconds in the background.

        `.frame()` is the long-format DataFrame so far, `.latest()` the last sample, `.stop()` ends it
        (or use it in a `with` block). Runs while it samples carry `RunResult.resources`.
        """
        return StatsSampler(self.engine, self.name, interval=interval, source=source, max_rows=max_rows)

    def _run_resources(self, container: str, started_at: datetime) -> dict[str, Any] | None:
        return run_resources(self.engine, self.name, container, started_at)

    def panel(self, refresh: float = 2.0, stats_interval: float = 2.0, window: float = 300.0) -> Any:
        """A live panel for a notebook: containers with actions, an agent runner, CPU/memory charts.

        Its parts refresh every `refresh` seconds on their own threads (the kernel stays free);
        `panel.close()`, its × button, or the kernel shutting down stops them.
        """
        factory = views.view("panel")
        try:
            if factory is None:
                raise ImportError("no notebook front registered")
            return factory(self, refresh=refresh, stats_interval=stats_interval, window=window)
        except ImportError as exc:
            raise LabError(f"lab.panel() needs the notebook extras ({exc}): "
                           f"pip install 'claude-lab[notebook]'") from None
