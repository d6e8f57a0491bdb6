"""An experiment as an Inspect eval log, written with `inspect_ai`'s own types and writer (the `inspect` extra).

One sample per (task, variant), one epoch per trial: the run's conversation as Inspect chat messages
(the prompt, each assistant turn with its tool calls, each tool result), the trial's score (value,
the scorer's output as explanation, passed in metadata), model usage and timing; the eval spec
carries the agent image, the Claude Code version and the project's git revision. `inspect view`
shows the file; `inspect_ai.log.read_eval_log` reads it back.
"""
from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._version import __version__
from ..errors import ConfigError
from ..runs.events import AssistantMessage, TextBlock, ToolResultBlock, ToolUseBlock, UserMessage

if TYPE_CHECKING:
    from ..runs.store import RunStore

__all__ = ["write_inspect_log"]

SCORER = "claude_lab"


def _inspect() -> Any:
    try:
        import inspect_ai.log as log
        import inspect_ai.model as model
        import inspect_ai.scorer as scorer
        import inspect_ai.tool as tool
    except ImportError:
        raise ConfigError("exporting to Inspect needs inspect_ai: pip install 'claude-lab[inspect]'") from None
    return log, model, scorer, tool


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(str(c.get("text", "")) if isinstance(c, dict) else str(c) for c in content)
    return "" if content is None else str(content)


def _messages(events: list[Any], prompt: str, model_mod: Any, tool_mod: Any) -> list[Any]:
    out: list[Any] = [model_mod.ChatMessageUser(content=prompt)]
    names: dict[str, str] = {}
    for event in events:
        if isinstance(event, AssistantMessage) and event.parent_tool_use_id is None:
            text = "".join(b.text for b in event.content if isinstance(b, TextBlock))
            calls = []
            for b in event.content:
                if isinstance(b, ToolUseBlock):
                    names[b.id] = b.name
                    calls.append(tool_mod.ToolCall(id=b.id, function=b.name, arguments=b.input))
            out.append(model_mod.ChatMessageAssistant(content=text, tool_calls=calls or None, model=event.model))
        elif isinstance(event, UserMessage) and event.parent_tool_use_id is None and isinstance(event.content, list):
            for b in event.content:
                if isinstance(b, ToolResultBlock):
                    out.append(model_mod.ChatMessageTool(content=_text(b.content), tool_call_id=b.tool_use_id,
                                                         function=names.get(b.tool_use_id)))
    return out


def _missing(value: Any) -> bool:
    try:
        return value is None or bool(value != value) or str(value) == "<NA>"
    except (TypeError, ValueError):
        return False


def _iso(value: Any) -> str | None:
    return str(value) if value else None


def write_inspect_log(exp: Any, store: "RunStore", path: str | Path, lab: str) -> Path:
    log, model_mod, scorer_mod, tool_mod = _inspect()
    rows = [{k: (None if _missing(v) else v) for k, v in r.items()} for r in exp.rows().to_dict("records")]
    rows = [r for r in rows if r.get("run_id")]
    record = store.experiment(exp.name) or {}
    outputs = {t["run_id"]: (t.get("scorer_output") or "")[-4000:] for t in store.trial_rows(exp.name)}
    samples, usage_total, models, images, versions = [], {}, set(), set(), set()
    for r in rows:
        rec = store.record(r["run_id"])
        result = store.result(r["run_id"])
        name = rec.get("model") or result.model or "claude-code"
        models.add(name)
        images.add(rec.get("image_id"))
        versions.add(rec.get("claude_code_version"))
        usage = model_mod.ModelUsage(input_tokens=int(rec.get("input_tokens") or 0),
                                     output_tokens=int(rec.get("output_tokens") or 0),
                                     total_tokens=int(rec.get("input_tokens") or 0) + int(rec.get("output_tokens") or 0),
                                     input_tokens_cache_read=rec.get("cache_read_tokens"),
                                     input_tokens_cache_write=rec.get("cache_creation_tokens"),
                                     total_cost=rec.get("cost_usd"))
        total = usage_total.setdefault(name, model_mod.ModelUsage())
        usage_total[name] = total + usage
        messages = _messages(result.events, rec.get("prompt") or "", model_mod, tool_mod)
        passed = r.get("passed")
        score = None
        if passed is not None:
            score = scorer_mod.Score(value=float(r["score"]) if r.get("score") is not None else float(passed),
                                     answer=(result.result or "")[:2000], explanation=(r.get("error") or None)
                                     if r["status"] == "scorer_error" else None,
                                     metadata={"passed": bool(passed), "scorer_output": outputs.get(r["run_id"], "")})
        samples.append(log.EvalSample(
            id=f"{r['task']}/{r['variant']}", epoch=int(r["trial"]) + 1, input=rec.get("prompt") or "", target="",
            messages=messages,
            output=model_mod.ModelOutput.from_content(name, result.result or ""),
            scores={SCORER: score} if score is not None else None,
            metadata={"task": r["task"], "variant": r["variant"], "trial": int(r["trial"]), "run_id": r["run_id"],
                      "agent": r["agent"], "status": r["status"], "passed": None if passed is None else bool(passed),
                      "cost_usd": rec.get("cost_usd"), "diff_lines_added": r.get("lines_added"),
                      "diff_lines_deleted": r.get("lines_deleted"), "changed_files": rec.get("changed_files")},
            model_usage={name: usage}, total_time=rec.get("duration_s"), working_time=rec.get("duration_s"),
            started_at=_iso(rec.get("started_at")), completed_at=_iso(rec.get("ended_at")),
            error=log.EvalError(message=r["error"], traceback="", traceback_ansi="")
            if r["status"] in ("error", "timeout", "scorer_error") and r.get("error") else None,
        ))
    summary = exp.summary()
    scored = [s for s in samples if s.scores]
    accuracy = sum(1 for s in scored if s.scores[SCORER].metadata["passed"]) / len(scored) if scored else 0.0
    metrics = {"accuracy": log.EvalMetric(name="accuracy", value=accuracy)}
    for col in [c for c in summary.columns if c.startswith("pass@")]:
        value = float(summary[col].mean()) if len(summary) else 0.0
        metrics[col] = log.EvalMetric(name=col, value=value if value == value else 0.0)
    created = record.get("created_at") or datetime.now(timezone.utc).isoformat()
    revision = None
    if record.get("base_commit"):
        revision = log.EvalRevision(type="git", origin=str(exp.source or "project"), commit=record["base_commit"])
    spec = log.EvalSpec(
        created=created, task=exp.name, task_id=record.get("fingerprint") or exp.name, run_id=exp.name,
        dataset=log.EvalDataset(name=exp.name, samples=len(exp.tasks) * len(exp.variants),
                                sample_ids=[f"{t.name}/{v}" for t in exp.tasks for v in exp.variants]),
        model=f"claude-code/{sorted(models)[0] if len(models) == 1 else 'mixed'}",
        config=log.EvalConfig(epochs=exp.trials, max_samples=exp.concurrency),
        revision=revision, packages={"claude-lab": __version__},
        solver="claude-lab/claude-code",
        metadata={"lab": lab, "variants": record.get("spec", {}).get("variants"), "tasks": record.get("spec", {})
                  .get("tasks"), "image_id": sorted(i for i in images if i), "claude_code_version":
                  sorted(v for v in versions if v), "models": sorted(models)},
    )
    finished = [r for r in rows if r["status"] not in ("running", "pending", "cancelled", "not_started")]
    results = log.EvalResults(total_samples=exp.size, completed_samples=len(finished),
                              scores=[log.EvalScore(name=SCORER, scorer=SCORER, scored_samples=len(scored),
                                                    unscored_samples=len(samples) - len(scored), metrics=metrics)])
    stats = log.EvalStats(started_at=created, completed_at=record.get("updated_at") or created,
                          model_usage=usage_total)
    status = "success" if len(finished) == exp.size else "started"
    plan = log.EvalPlan(name="claude-code", steps=[log.EvalPlanStep(solver="claude-lab/claude-code", params={
        "max_turns": exp.max_turns, "source": exp.source, "concurrency": exp.concurrency})])
    eval_log = log.EvalLog(status=status, eval=spec, plan=plan, results=results, stats=stats, samples=samples)
    target = Path(path).expanduser()
    log.write_eval_log(eval_log, str(target), format="eval" if target.suffix == ".eval" else "json")
    return target
