"""Seeding an agent's workspace from a git repository: the project (at a ref, with its uncommitted changes
if asked), another folder, or a URL cloned on the host. The agent needs no network: the host writes a git
bundle into a bare repository (kept per commit for the next agent) and streams it into the container as
the workspace's `.git`, where it is checked out."""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
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
KEEP_SEEDS = 3  # commits' seeds kept in the user's cache for the next agent started from one
PROJECT = "project"


@dataclass(frozen=True)
class Seed:
    """A bundle on the host, ready to go into an agent: `base` is the commit the agent starts from (on top of
    `ref_commit`, the repository's own commit, when uncommitted changes came along)."""

    source: str  # "project", a folder, or a URL
    repo: Path  # a bare repository with the base's history, its branch SEED_BRANCH
    base: str
    ref_commit: str
    ref: str
    uncommitted: bool

    def labels(self) -> dict[str, str]:
        """What the workspace volume keeps of its seed (its labels are fixed: seeding happens once)."""
        return {"source": self.source, "base": self.base, "ref_commit": self.ref_commit, "ref": self.ref}


def is_url(source: str) -> bool:
    return "://" in source or (source.startswith("git@") and ":" in source)


def make(source: str, project_dir: Path, ref: str | None, include_uncommitted: bool, folder: Path,
         cache: Path | None = None) -> Seed:
    """The seed of `source`: a bare repository holding the base commit's history as one pack, in `folder`
    (a temporary folder of the caller's), or kept in `cache` (the user's cache folder) for a commit, whose
    history never changes: agents started from the same commit (an experiment's trials) pay for it once."""
    if is_url(source):
        repo = _clone(source, folder)
    else:
        where = project_dir if source == PROJECT else Path(source).expanduser()
        repo = ProjectRepo.at(where, "the project" if source == PROJECT else "source")
    ref_commit = repo.commit(ref or "HEAD")
    with repo.scratch() as scratch:
        base = scratch.uncommitted_commit(ref_commit, UNCOMMITTED_MESSAGE) if include_uncommitted else ref_commit
        kept = cache / f"{base}.git" if cache is not None and base == ref_commit else None
        if kept is not None and (kept / "HEAD").is_file():
            os.utime(kept)  # recently used: pruned last
            return Seed(source, kept, base, ref_commit, ref or "HEAD", False)
        bundle = scratch.bundle(base, SEED_BRANCH, folder / "seed.bundle")
    target = folder / "seed.git"
    _git(folder, "init", "-q", "--bare", str(target))
    _git(target, "fetch", "-q", str(bundle), f"refs/heads/{SEED_BRANCH}:refs/heads/{SEED_BRANCH}")
    _git(target, "symbolic-ref", "HEAD", f"refs/heads/{SEED_BRANCH}")
    bundle.unlink()
    if kept is not None:
        target = _keep(target, kept)
    return Seed(source, target, base, ref_commit, ref or "HEAD", base != ref_commit)


def _keep(repo: Path, kept: Path, most: int = KEEP_SEEDS) -> Path:
    """Move a commit's seed into the cache (atomically), keeping the `most` recently used ones."""
    kept.parent.mkdir(parents=True, exist_ok=True)
    try:
        repo.rename(kept)
    except OSError:  # another creator kept the same commit first (or another file system): use theirs/ours
        if not (kept / "HEAD").is_file():
            return repo
    for old in sorted(kept.parent.glob("*.git"), key=lambda p: p.stat().st_mtime, reverse=True)[most:]:
        shutil.rmtree(old, ignore_errors=True)
    return kept


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
    """The seed's repository into the agent's empty workspace as its `.git` (a tar stream of a few files,
    owned by the agent's user), then checked out there on the branch claude-lab/<agent>; returns HEAD."""
    owner = owned_by(uid, gid)
    engine.put_archive(container, workspace, tar_stream(lambda tar: tar.add(str(seed.repo), arcname=".git",
                                                                            filter=owner)))
    head = agent_git.checkout(engine, container, workspace, SEED_BRANCH, agent_branch(agent_id))
    if head != seed.base:
        raise LabError(f"the seeded workspace of {agent_id} is at {head[:12]}, not at its base {seed.base[:12]}")
    return head


def _git(cwd: Path, *args: str) -> str:
    proc = subprocess.run(["git", "-c", "core.hooksPath=/dev/null", "-c", "advice.detachedHead=false", *args],
                          cwd=str(cwd), capture_output=True, text=True, env={**os.environ, "GIT_TERMINAL_PROMPT": "0"})
    if proc.returncode != 0:
        raise LabError(f"seeding: git {' '.join(args[:2])} failed: {proc.stderr.strip()[-600:]}")
    return proc.stdout


def temporary_folder() -> tempfile.TemporaryDirectory[str]:
    return tempfile.TemporaryDirectory(prefix="claude-lab-seed-")
