"""The facade's runs: Claude Code and shell runs in agents' workspaces, the run store, export and import,
replay, and recorded commands in any container. Part of `Lab` (a mixin: the facade in rooms), wiring
`runs/` to the lab's engine, agents and settings."""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable


from . import naming as n
from .containers.execution import ExecStream, command_argv
from .errors import LabError
from .model import endpoint as endpoints
from .model.scripted import ScriptedModel
from .netguard import sidecar as guard
from .runs.claude_cli import claude_argv
from .util.lazy import lazy

pd = lazy("pandas")  # loaded when a DataFrame is made (the CLI starts without it)
# the runner, the recorder, replay and the run store load with the first run: `claude-lab exec` starts without them
runs_runner = lazy("claude_lab.runs.runner")
recording = lazy("claude_lab.runs.recorder")
replaying = lazy("claude_lab.runs.replay")
runs_store = lazy("claude_lab.runs.store")
bundles = lazy("claude_lab.runs.bundles")

if TYPE_CHECKING:
    from datetime import datetime

    from .agents import Agent
    from .config import LabConfig
    from .engine.face import EngineFace
    from .engine.types import ContainerInfo
    from .errors import NotFound, NotRunning
    from .runs.results import RunEvent, RunResult
    from .runs.runner import Run, RunTarget
    from .runs.store import RunStore


class RunsRoom:
    """Lab methods for runs (see the module docstring)."""

    name: str
    config: "LabConfig"
    model: "ScriptedModel | None"

    if TYPE_CHECKING:  # provided by Lab
        @property
        def engine(self) -> "EngineFace": ...
        def agent(self, agent_id: str) -> "Agent": ...
        def create_agent(self, agent_id: str, group: str | None = None, **kwargs: Any) -> "Agent": ...
        def remove_agent(self, agent_id: str, volumes: bool = False) -> None: ...
        def container_name(self, target: str) -> str: ...
        def exec_stream(self, target: str, command: str | Iterable[str], **kwargs: Any) -> ExecStream: ...
        def _not_found(self, target: str) -> "NotFound": ...
        def _not_running(self, target: str, state: str) -> "NotRunning": ...
        def _run_resources(self, container: str, started_at: "datetime") -> dict[str, Any] | None: ...
        def _secret_env(self, info: "ContainerInfo") -> dict[str, str]: ...
        def _redacted(self) -> list[str]: ...

    # -- Claude Code runs (runs/ holds the runner, the recorder and replay; these wire them) ------
    def claude(self, agent_id: str, prompt: str, max_turns: int | None = None,
               model: "str | ScriptedModel | None" = None, allowed_tools: str | Iterable[str] | None = None,
               permission_mode: str | None = None, timeout: float | None = None, resume: str | None = None,
               on_event: "Callable[[RunEvent], None] | None" = None, record: bool | None = None,
               max_budget_usd: float | None = None) -> "RunResult":
        """Run Claude Code on `prompt` in the agent's workspace; events go to `on_event` as they come.

        `model` is a model name ("sonnet", "claude-...") or a ScriptedModel to talk to. Ctrl-C or
        `timeout` stop the CLI inside the container and return a "cancelled"/"timeout" result.
        The run is recorded in the run store (`record=False`, or `record_runs = false`, does not).
        `max_budget_usd` is the CLI's own spending limit for the run (`--max-budget-usd`).
        """
        return self.claude_stream(agent_id, prompt, max_turns=max_turns, model=model, allowed_tools=allowed_tools,
                                  permission_mode=permission_mode, timeout=timeout, resume=resume,
                                  on_event=on_event, record=record, max_budget_usd=max_budget_usd).wait()

    def claude_stream(self, agent_id: str, prompt: str, max_turns: int | None = None,
                      model: "str | ScriptedModel | None" = None, allowed_tools: str | Iterable[str] | None = None,
                      permission_mode: str | None = None, timeout: float | None = None, resume: str | None = None,
                      on_event: "Callable[[RunEvent], None] | None" = None, record: bool | None = None,
                      max_budget_usd: float | None = None) -> Run:
        """Start a Claude Code run; iterate it for typed events, `.result` at the end, `.cancel()` to stop."""
        if model is not None and not isinstance(model, (str, ScriptedModel)):
            raise LabError(f"model={model!r}: give a model name ('sonnet', 'claude-...') or a ScriptedModel")
        model_name = model if isinstance(model, str) else None
        scripted = model if isinstance(model, ScriptedModel) else self.model
        argv = claude_argv(prompt, max_turns=max_turns, model=model_name, allowed_tools=allowed_tools,
                           permission_mode=permission_mode, resume=resume, max_budget_usd=max_budget_usd)
        target = self._run_target(agent_id)
        endpoint = endpoints.resolve(self.config, scripted)
        options = {"argv": argv, "max_turns": max_turns, "model": model_name,
                   "scripted_model": endpoint.scripted is not None,
                   "allowed_tools": argv[argv.index("--allowedTools") + 1] if "--allowedTools" in argv else None,
                   "permission_mode": permission_mode, "timeout": timeout, "resume": resume}
        return self._start_run(target, "claude", prompt, argv, options, timeout, on_event, endpoint, record)

    def shell(self, agent_id: str, command: str | Iterable[str], timeout: float | None = None,
              on_event: "Callable[[RunEvent], None] | None" = None, record: bool | None = None) -> "RunResult":
        """Run a plain command in the agent's workspace as a recorded run (kind "shell": output, exit code, diff)."""
        return self.shell_stream(agent_id, command, timeout=timeout, on_event=on_event, record=record).wait()

    def shell_stream(self, agent_id: str, command: str | Iterable[str], timeout: float | None = None,
                     on_event: "Callable[[RunEvent], None] | None" = None, record: bool | None = None) -> Run:
        """Start `shell`'s run; iterate it for output chunks, `.result` at the end, `.cancel()` to stop."""
        argv = command_argv(command)
        shown = command if isinstance(command, str) else " ".join(argv)
        return self._start_run(self._run_target(agent_id), "shell", shown, argv, {"argv": argv, "timeout": timeout},
                               timeout, on_event, None, record)

    def _run_target(self, agent_id: str) -> RunTarget:
        n.validate_agent_id(agent_id)  # runs are for agents' workspaces, never the dev container's project
        info = self.agent(agent_id).info
        if not info.running:
            raise self._not_running(agent_id, info.state)
        env = self._secret_env(info)
        return runs_runner.RunTarget(self.engine, self.name, agent_id, info.name, info, self._run_resources,
                         peers=guard.pod_addresses(self.engine, info), env=env,
                         secrets=tuple(self._redacted()))

    def _start_run(self, target: RunTarget, kind: str, prompt: str, argv: list[str], options: dict[str, Any],
                   timeout: float | None, on_event: "Callable[[RunEvent], None] | None",
                   endpoint: "endpoints.Endpoint | None", record: bool | None) -> Run:
        recorder = None
        if self.config.record_runs if record is None else record:
            recorder = recording.recorder_for(self.run_store, self.engine, self.name, kind, prompt, options, endpoint)
        return runs_runner.Run(target, kind, prompt, argv, timeout=timeout, on_event=on_event, endpoint=endpoint,
                   recorder=recorder).start()


    # -- run store: every run recorded, every run replayable (runs/) ----------------------------
    @property
    def run_store(self) -> RunStore:
        """The project's run store (`run_store` setting, default .claude-lab/runs.sqlite), shared in this process."""
        path = Path(self.config.run_store).expanduser()
        return runs_store.RunStore.at(path if path.is_absolute() else self.config.project_dir / path)

    def runs(self, agent: str | None = None, kind: str | None = None, status: str | None = None,
             lab: str | None = None) -> pd.DataFrame:
        """Every recorded run of the project, one row a run, oldest first (a run whose process died reads
        "interrupted"); filter by agent, kind (claude/shell/exec), status or lab name."""
        return self.run_store.frame(agent=agent, kind=kind, status=status, lab=lab)

    def run(self, run_id: str) -> "RunResult":
        """A recorded run as its `RunResult` (events, tool calls, diff...), from any process that recorded it."""
        return self.run_store.result(run_id)

    def export_run(self, run_id: str, path: str | os.PathLike) -> Path:
        """Write a run (record, cassette, transcript, workspace snapshot) to a portable tar file; returns its path."""
        return bundles.export_run(self.run_store, run_id, path)

    def import_run(self, path: str | os.PathLike) -> "RunResult":
        """Read a bundle written by `export_run` into this project's store (AlreadyExists if it is there)."""
        return self.run_store.result(bundles.import_run(self.run_store, path))

    def replay(self, run_id: str, *, keep: bool = False, timeout: float | None = None, prompt: str | None = None,
               setup: "Callable[[str], Any] | None" = None, image: str | None = None, ignore: Iterable[str] = (),
               on_event: "Callable[[RunEvent], None] | None" = None) -> "RunResult":
        """Run a recorded run again and say whether it reproduced: a fresh agent from the recorded image,
        the workspace restored at the start commit, the same command line, the model answered from the
        cassette (no upstream, no key). Raises `ReplayDivergence` when the CLI's requests leave the recording.

        `prompt` and `setup` (called with the replay agent's id once the workspace is restored) change
        the replay on purpose, to see where it departs; `ignore` adds regexes that request matching
        masks (volatile output of your own tools); `keep=True` leaves the replay agent running.
        """
        def make_agent(agent_id: str, limits: dict[str, Any], image_id: str) -> RunTarget:
            cpus = limits.get("nano_cpus")
            self.create_agent(agent_id, memory=limits.get("memory") or None, cpus=cpus / 1e9 if cpus else None,
                              pids=limits.get("pids") or None, image=image_id, progress=False, source=None)
            return self._run_target(agent_id)

        return replaying.replay(self.run_store, run_id, engine=self.engine, lab_name=self.name, make_agent=make_agent,
                      remove_agent=lambda agent_id: self.remove_agent(agent_id, volumes=True), keep=keep,
                      timeout=timeout, prompt=prompt, setup=setup, image=image, ignore=ignore, on_event=on_event)

    def record_exec(self, target: str, command: str | Iterable[str], user: str | None = None,
                    workdir: str | None = None, env: dict[str, str] | None = None, timeout: float | None = None,
                    on_event: "Callable[[RunEvent], None] | None" = None) -> "RunResult":
        """`exec` recorded as a run of kind "exec": any container (the dev container too), no workspace commits.
        Environment values are not stored (only their names)."""
        argv = command_argv(command)
        info = self.engine.container(self.container_name(target))
        if info is None:
            raise self._not_found(target)
        options = {"user": user, "workdir": workdir, "timeout": timeout, "env_names": sorted(env or {})}
        return recording.record_exec(self.run_store, self.name, target, info, argv,
                           command if isinstance(command, str) else " ".join(argv), options,
                           lambda: self.exec_stream(target, argv, user=user, workdir=workdir, env=env,
                                                    timeout=timeout), on_event,
                           secrets=[*self._redacted(), *(env or {}).values()])
