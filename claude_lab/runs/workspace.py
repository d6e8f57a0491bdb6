"""The agent's workspace as a git history of runs: a commit before and after each run.

Before a run, /workspace becomes a git repository if it is not one (everything committed as
"claude-lab: baseline"), then whatever is uncommitted is committed as "claude-lab: before run
<run_id>" (allowed empty): that is the run's start commit. After the run, `git add -A` and the
diff against the start commit is what the run changed; it is committed as "claude-lab: after run
<run_id>" (the end commit). Start and end commits let a later step replay or compare runs.

The steps are small Python functions run inside the container (python3 is in the images), as the
agent's user, under a lock so two runs in one workspace do not trip over git's index lock. The
"before" step first calls the lab's model proxy from inside the container with the run's token
(which binds the token to this container's address, and tells an unreachable proxy in seconds).
A run carries both steps in its own exec, around its command (see `envelope`); `finish` runs the
"after" step alone, for a run that was stopped before it.
When asked (`snapshot=`), the "after" step also bundles the history up to the start commit for the
run store (see `snapshot`), so a recorded run needs no exec of its own for that either.
"""
from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field

from typing import TYPE_CHECKING, Any

from ..errors import LabError
from ..model.grants import HELLO_PATH
from .snapshot import BUNDLE, SNAPSHOT_REF

if TYPE_CHECKING:
    from ..engine.face import EngineFace

MAX_DIFF = 2_000_000  # characters of diff kept in a RunResult
MAX_INLINE_BUNDLE = 8 * 1024 * 1024  # a bigger start snapshot is fetched by an exec of its own
PYTHON = ["python3", "-I", "-S", "-c"]  # the steps need the standard library only: no site start-up
AUTHOR = {"GIT_AUTHOR_NAME": "claude-lab", "GIT_AUTHOR_EMAIL": "claude-lab@localhost",
          "GIT_COMMITTER_NAME": "claude-lab", "GIT_COMMITTER_EMAIL": "claude-lab@localhost"}

# The steps, as Python source for `python3 -c`: `before(a)` and `after(a)` return what they found.
STEPS = BUNDLE + r'''
import base64, fcntl, json, os, socket, subprocess, sys
from urllib.parse import urlsplit


class Stop(Exception):
    """A git command failed; out["git_error"] says which."""


class Steps:
    def __init__(self, a):
        self.a, self.ws, self.out = a, a["workspace"], {}
        self.env = dict(os.environ, **a["author"])

    def git(self, *args, check=True, text=True):
        p = subprocess.run(["git", "-c", "core.hooksPath=/dev/null", "-c", "commit.gpgsign=false",
                            "-c", "safe.directory=*", *args], cwd=self.ws, capture_output=True, env=self.env,
                           **({"encoding": "utf-8", "errors": "replace"} if text else {}))
        if check and p.returncode != 0:
            err = p.stderr or p.stdout
            err = err if text else err.decode("utf-8", "replace")
            self.out["git_error"] = "git " + " ".join(args[:2]) + ": " + err.strip()[-800:]
            raise Stop
        return p

    def is_repo(self):
        return os.path.exists(os.path.join(self.ws, ".git")) and \
            self.git("rev-parse", "--git-dir", check=False).returncode == 0

    def commit(self, message):
        self.git("add", "-A")
        self.git("commit", "-q", "--allow-empty", "--no-verify", "-m", message)
        return self.git("rev-parse", "HEAD").stdout.strip()

    def locked(self, step):
        with open("/tmp/.claude-lab-git.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                step()
            except Stop:
                pass
            except Exception as e:  # a step never dies without saying why
                self.out["git_error"] = f"{type(e).__name__}: {e}"
        return self.out

    def probe(self):
        url, a = self.a.get("probe"), self.a
        if not url:
            return True
        u = urlsplit(url)
        t = a.get("probe_timeout", 3)
        where = f"{u.hostname}:{u.port or 80}"
        token = os.environ.get(a["token_env"], "")
        try:  # a plain HTTP/1.0 GET: http.client's import alone costs more than the whole request
            with socket.create_connection((u.hostname, u.port or 80), timeout=t) as c:
                c.sendall(f"GET {a['hello']} HTTP/1.0\r\nHost: {where}\r\nx-api-key: {token}\r\n\r\n".encode())
                data = b""
                while True:
                    piece = c.recv(65536)
                    if not piece:
                        break
                    data += piece
        except socket.timeout:
            self.out["unreachable"] = f"{where}: no answer within {t}s"
            return False
        except OSError as e:
            self.out["unreachable"] = f"{where}: {e.strerror or e}"
            return False
        head, _, raw = data.partition(b"\r\n\r\n")
        try:
            status = int(head.split(b" ", 2)[1])
        except (IndexError, ValueError):
            status = 0
        body = raw.decode("utf-8", "replace")
        if status != 200:
            try:
                self.out["refused"] = json.loads(body)["error"]["message"]
            except Exception:
                self.out["refused"] = f"HTTP {status}: {body[:300]}"
            return False
        return True

    def _before(self):
        if not self.is_repo():
            self.git("init", "-q")
            self.out["initialised"] = True
        if self.git("rev-parse", "--verify", "-q", "HEAD", check=False).returncode != 0:
            self.commit("claude-lab: baseline")
            self.out["baseline"] = True
        self.out["start_commit"] = self.commit("claude-lab: before run " + self.a["run_id"])

    def _after(self):
        start, out, problems = self.a.get("start_commit"), self.out, []
        if not self.is_repo():
            problems.append("the workspace's .git is gone (removed during the run?); started a new repository")
            self.git("init", "-q")
        self.git("add", "-A")
        if start and self.git("cat-file", "-e", start + "^{commit}", check=False).returncode == 0:
            diff = self.git("diff", "--cached", "--no-color", "--no-ext-diff", "--find-renames", start).stdout
            files = self.git("diff", "--cached", "--name-only", "--no-renames", start).stdout.splitlines()
        else:
            if start:
                problems.append(f"start commit {start[:12]} is no longer in the workspace's repository")
            diff, files = "", []
        limit = self.a["max_diff"]
        if len(diff) > limit:
            out["diff_cut"] = len(diff) - limit
            diff = diff[:limit]
        out["diff"], out["changed_files"] = diff, files
        out["end_commit"] = self.commit("claude-lab: after run " + self.a["run_id"])
        if problems:
            out["git_error"] = "; ".join(problems)
        if start and self.a.get("snapshot") is not None and not problems:
            self._snapshot(start)

    def _snapshot(self, start):
        branch = self.git("symbolic-ref", "-q", "--short", "HEAD", check=False).stdout.strip() or None
        code, data, _ = bundle(self.ws, start, self.a["snapshot_ref"], self.a["snapshot"])
        if code == 0 and data and len(data) <= self.a["max_bundle"]:  # else the recorder makes it alone
            self.out["snapshot"] = {"branch": branch, "bundle": base64.b64encode(data).decode("ascii")}

    def before(self):
        return self.locked(self._before) if self.probe() else self.out

    def after(self):
        return self.locked(self._after)

    def snapshot(self):
        """The start snapshot alone ({"snapshot": ...}, or {} if it could not be made), under the lock."""
        self.locked(lambda: self._snapshot(self.a["start_commit"]))
        return {k: v for k, v in self.out.items() if k == "snapshot"}
'''

_ALONE = STEPS + r'''
print(json.dumps(getattr(Steps(json.loads(sys.argv[1])), sys.argv[2])()))
'''


def step_args(workspace: str, run_id: str, *, probe: str | None = None, token_env: str | None = None,
              probe_timeout: float = 3.0, snapshot: list[str] | None = None, max_diff: int = MAX_DIFF) -> dict:
    """The steps' arguments. `snapshot`: bundle the start commit's history without these commits' (a seeded
    workspace's base, stored once per lab) in the "after" step; None: no bundle."""
    return {"workspace": workspace, "run_id": run_id, "probe": probe, "hello": HELLO_PATH,
            "token_env": token_env or "CLAUDE_LAB_RUN_TOKEN", "probe_timeout": probe_timeout, "author": AUTHOR,
            "max_diff": max_diff, "snapshot": snapshot, "snapshot_ref": SNAPSHOT_REF,
            "max_bundle": MAX_INLINE_BUNDLE}


@dataclass
class Prepared:
    start_commit: str | None = None
    unreachable: str | None = None  # "host:port: Connection refused" when the probe failed
    refused: str | None = None  # the model proxy refused the run's token (its message)


@dataclass
class Finished:
    diff: str = ""
    changed_files: list[str] = field(default_factory=list)
    end_commit: str | None = None
    error: str | None = None


def prepared(res: dict, run_id: str, container: str) -> Prepared:
    """What the "before" step said (alone or in a run's envelope); raises when git failed."""
    if res.get("unreachable") or res.get("refused"):
        return Prepared(unreachable=res.get("unreachable"), refused=res.get("refused"))
    if res.get("git_error") or not res.get("start_commit"):
        raise LabError(f"could not record the workspace's state before run {run_id} in {container}: "
                       f"{res.get('git_error') or 'no start commit'}")
    return Prepared(start_commit=res["start_commit"])


def finished(res: dict, start_commit: str | None) -> Finished:
    """What the "after" step said."""
    diff = res.get("diff", "")
    if res.get("diff_cut"):
        diff += (f"\n[claude-lab: {res['diff_cut']} more characters of diff were cut; "
                 f"run `git diff {start_commit} {res.get('end_commit')}` in the workspace]\n")
    return Finished(diff=diff, changed_files=list(res.get("changed_files") or []),
                    end_commit=res.get("end_commit"), error=res.get("git_error"))


def snapshot_of(res: dict | None) -> dict[str, Any] | None:
    """The start snapshot the "after" step bundled ({"branch", "bundle" (bytes)}), None when it did not."""
    snap = (res or {}).get("snapshot")
    if not snap or not snap.get("bundle"):
        return None
    return {"branch": snap.get("branch"), "bundle": base64.b64decode(snap["bundle"])}


def _run(engine: "EngineFace", container: str, step: str, args: dict, user: str | None) -> dict:
    exec_id, out, err = engine.exec_output(container, [*PYTHON, _ALONE, json.dumps(args), step], user=user)
    try:
        return json.loads(out.decode("utf-8", "replace").strip().splitlines()[-1])
    except (ValueError, IndexError):
        code = engine.exec_exit_code(exec_id)
        raise LabError(f"workspace git step failed in {container} (exit {code}): "
                       f"{(err or out).decode('utf-8', 'replace').strip()[-800:]}") from None


def finish(engine: "EngineFace", container: str, workspace: str, run_id: str, start_commit: str | None,
           user: str | None = None, max_diff: int = MAX_DIFF) -> Finished:
    """The "after" step alone: stage everything, diff against the start commit, commit as the run's end."""
    args = {**step_args(workspace, run_id, max_diff=max_diff), "start_commit": start_commit}
    return finished(_run(engine, container, "after", args, user), start_commit)
