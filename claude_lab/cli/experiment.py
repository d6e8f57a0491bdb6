"""The CLI's `experiment` commands: run an experiment file (TOML), list the experiments, show one, export it."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import typer

from ..errors import ConfigError, NotFound
from .app import _emit, _fail, _lab, _run, app, err, escape, out, state

experiment_app = typer.Typer(help="Experiments: tasks x variants x trials, scored (README, Experiments).",
                             no_args_is_help=True)
app.add_typer(experiment_app, name="experiment")


def _scripted_factory(path: Path) -> Any:
    """A ScriptedModel per trial, from a JSON file of turns (a list), or of {"task": [turns], ...} per task."""
    from ..model.scripted import ScriptedModel, load_turns

    data = load_turns(path)

    def factory(task: str, trial: int) -> ScriptedModel:
        turns = data.get(task, data.get("*")) if isinstance(data, dict) else data
        if turns is None:
            raise ConfigError(f"{path} has no turns for task {task!r} (nor a \"*\" entry)")
        return ScriptedModel(turns)

    return factory


def _experiment(file: Path, trials: Optional[int], concurrency: Optional[int], new: bool) -> Any:
    from ..experiments.tasks import load_toml

    data = load_toml(file)
    model: Any = data.get("model")
    if data.get("scripted"):
        model = _scripted_factory((file.parent / data["scripted"]).expanduser())
    lab = _lab()
    return lab.experiment(data["name"], data["tasks"], trials=trials or int(data.get("trials", 1)),
                          variants=data.get("variants"), model=model, source=data.get("source", "project"),
                          max_turns=data.get("max_turns"), concurrency=concurrency or int(data.get("concurrency", 4)),
                          budget_usd=data.get("budget_usd"), keep=bool(data.get("keep", False)), new=new)


@experiment_app.command("run")
def experiment_run(
    file: Path = typer.Argument(..., help="The experiment file (TOML): name, trials, [[tasks]], [variants.X]."),
    trials: Optional[int] = typer.Option(None, "--trials", help="Trials per task and variant (else the file's)."),
    concurrency: Optional[int] = typer.Option(None, "--concurrency", help="Trials at once (else the file's, or 4)."),
    new: bool = typer.Option(False, "--new", help="Start the experiment afresh if it exists with another spec."),
) -> None:
    """Run (or resume) an experiment: one line per finished trial, then the summary. Exit 1 if a trial errored."""
    exp = _run(_experiment, file, trials, concurrency, new)

    def said(row: dict[str, Any]) -> None:
        if not state.json:
            verdict = {True: "[green]passed[/]", False: "[red]failed[/]"}.get(row.get("passed"), "not scored")
            err.print(f"[cyan]{escape(row['task'])}[/] {escape(row['variant'])} #{row['trial']}: "
                      f"{escape(str(row['status']))}, {verdict}" + (f" [dim]({escape(str(row['error'])[:120])})[/]"
                                                                    if row.get("error") else ""), highlight=False)

    exp.on_trial = said
    try:
        rows = _run(exp.run)
    except KeyboardInterrupt:
        err.print("interrupted: running trials were cancelled; run again to finish the experiment")
        raise typer.Exit(130)
    summary = exp.summary()
    if state.json:
        print(json.dumps({"experiment": exp.name, "rows": json.loads(rows.to_json(orient="records")),
                          "summary": json.loads(summary.to_json(orient="records"))}))
    else:
        _emit(summary.round(3), f"experiment {exp.name}")
    if rows["status"].isin(["error", "scorer_error", "timeout"]).any():
        raise typer.Exit(1)


@experiment_app.command("list")
def experiment_list() -> None:
    """The experiments in the project's run store."""
    _emit(_run(lambda: _lab().experiments()), "experiments")


def _stored(name: str) -> Any:
    lab = _lab()
    rec = lab.run_store.experiment(name)
    if rec is None:
        known = ", ".join(lab.experiments()["name"]) or "none yet"
        raise NotFound(f"no experiment {name!r} in {lab.run_store.path} (experiments: {known}); run one with "
                       f"`claude-lab experiment run FILE.toml`")
    spec = rec["spec"]
    tasks = [{"name": t["name"], "prompt": t["prompt"], "pass_score": t.get("pass_score", 1.0),
              "score": t["score"] if t.get("score_kind") == "shell" else None} for t in spec["tasks"]]
    exp = lab.experiment(name, tasks, trials=int(spec.get("trials", 1)), variants=spec.get("variants"),
                         source=rec["source"]) if _same_scorers(spec) else None
    return lab, rec, exp


def _same_scorers(spec: dict[str, Any]) -> bool:
    """Shell scorers only: a Python scorer is stored by name, which cannot be called again from here."""
    return all(t.get("score_kind") != "python" for t in spec["tasks"])


@experiment_app.command("show")
def experiment_show(name: str = typer.Argument(..., help="The experiment's name.")) -> None:
    """An experiment's trials (one row each) and its summary."""
    lab, rec, _ = _run(_stored, name)
    from ..experiments.frames import ROW_COLUMNS
    import pandas as pd

    rows = pd.DataFrame(lab.run_store.trial_rows(name))
    rows = rows.reindex(columns=[c for c in ROW_COLUMNS if c in rows.columns or c == "experiment"])
    if state.json:
        print(json.dumps({"experiment": rec["name"], "spec": rec["spec"], "base_commit": rec["base_commit"],
                          "rows": json.loads(rows.to_json(orient="records"))}))
        return
    out.print(f"[bold]{escape(name)}[/]: base commit {rec['base_commit'] or '(none)'}", highlight=False)
    _emit(rows.drop(columns=["experiment"], errors="ignore"), f"trials of {name}")


@experiment_app.command("export")
def experiment_export(
    name: str = typer.Argument(..., help="The experiment's name."),
    inspect_file: Path = typer.Option(..., "--inspect", help="The Inspect eval log to write (.eval or .json)."),
) -> None:
    """Write an experiment as an Inspect eval log (`inspect view` shows it)."""
    lab, rec, exp = _run(_stored, name)
    if exp is None:
        _fail(ConfigError(f"experiment {name} scores with Python functions; export it from Python: "
                          f"lab.experiment({name!r}, tasks, ...).export_inspect(path)"))
    path = _run(exp.export_inspect, str(inspect_file))
    if state.json:
        print(json.dumps({"experiment": name, "inspect_log": str(path)}))
    else:
        out.print(f"wrote {path}", highlight=False)
