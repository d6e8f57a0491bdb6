"""Experiments on the real engine with the real CLI: scripted models whose trials pass and fail as planned."""
from __future__ import annotations

import json
import subprocess
import sys
import threading

import pytest

from claude_lab import ConfigError, Lab, ScriptedModel, Task
from claude_lab.experiments.scoring import diff_lines, pass_at_k, score_from_output
from support import git, git_project, poll, tool

HEALTH = "test \"$(cat health.txt 2>/dev/null)\" = ok"


def writes(text: str, name: str = "health.txt") -> list:
    return [tool("Write", file_path=f"/workspace/{name}", content=text), f"wrote {name}"]


def project(lab: Lab) -> None:
    git_project(lab.config.project_dir, {"README.md": "# toy\n", "app.py": "def hello():\n    return 'hi'\n"})


def test_pass_at_k_is_the_unbiased_estimator():
    assert pass_at_k(2, 1, 1) == 0.5 and pass_at_k(2, 1, 2) == 1.0 and pass_at_k(3, 0, 2) == 0.0
    assert pass_at_k(5, 2, 2) == pytest.approx(1 - 3 / 10)  # 1 - C(3,2)/C(5,2)
    assert score_from_output("3 passed\n0.75\n", 1) == 0.75 and score_from_output("ok", 0) == 1.0
    assert diff_lines("--- a/x\n+++ b/x\n-old\n+new\n+more\n") == (2, 1)
    from claude_lab.experiments.tasks import normalize_tasks

    with pytest.raises(ConfigError, match="unique"):
        normalize_tasks([{"name": "a", "prompt": "x"}, {"name": "a", "prompt": "y"}])


def test_rows_summary_scorers_merge_and_the_inspect_log(lab: Lab, tmp_path):
    project(lab)
    base = git(lab.config.project_dir, "rev-parse", "HEAD").strip()
    plan = {("health", "plain", 0): "ok\n", ("health", "plain", 1): "bad\n"}  # variant "plain": one pass, one fail

    def plain(task: str, trial: int) -> ScriptedModel:
        if task == "health":
            return ScriptedModel(writes(plan[(task, "plain", trial)]))
        return ScriptedModel(writes("# docs\n", "DOCS.md"))

    def careful(task: str, trial: int) -> ScriptedModel:  # variant "careful": always right
        return ScriptedModel(writes("ok\n") if task == "health" else writes("# docs\n", "DOCS.md"))

    def half(agent, run) -> float:
        assert "DOCS.md" in run.changed_files and agent.exec("cat DOCS.md").stdout == "# docs\n"
        return 0.5

    def crash(agent, run) -> bool:
        raise RuntimeError("the scorer fell over")

    tasks = [Task("health", prompt="write ok to health.txt", score=HEALTH),
             {"name": "docs", "prompt": "write DOCS.md", "score": half},
             Task("crashy", prompt="write DOCS.md", score=crash)]
    exp = lab.experiment("ab", tasks, trials=2, variants={"plain": {"model": plain},
                                                          "careful": {"model": careful, "prompt_suffix": " Carefully."}},
                         concurrency=2)
    view = exp.view()  # the notebook's live table, refreshed from the experiment's worker threads
    assert (view.bar.value, view.bar.max) == (0, 12)
    rows = exp.run()
    assert view.bar.value == 12 and view.line.value == "12/12 trials finished, 3 passed"
    assert "scorer_error" in view.table.value
    assert len(rows) == 12 and list(rows.columns)[:6] == ["experiment", "task", "variant", "trial", "agent", "run_id"]
    by = {(r.task, r.variant, r.trial): r for r in rows.itertuples()}
    shown = rows[["task", "variant", "trial", "status", "passed", "score", "error"]].to_string()
    assert [by[("health", "plain", t)].passed for t in (0, 1)] == [True, False], shown
    assert all(by[("health", "careful", t)].passed for t in (0, 1))
    assert {by[("docs", v, t)].score for v in ("plain", "careful") for t in (0, 1)} == {0.5}
    assert not any(by[("docs", v, t)].passed for v in ("plain", "careful") for t in (0, 1))  # 0.5 < pass_score 1
    crashed = [by[("crashy", v, t)] for v in ("plain", "careful") for t in (0, 1)]
    assert {r.status for r in crashed} == {"scorer_error"} and all("fell over" in r.error for r in crashed)
    assert by[("health", "plain", 0)].lines_added == 1 and by[("health", "plain", 0)].files_changed == 1
    assert lab.agents() == []  # trial agents are removed after scoring

    summary = exp.summary().set_index(["task", "variant"])
    plain_health = summary.loc[("health", "plain")]
    assert (plain_health["passed"], plain_health["pass_rate"], plain_health["pass@1"], plain_health["pass@2"]) == (
        1, 0.5, 0.5, 1.0)
    assert summary.loc[("health", "careful"), "pass@1"] == 1.0 and summary.loc[("docs", "plain"), "pass@2"] == 0.0
    assert summary.loc[("crashy", "plain"), "errors"] == 2

    # Every trial is a recorded run; the prompt carries the variant's suffix.
    run = lab.run(by[("health", "careful", 1)].run_id)
    assert run.prompt == "write ok to health.txt Carefully." and run.status == "success"
    listed = lab.experiments().set_index("name").loc["ab"]
    assert (listed["tasks"], listed["variants"], listed["trials"], listed["finished"], listed["passed"]) == (
        3, 2, 2, 12, 3)
    assert "bad" in str(exp.compare("health")) and "<pre" in exp.compare("health")._repr_html_()

    # Keep one attempt: its agent is gone, its work was kept; the merge lands on the project's branch.
    merged = exp.merge(by[("health", "plain", 0)].run_id)
    assert (lab.config.project_dir / "health.txt").read_text() == "ok\n" and merged.commit
    assert git(lab.config.project_dir, "status", "--porcelain") == ""

    # The Inspect eval log, read back by inspect_ai itself.
    from inspect_ai.log import read_eval_log

    path = exp.export_inspect(str(tmp_path / "ab.eval"))
    log = read_eval_log(str(path))
    assert log.status == "success" and log.eval.task == "ab" and log.eval.config.epochs == 2
    assert log.eval.revision.commit == base
    assert len(log.samples) == 12 and {s.id for s in log.samples} == {f"{t}/{v}" for t in ("health", "docs", "crashy")
                                                                     for v in ("plain", "careful")}
    sample = next(s for s in log.samples if s.id == "health/plain" and s.epoch == 2)
    assert sample.scores["claude_lab"].value == 0.0 and sample.scores["claude_lab"].metadata["passed"] is False
    assert sample.messages[0].text == "write ok to health.txt" and any(
        m.role == "assistant" and m.tool_calls for m in sample.messages)
    assert sample.model_usage and next(iter(sample.model_usage.values())).input_tokens > 0
    assert log.results.scores[0].metrics["accuracy"].value == 0.25  # 3 passes of 12 (a crashed scorer fails)


def test_resume_runs_only_what_is_missing_and_a_budget_stops_new_trials(lab: Lab):
    project(lab)
    slow_started = threading.Event()

    def first(task: str, trial: int) -> ScriptedModel:
        if trial == 1:  # this one is still running when the experiment is stopped
            slow_started.set()
            return ScriptedModel([tool("Bash", command="sleep 300"), "never"])
        return ScriptedModel(writes("ok\n"))

    tasks = [Task("health", prompt="write ok", score=HEALTH)]
    exp = lab.experiment("resume", tasks, trials=3, model=first, concurrency=1).start()
    poll(lambda: (True,) if exp.rows().loc[1, "status"] == "running" and exp.rows().loc[1, "run_id"] else None,
         timeout=120)
    exp.stop()
    rows = exp.wait(timeout=120)
    assert list(rows["status"]) == ["success", "cancelled", "pending"]
    done_run = rows.loc[0, "run_id"]

    with pytest.raises(ConfigError, match="other tasks or variants"):
        lab.experiment("resume", [Task("other", prompt="x")], trials=3)
    again = lab.experiment("resume", tasks, trials=3, model=lambda task, trial: ScriptedModel(writes("ok\n")))
    rows = again.run()
    assert list(rows["status"]) == ["success"] * 3 and rows.loc[0, "run_id"] == done_run  # not run again
    assert rows["passed"].all()

    seen = []
    spend = lab.experiment("budget", tasks, trials=3, concurrency=1, budget_usd=1e-9,
                           variants={"capped": {"max_budget_usd": 5.0}},  # the CLI's own limit per run, too
                           model=lambda task, trial: ScriptedModel(writes("ok\n"), priced=True))  # a cost to count
    spend.on_trial = seen.append
    rows = spend.run()
    assert rows.loc[0, "status"] == "success" and rows.loc[0, "cost_usd"] > 0
    assert list(rows["status"][1:]) == ["not_started"] * 2 and "budget" in rows.loc[1, "error"]
    assert "--max-budget-usd" in lab.run_store.record(rows.loc[0, "run_id"])["options"]["argv"]
    assert [r["status"] for r in seen] == ["success"] and bool(seen[0]["passed"])
    assert "1/3 trials finished, 1 passed" in spend._repr_html_()


def test_the_cli_runs_an_experiment_file(lab: Lab, tmp_path):
    project(lab)
    (tmp_path / "turns.json").write_text(json.dumps({"health": writes("ok\n")}))
    (tmp_path / "exp.toml").write_text(f'''
name = "cli-exp"
trials = 2
concurrency = 2
scripted = "turns.json"

[[tasks]]
name = "health"
prompt = "write ok to health.txt"
score = {json.dumps(HEALTH)}

[variants.plain]
[variants.terse]
prompt_suffix = " Be brief."
''')

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "claude_lab.cli", "-C", str(lab.config.project_dir), "-n", lab.name,
                               *args], capture_output=True, text=True, timeout=600)

    ran = cli("--json", "experiment", "run", str(tmp_path / "exp.toml"))
    assert ran.returncode == 0, ran.stderr
    report = json.loads(ran.stdout)
    assert [s["pass@2"] for s in report["summary"]] == [1.0, 1.0] and len(report["rows"]) == 4
    listed = json.loads(cli("--json", "experiment", "list").stdout)
    assert [(e["name"], e["finished"], e["passed"]) for e in listed] == [("cli-exp", 4, 4)]
    shown = json.loads(cli("--json", "experiment", "show", "cli-exp").stdout)
    assert {r["status"] for r in shown["rows"]} == {"success"}
    exported = cli("experiment", "export", "cli-exp", "--inspect", str(tmp_path / "cli.eval"))
    assert exported.returncode == 0, exported.stderr
    from inspect_ai.log import read_eval_log

    assert len(read_eval_log(str(tmp_path / "cli.eval")).samples) == 4
    missing = cli("experiment", "show", "nope")
    assert missing.returncode != 0 and "no experiment 'nope'" in missing.stderr
