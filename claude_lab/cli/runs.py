"""The CLI's run commands: claude (a Claude Code run, streamed), runs, show, replay, export, import."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, List, Optional

import typer

from ..errors import AuthenticationError, LabError, ModelUnreachable, ReplayDivergence
from .app import _emit, _fail, _lab, _run, app, err, escape, out, state
from ..util.lazy import lazy

pd = lazy("pandas")  # loaded when a DataFrame is made (the CLI starts without it)

# Exit codes of `claude-lab claude`, one per way a run ends (0: success).
RUN_EXIT = {"success": 0, "error": 20, "max_turns": 21, "timeout": 22, "cancelled": 130}
AUTH_EXIT, UNREACHABLE_EXIT, DIVERGED_EXIT, NOT_REPRODUCED_EXIT = 23, 24, 25, 26
RUNS_IMPORTANCE = ["run_id", "agent", "kind", "status", "started_at", "duration_s", "num_turns", "cost_usd",
                   "prompt", "changed_files", "model", "error"]


def _scripted(path: Path) -> Any:
    from ..model.scripted import ScriptedModel, load_turns

    return ScriptedModel(load_turns(path))


@app.command()
def claude(
    agent_id: str = typer.Argument(..., help="The agent."),
    prompt: List[str] = typer.Argument(None, help="The prompt (the rest of the line); none, or -, reads stdin."),
    max_turns: Optional[int] = typer.Option(None, "--max-turns", help="Stop after this many turns."),
    model: Optional[str] = typer.Option(None, "--model", help="A model name: sonnet, opus, claude-..."),
    timeout: Optional[float] = typer.Option(None, "--timeout", help="Seconds; the run is stopped after."),
    allowed_tools: Optional[str] = typer.Option(None, "--allowed-tools", help="Only these tools: Bash,Edit,Read."),
    resume: Optional[str] = typer.Option(None, "--resume", help="Continue this session id."),
    max_budget_usd: Optional[float] = typer.Option(None, "--max-budget-usd", help="The CLI's spending limit."),
    scripted: Optional[Path] = typer.Option(None, "--scripted", help="A JSON file of turns: a ScriptedModel."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Only the summary line."),
    no_record: bool = typer.Option(False, "--no-record", help="Do not keep the run in the run store."),
) -> None:
    """Run Claude Code in an agent's workspace, streamed: a line per tool call, the assistant's text, then a
    summary. Exit 0 on success; 20 error, 21 max turns, 22 timeout, 23 key refused, 24 model unreachable."""
    text = " ".join(prompt or [])
    if text in ("", "-"):
        if sys.stdin.isatty():
            err.print("[red]error:[/] no prompt: claude-lab claude AGENT 'what to do' (or the prompt on stdin)")
            raise typer.Exit(2)
        text = sys.stdin.read()
    from ..widgets.transcript import event_lines, summary_line

    lab = _run(_lab)
    scripted_model = _run(_scripted, scripted) if scripted else None

    def show(event: Any) -> None:
        if quiet or state.json:
            return
        for line in event_lines(event):
            out.print(escape(line), highlight=False)

    try:
        stream = _run(lab.claude_stream, agent_id, text, max_turns=max_turns, model=scripted_model or model,
                      allowed_tools=allowed_tools.split(",") if allowed_tools else None, timeout=timeout,
                      resume=resume, record=False if no_record else None, max_budget_usd=max_budget_usd)
    except typer.Exit:
        raise
    code = 0
    try:
        for event in stream:
            show(event)
    except KeyboardInterrupt:
        stream.close()
    except AuthenticationError as exc:
        err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
        code = AUTH_EXIT
    except ModelUnreachable as exc:
        err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
        code = UNREACHABLE_EXIT
    except LabError as exc:
        _fail(exc)
    finally:
        if scripted_model is not None:
            scripted_model.stop()
    result = stream.result
    if result is None:
        raise typer.Exit(1)
    if state.json:
        data = result.to_dict()
        data.pop("events", None)
        print(json.dumps(data, default=str))
    else:
        out.print(escape(summary_line(result)), highlight=False)
    raise typer.Exit(code or RUN_EXIT.get(result.status, 1))


@app.command()
def runs(
    agent: Optional[str] = typer.Option(None, "--agent", "-a", help="Only this agent's runs."),
    kind: Optional[str] = typer.Option(None, "--kind", "-k", help="claude, shell or exec."),
    status: Optional[str] = typer.Option(None, "--status", "-s", help="success, error, timeout, ..."),
    limit: int = typer.Option(20, "--limit", "-l", help="The most recent N (0: all)."),
) -> None:
    """The project's recorded runs, oldest first (the last --limit)."""
    lab = _run(_lab)
    df = _run(lab.runs, agent=agent, kind=kind, status=status)
    if limit:
        df = df.tail(limit)
    df = df.assign(prompt=df["prompt"].map(lambda p: " ".join(str(p or "").split())[:60]))
    _emit(df.reset_index(drop=True), "runs", importance=RUNS_IMPORTANCE)


@app.command()
def show(run_id: str = typer.Argument(..., help="A run id (claude-lab runs lists them).")) -> None:
    """One run: its summary, tool calls and diff."""
    from ..widgets.transcript import summary_line

    lab = _run(_lab)
    res = _run(lab.run, run_id)
    if state.json:
        print(json.dumps(res.to_dict(), default=str))
        return
    out.print(f"[bold]{res.kind} run {res.run_id}[/] in {escape(res.agent_id)}", highlight=False)
    out.print(escape(summary_line(res)), highlight=False)
    out.print(f"prompt: {escape(res.prompt)}", highlight=False)
    if res.tool_calls:
        _emit(pd.DataFrame([{"tool": c.name, "call": c.summary(), "error": "yes" if c.is_error else ""}
                            for c in res.tool_calls]), "tool calls", importance=["tool", "call", "error"])
    if res.diff:
        out.print("[bold]diff[/]")
        out.print(escape(res.diff), highlight=False, markup=False)


@app.command()
def replay(
    run_id: str = typer.Argument(..., help="The recorded run to run again."),
    keep: bool = typer.Option(False, "--keep", help="Leave the replay agent running."),
    timeout: Optional[float] = typer.Option(None, "--timeout", help="Seconds."),
) -> None:
    """Run a recorded run again (fresh agent, the recorded workspace, answers from its cassette): exit 0 when
    it reproduced, 25 when it diverged, 26 when its diff differs."""
    lab = _run(_lab)
    try:
        res = lab.replay(run_id, keep=keep, timeout=timeout)
    except ReplayDivergence as exc:
        if state.json:
            print(json.dumps({"error": "ReplayDivergence", "message": str(exc)}))
        else:
            err.print(f"[bold red]diverged:[/] {escape(str(exc))}", highlight=False)
        raise typer.Exit(DIVERGED_EXIT)
    except LabError as exc:
        _fail(exc)
    if state.json:
        print(json.dumps({"run_id": res.run_id, "replay_of": run_id, "status": res.status,
                          "reproduced": res.reproduced}))
    else:
        verdict = "[green]reproduced[/]" if res.reproduced else "[red]not reproduced[/] (the diff differs)"
        out.print(f"replay {res.run_id} of {run_id}: {verdict}", highlight=False)
    raise typer.Exit(0 if res.reproduced else NOT_REPRODUCED_EXIT)


@app.command("export")
def export_run(run_id: str = typer.Argument(...), file: Path = typer.Argument(..., help="run.tar or run.tar.gz")) -> None:
    """Write a run (record, cassette, transcript, workspace snapshot) to a portable file."""
    lab = _run(_lab)
    path = _run(lab.export_run, run_id, file)
    print(json.dumps({"run_id": run_id, "file": str(path)})) if state.json else out.print(f"wrote {path}")


@app.command("import")
def import_run(file: Path = typer.Argument(..., help="A file written by claude-lab export.")) -> None:
    """Read an exported run into this project's run store."""
    lab = _run(_lab)
    res = _run(lab.import_run, file)
    if state.json:
        print(json.dumps({"run_id": res.run_id, "status": res.status}))
    else:
        out.print(f"imported run {res.run_id} ({res.kind} in {res.agent_id}, {res.status})", highlight=False)
