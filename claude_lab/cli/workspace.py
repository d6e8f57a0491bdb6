"""The CLI's commands for agents on the project: diff, changes, fetch, merge, apply, cp, url."""
from __future__ import annotations

import json
import sys
from typing import Any, Callable, Optional

import typer

from ..errors import LabError, MergeConflict
from .app import _emit, _fail, _lab, _run, app, out, state


@app.command()
def diff(agent_id: str = typer.Argument(..., help="The agent.")) -> None:
    """The agent's changes against the commit it was seeded from, committed or not (a unified git diff)."""
    text = _run(_run(_lab).diff, agent_id)
    if state.json:
        print(json.dumps({"agent": agent_id, "diff": text}))
    else:
        sys.stdout.write(text)


@app.command()
def changes(agent_id: str = typer.Argument(..., help="The agent.")) -> None:
    """One line per file the agent changed: status (A, M, D), lines added and deleted."""
    _emit(_run(_run(_lab).changes, agent_id), f"changes of {agent_id}")


@app.command()
def fetch(agent_id: str = typer.Argument(..., help="The agent.")) -> None:
    """Bring the agent's work into the project as the branch claude-lab/AGENT (your working tree is untouched)."""
    branch = _run(_run(_lab).fetch, agent_id)
    print(json.dumps({"agent": agent_id, "branch": branch}) if state.json else branch)


def _bring_back(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run a merge or an apply; a refusal says which files (in --json too) and exits 10."""
    try:
        return fn(*args, **kwargs)
    except MergeConflict as exc:
        if state.json:
            print(json.dumps({"error": "MergeConflict", "message": str(exc), "files": exc.files,
                              "branch": exc.branch}))
            raise typer.Exit(10)
        _fail(exc)
    except LabError as exc:
        _fail(exc)


@app.command()
def merge(agent_id: str = typer.Argument(..., help="The agent."),
          message: Optional[str] = typer.Option(None, "--message", "-m", help="The merge commit's message.")) -> None:
    """Fetch, then merge claude-lab/AGENT into your current branch; refused (exit 10, nothing changed) when it
    would conflict or touch your uncommitted changes."""
    result = _bring_back(_run(_lab).merge, agent_id, message=message)
    if state.json:
        print(json.dumps({"commit": result.commit, "files": result.files, "branch": result.branch,
                          "into": result.into, "fast_forward": result.fast_forward}))
        return
    if not result.files:
        out.print(f"{result.branch} is already in {result.into}: nothing to merge")
        return
    how = "fast-forward" if result.fast_forward else "merge commit"
    out.print(f"merged {result.branch} into {result.into} ({how} {result.commit[:12]}): {', '.join(result.files)}")


@app.command("apply")
def apply_changes(agent_id: str = typer.Argument(..., help="The agent.")) -> None:
    """The agent's changes into your working tree, uncommitted (index and branch untouched)."""
    files = _bring_back(_run(_lab).apply, agent_id)
    if state.json:
        print(json.dumps({"agent": agent_id, "files": files}))
    else:
        out.print(f"applied {len(files)} files from {agent_id}" + (f": {', '.join(files)}" if files else ""))


def _split(spec: str) -> tuple[str | None, str]:
    """`agent-001:/path` -> ("agent-001", "/path"); a host path -> (None, path)."""
    head, sep, tail = spec.partition(":")
    if sep and head and "/" not in head and not head.startswith("."):
        return head, tail
    return None, spec


@app.command()
def cp(src: str = typer.Argument(..., help="A host path, or TARGET:PATH in a lab container."),
       dest: str = typer.Argument(..., help="A host path, or TARGET:PATH in a lab container.")) -> None:
    """Copy files or folders between this machine and a lab container, as `docker cp` does
    (claude-lab cp ./data agent-001:/workspace, claude-lab cp agent-001:/workspace/out ./)."""
    (src_target, src_path), (dest_target, dest_path) = _split(src), _split(dest)
    if (src_target is None) == (dest_target is None):
        _fail(LabError("give exactly one side as TARGET:PATH (an agent id, dev, postgres or redis), e.g. "
                       "`claude-lab cp ./data agent-001:/workspace`"))
    lab = _run(_lab)
    if dest_target is not None:
        landed = str(_run(lab.copy_to, dest_target, src_path, dest_path))
        where = f"{dest_target}:{landed}"
    else:
        landed = str(_run(lab.copy_from, src_target, src_path, dest_path))
        where = landed
    print(json.dumps({"copied": src, "to": where}) if state.json else f"copied {src} to {where}")


@app.command()
def url(agent_id: str = typer.Argument(..., help="The agent."),
        port: int = typer.Argument(..., help="A port the agent publishes (create --port).")) -> None:
    """Where this machine reaches a port the agent published."""
    address = _run(_run(_lab).url, agent_id, port)
    print(json.dumps({"agent": agent_id, "port": port, "url": address}) if state.json else address)
