"""git inside an agent's workspace: the seed checked out, its diff and changes, and its branch bundled for the
trip back. Each step is one small Python script run in the container (python3 and git
are in the images) as the agent's user, under the same lock as a run's git steps."""
from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from ..errors import LabError

if TYPE_CHECKING:
    from ..engine.face import EngineFace

AUTHOR = {"GIT_AUTHOR_NAME": "claude-lab", "GIT_AUTHOR_EMAIL": "claude-lab@localhost",
          "GIT_COMMITTER_NAME": "claude-lab", "GIT_COMMITTER_EMAIL": "claude-lab@localhost"}

_COMMON = r'''
import fcntl, json, os, subprocess, sys
a = json.loads(sys.argv[1])
ws = a["workspace"]

def fail(message, code=3):
    sys.stderr.write(message[-2000:])
    sys.exit(code)

def git(*args, check=True, env=None, binary=False):
    p = subprocess.run(["git", "-c", "core.hooksPath=/dev/null", "-c", "commit.gpgsign=false",
                        "-c", "safe.directory=*", "-c", "core.quotepath=off", *args], cwd=ws, capture_output=True,
                       env={**os.environ, **(env or {})})
    if check and p.returncode != 0:
        fail("git " + " ".join(args[:2]) + ": " + (p.stderr or p.stdout).decode("utf-8", "replace").strip())
    return p.stdout if binary else p.stdout.decode("utf-8", "surrogateescape")

lock = open("/tmp/.claude-lab-git.lock", "a")
fcntl.flock(lock, fcntl.LOCK_EX)
'''

_CHECKOUT = _COMMON + r'''
seed_branch, branch = a["seed_branch"], a["branch"]
git("config", "core.bare", "false")
git("checkout", "-q", "-b", branch, seed_branch)
git("branch", "-q", "-D", seed_branch)
print(json.dumps({"head": git("rev-parse", "HEAD").strip()}))
'''

_RENAME = _COMMON + r'''
git("branch", "-m", a["old"], a["new"])
'''

# The agent's work as it is now (committed and not): a scratch index holding the work tree, diffed
# against the base commit. The workspace's own index is not touched.
_WORK = _COMMON + r'''
base, what = a["base"], a["what"]
probe = subprocess.run(["git", "-c", "safe.directory=*", "cat-file", "-e", base + "^{commit}"], cwd=ws,
                       capture_output=True)
if probe.returncode != 0:
    fail(f"the base commit {base[:12]} is not in the workspace's repository (was .git removed or rewritten?)", 5)
index = {"GIT_INDEX_FILE": "/tmp/.claude-lab-work-index-" + str(os.getpid())}
try:
    git("read-tree", "HEAD", env=index)
    git("add", "-A", env=index)
    if what == "diff":
        sys.stdout.write(git("diff", "--cached", "--no-color", "--no-ext-diff", "--find-renames", base, env=index))
    else:
        numstat = git("diff", "--cached", "--numstat", "-z", "--no-renames", base, env=index)
        status = git("diff", "--cached", "--name-status", "-z", "--no-renames", base, env=index)
        print(json.dumps({"numstat": numstat, "status": status}))
finally:
    if os.path.exists(index["GIT_INDEX_FILE"]):
        os.remove(index["GIT_INDEX_FILE"])
'''

# For the trip back: what the agent left uncommitted becomes a commit, then its HEAD is bundled,
# without the commits the project already has (`exclude`), to stdout.
_BUNDLE = _COMMON + r'''
exclude, message, ref = a.get("exclude"), a["message"], "refs/claude-lab/outgoing"
git("add", "-A")
if subprocess.run(["git", "-c", "safe.directory=*", "diff", "--cached", "--quiet"], cwd=ws).returncode != 0:
    git("commit", "-q", "--no-verify", "-m", message, env=a["author"])
git("update-ref", ref, "HEAD")
try:
    args = ["bundle", "create", "-q", "-", ref] + (["^" + exclude] if exclude else [])
    p = subprocess.run(["git", "-c", "safe.directory=*", *args], cwd=ws, capture_output=True)
    if p.returncode != 0:
        fail("git bundle: " + p.stderr.decode("utf-8", "replace"))
    sys.stdout.buffer.write(p.stdout)
finally:
    git("update-ref", "-d", ref)
'''


def _run(engine: "EngineFace", container: str, script: str, args: dict[str, Any], user: str | None = None,
         what: str = "a workspace git step") -> bytes:
    exec_id, out, err = engine.exec_output(container, ["python3", "-c", script, json.dumps(args)], user=user,
                                           env=AUTHOR)
    code = engine.exec_exit_code(exec_id)
    if code != 0:
        raise LabError(f"{what} failed in {container} (exit {code}): {err.decode('utf-8', 'replace').strip()}")
    return out


def checkout(engine: "EngineFace", container: str, workspace: str, seed_branch: str, branch: str) -> str:
    """Check out a seeded `.git` (just put into the workspace) on a new `branch`; returns HEAD."""
    out = _run(engine, container, _CHECKOUT, {"workspace": workspace, "seed_branch": seed_branch, "branch": branch},
               what="checking out the seeded workspace")
    return json.loads(out.decode().strip().splitlines()[-1])["head"]


def rename_branch(engine: "EngineFace", container: str, workspace: str, old: str, new: str) -> None:
    """A pooled agent's branch becomes its own (claude-lab/pool.<token> -> claude-lab/<agent>)."""
    _run(engine, container, _RENAME, {"workspace": workspace, "old": old, "new": new}, what="naming the agent's branch")


def diff(engine: "EngineFace", container: str, workspace: str, base: str) -> str:
    return _run(engine, container, _WORK, {"workspace": workspace, "base": base, "what": "diff"},
                what="the workspace's diff").decode("utf-8", "replace")


def changes(engine: "EngineFace", container: str, workspace: str, base: str) -> list[dict[str, Any]]:
    """One entry per changed file: path, status (A, M, D, T), lines added and deleted (None for binary)."""
    out = json.loads(_run(engine, container, _WORK, {"workspace": workspace, "base": base, "what": "changes"},
                          what="the workspace's changes"))
    counts: dict[str, tuple[int | None, int | None]] = {}
    for entry in filter(None, out["numstat"].split("\0")):
        added, deleted, path = entry.split("\t", 2)
        counts[path] = (None if added == "-" else int(added), None if deleted == "-" else int(deleted))
    fields = [f for f in out["status"].split("\0")]
    rows = []
    for status, path in zip(fields[0::2], fields[1::2]):
        if not status:
            continue
        added, deleted = counts.get(path, (None, None))
        rows.append({"path": path, "status": status, "added": added, "deleted": deleted})
    return rows


def outgoing_bundle(engine: "EngineFace", container: str, workspace: str, exclude: str | None, message: str) -> bytes:
    """Commit what is uncommitted, then the workspace's HEAD as a bundle (without `exclude`'s history)."""
    return _run(engine, container, _BUNDLE, {"workspace": workspace, "exclude": exclude, "message": message,
                                            "author": AUTHOR}, what="bundling the agent's work")
