"""The facade's experiments: `lab.experiment(...)` and `lab.experiments()`. Part of `Lab` (a mixin), wiring
`experiments/` (tasks, the trial runner, the tables, the Inspect export) to the lab's agents, runs and
workspace round trip through a `TrialHost` adapter."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable, Mapping


from . import naming as n
from .containers.services import WORKSPACE
from .errors import ConfigError, LabError, NotFound
from .experiments.tasks import fingerprint, normalize_tasks, normalize_variants, spec
from .workspace.hostgit import ProjectRepo
from .util.lazy import lazy

pd = lazy("pandas")  # loaded when a DataFrame is made (the CLI starts without it)
runner = lazy("claude_lab.experiments.runner")  # the trial runner and the run store: loaded by the first
stored = lazy("claude_lab.runs.store")  # experiment, so `claude-lab exec` starts without them

if TYPE_CHECKING:
    from .experiments.runner import Experiment
    from .agents import Agent
    from .config import LabConfig
    from .containers.execution import ExecResult
    from .engine.face import EngineFace
    from .runs.runner import Run
    from .runs.store import RunStore

TRIAL_BUNDLE = "trial.bundle"  # a trial's work, kept in the run store for `merge` once its agent is gone


class _Trials:
    """The `TrialHost` an experiment runs on: this lab's agents, runs and execs."""

    def __init__(self, lab: "ExperimentsRoom"):
        self.lab = lab

    def create_trial_agent(self, agent_id: str, source: str | None, ref: str | None, env: dict[str, str]) -> None:
        self.lab.create_agent(agent_id, source=source, ref=ref if source else None, env=env or None, progress=False)

    def claude_stream(self, agent_id: str, prompt: str, **options: Any) -> "Run":
        return self.lab.claude_stream(agent_id, prompt, **options)

    def score_in(self, agent_id: str, command: str, timeout: float) -> tuple[int, str]:
        res = self.lab.exec(agent_id, command, workdir=WORKSPACE, timeout=timeout, user=self.lab.config.agent_user)
        return int(res.exit_code if res.exit_code is not None else -1), res.stdout + res.stderr

    def agent(self, agent_id: str) -> Any:
        return self.lab.agent(agent_id)

    def keep_work(self, agent_id: str, run_id: str) -> None:
        bundle = self.lab._outgoing(agent_id)[2]
        self.lab.run_store.put_artifact(run_id, TRIAL_BUNDLE, bundle)

    def remove_trial_agent(self, agent_id: str) -> None:
        try:
            self.lab.remove_agent(agent_id, volumes=True)
        except NotFound:
            if self.lab.engine.volume_exists(n.workspace_volume(self.lab.name, agent_id)):
                self.lab.engine.remove_volume(n.workspace_volume(self.lab.name, agent_id))


class ExperimentsRoom:
    """Lab methods for experiments (see the module docstring)."""

    name: str
    config: "LabConfig"

    if TYPE_CHECKING:  # provided by Lab
        @property
        def engine(self) -> "EngineFace": ...
        @property
        def run_store(self) -> "RunStore": ...
        def agent(self, agent_id: str) -> "Agent": ...
        def create_agent(self, agent_id: str, group: str | None = None, **kwargs: Any) -> "Agent": ...
        def remove_agent(self, agent_id: str, volumes: bool = False) -> None: ...
        def claude_stream(self, agent_id: str, prompt: str, **kwargs: Any) -> "Run": ...
        def exec(self, target: str, command: Any, **kwargs: Any) -> "ExecResult": ...
        def _outgoing(self, agent_id: str) -> tuple[Any, Any, bytes]: ...
        def _merge_bundle(self, repo: ProjectRepo, agent_id: str, bundle: bytes, message: str | None) -> Any: ...

    def experiment(self, name: str, tasks: Iterable[Any], trials: int = 1,
                   variants: Mapping[str, Mapping[str, Any]] | None = None, model: Any = None,
                   source: str | None = "project", max_turns: int | None = None, concurrency: int = 4,
                   budget_usd: float | None = None, keep: bool = False, new: bool = False) -> Experiment:
        """An experiment: each of `tasks` x `variants` x `trials` is a fresh agent seeded from `source` (at one base
        commit for the whole experiment), one recorded Claude run, then the task's scorer in that container.

        A name that exists continues that experiment (`run()` runs only the trials not finished); other tasks or
        variants under that name are refused unless `new=True` (which starts it afresh). `model`: a name, a
        ScriptedModel, or a callable (task_name, trial) -> either; a variant's "model" overrides it.
        """
        n.validate_label(name, "experiment name")
        if not isinstance(trials, int) or trials < 1:
            raise ConfigError(f"trials={trials!r}: give a positive number of trials per task and variant")
        if not isinstance(concurrency, int) or concurrency < 1:
            raise ConfigError(f"concurrency={concurrency!r}: give how many trials may run at once (>= 1)")
        if budget_usd is not None and not budget_usd > 0:
            raise ConfigError(f"budget_usd={budget_usd!r}: give a positive amount, or None for no budget")
        task_list, variant_map = normalize_tasks(tasks), normalize_variants(variants)
        wanted = spec(task_list, variant_map, trials)
        store = self.run_store
        old = store.experiment(name)
        if old is not None and not new and old["fingerprint"] != fingerprint(wanted):
            raise ConfigError(f"experiment {name!r} exists with other tasks or variants "
                              f"({_differences(old['spec'], wanted)}); pass new=True to start it afresh (its trials "
                              f"are forgotten, their runs stay in the store), or pick another name")
        if old is None or new:
            base = None
            if source == "project":
                base = ProjectRepo.at(self.config.project_dir).commit("HEAD")
            store.put_experiment(name, self.name, wanted, fingerprint(wanted), base, source, stored.now_iso(),
                                 replace=old is not None)
            old = store.experiment(name)
        assert old is not None
        return runner.Experiment(_Trials(self), store, name, task_list, variant_map, trials=trials, model=model,
                          source=old["source"], base_commit=old["base_commit"], max_turns=max_turns,
                          concurrency=concurrency, budget_usd=budget_usd, keep=keep,
                          merge=lambda run_id, message: self._merge_trial(name, run_id, message),
                          export=lambda exp, path: self._export_inspect(exp, path))

    def experiments(self) -> pd.DataFrame:
        """The experiments in the run store: name, lab, tasks, variants, trials, finished, passed, cost."""
        rows = [{"name": r["name"], "lab": r["lab"], "tasks": len(r["spec"].get("tasks", [])),
                 "variants": len(r["spec"].get("variants", {})), "trials": r["spec"].get("trials"),
                 "finished": int(r["trials_finished"] or 0), "passed": int(r["passed"] or 0),
                 "cost_usd": float(r["cost_usd"] or 0.0), "base_commit": r["base_commit"],
                 "created_at": pd.Timestamp(r["created_at"]), "updated_at": pd.Timestamp(r["updated_at"])}
                for r in self.run_store.experiment_records()]
        return pd.DataFrame(rows, columns=["name", "lab", "tasks", "variants", "trials", "finished", "passed",
                                           "cost_usd", "base_commit", "created_at", "updated_at"])

    def _merge_trial(self, name: str, run_id: str, message: str | None) -> Any:
        """The trial's work as kept after its run (before the scorer touched the workspace), merged."""
        agent_id = next(r["agent"] for r in self.run_store.trial_rows(name) if r["run_id"] == run_id)
        bundle = self.run_store.artifact(run_id, TRIAL_BUNDLE)
        if bundle is None:
            raise LabError(f"trial run {run_id} kept no work to merge (its agent was not seeded from the project, "
                           f"or the trial failed before its work was kept)")
        return self._merge_bundle(ProjectRepo.at(self.config.project_dir), agent_id, bundle,
                                  message or f"claude-lab: merge trial {run_id} of {name}")

    def _export_inspect(self, exp: Experiment, path: str) -> Any:
        from .experiments.inspect_log import write_inspect_log

        return write_inspect_log(exp, self.run_store, path, self.name)


def _differences(old: dict[str, Any], new: dict[str, Any]) -> str:
    parts = []
    old_tasks = {t["name"]: t for t in old.get("tasks", [])}
    new_tasks = {t["name"]: t for t in new.get("tasks", [])}
    if set(old_tasks) != set(new_tasks):
        parts.append(f"tasks {sorted(old_tasks)} -> {sorted(new_tasks)}")
    else:
        changed = [k for k in new_tasks if old_tasks[k] != new_tasks[k]]
        if changed:
            parts.append(f"task(s) {', '.join(changed)} changed")
    if old.get("variants") != new.get("variants"):
        parts.append(f"variants {sorted(old.get('variants', {}))} -> {sorted(new.get('variants', {}))}"
                     if set(old.get("variants", {})) != set(new.get("variants", {})) else "variant settings changed")
    return "; ".join(parts) or "its spec changed"
