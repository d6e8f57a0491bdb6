"""Lab methods of the warm pool (containers/pool.py): `fill_pool`, `pool`, `drain_pool`, the background top-up,
and the claim `create_agent` tries first.

Setting `agent_pool` (2, or per group {"" = 2, team-a = 1}). While a lab is up in a process (a kernel, the async
service, `claude-lab pool fill --watch`), a daemon thread of that process keeps the pool topped up: after each
claim, and every `POOL_CHECK` seconds (the project's HEAD may have moved: pods of another base are replaced).
"""
from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import naming as n
from .containers import pool
from .containers.services import WORKSPACE
from .errors import ConfigError, LabError
from .util.lazy import lazy
from .workspace import agent_git
from .workspace import seed as seeding
from .workspace.hostgit import ProjectRepo
from .workspace.roundtrip import agent_branch

if TYPE_CHECKING:
    from .config import LabConfig
    from .containers.pods import AgentRequest
    from .engine import ContainerInfo, EngineFace
    from .images import Progress
    from .workspace.seed import Seed

pd = lazy("pandas")  # loaded when a DataFrame is made (the CLI starts without it)

POOL_CHECK = 30.0
POOL_COLUMNS = ["name", "group", "state", "base", "created"]


class PoolRoom:
    """Lab methods for the warm pool (see the module docstring)."""

    name: str
    config: "LabConfig"

    if TYPE_CHECKING:  # provided by Lab
        @property
        def engine(self) -> "EngineFace": ...
        def _ensure_images(self, names: list[str], progress: "Progress | bool | None") -> None: ...
        def _source(self, source: str | None, ref: str | None, include_uncommitted: bool) -> str | None: ...
        def _seed_cache(self) -> Any: ...
        def _install(self, seed: "Seed", agent_id: str) -> Any: ...

    # -- what the pool serves ------------------------------------------------------------------------
    def _pool_seed(self) -> dict[str, str] | None:
        """The seed labels of the lab's default workspace ({} empty), or None when the pool cannot serve it
        (a folder or URL source: only the project or an empty workspace are pooled)."""
        source = self._source("auto", None, False)
        if source is None:
            return {}
        if source != seeding.PROJECT:
            return None
        commit = ProjectRepo.at(self.config.project_dir).commit("HEAD")
        return {"source": seeding.PROJECT, "base": commit, "ref_commit": commit, "ref": "HEAD"}

    def _pool_key(self, group: str | None) -> pool.PoolKey | None:
        seed = self._pool_seed()
        image_id = self.engine.image_id(self.config.image("agent"))
        if seed is None or image_id is None:
            return None
        return pool.PoolKey.of(group, seed, image_id)

    def _pool_check(self) -> None:
        if self.engine.backend != "local":
            raise ConfigError("the warm pool (agent_pool) works on the local backend: a swarm service cannot be "
                              "renamed into an agent; on a swarm, agents start cold")
        if not self.config.pool_sizes():
            raise ConfigError("agent_pool is 0: set how many ready agents to keep, e.g. Lab(agent_pool=2), "
                              "`agent_pool = 2` in claude-lab.toml, or per group {\"\" = 2, team-a = 1}")

    # -- filling -------------------------------------------------------------------------------------
    def fill_pool(self, progress: "Progress | bool | None" = False) -> "pd.DataFrame":
        """Top the pool up to `agent_pool` now (pods of an old base commit or image are replaced) and return
        `pool()`. Every pod is made as a cold agent is, firewall self-check included."""
        self._pool_check()
        self._ensure_images(["agent", "netguard"], progress)
        with seeding.temporary_folder() as folder:
            made: dict[str, Seed] = {}
            lock = threading.Lock()

            def make_one(group: str | None) -> None:
                seed_labels = self._pool_seed() or {}
                install = None
                if seed_labels:
                    with lock:  # one seed for every pod of this fill (the user's cache keeps it for the next)
                        if "seed" not in made:
                            made["seed"] = seeding.make(seeding.PROJECT, self.config.project_dir, None, False,
                                                        Path(folder), cache=self._seed_cache())
                    seed = made["seed"]
                    install = lambda info, born: self._install(seed, born)(info)  # noqa: E731
                pool.make(self.engine, self.config, self.name, group, seed_labels, install)

            pool.fill(self.engine, self.config, self.name, self._pool_key, make_one)
        return self.pool()

    def pool(self) -> "pd.DataFrame":
        """One row per pooled pod: its name, group, state (filling, ready, draining, or the container's), the
        commit its workspace is seeded at, and when it was made."""
        rows = []
        for pod in pool.pods(self.engine, self.name):
            state = ("ready" if pool.is_ready(pod) else "draining" if pod.name.endswith(pool.DRAIN)
                     else pod.state if not pod.running else "filling")
            rows.append({"name": pod.name, "group": pod.labels.get(n.GROUP), "state": state,
                         "base": (pod.labels.get(n.BASE) or "")[:12] or None,
                         "created": pd.Timestamp(pod.created) if pod.created else pd.NaT})
        return pd.DataFrame(rows, columns=POOL_COLUMNS)

    def drain_pool(self) -> list[str]:
        """Remove every unclaimed pod (containers and volume: nothing of the user's is in them)."""
        self.stop_pool()
        return pool.drain(self.engine, self.name, self.config.image("netguard"))

    # -- the background top-up -----------------------------------------------------------------------
    def start_pool(self) -> None:
        """Keep the pool topped up from this process (a daemon thread) until `stop_pool`, `down` or `destroy`."""
        self._pool_check()
        state = self.__dict__.setdefault("_pool_state", {"lock": threading.Lock()})
        with state["lock"]:
            thread = state.get("thread")
            if thread is not None and thread.is_alive():
                state["wake"].set()
                return
            state.update(stop=threading.Event(), wake=threading.Event(), error=None)
            state["wake"].set()
            state["thread"] = threading.Thread(target=self._pool_loop, args=(state,), daemon=True,
                                               name=f"claude-lab-pool-{self.name}")
            state["thread"].start()

    def stop_pool(self, timeout: float = 120.0) -> None:
        """Stop the background top-up, waiting for a fill under way to finish (so nothing is made after)."""
        state = self.__dict__.get("_pool_state")
        if not state or state.get("thread") is None:
            return
        state["stop"].set()
        state["wake"].set()
        state["thread"].join(timeout)

    @property
    def pool_error(self) -> LabError | None:
        """The last error of the background top-up (None: none, or it did not run)."""
        return (self.__dict__.get("_pool_state") or {}).get("error")

    def _pool_loop(self, state: dict[str, Any]) -> None:
        while not state["stop"].is_set():
            state["wake"].wait(POOL_CHECK)
            state["wake"].clear()
            if state["stop"].is_set():
                return
            try:
                self.fill_pool()
                state["error"] = None
            except LabError as exc:
                state["error"] = exc
            except Exception as exc:  # noqa: BLE001 - a daemon thread must not die silently
                state["error"] = LabError(f"the warm pool could not be topped up: {exc!r}")

    def _pool_wake(self) -> None:
        state = self.__dict__.get("_pool_state")
        if state and state.get("thread") is not None and state["thread"].is_alive():
            state["wake"].set()

    # -- claiming ------------------------------------------------------------------------------------
    def _claim(self, req: "AgentRequest", source: str | None, ref: str | None,
               include_uncommitted: bool) -> "ContainerInfo | None":
        """A pooled pod as agent `req.agent_id`, when the request is one the pool serves; else None (cold)."""
        engine = self.engine
        if source != "auto" or ref is not None or include_uncommitted or not pool.servable(engine, self.config, req):
            return None
        if engine.volume_exists(n.workspace_volume(self.name, req.agent_id)):
            return None  # a kept workspace of that id: the cold path mounts it
        key = self._pool_key(req.group)
        if key is None:
            return None

        def rename_branch(container: str, born: str, agent_id: str) -> None:
            agent_git.rename_branch(engine, container, WORKSPACE, agent_branch(born), agent_branch(agent_id))

        info = pool.claim(engine, self.name, key, req.agent_id, self.config.image("netguard"), rename_branch)
        self._pool_wake()
        return info
