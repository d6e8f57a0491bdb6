"""The CLI's app, its shared state and helpers: errors to exit codes, tables, build progress."""
from __future__ import annotations

import json
from typing import Any, Optional

import pandas as pd
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .._version import __version__
from ..errors import (
    AlreadyExists,
    BuildError,
    ConfigError,
    EngineUnavailable,
    InvalidName,
    LabError,
    LabTimeout,
    MergeConflict,
    NotFound,
    NotRunning,
    PortInUse,
)
from ..images import BuildEvent
from ..lab import Lab

app = typer.Typer(
    help="Run Claude Code agents in isolated Docker containers next to your dev services.",
    no_args_is_help=True,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
out = Console()
err = Console(stderr=True)

# Exit codes a script can rely on.
EXIT_CODES: list[tuple[type[LabError], int]] = [
    (EngineUnavailable, 3), (NotFound, 4), (PortInUse, 5), (BuildError, 6), (LabTimeout, 7),
    (InvalidName, 8), (ConfigError, 8), (AlreadyExists, 9), (MergeConflict, 10), (NotRunning, 1), (LabError, 1),
]


class State:
    project_dir: str = "."
    name: Optional[str] = None
    json: bool = False


state = State()


def _lab() -> Lab:
    return Lab(state.project_dir, state.name)


def _fail(exc: LabError) -> None:
    code = next(c for kind, c in EXIT_CODES if isinstance(exc, kind))
    if state.json:
        print(json.dumps({"error": type(exc).__name__, "message": str(exc)}))
    else:
        err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, markup=True)
    raise typer.Exit(code)


def _emit(df: pd.DataFrame, title: str) -> None:
    if state.json:
        print(df.to_json(orient="records", date_format="iso"))
        return
    table = Table(title=title, title_justify="left")
    for col in df.columns:
        table.add_column(str(col))
    for _, row in df.iterrows():
        table.add_row(*("" if pd.isna(v) else str(v) for v in row.tolist()))
    out.print(table)


def _progress(event: BuildEvent) -> None:
    if state.json:
        return
    if event.kind == "step":
        err.print(f"[cyan]{event.image}[/] \\[{event.step}/{event.total}] {escape(event.text[:110])}",
                  highlight=False)
    elif event.kind in ("done", "skipped", "start"):
        err.print(f"[cyan]{event.image}[/] {escape(event.text)}", highlight=False)


def _verbose_progress(event: BuildEvent) -> None:
    _progress(event)
    if event.kind == "output" and not state.json:
        err.print(f"  {event.text}", highlight=False, markup=False)


def _run(fn, *args: Any, **kwargs: Any) -> Any:
    try:
        return fn(*args, **kwargs)
    except LabError as exc:
        _fail(exc)


def _print_version(value: bool) -> None:
    # Eager: a group's callback only runs when a command follows, so `--version` alone must act here.
    if value:
        print(__version__)
        raise typer.Exit(0)


@app.callback()
def main_options(
    project_dir: str = typer.Option(".", "--project-dir", "-C", help="The project folder (default: here)."),
    name: Optional[str] = typer.Option(None, "--name", "-n", help="Lab name (default: from the folder name)."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
    version: bool = typer.Option(False, "--version", help="Print the version and exit.",
                                 callback=_print_version, is_eager=True),
) -> None:
    state.project_dir, state.name, state.json = project_dir, name, as_json


