"""The async service: Claude Code (or a shell command) in an agent's container, awaited from an event loop.

    from claude_lab.service import claude_code_docker_service

    res = await claude_code_docker_service.execute_for_agent(
        agent_id="agent-001", command="add a /health endpoint", is_claude_command=True)
    res.success, res.output, res.exit_code, res.duration_s, res.run   # res.run is the RunResult

    async with claude_code_docker_service.stream_for_agent("agent-001", "fix the test") as stream:
        async for event in stream:        # typed events as the CLI prints them
            ...
    stream.result                         # the ExecutionResult

A front end over `Lab`, like the CLI: it makes no Docker calls of its own. Why it looks like this:

- Lab's calls block (docker-py is synchronous), so each runs in a worker thread of a bounded pool
  (`max_concurrency`, default 10); the event loop only awaits, so a web back end stays responsive.
- A missing agent is created on first use (a stopped one is started). One asyncio lock per agent
  keeps two concurrent calls from creating the same agent twice; the first creation on each of the
  lab's networks is also done one at a time, because `create_agent` makes that network and
  Docker's duplicate-name check is not atomic. An agent created meanwhile by another process
  (`AlreadyExists`) is simply used.
- Run-level failures (the CLI failed, timed out, the model was unreachable or refused the key, the
  engine went away mid-run) come back as data: `success=False` and `error`, as a caller serving
  many agents wants. Bad input (an invalid agent id, an empty prompt) still raises `LabError`.
- Cancelling the awaiting task stops the run inside the container (`Run.cancel()`: every process the
  run started is signalled) and waits for that before `CancelledError` propagates, so nothing of
  the run is left when the caller moves on.

`claude_code_docker_service` is a module-level instance whose `Lab` is made on first use (the
project in the working directory, settings from claude-lab.toml / CLAUDE_LAB_* as usual), so
importing this module touches neither the disk nor Docker.
"""
from __future__ import annotations

import asyncio
import functools
import threading
import time
import weakref
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterable, TypeVar

from . import naming as n
from .containers.execution import command_argv
from .errors import AlreadyExists, ConfigError, LabError, ModelError, NotFound
from .model.scripted import ScriptedModel
from .runs.claude_cli import claude_argv

if TYPE_CHECKING:
    from .lab import Lab
    from .runs.results import RunEvent, RunResult
    from .runs.runner import Run

__all__ = ["ClaudeCodeDockerService", "ExecutionResult", "AgentRunStream", "claude_code_docker_service"]

DEFAULT_MAX_CONCURRENCY = 10
CANCEL_GRACE = 60.0  # seconds a cancelled call waits for its run to be stopped and recorded

T = TypeVar("T")


@dataclass
class ExecutionResult:
    """What one `execute_for_agent` call did.

    `output` is Claude's final answer (or the shell command's output); `duration_s` is the whole
    call's wall time, agent creation included (`run.duration_s` is the run alone). `run` is None
    only when the run never started (for example the model endpoint could not be reached).
    """

    agent_id: str
    success: bool
    output: str
    exit_code: int | None
    duration_s: float
    run: "RunResult | None" = field(default=None, repr=False)
    error: str | None = None
    status: str = "error"  # the run's status: success, error, max_turns, timeout, cancelled
    created_agent: bool = False  # this call created the agent's container

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, the run included (events as the CLI printed them)."""
        return {
            "agent_id": self.agent_id, "success": self.success, "output": self.output,
            "exit_code": self.exit_code, "duration_s": self.duration_s, "error": self.error,
            "status": self.status, "created_agent": self.created_agent,
            "run": self.run.to_dict() if self.run is not None else None,
        }


class _Job:
    """The thread side of one call: its Run once started, and whether the caller gave up on it."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.cancelled = False
        self.run: "Run | None" = None

    def attach(self, run: "Run") -> None:
        with self.lock:
            self.run = run
            cancelled = self.cancelled
        if cancelled:  # cancelled while the run was being prepared
            run.cancel()

    def cancel(self) -> None:
        with self.lock:
            self.cancelled = True
            run = self.run
        if run is not None:
            run.cancel()  # blocks until the run's processes are gone (TERM, then KILL)


class _LoopState:
    """asyncio primitives belong to one event loop; a service used from several keeps one set per loop."""

    def __init__(self, max_concurrency: int):
        self.slots = asyncio.Semaphore(max_concurrency)
        self.agent_locks: dict[str, asyncio.Lock] = {}
        self.first_create = asyncio.Lock()
        self.networks_seen: set[str | None] = set()  # groups whose network this service has created agents on


class ClaudeCodeDockerService:
    """Run Claude Code or shell commands in agents' containers from asyncio; safe for many agents at once.

    `lab` is the Lab to use; without one, a `Lab(**lab_kwargs)` is made on first use. At most
    `max_concurrency` calls run at a time (each holds one worker thread while it runs); the rest wait.
    """

    def __init__(self, lab: "Lab | None" = None, *, max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
                 **lab_kwargs: Any):
        if lab is not None and lab_kwargs:
            raise ConfigError(f"give either a Lab or keywords for one, not both (got {sorted(lab_kwargs)})")
        if not isinstance(max_concurrency, int) or max_concurrency < 1:
            raise ConfigError(f"max_concurrency={max_concurrency!r}: give a positive number of concurrent runs")
        self.max_concurrency = max_concurrency
        self._lab = lab
        self._lab_kwargs = lab_kwargs
        self._lab_lock = threading.Lock()
        self._executor = ThreadPoolExecutor(max_workers=max_concurrency, thread_name_prefix="claude-lab-service")
        self._states: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopState]" = \
            weakref.WeakKeyDictionary()

    def __repr__(self) -> str:
        lab = self._lab.name if self._lab is not None else "not made yet"
        return f"<ClaudeCodeDockerService lab={lab} max_concurrency={self.max_concurrency}>"

    # -- plumbing ----------------------------------------------------------------------------
    @property
    def lab(self) -> "Lab":
        """The Lab, made on first use (reads the project's settings; blocking, so call it from a thread)."""
        with self._lab_lock:
            if self._lab is None:
                from .lab import Lab

                lab = Lab(**self._lab_kwargs)
                lab.engine  # connect now, in this worker thread, not lazily in ten at once
                self._lab = lab
            return self._lab

    def _state(self) -> _LoopState:
        loop = asyncio.get_running_loop()
        state = self._states.get(loop)
        if state is None:
            state = self._states[loop] = _LoopState(self.max_concurrency)
        return state

    async def _in_thread(self, fn: Callable[..., T], *args: Any, on_cancel: Callable[[], None] | None = None,
                         **kwargs: Any) -> T:
        """Run a blocking call in the pool. If the caller is cancelled, `on_cancel` runs (in another
        thread, the pool may be full) and the call is waited for before CancelledError goes on."""
        loop = asyncio.get_running_loop()
        fut = loop.run_in_executor(self._executor, functools.partial(fn, *args, **kwargs))
        try:
            return await asyncio.shield(fut)
        except asyncio.CancelledError:
            if on_cancel is not None:
                threading.Thread(target=_quietly(on_cancel), name="claude-lab-service-cancel", daemon=True).start()
            fut.add_done_callback(_consume)  # its outcome is nobody's now; do not log it as unretrieved
            await asyncio.wait({fut}, timeout=CANCEL_GRACE)
            raise

    # -- agents ------------------------------------------------------------------------------
    async def ensure_agent(self, agent_id: str, group: str | None = None) -> bool:
        """Make sure the agent exists and runs; True when this call created it.

        An agent that exists is used as it is (a stopped one is started; its group is not changed).
        """
        n.validate_agent_id(agent_id)
        if group is not None:
            n.validate_label(group, "group name")
        state = self._state()
        lock = state.agent_locks.setdefault(agent_id, asyncio.Lock())
        async with lock:
            if await self._in_thread(self._start_if_there, agent_id):
                return False
            if group in state.networks_seen:
                created = await self._in_thread(self._create, agent_id, group)
            else:
                async with state.first_create:
                    created = await self._in_thread(self._create, agent_id, group)
                state.networks_seen.add(group)
            return created

    def _start_if_there(self, agent_id: str) -> bool:
        lab = self.lab
        try:
            agent = lab.agent(agent_id)
        except NotFound:
            return False
        if not agent.info.running:
            lab.start(agent_id)
        return True

    def _create(self, agent_id: str, group: str | None) -> bool:
        try:
            self.lab.create_agent(agent_id, group=group, progress=False)
            return True
        except AlreadyExists:  # another process made it meanwhile: use theirs
            self._start_if_there(agent_id)
            return False

    # -- runs --------------------------------------------------------------------------------
    async def execute_for_agent(self, agent_id: str, command: str | Iterable[str], is_claude_command: bool = True,
                                *, group: str | None = None, timeout: float | None = None,
                                model: str | ScriptedModel | None = None, max_turns: int | None = None,
                                allowed_tools: str | Iterable[str] | None = None, permission_mode: str | None = None,
                                resume: str | None = None, record: bool | None = None) -> ExecutionResult:
        """Run Claude Code on the prompt `command` (or, with `is_claude_command=False`, the shell command)
        in the agent's workspace, creating the agent first if it is missing.

        `record` overrides the lab's `record_runs` setting for this run (None: the setting).
        Returns an `ExecutionResult` also when the run fails; raises `LabError` for bad input.
        """
        return await self._execute(agent_id, command, is_claude_command, group=group, timeout=timeout, model=model,
                                   max_turns=max_turns, allowed_tools=allowed_tools,
                                   permission_mode=permission_mode, resume=resume, record=record, on_event=None)

    def stream_for_agent(self, agent_id: str, command: str | Iterable[str], is_claude_command: bool = True,
                         *, group: str | None = None, timeout: float | None = None,
                         model: str | ScriptedModel | None = None, max_turns: int | None = None,
                         allowed_tools: str | Iterable[str] | None = None, permission_mode: str | None = None,
                         resume: str | None = None, record: bool | None = None) -> "AgentRunStream":
        """Like `execute_for_agent`, but iterate (`async for`) over the run's events as they come;
        `.result` is the ExecutionResult at the end. The run starts on the first iteration."""
        command = _validate(agent_id, command, is_claude_command, group, model, max_turns, allowed_tools,
                            permission_mode, resume)
        options = dict(group=group, timeout=timeout, model=model, max_turns=max_turns, allowed_tools=allowed_tools,
                       permission_mode=permission_mode, resume=resume, record=record)
        return AgentRunStream(self, agent_id, command, is_claude_command, options)

    async def _execute(self, agent_id: str, command: str | Iterable[str], is_claude_command: bool, *,
                       group: str | None, timeout: float | None, model: str | ScriptedModel | None,
                       max_turns: int | None, allowed_tools: str | Iterable[str] | None,
                       permission_mode: str | None, resume: str | None, record: bool | None,
                       on_event: "Callable[[RunEvent], None] | None") -> ExecutionResult:
        command = _validate(agent_id, command, is_claude_command, group, model, max_turns, allowed_tools,
                            permission_mode, resume)
        started = time.monotonic()
        state = self._state()
        async with state.slots:
            created = False
            try:
                created = await self.ensure_agent(agent_id, group)
                job = _Job()
                run_kwargs = dict(timeout=timeout, model=model, max_turns=max_turns, allowed_tools=allowed_tools,
                                  permission_mode=permission_mode, resume=resume, record=record)
                result = await self._in_thread(self._run, job, agent_id, command, is_claude_command, run_kwargs,
                                               on_event, on_cancel=job.cancel)
            except LabError as exc:  # the run failed or never started: data for the caller, not an exception
                run = exc.result if isinstance(exc, ModelError) else None
                return ExecutionResult(
                    agent_id=agent_id, success=False, output=run.result if run is not None else "",
                    exit_code=run.exit_code if run is not None else None,
                    duration_s=time.monotonic() - started, run=run, error=str(exc),
                    status=run.status if run is not None else "error", created_agent=created)
        return ExecutionResult(
            agent_id=agent_id, success=result.ok, output=result.result, exit_code=result.exit_code,
            duration_s=time.monotonic() - started, run=result, error=result.error, status=result.status,
            created_agent=created)

    def _run(self, job: _Job, agent_id: str, command: str | Iterable[str], is_claude_command: bool,
             run_kwargs: dict[str, Any], on_event: "Callable[[RunEvent], None] | None") -> "RunResult":
        lab = self.lab
        if job.cancelled:
            raise _Cancelled()
        record = run_kwargs.pop("record", None)
        extra = {} if record is None else {"record": record}  # passed only when set: the setting decides
        if is_claude_command:
            run = lab.claude_stream(agent_id, command, on_event=on_event,  # type: ignore[arg-type]
                                    **run_kwargs, **extra)
        else:
            run = lab.shell_stream(agent_id, command, timeout=run_kwargs["timeout"], on_event=on_event, **extra)
        job.attach(run)
        return run.wait()

    def close(self) -> None:
        """Let the worker threads go once their calls end (the service can not be used afterwards)."""
        self._executor.shutdown(wait=False, cancel_futures=True)


class _Cancelled(LabError):
    """The caller gave up before the run started (only ever seen by a cancelled call)."""


def _quietly(fn: Callable[[], None]) -> Callable[[], None]:
    def call() -> None:
        try:
            fn()
        except Exception:  # the container may be gone: then so is the run
            pass
    return call


def _consume(fut: "asyncio.Future[Any]") -> None:
    if not fut.cancelled():
        fut.exception()


def _validate(agent_id: str, command: str | Iterable[str], is_claude_command: bool, group: str | None,
              model: str | ScriptedModel | None, max_turns: int | None, allowed_tools: str | Iterable[str] | None,
              permission_mode: str | None, resume: str | None) -> str | list[str]:
    """Bad input raises here, before any thread or container is involved; returns the command (a list
    for an argv, so an iterator given as one is read only once)."""
    n.validate_agent_id(agent_id)
    if group is not None:
        n.validate_label(group, "group name")
    if is_claude_command:
        if not isinstance(command, str):
            raise LabError("a Claude command is the prompt, one string; for a command line use "
                           "is_claude_command=False")
        if model is not None and not isinstance(model, (str, ScriptedModel)):
            raise LabError(f"model={model!r}: give a model name ('sonnet', 'claude-...') or a ScriptedModel")
        claude_argv(command, max_turns=max_turns, model=model if isinstance(model, str) else None,
                    allowed_tools=allowed_tools, permission_mode=permission_mode, resume=resume)
        return command
    argv = command_argv(command)  # an empty command says so here
    if isinstance(command, str):
        return command
    return argv


_DONE = object()


class AgentRunStream:
    """An `async for` over one run's events; `.result` (ExecutionResult) once it ends.

    Leaving an `async with` block (or `aclose()`) before the end stops the run in the container;
    so does cancelling the task that iterates.
    """

    def __init__(self, service: ClaudeCodeDockerService, agent_id: str, command: str | Iterable[str],
                 is_claude_command: bool, options: dict[str, Any]):
        self.agent_id = agent_id
        self.result: ExecutionResult | None = None
        self._service, self._command, self._is_claude, self._options = service, command, is_claude_command, options
        self._queue: asyncio.Queue[Any] | None = None
        self._task: asyncio.Task[ExecutionResult] | None = None
        self._ended = False

    def _start(self) -> None:
        if self._task is not None:
            return
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()

        def on_event(event: "RunEvent") -> None:  # in the worker thread
            loop.call_soon_threadsafe(queue.put_nowait, event)

        self._queue = queue
        self._task = loop.create_task(self._service._execute(
            self.agent_id, self._command, self._is_claude, on_event=on_event, **self._options))
        self._task.add_done_callback(lambda _: queue.put_nowait(_DONE))

    def __aiter__(self) -> "AgentRunStream":
        return self

    async def __anext__(self) -> "RunEvent":
        self._start()
        assert self._queue is not None and self._task is not None
        if self._ended:
            raise StopAsyncIteration
        try:
            item = await self._queue.get()
        except asyncio.CancelledError:
            await self._stop()
            raise
        if item is _DONE:
            self._ended = True
            self.result = self._task.result()  # raises what the call raised (bad input)
            raise StopAsyncIteration
        return item

    async def _stop(self) -> None:
        task = self._task
        if task is None or task.done():
            return
        task.cancel()  # _execute stops the run in the container, then ends
        await asyncio.wait({task}, timeout=CANCEL_GRACE)
        if task.done() and not task.cancelled():
            task.exception()

    async def aclose(self) -> None:
        """Stop the run if it is still going."""
        await self._stop()

    async def __aenter__(self) -> "AgentRunStream":
        self._start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stop()

    def __repr__(self) -> str:
        state = "not started" if self._task is None else (self.result.status if self.result else "running")
        return f"<AgentRunStream {self.agent_id}: {state}>"


claude_code_docker_service = ClaudeCodeDockerService()
"""The default service: its Lab is the project in the working directory, made on first use."""
