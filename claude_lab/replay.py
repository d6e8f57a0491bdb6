"""Replaying a recorded run: the same CLI, the same workspace, the same prompt, answers from the cassette.

`lab.replay(run_id)` starts a fresh agent container from the image the run used (by image id),
restores the workspace as it was when the run started (from the git bundle stored with the run),
runs the same command line, and serves the CLI's model requests from the run's cassette through a
`ModelProxy` that has no upstream and no key. The result is a new, recorded run linked to the
original (`replay_of`), with `reproduced` True when its diff equals the recorded diff byte for byte.

Matching: which recorded exchange answers a request
---------------------------------------------------
Each request is reduced to its *normalized form* and compared with recorded ones reduced the same way.
The normalized form is:

- the method and the path with its query (`POST /v1/messages?beta=true`);
- the headers `anthropic-version` and `anthropic-beta` (the latter as a sorted set); no other header
  (user-agent, session ids, retry counts, content-length, host and keys all vary or do not matter);
- the JSON body, with:
  - the top-level `metadata` removed (its `user_id` carries a device id and the session id);
  - every `cache_control` removed, wherever it is (the CLI moves its cache breakpoints);
  - tool-use ids (`toolu_...`, `srvtoolu_...`) renamed `toolu#1`, `toolu#2`, ... in order of first
    appearance in that request;
  - in every string: claude-lab run ids (`20250101-120000-1a2b3c`) -> `<run-id>`; dates and ISO
    date-times, and dates with month names as `ls -l` and `date` print them (`Nov 27 00:23`,
    `Thu Nov 27 00:23:01`) -> `<date>`; clock times (`12:34:56`) -> `<time>`; durations (`0.42s`, `12 ms`)
    -> `<duration>`; UUIDs -> `<uuid>`; hexadecimal ids of 7 to 64 characters with at least one
    digit and one letter (git commits, hashes), and 7 to 40 hex digits starting a line before a space
    (a git log line's commit id, which can be all digits) -> `<hex>`; the rest of an `OS Version:`
    line -> `<os>`.
    (The CLI puts today's date, the host kernel and the workspace's git log with commit ids and run
    ids into its requests.) `lab.replay(..., ignore=[regex, ...])` masks more (`<ignored>`).

Everything else is compared exactly: the model, `max_tokens`, the system prompt, the tool
definitions, every message (the prompt, tool results, the assistant turns sent back).

Main-conversation requests (messages requests with a non-empty `tools` list, see
`proxy.request_kind`) are matched *in order* within their conversation: a conversation is named by
its normalized system prompt and first message, so the agent's own loop and each subagent's loop
are sequences of their own, which may interleave in any order. Each recorded main exchange answers
exactly one request; a request that differs from the next recorded one of its conversation, or
that starts a conversation the recording does not have, is a divergence. Retried requests replay
in order too (a recorded 529 then its successful retry). Side requests (titles, quota checks,
`count_tokens`, any other path) are matched *by content*, in any order; one the recording does
not have is a divergence, and one asked more often than recorded gets the last recorded answer again.

On a divergence the proxy answers that request with HTTP 400 (an `invalid_request_error` naming the
difference), the replay is stopped, and `lab.replay` raises `ReplayDivergence` naming the first
request that differed, where (a JSON path such as `body.messages[3].content[0].content`) and how
(recorded vs sent). A replay that ends with main exchanges of the recording left unused diverged
too (the CLI stopped earlier than the original did), unless the original was itself stopped
(timeout, cancelled).

The workspace snapshot
----------------------
When a recorded run ends, a git bundle of the workspace's history up to the run's start commit is
stored with it (`workspace.bundle`). Replay fetches it into the fresh workspace, checks out the
start commit's tree and moves HEAD to its parent, so that the replay's own "before run" commit
lands where the original's did (the CLI shows the recent git log in its first request). Files the
workspace's `.gitignore` ignores are not in the snapshot, and the agent's home directory (the
CLI's own state) starts fresh; runs that `resume` a session cannot be replayed (the session lives
in the original agent's home).
"""
from __future__ import annotations

import hashlib
import io
import json
import re
import tarfile
import threading
import uuid
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterable

from .engine import Engine
from .errors import LabError, NotFound, ReplayDivergence
from .proxy import Exchange, Reply, error_body, request_kind

if TYPE_CHECKING:
    from .lab import Lab
    from .runs import RunEvent, RunResult

__all__ = ["normalize", "normalized_request", "first_difference", "Cassette", "Divergence",
           "snapshot_workspace", "restore_workspace", "replay"]

REPLAY_KEY = "sk-ant-claude-lab-replay-no-key"  # what the CLI is given: the cassette needs no key
SNAPSHOT_REF = "refs/claude-lab/snapshot"
BUNDLE_PATH = "/tmp/claude-lab-start.bundle"
COMPARED_HEADERS = ("anthropic-version", "anthropic-beta")
STOPPED_STATUSES = ("timeout", "cancelled")

_MASKS = [  # order matters: run ids before dates, dates before clock times
    (re.compile(r"\b\d{8}-\d{6}-[0-9a-f]{6}\b"), "<run-id>"),
    (re.compile(r"\b\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?)?\b"), "<date>"),
    (re.compile(r"\b(?:(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun)[a-z]*,?\s+)?(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)"
                r"[a-z]*\.?\s+\d{1,2}(?:,?\s+\d{4})?(?:\s+\d{1,2}:\d{2}(?::\d{2})?)?\b"), "<date>"),  # ls -l, date
    (re.compile(r"\b\d{1,2}:\d{2}:\d{2}(?:\.\d+)?\b"), "<time>"),
    (re.compile(r"\b\d+(?:\.\d+)?\s?(?:ns|us|µs|ms|s|secs?|seconds)\b"), "<duration>"),
    (re.compile(r"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b"), "<uuid>"),
    (re.compile(r"\b(?=[0-9a-f]*[a-f])(?=[0-9a-f]*[0-9])[0-9a-f]{7,64}\b"), "<hex>"),
    (re.compile(r"(?m)^[0-9a-f]{7,40}(?= )"), "<hex>"),  # a git log line's commit id, even all digits
    (re.compile(r"(OS Version: )[^\n\"]*"), r"\1<os>"),
]
_TOOL_ID = re.compile(r"^(?:srv)?toolu_[A-Za-z0-9_-]+$")


# -- normalization ------------------------------------------------------------------------------

def _mask(text: str, extra: tuple[re.Pattern[str], ...] = ()) -> str:
    for pattern, repl in _MASKS:
        text = pattern.sub(repl, text)
    for pattern in extra:
        text = pattern.sub("<ignored>", text)
    return text


def normalize(body: Any, ignore: tuple[re.Pattern[str], ...] = ()) -> Any:
    """A request body with its volatile parts removed or masked (see the module docstring);
    `ignore` holds extra patterns whose matches are masked too."""
    ids: dict[str, str] = {}

    def walk(value: Any, top: bool = False) -> Any:
        if isinstance(value, dict):
            return {k: walk(v) for k, v in value.items()
                    if k != "cache_control" and not (top and k == "metadata")}
        if isinstance(value, list):
            return [walk(v) for v in value]
        if isinstance(value, str):
            if _TOOL_ID.match(value):
                return ids.setdefault(value, f"toolu#{len(ids) + 1}")
            return _mask(value, ignore)
        return value

    return walk(body, top=True)


def normalized_request(exchange: Exchange, ignore: tuple[re.Pattern[str], ...] = ()) -> dict[str, Any]:
    """What replay compares for one request: method, path, two headers, the normalized body."""
    headers: dict[str, Any] = {}
    for name in COMPARED_HEADERS:
        value = exchange.request_headers.get(name)
        if value is not None:
            headers[name] = sorted(p.strip() for p in value.split(",")) if name == "anthropic-beta" else value
    return {"method": exchange.method, "path": exchange.path, "headers": headers,
            "body": normalize(exchange.request_json(), ignore)}


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def conversation_key(norm: dict[str, Any]) -> str:
    """Which conversation a main request belongs to: its normalized system prompt and first message."""
    body = norm.get("body") if isinstance(norm.get("body"), dict) else {}
    messages = body.get("messages") or [None]
    return _digest([norm.get("path"), body.get("system"), messages[0]])


def first_difference(recorded: Any, actual: Any, path: str = "") -> tuple[str, Any, Any] | None:
    """The first place (a JSON path) where two normalized requests differ, with both values there."""
    if type(recorded) is not type(actual):
        return path or "(root)", recorded, actual
    if isinstance(recorded, dict):
        for key in list(recorded) + [k for k in actual if k not in recorded]:
            here = f"{path}.{key}" if path else str(key)
            if key not in actual:
                return here, recorded[key], "<missing>"
            if key not in recorded:
                return here, "<missing>", actual[key]
            found = first_difference(recorded[key], actual[key], here)
            if found:
                return found
        return None
    if isinstance(recorded, list):
        for i, (a, b) in enumerate(zip(recorded, actual)):
            found = first_difference(a, b, f"{path}[{i}]")
            if found:
                return found
        if len(recorded) != len(actual):
            i = min(len(recorded), len(actual))
            return (f"{path}[{i}]", recorded[i] if i < len(recorded) else "<missing>",
                    actual[i] if i < len(actual) else "<missing>")
        return None
    return None if recorded == actual else (path or "(root)", recorded, actual)


def _shown(value: Any, other: Any, width: int = 160) -> str:
    """A value for a message: long strings cut around where they start to differ from `other`."""
    if isinstance(value, str) and isinstance(other, str) and len(value) > width:
        at = next((i for i, (a, b) in enumerate(zip(value, other)) if a != b), min(len(value), len(other)))
        start = max(0, at - width // 3)
        piece = value[start:start + width]
        return repr(("…" if start else "") + piece + ("…" if start + width < len(value) else ""))
    text = json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else repr(value)
    return text if len(text) <= width else text[:width] + "…"


@dataclass
class Divergence:
    """Where a replay's requests left the recording."""

    request: int  # 1-based, among the replay's requests
    kind: str  # main | side | count_tokens | other
    method: str
    path: str
    reason: str  # "differs" | "not recorded" | "ended early" | "recording ends"
    recorded_request: int | None = None  # 1-based, among the recording's requests
    where: str | None = None
    recorded: Any = None
    actual: Any = None

    def describe(self) -> str:
        what = f"request {self.request} ({self.kind}: {self.method} {self.path})"
        if self.reason == "differs":
            return (f"{what} differs from recorded request {self.recorded_request} at {self.where}: recorded "
                    f"{_shown(self.recorded, self.actual)} but the replay sent {_shown(self.actual, self.recorded)}")
        if self.reason == "not recorded":
            near = ""
            if self.where:
                near = (f"; nearest recorded request {self.recorded_request} differs at {self.where}: recorded "
                        f"{_shown(self.recorded, self.actual)} but the replay sent {_shown(self.actual, self.recorded)}")
            return f"{what} is not in the recording{near}"
        if self.reason == "recording ends":
            return (f"{what} goes past the end of the recording (the original run was stopped at recorded "
                    f"request {self.recorded_request})")
        return (f"the replay ended after {self.request - 1} requests, but recorded request {self.recorded_request} "
                f"({self.kind}: {self.method} {self.path}) was never asked for")


# -- the cassette -------------------------------------------------------------------------------

@dataclass
class _Entry:
    number: int  # 1-based, among the recording's requests
    exchange: Exchange
    norm: dict[str, Any]


class Cassette:
    """Answers a replay's requests from a recorded run's exchanges (matching rules: module docstring)."""

    def __init__(self, exchanges: list[Exchange], original_status: str | None = None,
                 ignore: Iterable[str] = ()):
        self.original_status = original_status
        self.ignore = tuple(re.compile(p) for p in ignore)
        self._lock = threading.Lock()
        self._threads: dict[str, deque[_Entry]] = {}
        self._mains: list[_Entry] = []
        self._pool: dict[str, deque[_Entry]] = {}
        self._last: dict[str, _Entry] = {}
        self._requests = 0
        self.divergence: Divergence | None = None
        self.on_divergence: Callable[[Divergence], None] | None = None
        for number, ex in enumerate(sorted(exchanges, key=lambda e: e.seq), 1):
            entry = _Entry(number, ex, normalized_request(ex, self.ignore))
            if ex.kind == "main":
                self._threads.setdefault(conversation_key(entry.norm), deque()).append(entry)
                self._mains.append(entry)
            else:
                self._pool.setdefault(_digest(entry.norm), deque()).append(entry)

    @property
    def requests(self) -> int:
        """How many requests the replay has sent so far."""
        return self._requests

    def respond(self, exchange: Exchange) -> Reply:
        """The recorded reply for this request, or a 400 naming the divergence."""
        norm = normalized_request(exchange, self.ignore)
        kind = request_kind(exchange.method, exchange.path, norm["body"])
        with self._lock:
            self._requests += 1
            number = self._requests
            if self.divergence is not None:  # already off the recording: stop, do not guess
                return self._refuse(self.divergence)
            entry, divergence = self._match(norm, kind, number, exchange)
            if divergence is not None:
                self.divergence = divergence
        if divergence is not None:
            if self.on_divergence is not None:
                self.on_divergence(divergence)
            return self._refuse(divergence)
        assert entry is not None
        recorded = entry.exchange
        headers = {k: v for k, v in recorded.response_headers.items() if k not in ("content-length",)}
        return Reply(int(recorded.status or 502), headers, recorded.response_body)

    def _match(self, norm: dict[str, Any], kind: str, number: int, exchange: Exchange
               ) -> tuple[_Entry | None, Divergence | None]:
        def diverged(reason: str, near: _Entry | None) -> Divergence:
            where = recorded = actual = None
            if near is not None:
                found = first_difference(near.norm, norm)
                if found:
                    where, recorded, actual = found
            return Divergence(number, kind, exchange.method, exchange.path, reason,
                              near.number if near else None, where, recorded, actual)

        if kind == "main":
            queue = self._threads.get(conversation_key(norm))
            if queue is None:  # a conversation the recording does not have (another prompt, CLI, workspace)
                return None, diverged("not recorded", self._nearest_main())
            if not queue:  # this conversation's recorded requests are used up
                return None, diverged("not recorded", None)
            head = queue[0]
            if head.exchange.status is None:
                return None, Divergence(number, kind, exchange.method, exchange.path, "recording ends", head.number)
            if head.norm != norm:
                return None, diverged("differs", head)
            queue.popleft()
            return head, None
        key = _digest(norm)
        pool = self._pool.get(key)
        if pool:
            entry = pool.popleft()
            self._last[key] = entry
            return entry, None
        if key in self._last:
            return self._last[key], None
        return None, diverged("not recorded", None)

    def _nearest_main(self) -> _Entry | None:
        """The first recorded main request nobody asked for yet (to show how a stray one differs)."""
        for entry in self._mains:
            queue = self._threads.get(conversation_key(entry.norm))
            if queue and any(e is entry for e in queue):
                return entry
        return self._mains[0] if self._mains else None

    def _refuse(self, divergence: Divergence) -> Reply:
        body = error_body(400, "claude-lab replay: " + divergence.describe(), "invalid_request_error")
        return Reply(400, {"content-type": "application/json"}, body)

    def leftover(self) -> Divergence | None:
        """After the replay ended: the first recorded main request never asked for, as a divergence.

        None when every one was used, or when the original run was itself stopped (its recording
        ends wherever the stop caught it).
        """
        if self.original_status in STOPPED_STATUSES:
            return None
        with self._lock:
            unused = [e for q in self._threads.values() for e in q if e.exchange.status is not None]
        if not unused:
            return None
        first = min(unused, key=lambda e: e.number)
        ex = first.exchange
        return Divergence(self._requests + 1, ex.kind, ex.method, ex.path, "ended early", first.number)


# -- the workspace snapshot ---------------------------------------------------------------------

_SNAPSHOT = r'''
import fcntl, subprocess, sys
ws, start, ref = sys.argv[1], sys.argv[2], sys.argv[3]
lock = open("/tmp/.claude-lab-git.lock", "a")
fcntl.flock(lock, fcntl.LOCK_EX)
def git(*args, **kw):
    return subprocess.run(["git", "-c", "safe.directory=*", *args], cwd=ws, capture_output=True, **kw)
p = git("update-ref", ref, start)
if p.returncode != 0:
    sys.stderr.buffer.write(p.stderr); sys.exit(3)
try:
    p = git("bundle", "create", "-", ref)
finally:
    git("update-ref", "-d", ref)
if p.returncode != 0:
    sys.stderr.buffer.write(p.stderr); sys.exit(4)
sys.stdout.buffer.write(p.stdout)
'''

_RESTORE = r'''
import os, subprocess, sys
ws, bundle, ref = sys.argv[1], sys.argv[2], sys.argv[3]
def git(*args):
    p = subprocess.run(["git", "-c", "safe.directory=*", *args], cwd=ws, capture_output=True, text=True)
    if p.returncode != 0:
        sys.stderr.write("git " + " ".join(args[:2]) + ": " + (p.stderr or p.stdout)[-800:]); sys.exit(5)
    return p.stdout
if not os.path.isdir(os.path.join(ws, ".git")):
    git("init", "-q")
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


def snapshot_workspace(engine: Engine, container: str, workspace: str, start_commit: str) -> bytes:
    """A git bundle of the workspace's history up to `start_commit` (raises LabError when git cannot)."""
    exec_id, out, err = engine.exec_output(container, ["python3", "-c", _SNAPSHOT, workspace, start_commit,
                                                       SNAPSHOT_REF])
    code = engine.exec_exit_code(exec_id)
    if code != 0 or not out:
        raise LabError(f"could not bundle the workspace at {start_commit[:12]} in {container} (exit {code}): "
                       f"{err.decode('utf-8', 'replace').strip()[-500:]}")
    return out


def restore_workspace(engine: Engine, container: str, workspace: str, bundle: bytes) -> None:
    """Put a snapshot into an (empty) workspace: start commit's tree checked out, HEAD at its parent."""
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w") as tar:
        info = tarfile.TarInfo(BUNDLE_PATH.rsplit("/", 1)[1])
        info.size, info.mode = len(bundle), 0o644
        tar.addfile(info, io.BytesIO(bundle))
    engine.put_archive(container, BUNDLE_PATH.rsplit("/", 1)[0], data.getvalue())
    exec_id, out, err = engine.exec_output(container, ["python3", "-c", _RESTORE, workspace, BUNDLE_PATH,
                                                       SNAPSHOT_REF])
    code = engine.exec_exit_code(exec_id)
    engine.exec_output(container, ["rm", "-f", BUNDLE_PATH], user="root")  # put_archive made it root's
    if code != 0:
        raise LabError(f"could not restore the recorded workspace in {container} (exit {code}): "
                       f"{(err or out).decode('utf-8', 'replace').strip()[-800:]}")


# -- replay -------------------------------------------------------------------------------------

def _argv_with_prompt(argv: list[str], prompt: str) -> list[str]:
    if "--" not in argv:
        raise LabError("the recorded command line has no prompt to replace")
    return argv[: argv.index("--") + 1] + [prompt]


def replay(lab: "Lab", run_id: str, *, keep: bool = False, timeout: float | None = None,
           prompt: str | None = None, setup: Callable[[str], Any] | None = None, image: str | None = None,
           ignore: Iterable[str] = (), on_event: "Callable[[RunEvent], None] | None" = None) -> "RunResult":
    """Run a recorded run again in a fresh container; see `Lab.replay`."""
    from . import naming as n
    from .claude import Run
    from .endpoint import Endpoint, lab_gateway
    from .lab import WORKSPACE
    from .proxy import ModelProxy
    from .store import RunRecorder

    store = lab.run_store
    rec = store.record(run_id)
    if rec["status"] == "running":
        raise LabError(f"run {run_id} is still running (pid {rec['owner_pid']} on {rec['owner_host']}); "
                       f"replay it once it has ended")
    if rec["status"] == "interrupted":
        raise LabError(f"run {run_id} was interrupted (the process recording it died), so its recording is "
                       f"incomplete and cannot be replayed; replay a run that ended")
    if rec["kind"] not in ("claude", "shell"):
        raise LabError(f"run {run_id} is a {rec['kind']!r} run outside an agent's workspace; only claude and shell "
                       f"runs can be replayed")
    options = rec["options"] or {}
    if options.get("resume"):
        raise LabError(f"run {run_id} resumed session {options['resume']}, which lives in the original agent's home "
                       f"directory; runs that resume a session cannot be replayed")
    argv = list(options.get("argv") or [])
    if not argv:
        raise LabError(f"run {run_id} has no recorded command line (recorded by an older claude-lab?)")
    if prompt is not None:
        argv = _argv_with_prompt(argv, prompt) if rec["kind"] == "claude" else ["sh", "-c", prompt]
    bundle = store.artifact(run_id, "workspace.bundle")
    if bundle is None:
        why = store.artifact(run_id, "workspace.error")
        raise LabError(f"run {run_id} has no snapshot of its start workspace"
                       + (f" ({why.decode('utf-8', 'replace')})" if why else "")
                       + ", so it cannot be replayed")
    image_id = image or rec["image_id"]
    if not image_id or lab.engine.image_id(image_id) is None:
        raise NotFound(f"the image run {run_id} used ({image_id or 'unknown'}) is not on this engine; load it "
                       f"(`docker load`), or pass lab.replay({run_id!r}, image=...) to use another")
    limits = rec["limits"] or {}
    exchanges = store.exchanges(run_id) if rec["kind"] == "claude" else []
    if rec["kind"] == "claude" and not exchanges:
        raise LabError(f"run {run_id} has no recorded model exchanges (was it recorded with record=False?)")
    original_diff = rec["diff"] or ""
    shown_prompt = prompt if prompt is not None else rec["prompt"]

    agent_id = f"replay-{uuid.uuid4().hex[:10]}"
    cpus = limits.get("nano_cpus")
    lab.create_agent(agent_id, memory=limits.get("memory") or None, cpus=cpus / 1e9 if cpus else None,
                     pids=limits.get("pids") or None, image=image_id, progress=False)
    proxy: ModelProxy | None = None
    try:
        restore_workspace(lab.engine, n.container_name(lab.name, n.AGENT_ROLE, agent_id), WORKSPACE, bundle)
        if setup is not None:
            setup(agent_id)
        cassette: Cassette | None = None
        endpoint: Endpoint | None = None
        if rec["kind"] == "claude":
            cassette = Cassette(exchanges, rec["status"], ignore)
            proxy = ModelProxy(lab_gateway(lab), respond=cassette.respond, secrets=[REPLAY_KEY]).start()
            endpoint = Endpoint(None, REPLAY_KEY, "replay", "none")

        def diverged(res: "RunResult") -> Divergence | None:
            if cassette is None:
                return None
            if cassette.divergence is not None or res.status in STOPPED_STATUSES:  # stopped by you or time
                return cassette.divergence
            return cassette.leftover()

        def judge(res: "RunResult") -> None:
            res.replay_of = run_id
            res.reproduced = diverged(res) is None and res.diff == original_diff

        recorder = RunRecorder(store, lab, rec["kind"], shown_prompt, dict(options, argv=argv), endpoint=endpoint,
                               proxy=proxy, replay_of=run_id, judge=judge)
        holder: dict[str, Any] = {}
        if cassette is not None:
            def stop_run(_: Divergence) -> None:
                holder["diverged"] = True
                run = holder.get("run")
                if run is not None:
                    threading.Thread(target=run.cancel, daemon=True).start()
            cassette.on_divergence = stop_run
        try:
            run = Run(lab, agent_id, rec["kind"], shown_prompt, argv,
                      timeout=timeout if timeout is not None else options.get("timeout"),
                      on_event=on_event, endpoint=endpoint, recorder=recorder)
        except BaseException:
            recorder.close()
            raise
        holder["run"] = run
        if holder.get("diverged"):
            run.cancel()
        result = run.wait()
        divergence = diverged(result)
        if divergence is not None:
            raise ReplayDivergence(f"replay {result.run_id} of run {run_id} diverged: {divergence.describe()}",
                                   run_id=run_id, divergence=divergence, result=result)
        return result
    finally:
        if proxy is not None:
            proxy.stop()
        if not keep:
            try:
                lab.remove_agent(agent_id, volumes=True)
            except LabError:
                pass
