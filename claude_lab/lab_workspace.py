"""The facade's workspace round trip: an agent's work as a diff, a branch, a merge or uncommitted changes in
the project; files in and out of containers; an agent's published ports. Part of `Lab` (a mixin: the
facade in two rooms), wiring `workspace/` to the lab's engine, names and settings."""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Callable


from . import naming as n
from .containers.services import WORKSPACE
from .engine.types import ContainerInfo
from .errors import LabError, NotFound
from .netguard import sidecar as guard
from .config import user_cache_path
from .workspace import agent_git, files, roundtrip
from .workspace import seed as seeding
from .workspace.hostgit import ProjectRepo
from .workspace.roundtrip import MergeResult, agent_branch
from .util.lazy import lazy

pd = lazy("pandas")  # loaded when a DataFrame is made (the CLI starts without it)

if TYPE_CHECKING:
    from .agents import Agent
    from .config import LabConfig
    from .engine.face import EngineFace

CHANGE_COLUMNS = ["path", "status", "added", "deleted"]


class WorkspaceRoom:
    """Lab methods for agents' work on the project (see the module docstring)."""

    name: str
    config: "LabConfig"

    if TYPE_CHECKING:  # provided by Lab
        @property
        def engine(self) -> "EngineFace": ...
        def agent(self, agent_id: str) -> "Agent": ...
        def container_name(self, target: str) -> str: ...
        def _target(self, target: str) -> ContainerInfo: ...

    # -- seeding -----------------------------------------------------------------------------------
    def _source(self, source: str | None, ref: str | None, include_uncommitted: bool) -> str | None:
        """What a new agent's workspace comes from: "auto" is the `agent_source` setting, else the project
        when it is a git repository, else nothing (an empty workspace)."""
        if source == "auto":
            source = self.config.agent_source or (
                seeding.PROJECT if ProjectRepo.find(self.config.project_dir) is not None else None)
        if source in (None, "none", ""):
            if ref is not None or include_uncommitted:
                raise LabError("ref= and include_uncommitted= go only with a source: source='project', a folder or "
                               "a git URL (this agent's workspace would start empty)")
            return None
        if not isinstance(source, str):
            raise LabError(f"source={source!r}: give 'project', a folder, a git URL, or None for an empty workspace")
        return source

    def _seed(self, agent_id: str, source: str | None, ref: str | None, include_uncommitted: bool,
              folder: Path) -> tuple[seeding.Seed | None, dict[str, str]]:
        """(the seed to install, the seed's labels) for a new agent. A workspace volume left by an agent of the
        same id (removed without volumes=True) is kept as it is, never seeded over: its labels come back."""
        source = self._source(source, ref, include_uncommitted)
        volume = n.workspace_volume(self.name, agent_id)
        if self.engine.volume_exists(volume):
            kept = next((v.labels for v in self.engine.volumes({n.LAB: self.name, n.AGENT: agent_id})
                         if v.name == volume), {})
            if source is not None:
                warnings.warn(f"agent {agent_id} keeps its workspace (volume {volume}, left by an agent of that id "
                              f"removed without volumes=True): it is not seeded again; remove it with "
                              f"lab.remove_agent({agent_id!r}, volumes=True) to start afresh", stacklevel=3)
            return None, {key: kept[label] for key, label in n.SEED_LABELS.items() if label in kept}
        if source is None:
            return None, {}
        seed = seeding.make(source, self.config.project_dir, ref, include_uncommitted, folder,
                            cache=self._seed_cache() if source == seeding.PROJECT else None)
        return seed, seed.labels()

    def _seed_cache(self) -> Path:
        """The user's cache (a commit's history is the same for every lab): nothing of it lands in the project."""
        return user_cache_path() / "seeds"

    def _install(self, seed: seeding.Seed, agent_id: str) -> Callable[[ContainerInfo], object]:
        def install(info: ContainerInfo) -> None:
            uid, gid = files.container_ids(self.engine, info.name, self.config.agent_user)
            seeding.install(self.engine, info.name, WORKSPACE, seed, agent_id, uid, gid)
        return install

    # -- the agent's work ----------------------------------------------------------------------
    def _seeded(self, agent_id: str) -> ContainerInfo:
        """The running agent, which must have been seeded from a repository (its labels say from what)."""
        info = self._target(agent_id)
        if not info.labels.get(n.BASE):
            raise LabError(f"agent {agent_id} was not seeded from a repository (its workspace started empty), so it "
                           f"has no base to compare with; create it with source='project' (the default in a git "
                           f"project), or copy files out with lab.copy_from({agent_id!r}, ...)")
        return info

    def diff(self, agent_id: str) -> str:
        """The agent's changes against the commit it was seeded from, committed and uncommitted together,
        as a unified git diff (binary files marked)."""
        info = self._seeded(agent_id)
        return agent_git.diff(self.engine, info.name, WORKSPACE, info.labels[n.BASE])

    def changes(self, agent_id: str) -> pd.DataFrame:
        """One row per changed file: path, status (A added, M modified, D deleted, T type changed), lines
        added and deleted (missing for binary files)."""
        info = self._seeded(agent_id)
        rows = agent_git.changes(self.engine, info.name, WORKSPACE, info.labels[n.BASE])
        frame = pd.DataFrame(rows, columns=CHANGE_COLUMNS)
        return frame.astype({"added": "Int64", "deleted": "Int64"})

    def _project_repo(self) -> ProjectRepo:
        return ProjectRepo.at(self.config.project_dir)

    def _outgoing(self, agent_id: str) -> tuple[ProjectRepo, ContainerInfo, bytes]:
        """The agent's work as a git bundle for the project (what it left uncommitted committed first)."""
        info = self._seeded(agent_id)
        if info.labels.get(n.SOURCE) != "project":
            raise LabError(f"agent {agent_id} was seeded from {info.labels.get(n.SOURCE)}, not from the project, so "
                           f"its work does not go back into it; copy it out with lab.copy_from({agent_id!r}, ...)")
        repo = self._project_repo()
        ref_commit = info.labels[n.REF_COMMIT]
        known = repo.run("cat-file", "-e", f"{ref_commit}^{{commit}}").returncode == 0
        bundle = agent_git.outgoing_bundle(self.engine, info.name, WORKSPACE, ref_commit if known else None,
                                           f"claude-lab: uncommitted work of agent {agent_id}")
        return repo, info, bundle

    def _fetch(self, agent_id: str) -> tuple[ProjectRepo, ContainerInfo, str]:
        repo, info, bundle = self._outgoing(agent_id)
        return repo, info, roundtrip.receive(repo, bundle, agent_id)

    def fetch(self, agent_id: str) -> str:
        """Commit what the agent left uncommitted, then bring its branch into the project's repository as
        `claude-lab/<agent-id>` (refs only: your working tree, index and current branch are untouched).
        Fetching again updates it. Returns the branch name."""
        self._fetch(agent_id)
        return agent_branch(agent_id)

    def merge(self, agent_id: str, message: str | None = None) -> MergeResult:
        """Fetch, then merge `claude-lab/<agent-id>` into the project's current branch. Raises `MergeConflict`
        (and changes nothing) when your uncommitted changes touch a file the merge would change, or when the
        merge conflicts; a detached HEAD is refused too."""
        repo, _, bundle = self._outgoing(agent_id)
        return self._merge_bundle(repo, agent_id, bundle, message)

    def _merge_bundle(self, repo: ProjectRepo, agent_id: str, bundle: bytes, message: str | None) -> MergeResult:
        """An agent's work (its outgoing bundle) into the project: its branch fetched, then merged."""
        return roundtrip.merge(repo, agent_id, roundtrip.receive(repo, bundle, agent_id), message)

    def apply(self, agent_id: str) -> list[str]:
        """Fetch, then the agent's changes (since its base) into the project's working tree as uncommitted
        changes; index, HEAD and branch stay. Same refusals as `merge`. Returns the files changed."""
        repo, info, commit = self._fetch(agent_id)
        return roundtrip.apply(repo, agent_id, commit, info.labels[n.BASE])

    # -- files and ports ---------------------------------------------------------------------------
    def copy_to(self, target: str, src: str | os.PathLike, dest: str) -> str:
        """Copy a host file or folder into a lab container (an agent id, dev, postgres, redis); entries belong to
        the container's user. Returns the path it landed at."""
        info = self._target(target)
        user = self.config.agent_user if info.labels.get(n.ROLE) == n.AGENT_ROLE else None
        uid, gid = files.container_ids(self.engine, info.name, user)
        return files.copy_to(self.engine, info.name, Path(src).expanduser(), dest, uid, gid)

    def copy_from(self, target: str, src: str, dest: str | os.PathLike) -> Path:
        """Copy a file or folder out of a lab container to the host; an archive entry that would land outside
        `dest` (an absolute path, `..`, a link out) refuses the copy and writes nothing. Returns the host path."""
        try:
            return files.copy_from(self.engine, self.container_name(target), src, Path(dest).expanduser())
        except NotFound as exc:
            if self.engine.container(self.container_name(target)) is None:
                raise NotFound(f"no container {target!r} in lab {self.name!r}") from None
            raise exc

    def url(self, agent_id: str, port: int) -> str:
        """Where the host reaches a port the agent published (`create_agent(..., ports=[8000])`)."""
        info = self.agent(agent_id).info
        sidecar = self.engine.container(guard.sidecar_name(self.name, agent_id))
        published = (sidecar.ports if sidecar is not None else {}).get(f"{int(port)}/tcp")
        if not published:
            have = ", ".join(sorted(p.split("/")[0] for p in (sidecar.ports if sidecar else {}))) or "none"
            raise NotFound(f"agent {agent_id} does not publish port {port} (it publishes: {have}); create it with "
                           f"ports=[{port}]")
        host, _, host_port = published.rpartition(":")
        host = self.config.bind_address if host in ("", "0.0.0.0") else host
        if info.state != "running":
            raise LabError(f"agent {agent_id} is {info.state}: start it, then its port {port} answers")
        return f"http://{host}:{host_port}"
