"""An experiment: every (task, variant, trial) a fresh agent seeded at one base commit, one recorded Claude run,
the task's scorer in the same container, a row in the run store's trials table; resumable, bounded, budgeted.

`Experiment` gets what it uses through `TrialHost` (the facade is one): it never sees the lab itself.
Trials run on a bounded pool of worker threads (`concurrency`): each blocks on the engine, as the async
service's workers do. A failed trial (a timeout, a model error, a scorer that crashes) is a row with its
error; Ctrl-C cancels the running trials inside their containers (their rows say "cancelled", and a
resume runs them again), leaves the finished ones recorded, and raises KeyboardInterrupt.
"""
from __future__ import annotations

import threading
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Callable, Iterable, Protocol


from ..errors import LabError
from ..runs.experiment_store import FINISHED
from ..util import views
from .frames import rows_frame, summary_frame
from .scoring import diff_lines, score_from_output
from .tasks import Task
from ..util.lazy import lazy

pd = lazy("pandas")  # loaded when a DataFrame is made (the CLI starts without it)

if TYPE_CHECKING:
    from ..runs.results import RunResult
    from .compare import Comparison
    from ..runs.runner import Run
    from ..runs.store import RunStore

__all__ = ["Experiment", "TrialHost"]

SCORER_OUTPUT_KEEP = 64 * 1024


class TrialHost(Protocol):
    """What an experiment needs of a lab."""

    def create_trial_agent(self, agent_id: str, source: str | None, ref: str | None, env: dict[str, str]) -> None: ...
    def claude_stream(self, agent_id: str, prompt: str, **options: Any) -> "Run": ...
    def score_in(self, agent_id: str, command: str, timeout: float) -> tuple[int, str]: ...
    def agent(self, agent_id: str) -> Any: ...
    def keep_work(self, agent_id: str, run_id: str) -> None: ...
    def remove_trial_agent(self, agent_id: str) -> None: ...


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


class Experiment:
    """A named experiment in the run store; `run()` it (again: it resumes), then `summary()`, `compare`, `merge`."""

    def __init__(self, host: TrialHost, store: "RunStore", name: str, tasks: list[Task],
                 variants: dict[str, dict[str, Any]], *, trials: int, model: Any, source: str | None,
                 base_commit: str | None, max_turns: int | None, concurrency: int, budget_usd: float | None,
                 keep: bool, merge: Callable[[str, str | None], Any], export: Callable[..., Any]):
        self.host, self.store, self.name = host, store, name
        self.tasks, self.variants, self.trials = tasks, variants, trials
        self.model, self.source, self.base_commit = model, source, base_commit
        self.max_turns, self.concurrency, self.budget_usd, self.keep = max_turns, concurrency, budget_usd, keep
        self._merge, self._export = merge, export
        self._lock = threading.Lock()
        self._live: dict[tuple[str, str, int], "Run"] = {}
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self.on_trial: Callable[[dict[str, Any]], None] | None = None  # each finished row (progress displays)
        self._shown: pd.DataFrame | None = None  # the rows as last read: what repr shows, without I/O
        self.rows()

    def _progress(self) -> str:
        rows = self._shown
        done = int(rows["status"].isin(list(FINISHED)).sum()) if rows is not None else 0
        passed = int(rows["passed"].fillna(False).sum()) if rows is not None else 0
        state = ", running" if self.running else ""
        return f"{done}/{self.size} trials finished, {passed} passed{state}"

    def __repr__(self) -> str:
        return (f"<Experiment {self.name}: {len(self.tasks)} tasks x {len(self.variants)} variants x {self.trials} "
                f"trials; {self._progress()}>")

    def _repr_html_(self) -> str:  # the rows as last read (no I/O here); exp.view() is the live table
        table = self._shown.to_html(index=False, na_rep="") if self._shown is not None else ""
        return f"<p><b>Experiment {self.name}</b>: {self._progress()}</p>{table}"

    def view(self) -> Any:
        """A live view for a notebook (progress bar and table, updated as trials end): the `notebook` extra."""
        factory = views.view("experiment")
        if factory is None:
            raise LabError("exp.view() is drawn by the notebook front: import claude_lab (pip install "
                           "'claude-lab[notebook]')")
        return factory(self)

    @property
    def size(self) -> int:
        return len(self.tasks) * len(self.variants) * self.trials

    # -- the table ---------------------------------------------------------------------------
    def rows(self) -> pd.DataFrame:
        """One row per (task, variant, trial), run or not yet."""
        self._shown = rows_frame(self.name, self.keys(), self.store.trial_rows(self.name))
        return self._shown.copy()

    def keys(self) -> list[tuple[str, str, int]]:
        return [(t.name, v, i) for t in self.tasks for v in self.variants for i in range(self.trials)]

    def summary(self, k: Iterable[int] | None = None) -> pd.DataFrame:
        """Per task and variant: trials, passed, pass_rate, pass@k (unbiased), turns, cost and duration."""
        ks = sorted(set(k)) if k is not None else sorted({1, self.trials})
        return summary_frame(self.rows(), ks)

    # -- running -----------------------------------------------------------------------------
    def run(self) -> pd.DataFrame:
        """Run every trial not finished yet (`concurrency` at a time); returns `rows()`."""
        todo = [key for key, row in zip(self.keys(), self.rows().to_dict("records"))
                if row["status"] not in FINISHED]
        self._stopping.clear()
        pool = ThreadPoolExecutor(max_workers=max(1, self.concurrency), thread_name_prefix=f"exp-{self.name}")
        pending: set[Future] = set()
        try:
            for key in todo:
                pending.add(pool.submit(self._trial, *key))
            while pending:
                done, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
                for fut in done:
                    fut.result()  # a trial never raises but for bugs: surface those
        except BaseException:
            self.stop()
            for fut in pending:
                fut.cancel()
            pool.shutdown(wait=True)
            raise
        pool.shutdown(wait=True)
        return self.rows()

    def start(self) -> "Experiment":
        """Run in a background thread (a notebook's next cell is not blocked); `wait()` for the rows."""
        if self._thread is not None and self._thread.is_alive():
            return self

        def go() -> None:
            try:
                self.run()
            except BaseException as exc:  # noqa: BLE001 - kept for wait()
                self._error = exc

        self._error = None
        self._thread = threading.Thread(target=go, name=f"experiment-{self.name}", daemon=True)
        self._thread.start()
        return self

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def wait(self, timeout: float | None = None) -> pd.DataFrame:
        if self._thread is not None:
            self._thread.join(timeout)
        if self._error is not None:
            raise self._error
        return self.rows()

    def stop(self) -> None:
        """Start no more trials and cancel the running ones inside their containers (a resume runs them again)."""
        self._stopping.set()
        with self._lock:
            runs = list(self._live.values())
        for run in runs:
            run.cancel()

    # -- one trial ---------------------------------------------------------------------------
    def agent_id(self, task: str, variant: str, trial: int) -> str:
        raw = f"x-{self.name}-{task}-{variant}-{trial}"
        if len(raw) <= 63:
            return raw
        import hashlib

        digest = hashlib.sha1(raw.encode()).hexdigest()[:8]
        return f"x-{digest}-{task[:20]}-{variant[:16]}-{trial}".strip("-")[:63]

    def _model_for(self, task: str, variant: str, trial: int) -> Any:
        model = self.variants[variant].get("model", self.model)
        if callable(model) and not hasattr(model, "turns"):  # a factory, not a ScriptedModel
            model = model(task, trial)
        return model

    def _trial(self, task_name: str, variant: str, trial: int) -> None:
        if self._stopping.is_set():
            return
        task = next(t for t in self.tasks if t.name == task_name)
        key = (task_name, variant, trial)
        put = lambda **f: self.store.put_trial(self.name, task_name, variant, trial, **f)  # noqa: E731
        with self._lock:  # the budget: no new trial once the recorded cost reached it
            spent = self.store.spent(self.name)
            if self.budget_usd is not None and spent >= self.budget_usd:
                put(status="not_started", error=f"budget ${self.budget_usd:g} reached (${spent:.4f} spent); raise "
                                                f"budget_usd and run the experiment again to continue")
                return
        agent_id = self.agent_id(task_name, variant, trial)
        put(agent=agent_id, run_id=None, status="running", passed=None, score=None, scorer_output=None, error=None,
            started_at=_now(), ended_at=None)
        over = self.variants[variant]
        created = False
        try:
            self.host.remove_trial_agent(agent_id)  # what an interrupted attempt left
            self.host.create_trial_agent(agent_id, self.source, self.base_commit, dict(over.get("env") or {}))
            created = True
            prompt = f"{over.get('prompt_prefix', '')}{task.prompt}{over.get('prompt_suffix', '')}"
            run = self.host.claude_stream(agent_id, prompt, model=self._model_for(task_name, variant, trial),
                                          max_turns=over.get("max_turns", self.max_turns),
                                          allowed_tools=over.get("allowed_tools"), timeout=task.timeout,
                                          max_budget_usd=over.get("max_budget_usd"))
            with self._lock:
                self._live[key] = run
            put(run_id=run.run_id)
            try:
                result = run.wait()
            except LabError:  # e.g. AuthenticationError after the run ended: the result says it
                result = run.result
            finally:
                with self._lock:
                    self._live.pop(key, None)
            if result is None or result.status == "cancelled" or self._stopping.is_set():
                put(status="cancelled", error="cancelled; run the experiment again to redo this trial",
                    ended_at=_now())
                return
            if self.source == "project":  # what `merge` takes back once the agent is gone: the run's work,
                self.host.keep_work(agent_id, result.run_id)  # before the scorer's side effects (caches, reports)
            self._score(task, agent_id, result, put)
        except Exception as exc:  # noqa: BLE001 - a trial's failure is its row, never the experiment's
            put(status="error", error=str(exc) or type(exc).__name__, ended_at=_now())
        finally:
            if created and not self.keep:
                try:
                    self.host.remove_trial_agent(agent_id)
                except LabError:
                    pass
            frame = self.rows()  # refreshes what repr shows
            if self.on_trial is not None:
                match = frame[(frame["task"] == task_name) & (frame["variant"] == variant) & (frame["trial"] == trial)]
                if len(match):
                    self.on_trial({k: (None if pd.api.types.is_scalar(v) and pd.isna(v) else v)
                                   for k, v in match.iloc[0].to_dict().items()})

    def _score(self, task: Task, agent_id: str, result: "RunResult", put: Callable[..., None]) -> None:
        added, deleted = diff_lines(result.diff or "")
        base = {"lines_added": added, "lines_deleted": deleted}
        try:
            if task.score is None:
                passed, score, output = result.status == "success", float(result.status == "success"), ""
            elif isinstance(task.score, str):
                code, output = self.host.score_in(agent_id, task.score, task.score_timeout)
                passed, score = code == 0, score_from_output(output, code)
            else:
                value = task.score(self.host.agent(agent_id), result)
                if isinstance(value, bool) or value is None:
                    passed, score = bool(value), float(bool(value))
                elif isinstance(value, (int, float)):
                    score = float(value)
                    passed = score >= task.pass_score
                else:
                    raise LabError(f"task {task.name}'s scorer returned {value!r}: return a bool or a number")
                output = ""
        except Exception as exc:  # noqa: BLE001 - the scorer crashed: its trial's row says how
            put(status="scorer_error", passed=False, error=f"scorer failed: {exc}", ended_at=_now(), **base)
            return
        put(status=result.status, passed=passed, score=score, scorer_output=output[-SCORER_OUTPUT_KEEP:],
            error=result.error, ended_at=_now(), **base)

    # -- looking at trials ---------------------------------------------------------------------
    def compare(self, task: str, variant: str | None = None) -> "Comparison":
        """The trials of a task side by side: status, score, diff (HTML in a notebook, text otherwise)."""
        from .compare import Comparison

        if task not in {t.name for t in self.tasks}:
            raise LabError(f"experiment {self.name} has no task {task!r}; its tasks: "
                           f"{', '.join(t.name for t in self.tasks)}")
        rows = [r for r in self.rows().to_dict("records") if r["task"] == task
                and (variant is None or r["variant"] == variant)]
        diffs = {r["run_id"]: (self.store.record(r["run_id"]).get("diff") or "") for r in rows if r["run_id"]}
        return Comparison(self.name, task, rows, diffs)

    def merge(self, run_id: str, message: str | None = None) -> Any:
        """Keep one attempt: merge that trial's work into the project's current branch (the workspace round trip)."""
        rows = {r["run_id"]: r for r in self.rows().to_dict("records") if r["run_id"]}
        if run_id not in rows:
            raise LabError(f"run {run_id} is not a trial of experiment {self.name}; see exp.rows()['run_id']")
        return self._merge(run_id, message)

    def export_inspect(self, path: str) -> Any:
        """Write the experiment as an Inspect eval log (`inspect view` shows it; `read_eval_log` reads it)."""
        return self._export(self, path)

