"""The agent's work back into the project: fetched as a branch, merged, or applied as uncommitted changes.

Nothing of the user's is ever lost. `fetch` writes only objects and the ref `claude-lab/<agent>`. Before
`merge` and `apply` touch anything, the whole outcome is computed in a scratch object directory (`git
merge-tree --write-tree`, which needs no work tree): a conflict, or an uncommitted change of the user's
in a file the operation would change, refuses with `MergeConflict` and every byte of the working tree,
the index and HEAD stays as it was. Only a clean outcome is then carried out, by git itself
(`merge --ff-only` to the prepared commit, or `apply` of the prepared diff).
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import LabError, MergeConflict
from .hostgit import AUTHOR, ProjectRepo

BRANCH_PREFIX = "claude-lab/"


def agent_branch(agent_id: str) -> str:
    return f"{BRANCH_PREFIX}{agent_id}"


@dataclass(frozen=True)
class MergeResult:
    """What `lab.merge` did: the commit the project's branch is at now, the files it changed, the branch merged."""

    commit: str
    files: list[str] = field(default_factory=list)
    branch: str = ""
    into: str = ""
    fast_forward: bool = False

    def __repr__(self) -> str:
        how = "fast-forward" if self.fast_forward else "merge commit"
        return (f"MergeResult({self.branch} into {self.into}: {how} {self.commit[:12]}, "
                f"{len(self.files)} files: {', '.join(self.files[:8])}{', ...' if len(self.files) > 8 else ''})")


def receive(repo: ProjectRepo, bundle: bytes, agent_id: str) -> str:
    """Bring a bundle of the agent's HEAD into the project as `refs/heads/claude-lab/<agent>`; returns its commit.

    Only objects and that ref are written (no FETCH_HEAD, nothing checked out)."""
    branch = agent_branch(agent_id)
    if repo.branch() == branch:
        raise LabError(f"the project has {branch} checked out, so fetching into it would leave your working "
                       f"tree behind the branch; switch to another branch first (`git switch -`), then fetch again")
    with tempfile.TemporaryDirectory(prefix="claude-lab-fetch-") as tmp:
        path = Path(tmp) / "agent.bundle"
        path.write_bytes(bundle)
        heads = repo.git("bundle", "unbundle", str(path)).split()
    if not heads:
        raise LabError(f"the bundle of {agent_id}'s work named no commit")
    commit = heads[0]
    repo.git("update-ref", "-m", f"claude-lab: fetched the work of agent {agent_id}", f"refs/heads/{branch}", commit)
    return commit


@dataclass(frozen=True)
class _Plan:
    tree: str  # the project's tree after the operation
    files: list[str]  # what it changes against HEAD


def _plan(repo: ProjectRepo, scratch_env: dict[str, str], head: str, theirs: str, branch: str,
          how: str) -> _Plan:
    """Merge `theirs` into `head` in scratch objects only; MergeConflict for a conflict or an overlap with the
    user's uncommitted changes."""
    out = repo.run("merge-tree", "--write-tree", "--name-only", "--no-messages", head, theirs, env=scratch_env)
    lines = out.stdout.decode("utf-8", "surrogateescape").splitlines()
    if out.returncode == 1:
        conflicted = sorted({line for line in lines[1:] if line})
        raise MergeConflict(
            f"{branch} conflicts with your {repo.branch() or 'HEAD'} in {', '.join(conflicted)}; nothing was "
            f"changed. To resolve it by hand: `git merge {branch}` in {repo.top}, fix the files, commit",
            files=conflicted, branch=branch)
    if out.returncode != 0 or not lines:
        raise LabError(f"git merge-tree could not {how} {branch}: {out.stderr.decode('utf-8', 'replace')[-800:]}")
    tree = lines[0].strip()
    files = [f for f in repo.git("diff", "--name-only", "-z", head, tree, env=scratch_env).split("\0") if f]
    overlap = sorted(set(files) & set(repo.dirty()))
    if overlap:
        raise MergeConflict(
            f"your uncommitted changes touch {', '.join(overlap)}, which {how} {branch} would change; nothing was "
            f"changed. Commit or stash them first (`git stash`), then {how} again", files=overlap, branch=branch)
    return _Plan(tree, files)


def merge(repo: ProjectRepo, agent_id: str, commit: str, message: str | None = None) -> MergeResult:
    """Merge the agent's fetched `commit` into the project's current branch (fast-forward when it can)."""
    branch = agent_branch(agent_id)
    into = repo.branch()
    if into is None:
        raise LabError(f"the project's HEAD is detached, so there is no branch to merge {branch} into; switch to "
                       f"one (`git switch main`), or use lab.apply({agent_id!r}) to get the changes uncommitted")
    head = repo.commit("HEAD")
    if repo.run("merge-base", "--is-ancestor", commit, head).returncode == 0:
        return MergeResult(head, [], branch, into)  # already in: nothing to do
    with repo.scratch() as scratch:
        plan = _plan(repo, scratch.env, head, commit, branch, "merging")
    fast_forward = repo.run("merge-base", "--is-ancestor", head, commit).returncode == 0
    if fast_forward:
        target = commit
    else:  # the same merge again, now for real: its objects belong in the project
        tree = repo.git("merge-tree", "--write-tree", "--no-messages", head, commit).splitlines()[0].strip()
        if tree != plan.tree:
            raise LabError(f"merging {branch} gave another tree than its trial run; nothing was changed")
        target = repo.git("commit-tree", tree, "-p", head, "-p", commit, "-m",
                          message or f"Merge {branch}: the work of agent {agent_id}", env=AUTHOR).strip()
    repo.git("merge", "--ff-only", "-q", target)
    return MergeResult(target, plan.files, branch, into, fast_forward)


def apply(repo: ProjectRepo, agent_id: str, commit: str, base: str) -> list[str]:
    """The agent's changes since `base` into the project's working tree, uncommitted (index and HEAD untouched);
    returns the files changed."""
    branch = agent_branch(agent_id)
    head = repo.commit("HEAD")
    with repo.scratch() as scratch:
        # What the agent did on top of its base, carried onto the project's HEAD: a merge with `base` as the
        # common ancestor, so the result is HEAD plus the agent's own changes.
        tree = scratch.git("commit-tree", f"{commit}^{{tree}}", "-p", base, "-m", "agent", env=AUTHOR).strip()
        on_head = scratch.git("commit-tree", f"{head}^{{tree}}", "-p", base, "-m", "head", env=AUTHOR).strip()
        plan = _plan(repo, scratch.env, on_head, tree, branch, "applying")
        patch = scratch.git("diff", "--binary", "--no-color", "--no-ext-diff", head, plan.tree, text=False)
    if not plan.files:
        return []
    check = repo.run("apply", "--check", "--whitespace=nowarn", "-", input=patch)  # type: ignore[arg-type]
    if check.returncode != 0:
        raise MergeConflict(f"the changes of {branch} do not apply to your working tree: "
                            f"{check.stderr.decode('utf-8', 'replace').strip()[-600:]}; nothing was changed. "
                            f"Fetch and merge instead (lab.merge({agent_id!r}))", files=plan.files, branch=branch)
    repo.git("apply", "--whitespace=nowarn", "-", input=patch)  # type: ignore[arg-type]
    return plan.files
