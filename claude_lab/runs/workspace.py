"""The agent's workspace as a git history of runs: a commit before and after each run.

Before a run, /workspace becomes a git repository if it is not one (everything committed as
"claude-lab: baseline"), then whatever is uncommitted is committed as "claude-lab: before run
<run_id>" (allowed empty): that is the run's start commit. After the run, `git add -A` and the
diff against the start commit is what the run changed; it is committed as "claude-lab: after run
<run_id>" (the end commit). Start and end commits let a later step replay or compare runs.

Both steps run as one small Python script inside the container (python3 is in the images), as the
agent's user, under a lock so two runs in one workspace do not trip over git's index lock. The
"before" script first calls the lab's model proxy from inside the container with the run's token
(which binds the token to this container's address, and tells an unreachable proxy in seconds),
which saves a round trip.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

from typing import TYPE_CHECKING

from ..errors import LabError
from ..model.grants import HELLO_PATH

if TYPE_CHECKING:
    from ..engine.face import EngineFace

MAX_DIFF = 2_000_000  # characters of diff kept in a RunResult
AUTHOR = {"GIT_AUTHOR_NAME": "claude-lab", "GIT_AUTHOR_EMAIL": "claude-lab@localhost",
          "GIT_COMMITTER_NAME": "claude-lab", "GIT_COMMITTER_EMAIL": "claude-lab@localhost"}

_COMMON = r'''
import fcntl, json, os, socket, subprocess, sys
from urllib.parse import urlsplit
a = json.loads(sys.argv[1])
ws = a["workspace"]
out = {}

def done():
    print(json.dumps(out))
    sys.exit(0)

def git(*args, check=True):
    p = subprocess.run(["git", "-c", "core.hooksPath=/dev/null", "-c", "commit.gpgsign=false",
                        "-c", "safe.directory=*", *args], cwd=ws, capture_output=True,
                       encoding="utf-8", errors="replace")
    if check and p.returncode != 0:
        out["git_error"] = "git " + " ".join(args[:2]) + ": " + (p.stderr or p.stdout).strip()[-800:]
        done()
    return p

def is_repo():
    return os.path.exists(os.path.join(ws, ".git")) and git("rev-parse", "--git-dir", check=False).returncode == 0

def has_head():
    return git("rev-parse", "--verify", "-q", "HEAD", check=False).returncode == 0

def commit(message):
    git("add", "-A")
    git("commit", "-q", "--allow-empty", "--no-verify", "-m", message)
    return git("rev-parse", "HEAD").stdout.strip()

lock = open("/tmp/.claude-lab-git.lock", "a")
'''

_BEFORE = _COMMON + r'''
url = a.get("probe")
if url:
    import http.client
    u = urlsplit(url)
    t = a.get("probe_timeout", 3)
    where = f"{u.hostname}:{u.port or 80}"
    try:
        c = http.client.HTTPConnection(u.hostname, u.port or 80, timeout=t)
        c.request("GET", a["hello"], headers={"x-api-key": os.environ.get("CLAUDE_LAB_RUN_TOKEN", "")})
        r = c.getresponse()
        body = r.read().decode("utf-8", "replace")
        c.close()
    except socket.timeout:
        out["unreachable"] = f"{where}: no answer within {t}s"
        done()
    except OSError as e:
        out["unreachable"] = f"{where}: {e.strerror or e}"
        done()
    if r.status != 200:
        try:
            out["refused"] = json.loads(body)["error"]["message"]
        except Exception:
            out["refused"] = f"HTTP {r.status}: {body[:300]}"
        done()
fcntl.flock(lock, fcntl.LOCK_EX)
if not is_repo():
    git("init", "-q")
    out["initialised"] = True
if not has_head():
    commit("claude-lab: baseline")
    out["baseline"] = True
out["start_commit"] = commit("claude-lab: before run " + a["run_id"])
done()
'''

_AFTER = _COMMON + r'''
fcntl.flock(lock, fcntl.LOCK_EX)
start = a["start_commit"]
problems = []
if not is_repo():
    problems.append("the workspace's .git is gone (removed during the run?); started a new repository")
    git("init", "-q")
git("add", "-A")
if start and git("cat-file", "-e", start + "^{commit}", check=False).returncode == 0:
    diff = git("diff", "--cached", "--no-color", "--no-ext-diff", "--find-renames", start).stdout
    files = git("diff", "--cached", "--name-only", "--no-renames", start).stdout.splitlines()
else:
    if start:
        problems.append(f"start commit {start[:12]} is no longer in the workspace's repository")
    diff, files = "", []
limit = a["max_diff"]
if len(diff) > limit:
    out["diff_cut"] = len(diff) - limit
    diff = diff[:limit]
out["diff"], out["changed_files"] = diff, files
out["end_commit"] = commit("claude-lab: after run " + a["run_id"])
if problems:
    out["git_error"] = "; ".join(problems)
done()
'''


@dataclass
class Prepared:
    start_commit: str | None = None
    unreachable: str | None = None  # "host:port: Connection refused" when the probe failed
    refused: str | None = None  # the model proxy refused the run's token (its message)
    baseline: bool = False


@dataclass
class Finished:
    diff: str = ""
    changed_files: list[str] = field(default_factory=list)
    end_commit: str | None = None
    error: str | None = None


def _run(engine: "EngineFace", container: str, script: str, args: dict, user: str | None,
         env: dict[str, str] | None = None) -> dict:
    exec_id, out, err = engine.exec_output(container, ["python3", "-c", script, json.dumps(args)], user=user,
                                           env={**AUTHOR, **(env or {})})
    try:
        return json.loads(out.decode("utf-8", "replace").strip().splitlines()[-1])
    except (ValueError, IndexError):
        code = engine.exec_exit_code(exec_id)
        raise LabError(f"workspace git step failed in {container} (exit {code}): "
                       f"{(err or out).decode('utf-8', 'replace').strip()[-800:]}") from None


def prepare(engine: "EngineFace", container: str, workspace: str, run_id: str, probe: str | None = None,
            token: str | None = None, user: str | None = None, probe_timeout: float = 3.0) -> Prepared:
    """Call the lab's model proxy at `probe` with the run's token (binding it to this container's address),
    then commit the workspace's state as the run's start."""
    res = _run(engine, container, _BEFORE, {"workspace": workspace, "run_id": run_id, "probe": probe,
                                            "hello": HELLO_PATH, "probe_timeout": probe_timeout}, user,
               {"CLAUDE_LAB_RUN_TOKEN": token} if token else None)
    if res.get("unreachable") or res.get("refused"):
        return Prepared(unreachable=res.get("unreachable"), refused=res.get("refused"))
    if res.get("git_error"):
        raise LabError(f"could not record the workspace's state before run {run_id} in {container}: "
                       f"{res['git_error']}")
    return Prepared(start_commit=res["start_commit"], baseline=bool(res.get("baseline")))


def finish(engine: "EngineFace", container: str, workspace: str, run_id: str, start_commit: str | None,
           user: str | None = None, max_diff: int = MAX_DIFF) -> Finished:
    """Stage everything, diff against the start commit, commit as the run's end."""
    res = _run(engine, container, _AFTER, {"workspace": workspace, "run_id": run_id, "start_commit": start_commit,
                                           "max_diff": max_diff}, user)
    diff = res.get("diff", "")
    if res.get("diff_cut"):
        diff += (f"\n[claude-lab: {res['diff_cut']} more characters of diff were cut; "
                 f"run `git diff {start_commit} {res.get('end_commit')}` in the workspace]\n")
    return Finished(diff=diff, changed_files=list(res.get("changed_files") or []),
                    end_commit=res.get("end_commit"), error=res.get("git_error"))
