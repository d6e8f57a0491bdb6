"""The workspace as it was when a run started: a git bundle of its history up to the start commit,
stored with the run, and restored into a fresh workspace for replay."""
from __future__ import annotations

import io
import tarfile
from typing import TYPE_CHECKING

from ..errors import LabError

if TYPE_CHECKING:
    from ..engine.face import EngineFace

SNAPSHOT_REF = "refs/claude-lab/snapshot"
BUNDLE_PATH = "/tmp/claude-lab-start.bundle"

# Python source: the bundle of a workspace's history up to a commit, without the history of others. The run's
# own "after" step (see `workspace`) calls it too, under the lock it already holds.
BUNDLE = r'''
import subprocess


def bundle(ws, start, ref, exclude):
    """(git's exit code, the bundle, git's stderr) of the history up to `start` without `exclude`'s."""
    def git(*args):
        return subprocess.run(["git", "-c", "safe.directory=*", *args], cwd=ws, capture_output=True)
    p = git("update-ref", ref, start)
    if p.returncode != 0:
        return p.returncode, b"", p.stderr
    try:
        p = git("bundle", "create", "-", ref, *["^" + e for e in exclude])
    finally:
        git("update-ref", "-d", ref)
    return p.returncode, p.stdout, p.stderr
'''

_SNAPSHOT = BUNDLE + r'''
import fcntl, sys
ws, start, ref, exclude = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
lock = open("/tmp/.claude-lab-git.lock", "a")
fcntl.flock(lock, fcntl.LOCK_EX)
code, data, err = bundle(ws, start, ref, exclude)
if code != 0:
    sys.stderr.buffer.write(err)
    sys.exit(3)
sys.stdout.buffer.write(data)
'''

_RESTORE = r'''
import os, subprocess, sys
ws, ref, branch, bundles = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
def git(*args):
    p = subprocess.run(["git", "-c", "safe.directory=*", *args], cwd=ws, capture_output=True, text=True)
    if p.returncode != 0:
        sys.stderr.write("git " + " ".join(args[:2]) + ": " + (p.stderr or p.stdout)[-800:]); sys.exit(5)
    return p.stdout
if not os.path.isdir(os.path.join(ws, ".git")):
    git("init", "-q")
if branch:
    git("symbolic-ref", "HEAD", "refs/heads/" + branch)  # the branch the run was on (the CLI shows it)
for bundle in bundles:  # a seed first, then the run's own commits on top of it
    git("fetch", "-q", bundle, ref)
git("reset", "-q", "--hard", "FETCH_HEAD")
has_parent = subprocess.run(["git", "rev-parse", "-q", "--verify", "HEAD~1"], cwd=ws, capture_output=True).returncode == 0
if has_parent:
    git("reset", "-q", "--soft", "HEAD~1")
git("clean", "-fdxq")
for name in ("FETCH_HEAD", "ORIG_HEAD"):
    try:
        os.remove(os.path.join(ws, ".git", name))
    except OSError:
        pass
'''


def snapshot_workspace(engine: "EngineFace", container: str, workspace: str, start_commit: str,
                       exclude: str | None = None) -> bytes:
    """A git bundle of the workspace's history up to `start_commit`, without `exclude`'s history when given
    (a seeded workspace's base, stored once); raises LabError when git cannot."""
    exec_id, out, err = engine.exec_output(container, ["python3", "-c", _SNAPSHOT, workspace, start_commit,
                                                       SNAPSHOT_REF, *([exclude] if exclude else [])])
    code = engine.exec_exit_code(exec_id)
    if code != 0 or not out:
        raise LabError(f"could not bundle the workspace at {start_commit[:12]} in {container} (exit {code}): "
                       f"{err.decode('utf-8', 'replace').strip()[-500:]}")
    return out


def workspace_branch(engine: "EngineFace", container: str, workspace: str) -> str | None:
    """The branch the workspace is on (None when detached, or not a repository)."""
    _, out, _ = engine.exec_output(container, ["git", "-c", "safe.directory=*", "-C", workspace, "symbolic-ref",
                                               "-q", "--short", "HEAD"])
    return out.decode("utf-8", "replace").strip() or None


def restore_workspace(engine: "EngineFace", container: str, workspace: str, bundles: list[bytes],
                      branch: str | None = None) -> None:
    """Put a snapshot (a seed's bundle, then the run's) into an (empty) workspace: the start commit's tree
    checked out on `branch`, HEAD at its parent."""
    data = io.BytesIO()
    paths = [f"{BUNDLE_PATH}.{i}" for i in range(len(bundles))]
    with tarfile.open(fileobj=data, mode="w") as tar:
        for path, bundle in zip(paths, bundles):
            info = tarfile.TarInfo(path.rsplit("/", 1)[1])
            info.size, info.mode = len(bundle), 0o644
            tar.addfile(info, io.BytesIO(bundle))
    engine.put_archive(container, BUNDLE_PATH.rsplit("/", 1)[0], data.getvalue())
    exec_id, out, err = engine.exec_output(container, ["python3", "-c", _RESTORE, workspace, SNAPSHOT_REF,
                                                       branch or "", *paths])
    code = engine.exec_exit_code(exec_id)
    engine.exec_output(container, ["rm", "-f", *paths], user="root")  # put_archive made them root's
    if code != 0:
        raise LabError(f"could not restore the recorded workspace in {container} (exit {code}): "
                       f"{(err or out).decode('utf-8', 'replace').strip()[-800:]}")


