"""The CLI's app, its shared state and helpers: errors to exit codes, tables, build progress."""
from __future__ import annotations

import json
from datetime import datetime
from typing import TYPE_CHECKING, Any, Optional

import typer

from .._version import __version__
from ..errors import (
    AlreadyExists,
    AuthenticationError,
    BuildError,
    ConfigError,
    EngineUnavailable,
    InvalidName,
    LabError,
    LabTimeout,
    MergeConflict,
    ModelUnreachable,
    NotFound,
    NotRunning,
    PortInUse,
)
from ..util.hints import in_idiom
from ..util.lazy import lazy

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

    from ..images import BuildEvent
    from ..lab import Lab

pd = lazy("pandas")  # loaded when a DataFrame is made (the CLI starts without it)

app = typer.Typer(
    help="Run Claude Code agents in isolated Docker containers next to your dev services.",
    no_args_is_help=True,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


class _Console:
    """A rich `Console`, made when something is first printed through it: a command that prints only its
    command's output (`claude-lab exec`) never loads rich."""

    def __init__(self, **options: Any) -> None:
        self._options = options
        self._made: "Console | None" = None

    @property
    def console(self) -> "Console":
        if self._made is None:
            from rich.console import Console

            self._made = Console(**self._options)
        return self._made

    def __getattr__(self, name: str) -> Any:
        return getattr(self.console, name)


def escape(text: str) -> str:
    """rich's markup escape (rich loaded on first use)."""
    from rich.markup import escape as rich_escape

    return rich_escape(text)


out = _Console()
err = _Console(stderr=True)

# Exit codes a script can rely on.
EXIT_CODES: list[tuple[type[LabError], int]] = [
    (EngineUnavailable, 3), (NotFound, 4), (PortInUse, 5), (BuildError, 6), (LabTimeout, 7),
    (InvalidName, 8), (ConfigError, 8), (AlreadyExists, 9), (MergeConflict, 10), (AuthenticationError, 23),
    (ModelUnreachable, 24), (NotRunning, 1), (LabError, 1),
]


class State:
    project_dir: str = "."
    name: Optional[str] = None
    json: bool = False


state = State()


def _lab() -> "Lab":
    from ..lab import Lab  # here, not at the top: `claude-lab --help` never loads the engine's client

    return Lab(state.project_dir, state.name)


def _fail(exc: LabError) -> None:
    code = next(c for kind, c in EXIT_CODES if isinstance(exc, kind))
    if state.json:
        print(json.dumps({"error": type(exc).__name__, "message": in_idiom(str(exc), "cli")}))
    else:
        err.print(f"[bold red]error:[/] {escape(in_idiom(str(exc), 'cli'))}", highlight=False, markup=True)
    raise typer.Exit(code)


# Columns a table never drops, whatever the width: what says which row is which, and how it is.
KEEP = ("name", "run_id", "role", "state", "status", "task", "variant", "trial", "check", "ok")


def _cell(value: Any) -> str:
    """A value as a table shows it: times as local YYYY-MM-DD HH:MM:SS, missing values empty."""
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value)
    if value is None or (not isinstance(value, str) and pd.api.types.is_scalar(value) and pd.isna(value)):
        return ""
    if isinstance(value, (pd.Timestamp, datetime)):
        stamp = pd.Timestamp(value)
        if stamp.tzinfo is not None:
            stamp = stamp.tz_convert(datetime.now().astimezone().tzinfo)
        return stamp.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e6 else f"{value:,.0f}"
    return str(value)


def _fit(df: pd.DataFrame, width: int, importance: list[str] | None) -> tuple[pd.DataFrame, list[str]]:
    """Drop the least important columns until the table fits `width` (never those in KEEP)."""
    cells = {c: [_cell(v) for v in df[c]] for c in df.columns}
    need = {c: max([len(str(c))] + [len(v) for v in cells[c]]) for c in df.columns}
    order = [c for c in (importance or []) if c in df.columns] + [c for c in df.columns if c not in (importance or [])]
    shown, hidden = list(df.columns), []
    for col in reversed(order):
        if sum(min(need[c], 60) + 3 for c in shown) + 1 <= width:
            break
        if col in KEEP or len(shown) <= 1:
            continue
        shown.remove(col)
        hidden.append(col)
    return pd.DataFrame({c: cells[c] for c in shown}, columns=shown), hidden[::-1]


def _table(df: pd.DataFrame, title: str, importance: list[str] | None = None) -> tuple[Table, list[str]]:
    """The rich table of `df` fitted to the terminal, and the columns it leaves out."""
    from rich.table import Table

    shown, hidden = _fit(df, out.width, importance)
    table = Table(title=title, title_justify="left")
    for col in shown.columns:  # what must stay readable gets its width first; a cell too long folds, never "…"
        need = max([len(str(col))] + [len(v) for v in shown[col]])
        table.add_column(str(col), overflow="fold", min_width=min(need, 40) if col in KEEP else None)
    for row in shown.itertuples(index=False):
        table.add_row(*(escape(v) for v in row))
    return table, hidden


def _emit(df: pd.DataFrame, title: str, importance: list[str] | None = None) -> None:
    """A table: --json prints the records; else a table fitted to the terminal (or 80 columns in a pipe):
    the least important columns (the end of `importance`, else the last ones) are left out, and said."""
    if state.json:
        print(df.to_json(orient="records", date_format="iso"))
        return
    table, hidden = _table(df, title, importance)
    out.print(table)
    if hidden:
        out.print(f"[dim]not shown at {out.width} columns: {', '.join(hidden)} (a wider terminal or --json "
                  f"shows them)[/]", highlight=False)


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


