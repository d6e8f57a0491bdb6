"""Runs in an agent's workspace: the real Claude Code CLI (`lab.claude`) or a plain command (`lab.shell`).

A Claude run is the real CLI (`claude_cli.claude_argv` says how it is called and why) executed with
`docker exec` as the agent's own (non-root) user in /workspace, inside its workspace steps (one exec, see
`envelope`). The CLI talks to the lab's model proxy on the host (`model.gateway`), with a per-run token in
place of the API key: the key never enters the container.

Stopping: the exec carries a marker in its environment that every child inherits (the CLI, its
Bash tool's shells, what they start); timeout, `cancel()` and Ctrl-C signal every process in the
container that carries it (`ExecStream.cancel`), so nothing keeps running after a run ends.

Before the CLI starts, the envelope's "before" step calls the proxy with the run's token (binding the
token to the agent's address; an unreachable proxy fails in seconds instead of in the CLI's retry loop)
and records the workspace's start commit (see `workspace`). A 401 from the model
stops the run at the CLI's first retry and raises `AuthenticationError`. The run's end revokes the token.

Recording (the default; `record=False` or the `record_runs` setting turn it off): a `RunRecorder`
(see `recorder`) writes the run's record once the start commit is known and completes it at the end of
`_finalize`; the proxy hands it every model exchange, which lands in the run's cassette for
`lab.replay` (see `replay`). Unrecorded runs go through the same proxy; nothing is stored.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Callable, Iterator

from ..containers.execution import Bounded, ExecStream, OutputChunk
from ..containers.services import WORKSPACE
from ..errors import AuthenticationError, LabError, LabTimeout, ModelUnreachable
from ..model.gateway import open_grant
from ..netguard.sidecar import allow_endpoint
from .. import naming as n
from ..util.redaction import redact_text
from . import workspace
from .claude_cli import is_auth_failure
from .envelope import Envelope
from .events import AssistantMessage, Message, ResultMessage, SystemMessage, parse_line
from .ids import new_run_id
from .results import RunEvent, RunResult, tool_calls_from

if TYPE_CHECKING:
    from ..engine.face import EngineFace
    from ..engine.types import ContainerInfo
    from ..model.endpoint import Endpoint
    from ..model.exchange import Responder
    from ..model.grants import Grant
    from .recorder import RunRecorder

MAX_SHELL_OUTPUT = 32 * 1024 * 1024
_STDERR_KEEP = 64 * 1024

EventCallback = Callable[[RunEvent], None]


def _no_resources(container: str, since: datetime) -> "dict[str, Any] | None":
    return None


@dataclass(frozen=True)
class RunTarget:
    """Where a run happens, as the facade found it: the agent's running container on the lab's engine.
    `resources(container, since)` gives the run's resource summary when a stats sampler runs; `peers` are
    the agent's addresses when the engine knows them (the model proxy accepts the run's token only from
    there); `env` the lab's secrets for this agent (they enter it), `secrets` every value never to store."""

    engine: "EngineFace"
    lab: str
    agent_id: str
    container: str
    info: "ContainerInfo"
    resources: Callable[[str, datetime], "dict[str, Any] | None"] = _no_resources
    peers: frozenset[str] | None = None
    env: dict[str, str] = field(default_factory=dict)
    secrets: tuple[str, ...] = ()


class Run:
    """A run in progress. Iterate it for events as they arrive; `.result` is the `RunResult` at the end.

    `cancel()` (from any thread) stops it inside the container. Used as a context manager, leaving
    the block stops a run that is still going::

        with lab.claude_stream("agent-001", "fix the failing test") as run:
            for event in run:
                print(event)
        run.result.diff
    """

    def __init__(self, target: RunTarget, kind: str, prompt: str, argv: list[str], *,
                 timeout: float | None = None, on_event: EventCallback | None = None,
                 endpoint: "Endpoint | None" = None, recorder: "RunRecorder | None" = None,
                 respond: "Responder | None" = None):
        self.target = target
        self.agent_id, self.kind, self.prompt, self.argv = target.agent_id, kind, prompt, argv
        self.container = target.container
        self.run_id = new_run_id()
        self.timeout = timeout
        self.endpoint = endpoint
        self.start_commit: str | None = None
        self.snapshot: dict[str, Any] | None = None  # the start state the "after" step bundled, for the recorder
        self.result: RunResult | None = None
        self.events: list[RunEvent] = []
        self._on_event = on_event
        self._secrets: list[str] = [s for s in (endpoint.key if endpoint else None, *target.secrets,
                                                *target.env.values()) if s]
        self._respond = respond  # replay: the cassette answers the model's requests
        self.grant: "Grant | None" = None
        self._started = time.monotonic()
        self._started_at = datetime.now(timezone.utc)
        self._cancel_requested = False
        self._auth_failure: str | None = None
        self._stderr = ""
        self._output = Bounded(MAX_SHELL_OUTPUT)
        self._gen: Iterator[RunEvent] | None = None
        self._iterating = False
        self._envelope: Envelope | None = None  # the run's one exec, once started
        self._recorder = recorder  # run store: the record, and the proxy the CLI's model traffic goes through

    def start(self) -> "Run":
        """Start the run in the container: a grant on the lab's model proxy (a Claude run), the firewall opened
        to the proxy, the token bound from inside the agent, the workspace's start state committed, the run's
        start recorded; then the command. Returns the run."""
        t, endpoint, recorder = self.target, self.endpoint, self._recorder
        if self.kind == "claude" and endpoint is not None:
            self.grant = open_grant(t.engine, t.lab, self.run_id, t.agent_id, endpoint, expected_peers=t.peers,
                                    secrets=self._secrets, respond=self._respond,
                                    on_exchange=recorder.exchange if recorder is not None else None)
            self._secrets.append(self.grant.token)
        try:
            self._open()
            if recorder is not None:
                try:
                    recorder.begin(self, t.info)  # the "running" record, as the command starts
                except BaseException as exc:
                    self._stop()
                    recorder.fail(str(exc) or type(exc).__name__)
                    raise
        except BaseException:
            if self.grant is not None:
                self.grant.revoke()
            raise
        if self._cancel_requested:
            self._stream.cancel()
        return self

    def _open(self) -> None:
        """The run's one exec (`envelope`): the "before" step, then the command. Returns once the workspace's
        start commit is known; raises (and the command never starts) when the proxy cannot be reached or
        refuses the token, or git fails."""
        t = self.target
        url = self.grant.url if self.grant else None
        env = {**t.env, **(self.grant.env() if self.grant else {})} or None
        base = t.info.labels.get(n.BASE) if t.info is not None else None
        args = workspace.step_args(WORKSPACE, self.run_id, probe=url,
                                   token_env=self.grant.token_var if self.grant else None,
                                   snapshot=([base] if base else []) if self._recorder is not None else None)
        # The agent's netguard lets it reach the proxy (an address on the host); the rest of the host stays out.
        # The rule is remembered per sidecar; a sidecar that restarted since lost it, which the probe tells.
        added = allow_endpoint(t.engine, t.lab, t.agent_id, url)
        envelope, prepared = self._begin(args, env)
        if prepared.unreachable and url and not added:  # the remembered rule may be gone with a restarted firewall
            allow_endpoint(t.engine, t.lab, t.agent_id, url, again=True)
            envelope, prepared = self._begin(args, env)
        if prepared.unreachable:
            raise self._unreachable(prepared.unreachable, url or "")
        if prepared.refused:
            raise LabError(f"claude-lab's model proxy {url} refused run {self.run_id}'s token from "
                           f"{t.agent_id}: {prepared.refused}")
        self.start_commit = prepared.start_commit
        self._envelope = envelope

    @property
    def _stream(self) -> ExecStream | None:
        return self._envelope.stream if self._envelope is not None else None

    def _begin(self, args: dict, env: dict[str, str] | None) -> "tuple[Envelope, workspace.Prepared]":
        """Start the envelope and read its "before" report (to the end when the command is not to start)."""
        t = self.target
        envelope = Envelope(t.engine, t.container, t.agent_id, self.argv, args, workdir=WORKSPACE, env=env,
                            timeout=self.timeout, max_output=64 * 1024)
        try:
            prepared = workspace.prepared(envelope.begin(), self.run_id, t.container)
        except BaseException:
            envelope.stream.cancel()
            raise
        if prepared.start_commit is None:
            envelope.drain()
        return envelope, prepared

    def _unreachable(self, why: str, proxy_url: str) -> ModelUnreachable:
        endpoint = self.endpoint
        behind = "replaying a recording" if endpoint is None or endpoint.source == "replay" else \
            f"in front of {endpoint.url}"
        return ModelUnreachable(
            f"claude-lab's model proxy {proxy_url} ({behind}) cannot be reached from {self.agent_id}: {why}. "
            f"A firewall on this machine may block the lab network (the agent reaches this host on the lab "
            f"network's gateway); `claude-lab doctor` checks it")

    # -- control ----------------------------------------------------------------------------
    def cancel(self) -> None:
        """Stop the run inside the container; iteration then ends and `.result.status` is "cancelled"."""
        self._cancel_requested = True
        if self._stream is not None:
            self._stream.cancel()

    @property
    def done(self) -> bool:
        return self.result is not None

    def __iter__(self) -> Iterator[RunEvent]:
        if self._gen is None:
            self._gen = self._iterate()
        return self._gen

    def wait(self) -> RunResult:
        """Run to the end and return the result; Ctrl-C stops the run and returns it as cancelled."""
        try:
            for _ in self:
                pass
        except KeyboardInterrupt:
            self.close()
        assert self.result is not None
        return self.result

    def close(self) -> None:
        """Stop the run if it is still going and record its result (status "cancelled")."""
        if self.result is not None:
            return
        if self._gen is not None and self._iterating:
            self._gen.close()
        if self.result is None:  # never iterated, or interrupted between events
            self._stop()
            self._finalize("cancelled")

    def __enter__(self) -> "Run":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = self.result.status if self.result else "running"
        return f"<Run {self.run_id} {self.kind} in {self.agent_id}: {state}, {len(self.events)} events>"

    # -- the stream --------------------------------------------------------------------------
    def _redact(self, text: str) -> str:
        return redact_text(text, self._secrets)

    def _emit(self, event: RunEvent) -> None:
        self.events.append(event)
        if self.kind == "claude" and self._auth_failure is None and is_auth_failure(event):  # type: ignore[arg-type]
            self._auth_failure = self._auth_message(event)  # type: ignore[arg-type]
            self._stop()  # a bad key does not get better with the CLI's retries
        if self._on_event is not None:
            self._on_event(event)

    def _auth_message(self, event: Message) -> str:
        detail = ""
        if isinstance(event, (AssistantMessage, ResultMessage)):
            detail = event.text if isinstance(event, AssistantMessage) else (event.result or "")
        where = self.endpoint.url if self.endpoint else "the model endpoint"
        source = f" (from {self.endpoint.key_source})" if self.endpoint else ""
        return (f"{where} rejected the API key{source} with HTTP 401"
                + (f": {detail}" if detail else "")
                + ". Check ANTHROPIC_API_KEY / api_key_file / api_key_command")

    def _lines(self) -> Iterator[RunEvent]:
        assert self._envelope is not None
        pending = ""
        for chunk in self._envelope:
            if self.kind == "shell":
                yield replace(chunk, text=self._redact(chunk.text)) if self._secrets else chunk
                continue
            if chunk.stream == "stderr":
                self._stderr = (self._stderr + self._redact(chunk.text))[-_STDERR_KEEP:]
                continue
            pending += chunk.text
            while "\n" in pending:
                line, pending = pending.split("\n", 1)
                event = parse_line(self._redact(line), time.time())
                if event is not None:
                    yield event
        event = parse_line(self._redact(pending), time.time()) if pending else None
        if event is not None:
            yield event

    def _iterate(self) -> Iterator[RunEvent]:
        self._iterating = True
        status: str | None = None
        interrupted = False
        try:
            for event in self._lines():
                if isinstance(event, OutputChunk):
                    self._output.add(event.text)
                self._emit(event)
                yield event
        except LabTimeout:
            status = "timeout"
        except KeyboardInterrupt:
            self._stop()
            status, interrupted = "cancelled", True
        except BaseException:  # GeneratorExit (closed early), a failing on_event, a lost engine
            self._stop()
            self._finalize("cancelled")
            raise
        finally:
            self._iterating = False
        self._finalize(status)
        if interrupted:
            raise KeyboardInterrupt
        if self._auth_failure:
            raise AuthenticationError(self._auth_failure, result=self.result)

    def _stop(self) -> None:
        if self._stream is not None:
            try:
                self._stream.cancel()
            except Exception:  # the container may be gone: then so is the process
                pass

    # -- the result --------------------------------------------------------------------------
    def _finalize(self, override: str | None) -> None:
        if self.result is not None:
            return
        if self.grant is not None:
            self.grant.revoke()  # the run is over: its token is refused from now on
        stream = self._stream
        exec_result = stream.result if stream else None
        exit_code = exec_result.exit_code if exec_result else None
        if exit_code is None and stream is not None:
            try:
                exit_code = self.target.engine.exec_exit_code(stream.exec_id)
            except LabError:
                pass
        result_msg = next((e for e in reversed(self.events) if isinstance(e, ResultMessage)), None)
        init = next((e for e in self.events if isinstance(e, SystemMessage) and e.subtype == "init"), None)
        cancelled = self._cancel_requested or bool(exec_result and exec_result.cancelled)

        if override:
            status = override
        elif self._auth_failure:
            status = "error"
        elif cancelled:
            status = "cancelled"
        elif self.kind == "claude":
            if result_msg is None:
                status = "error"
            elif result_msg.subtype == "error_max_turns":
                status = "max_turns"
            else:
                status = "error" if result_msg.is_error else "success"
        else:
            status = "success" if exit_code == 0 else "error"

        finished: workspace.Finished | None = None
        git_problem = None
        after = self._envelope.after if self._envelope is not None else None
        if self.start_commit and after is not None:
            finished = workspace.finished(after, self.start_commit)
            git_problem, self.snapshot = finished.error, workspace.snapshot_of(after)
        elif self.start_commit:  # stopped before its "after" step: that step alone
            try:
                finished = workspace.finish(self.target.engine, self.container, WORKSPACE, self.run_id,
                                            self.start_commit)
                git_problem = finished.error
            except LabError as exc:
                git_problem = str(exc)

        res = RunResult(
            run_id=self.run_id, agent_id=self.agent_id, kind=self.kind, status=status, prompt=self.prompt,
            events=self.events, tool_calls=tool_calls_from(self.events) if self.kind == "claude" else [],
            duration_s=time.monotonic() - self._started, exit_code=exit_code,
            start_commit=self.start_commit, end_commit=finished.end_commit if finished else None,
            diff=self._redact(finished.diff) if finished else "",
            changed_files=finished.changed_files if finished else [],
            stderr=self._stderr, started_at=self._started_at,
        )
        try:  # None unless a stats sampler runs; a summary must never fail the run it describes
            res.resources = self.target.resources(self.container, self._started_at)
        except Exception:  # noqa: BLE001
            res.resources = None
        if self.kind == "claude":
            self._fill_claude(res, result_msg, init)
        else:
            res.result = self._output.value("output")
        res.error = self._error_text(res, result_msg, git_problem)
        self.result = res
        if self._recorder is not None:  # keep last: it stores the result as every step above left it
            self._recorder.finish(self)

    def _fill_claude(self, res: RunResult, result_msg: ResultMessage | None, init: SystemMessage | None) -> None:
        assistants = [e for e in self.events if isinstance(e, AssistantMessage) and e.parent_tool_use_id is None]
        last_text = next((e.text for e in reversed(assistants) if e.text), "")
        if result_msg is not None:
            res.result = result_msg.result or last_text  # error_max_turns carries no result text
            res.num_turns = result_msg.num_turns
            usage = result_msg.usage or {}
            res.cost_usd = result_msg.total_cost_usd
            note = self._cost_note()
            if note is not None:  # no price: the CLI's figure (made-up tokens x a list price) stays in the event
                res.cost_usd, res.cost_note = None, note
            res.session_id = result_msg.session_id or None
        else:  # stopped before the end: count what came
            res.result = last_text
            res.num_turns = len({e.message_id for e in assistants if e.message_id})
            usage = {}
            per_message: dict[str, dict] = {}
            for e in assistants:
                if e.message_id and e.usage:
                    per_message[e.message_id] = e.usage
            for u in per_message.values():
                for k in ("input_tokens", "output_tokens", "cache_read_input_tokens", "cache_creation_input_tokens"):
                    usage[k] = usage.get(k, 0) + int(u.get(k) or 0)
        res.input_tokens = int(usage.get("input_tokens") or 0)
        res.output_tokens = int(usage.get("output_tokens") or 0)
        res.cache_read_tokens = int(usage.get("cache_read_input_tokens") or 0)
        res.cache_creation_tokens = int(usage.get("cache_creation_input_tokens") or 0)
        if res.session_id is None:
            res.session_id = next((getattr(e, "session_id", None) for e in self.events
                                   if getattr(e, "session_id", None)), None) or (
                init.data.get("session_id") if init else None)
        res.model = (init.data.get("model") if init else None) or next((e.model for e in assistants if e.model), None)

    def _cost_note(self) -> str | None:
        endpoint = self.endpoint
        if endpoint is None:
            return None
        if endpoint.source == "replay":
            return "replay"
        if endpoint.scripted is not None and not endpoint.scripted.priced:
            return "scripted"
        return None

    def _error_text(self, res: RunResult, result_msg: ResultMessage | None, git_problem: str | None) -> str | None:
        parts: list[str] = []
        if res.status == "timeout":
            parts.append(f"did not finish within {self.timeout}s; stopped inside the container")
        elif res.status == "cancelled":
            parts.append("cancelled; stopped inside the container")
        elif res.status in ("error", "max_turns"):
            if self._auth_failure:
                parts.append(self._auth_failure)
            elif result_msg is not None and result_msg.errors:
                parts.append("; ".join(str(e) for e in result_msg.errors))
            elif result_msg is not None and result_msg.is_error and result_msg.result:
                parts.append(result_msg.result)
            elif res.kind == "shell":
                parts.append(f"exited {res.exit_code}")
            else:
                tail = self._stderr.strip()[-1500:]
                parts.append(f"claude exited {res.exit_code} without a result"
                             + (f": {tail}" if tail else ""))
        if git_problem:
            parts.append(f"workspace git: {git_problem}")
        return "; ".join(parts) or None
