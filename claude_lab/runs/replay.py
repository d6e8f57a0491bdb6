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
`model.wire.request_kind`) are matched *in order* within their conversation: a conversation is named by
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

Modules: `normalize` (the normalized form), `cassette` (matching and divergences), `snapshot` (the
workspace bundle); this one runs the replay.
"""
from __future__ import annotations

import threading
import uuid
from typing import TYPE_CHECKING, Any, Callable, Iterable

from ..containers.services import WORKSPACE
from ..errors import LabError, NotFound, ReplayDivergence
from ..model.endpoint import Endpoint
from .cassette import STOPPED_STATUSES, Cassette, Divergence
from .recorder import RunRecorder
from .results import RunEvent, RunResult
from .runner import Run, RunTarget
from .snapshot import restore_workspace
from .store import RunStore

if TYPE_CHECKING:
    from ..engine.face import EngineFace

def _argv_with_prompt(argv: list[str], prompt: str) -> list[str]:
    if "--" not in argv:
        raise LabError("the recorded command line has no prompt to replace")
    return argv[: argv.index("--") + 1] + [prompt]


def replay(store: RunStore, run_id: str, *, engine: "EngineFace", lab_name: str,
           make_agent: Callable[[str, dict[str, Any], str], RunTarget], remove_agent: Callable[[str], None],
           keep: bool = False, timeout: float | None = None, prompt: str | None = None,
           setup: Callable[[str], Any] | None = None, image: str | None = None, ignore: Iterable[str] = (),
           on_event: "Callable[[RunEvent], None] | None" = None) -> RunResult:
    """Run a recorded run again in a fresh agent (see `Lab.replay`). `make_agent(agent_id, limits, image)`
    creates that agent and returns where its run goes; `remove_agent(agent_id)` removes it after."""
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
    bundles = [bundle]
    seed_commit = (store.artifact(run_id, "workspace.seed") or b"").decode() or None
    if seed_commit:  # a seeded workspace: its base first, stored once for the lab
        seed = store.seed(rec["lab"] or lab_name, seed_commit)
        if seed is None:
            raise LabError(f"run {run_id} started from seed {seed_commit[:12]} of lab {rec['lab']}, which is not in "
                           f"the run store {store.path}; import the run's bundle again (it carries the seed)")
        bundles.insert(0, seed)
    branch = (store.artifact(run_id, "workspace.branch") or b"").decode() or None
    image_id = image or rec["image_id"]
    if not image_id or engine.image_id(image_id) is None:
        raise NotFound(f"the image run {run_id} used ({image_id or 'unknown'}) is not on this engine; load it "
                       f"(`docker load`), or pass lab.replay({run_id!r}, image=...) to use another")
    exchanges = store.exchanges(run_id) if rec["kind"] == "claude" else []
    if rec["kind"] == "claude" and not exchanges:
        raise LabError(f"run {run_id} has no recorded model exchanges (was it recorded with record=False?)")
    original_diff = rec["diff"] or ""
    shown_prompt = prompt if prompt is not None else rec["prompt"]

    agent_id = f"replay-{uuid.uuid4().hex[:10]}"
    target = make_agent(agent_id, rec["limits"] or {}, image_id)
    try:
        restore_workspace(engine, target.container, WORKSPACE, bundles, branch)
        if setup is not None:
            setup(agent_id)
        cassette: Cassette | None = None
        endpoint: Endpoint | None = None
        if rec["kind"] == "claude":
            cassette = Cassette(exchanges, rec["status"], ignore)
            endpoint = Endpoint(None, None, "replay")  # no upstream, no key: the cassette answers

        def diverged(res: RunResult) -> Divergence | None:
            if cassette is None:
                return None
            if cassette.divergence is not None or res.status in STOPPED_STATUSES:  # stopped by you or time
                return cassette.divergence
            return cassette.leftover()

        def judge(res: RunResult) -> None:
            res.replay_of = run_id
            res.reproduced = diverged(res) is None and res.diff == original_diff

        recorder = RunRecorder(store, lab_name, engine, rec["kind"], shown_prompt, dict(options, argv=argv),
                               endpoint=endpoint, replay_of=run_id, judge=judge)
        run = Run(target, rec["kind"], shown_prompt, argv,
                  timeout=timeout if timeout is not None else options.get("timeout"),
                  on_event=on_event, endpoint=endpoint, recorder=recorder,
                  respond=cassette.respond if cassette is not None else None)
        if cassette is not None:  # stop the run on the first divergence: nothing after it can match
            cassette.on_divergence = lambda _: threading.Thread(target=run.cancel, daemon=True).start()
        run.start()
        result = run.wait()
        divergence = diverged(result)
        if divergence is not None:
            raise ReplayDivergence(f"replay {result.run_id} of run {run_id} diverged: {divergence.describe()}",
                                   run_id=run_id, divergence=divergence, result=result)
        return result
    finally:
        if not keep:
            try:
                remove_agent(agent_id)
            except LabError:
                pass
