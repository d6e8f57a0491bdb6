"""Seeding an agent's workspace from a git repository: the project (at a ref, with its uncommitted changes
if asked), another folder, or a URL cloned on the host. The agent needs no network: the host writes a git
bundle, streams it into the container as a tar, and the agent clones from it onto `claude-lab/<agent>`."""
from __future__ import annotations

import os
import subprocess
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ConfigError, LabError
from . import agent_git
from .files import owned_by, tar_stream
from .hostgit import ProjectRepo
from .roundtrip import agent_branch

if TYPE_CHECKING:
    from ..engine.face import EngineFace

UNCOMMITTED_MESSAGE = "claude-lab: uncommitted changes of the project"
SEED_BRANCH = "claude-lab-seed"
PROJECT = "project"


@dataclass(frozen=True)
class Seed:
    """A bundle on the host, ready to go into an agent: `base` is the commit the agent starts from (on top of
    `ref_commit`, the repository's own commit, when uncommitted changes came along)."""

    source: str  # "project", a folder, or a URL
    bundle: Path
    base: str
    ref_commit: str
    ref: str
    uncommitted: bool

    def labels(self) -> dict[str, str]:
        """What the workspace volume keeps of its seed (its labels are fixed: seeding happens once)."""
        return {"source": self.source, "base": self.base, "ref_commit": self.ref_commit, "ref": self.ref}


def is_url(source: str) -> bool:
    return "://" in source or (source.startswith("git@") and ":" in source)


def make(source: str, project_dir: Path, ref: str | None, include_uncommitted: bool, folder: Path) -> Seed:
    """Write the seed bundle for `source` into `folder` (a temporary folder of the caller's)."""
    if is_url(source):
        repo = _clone(source, folder)
    else:
        where = project_dir if source == PROJECT else Path(source).expanduser()
        repo = ProjectRepo.at(where, "the project" if source == PROJECT else "source")
    ref_commit = repo.commit(ref or "HEAD")
    with repo.scratch() as scratch:
        base = scratch.uncommitted_commit(ref_commit, UNCOMMITTED_MESSAGE) if include_uncommitted else ref_commit
        bundle = scratch.bundle(base, SEED_BRANCH, folder / "seed.bundle")
    return Seed(source, bundle, base, ref_commit, ref or "HEAD", base != ref_commit)


def _clone(url: str, folder: Path) -> ProjectRepo:
    """A URL is cloned on the host, with the host's network and credentials, never from inside the agent."""
    target = folder / "clone"
    proc = subprocess.run(["git", "clone", "-q", "--no-checkout", url, str(target)], capture_output=True, text=True,
                          env={**os.environ, "GIT_TERMINAL_PROMPT": "0"})
    if proc.returncode != 0:
        raise ConfigError(f"could not clone {url} on this machine: {proc.stderr.strip()[-600:]}")
    return ProjectRepo(target)


def install(engine: "EngineFace", container: str, workspace: str, seed: Seed, agent_id: str,
            uid: int, gid: int) -> str:
    """Put the bundle into the agent and clone it into its (empty) workspace; returns the workspace's HEAD."""
    name = f".claude-lab-seed-{uuid.uuid4().hex[:8]}.bundle"
    owner = owned_by(uid, gid)
    engine.put_archive(container, "/tmp", tar_stream(lambda tar: tar.add(str(seed.bundle), arcname=name, filter=owner)))
    head = agent_git.seed(engine, container, workspace, f"/tmp/{name}", SEED_BRANCH, agent_branch(agent_id))
    if head != seed.base:
        raise LabError(f"the seeded workspace of {agent_id} is at {head[:12]}, not at its base {seed.base[:12]}")
    return head


def temporary_folder() -> tempfile.TemporaryDirectory[str]:
    return tempfile.TemporaryDirectory(prefix="claude-lab-seed-")
