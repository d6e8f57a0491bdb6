"""Recording a run in the store: its record at the start, its model exchanges as they happen (the lab's model
proxy hands them over), everything it ended with at the end; and `record_exec` for any container."""
from __future__ import annotations

import dataclasses
import json
import threading
import time
import warnings
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Callable, Protocol
from urllib.parse import urlsplit

from .. import naming as n
from ..containers.execution import ExecStream, drain
from ..containers.services import WORKSPACE
from ..errors import LabError
from ..model.exchange import Exchange
from ..util.redaction import redact_text
from .heartbeat import HEARTBEAT
from .ids import new_run_id
from .results import RunEvent, RunResult, event_dict
from .snapshot import snapshot_workspace, workspace_branch
from .store import RunStore

if TYPE_CHECKING:
    from ..engine.face import EngineFace
    from ..engine.types import ContainerInfo
    from ..model.endpoint import Endpoint




class RecordedRun(Protocol):
    """What the recorder reads of a run (`runner.Run` is one)."""

    run_id: str
    agent_id: str
    start_commit: str | None
    container: str
    result: RunResult | None
    snapshot: "dict[str, Any] | None"  # {"branch", "bundle"} when the run's own "after" step made it


def endpoint_address(url: str | None) -> str | None:
    """scheme://host[:port] only: a URL's user info, path and query may hold credentials."""
    if not url:
        return None
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or ''}" + (f":{parts.port}" if parts.port else "")


def limits_of(info: "ContainerInfo") -> dict[str, Any]:
    return {"memory": info.memory, "nano_cpus": info.nano_cpus, "pids": info.pids_limit}


def transcript(events: list[RunEvent]) -> tuple[bytes, bytes]:
    lines = [json.dumps(event_dict(e), ensure_ascii=False, default=str) + "\n" for e in events]
    times = [getattr(e, "received_at", None) for e in events]
    return "".join(lines).encode("utf-8"), json.dumps(times).encode()


def result_fields(res: RunResult) -> dict[str, Any]:
    fields = {name: getattr(res, name) for name in (
        "status", "start_commit", "end_commit", "diff", "changed_files", "exit_code", "num_turns", "input_tokens",
        "output_tokens", "cache_read_tokens", "cache_creation_tokens", "cost_usd", "duration_s", "result",
        "error", "session_id", "model", "resources")}
    for name in ("replay_of", "reproduced"):
        if getattr(res, name) is not None:
            fields[name] = getattr(res, name)
    return fields


class RunRecorder:
    """What one run writes to the store. `Run` calls `begin` once the workspace's start commit is known and
    before the command starts, and `finish` at the very end; `judge` (replays) may set fields of the result first."""

    def __init__(self, store: RunStore, lab_name: str, engine: "EngineFace", kind: str, prompt: str,
                 options: dict[str, Any], *, endpoint: "Endpoint | None" = None,
                 replay_of: str | None = None, judge: Callable[[RunResult], None] | None = None):
        self.store, self.lab_name, self.engine, self.kind, self.prompt = store, lab_name, engine, kind, prompt
        self.options = options
        self.endpoint = endpoint
        self.replay_of, self.judge = replay_of, judge
        self.run_id: str | None = None
        self.info: "ContainerInfo | None" = None
        self._lock = threading.Lock()
        self._pending: list[Exchange] = []
        self._finished = False

    def begin(self, run: RecordedRun, info: "ContainerInfo") -> None:
        endpoint = self.endpoint
        self.store.start_run({
            "run_id": run.run_id, "lab": self.lab_name, "agent_id": run.agent_id, "kind": self.kind,
            "prompt": self.prompt, "options": self.options, "model": self.options.get("model"),
            "endpoint_kind": endpoint.source if endpoint else None,
            "endpoint": endpoint_address(endpoint.base_url or endpoint.url)
            if endpoint and endpoint.source != "replay" else None,
            "image": info.image, "image_id": info.image_id, "limits": limits_of(info),
            "start_commit": run.start_commit, "replay_of": self.replay_of,
        })
        self.info = info
        with self._lock:
            self.run_id, pending, self._pending = run.run_id, self._pending, []
        for exchange in pending:
            self._store_exchange(exchange)
        HEARTBEAT.add(self.store, run.run_id)

    def exchange(self, exchange: Exchange) -> None:
        with self._lock:
            if self.run_id is None:
                self._pending.append(exchange)
                return
        self._store_exchange(exchange)

    def _store_exchange(self, exchange: Exchange) -> None:
        try:
            self.store.add_exchange(self.run_id or "", exchange)
        except Exception as exc:  # noqa: BLE001 - the run goes on; say what the cassette misses
            warnings.warn(f"run {self.run_id}: exchange {exchange.seq} could not be stored: {exc}", stacklevel=2)

    def _snapshot(self, container: str, start_commit: str, made: "dict[str, Any] | None") -> dict[str, bytes]:
        """The workspace up to the run's start commit, for replay. A seeded workspace's base (the project's
        history) is stored once per lab and commit; the run keeps only what came after it. `made`: the bundle
        and branch the run's "after" step already made (else two execs make them here)."""
        out: dict[str, bytes] = {}
        branch = made["branch"] if made else workspace_branch(self.engine, container, WORKSPACE)
        if branch:
            out["workspace.branch"] = branch.encode()
        base = self.info.labels.get(n.BASE) if self.info is not None else None
        if base:
            if not self.store.has_seed(self.lab_name, base):
                self.store.put_seed(self.lab_name, base, snapshot_workspace(self.engine, container, WORKSPACE, base))
            out["workspace.seed"] = base.encode()
        out["workspace.bundle"] = made["bundle"] if made else \
            snapshot_workspace(self.engine, container, WORKSPACE, start_commit, exclude=base)
        return out

    def fail(self, error: str) -> None:
        """The command never started: close the record as an error."""
        if self.run_id is not None and not self._finished:
            self._finished = True
            try:
                self.store.complete_run(self.run_id, {"status": "error", "error": error})
            finally:
                HEARTBEAT.remove(self.store, self.run_id)

    def finish(self, run: RecordedRun) -> None:
        """Store the run's result, transcript and workspace snapshot; never raises (warns instead)."""
        if self._finished:
            return
        self._finished = True
        res = run.result
        try:
            if res is not None and self.judge is not None:
                self.judge(res)
            if self.run_id is None or res is None:
                return
            events, times = transcript(res.events)
            artifacts = {"transcript.jsonl": events, "event_times.json": times}
            if res.stderr:
                artifacts["stderr.txt"] = res.stderr.encode("utf-8")
            if res.start_commit:
                try:
                    artifacts.update(self._snapshot(run.container, res.start_commit, run.snapshot))
                except LabError as exc:
                    artifacts["workspace.error"] = str(exc).encode("utf-8")
            fields = result_fields(res)
            init = next((e for e in res.events if getattr(e, "subtype", None) == "init"), None)
            if init is not None:
                fields["claude_code_version"] = init.data.get("claude_code_version")  # type: ignore[attr-defined]
            self.store.complete_run(self.run_id, fields, artifacts)
        except Exception as exc:  # noqa: BLE001 - the caller still gets the result; the store says what it has
            warnings.warn(f"run {self.run_id} could not be completed in the run store {self.store.path}: {exc}",
                          stacklevel=2)
        finally:
            if self.run_id is not None:
                HEARTBEAT.remove(self.store, self.run_id)


def recorder_for(store: RunStore, engine: "EngineFace", lab_name: str, kind: str, prompt: str,
                 options: dict[str, Any], endpoint: "Endpoint | None") -> RunRecorder:
    """The recorder of a new run (its model exchanges come from the lab's proxy, see `Run.start`)."""
    return RunRecorder(store, lab_name, engine, kind, prompt, options, endpoint=endpoint)


def record_exec(store: RunStore, lab_name: str, target: str, info: "ContainerInfo", argv: list[str], shown: str,
                options: dict[str, Any], start: Callable[[], ExecStream],
                on_event: Callable[[RunEvent], None] | None = None, secrets: list[str] | None = None) -> RunResult:
    """Run a command (`start()` starts its stream) in any container as a recorded run of kind "exec".

    No workspace commits are made (the dev container's folder is your project): the record holds the
    command, its output, exit code, status and times.
    """
    run_id = new_run_id()
    started_at, started = datetime.now(timezone.utc), time.monotonic()
    store.start_run({"run_id": run_id, "lab": lab_name, "agent_id": target, "kind": "exec", "prompt": shown,
                     "options": {"argv": argv, **options}, "image": info.image, "image_id": info.image_id,
                     "limits": limits_of(info)})
    HEARTBEAT.add(store, run_id)
    events: list[RunEvent] = []
    stream = None
    try:
        stream = start()

        def keep(chunk: Any) -> None:
            events.append(dataclasses.replace(chunk, text=redact_text(chunk.text, secrets)) if secrets else chunk)
            if on_event is not None:
                on_event(chunk)

        drained = drain(stream, keep)
        status, exit_code, result = drained.status, drained.exit_code, drained.result
        timeout = options.get("timeout")
        res = RunResult(run_id=run_id, agent_id=target, kind="exec", status=status, prompt=shown,
                        result="".join(c.text for c in events), events=list(events),
                        duration_s=time.monotonic() - started, exit_code=exit_code,
                        stderr=redact_text(result.stderr, secrets or []) if result else "", started_at=started_at,
                        error={"timeout": f"did not finish within {timeout}s; stopped inside the container",
                               "cancelled": "cancelled; stopped inside the container",
                               "error": f"exited {exit_code}"}.get(status))
        events_data, times = transcript(res.events)
        store.complete_run(run_id, result_fields(res), {"transcript.jsonl": events_data, "event_times.json": times})
    except BaseException as exc:
        if stream is not None and stream.result is None:
            stream.cancel()
        store.complete_run(run_id, {"status": "error", "error": str(exc) or type(exc).__name__,
                                    "duration_s": time.monotonic() - started})
        raise
    finally:
        HEARTBEAT.remove(store, run_id)
    return res
