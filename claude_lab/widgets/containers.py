"""The containers panel: the lab's containers in a table, kept fresh in the background, with actions.

Every row has start / stop / restart / remove / logs; an agent seeded from the project shows how many
files it changed, and its "changes" button shows its diff with a Merge button (a refused merge says why,
in the panel, and changes nothing). Below the table a form creates agents.
Actions run one at a time on a worker thread (a stop can take seconds), so the kernel stays
free; what they did, or why they failed, shows in the panel's message line and in `.errors`.
"""
from __future__ import annotations

import html
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Callable

import ipywidgets as widgets
import pandas as pd

from ..errors import LabError
from .refresher import Refresher

if TYPE_CHECKING:
    from ..lab import Lab

COLUMNS = [("name", "190px"), ("role", "60px"), ("state", "80px"), ("health", "80px"),
           ("CPU %", "60px"), ("memory", "150px"), ("changes", "70px")]
ACTIONS = ("start", "stop", "restart", "remove", "logs", "changes")
DIFF_CHARS = 100_000
ROLE_ORDER = {"dev": 0, "postgres": 1, "redis": 2, "agent": 3}
LOG_LINES = 200
_DOING = {"start": "starting", "stop": "stopping", "restart": "restarting", "remove": "removing",
          "logs": "reading the log of", "changes": "reading the changes of", "merge": "merging the work of"}
_DONE = {"start": "started", "stop": "stopped", "restart": "restarted", "remove": "removed"}
_STATE_COLOURS = {"running": "#2e7d32", "exited": "#757575", "created": "#757575", "dead": "#c62828",
                  "restarting": "#ef6c00", "paused": "#ef6c00"}


def human_bytes(value: Any) -> str:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return "–"
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit in ("B", "KiB") else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"  # pragma: no cover


def _fixed(width: str) -> widgets.Layout:
    """A column that keeps its width (a row's buttons must not squeeze it out of line with the header)."""
    return widgets.Layout(width=width, min_width=width, flex="0 0 auto")


def _present(value: Any) -> bool:
    return value is not None and not (isinstance(value, float) and pd.isna(value))


class _Row:
    """The widgets of one container's row; updated in place so clicks never land on a stale button."""

    def __init__(self, panel: "ContainersPanel", record: dict[str, Any]):
        self.name: str = record["name"]
        self.role: str | None = record.get("role")
        self.agent: str | None = record.get("agent") if _present(record.get("agent")) else None
        self.short = panel.short_name(self.name)
        self.cells = {title: widgets.HTML(layout=_fixed(width)) for title, width in COLUMNS}
        self.buttons = {}
        for action in ACTIONS:
            button = widgets.Button(description=action, layout=widgets.Layout(width="68px", padding="0 4px"),
                                    tooltip=f"{action} {self.short}")
            button.add_class(f"claude-lab-{action}")
            button.on_click(lambda _b, a=action: panel.request(self.name, a))
            self.buttons[action] = button
        self.box = widgets.HBox([*self.cells.values(), *self.buttons.values()])
        self.box.add_class("claude-lab-row")
        self.box.add_class(f"claude-lab-row-{self.short}")
        self.state = ""

    def update(self, record: dict[str, Any], stats: dict[str, Any] | None, busy: bool,
               changed: int | None = None) -> None:
        self.state = str(record.get("state") or "")
        group = record.get("group") if _present(record.get("group")) else None
        cells = {
            "name": f"<code>{html.escape(self.short)}</code>"
                    + (f" <small>({html.escape(str(group))})</small>" if group else ""),
            "role": html.escape(str(self.role or "")),
            "state": f"<span style='color:{_STATE_COLOURS.get(self.state, '#000')}'>"
                     f"&#9679; {html.escape(self.state)}</span>",
            "health": html.escape(str(record.get("health"))) if _present(record.get("health")) else "",
            "CPU %": "–", "memory": "–",
            "changes": "–" if changed is None else f"{changed} file{'' if changed == 1 else 's'}",
        }
        if stats:
            if _present(stats.get("cpu_percent")):
                cells["CPU %"] = f"{float(stats['cpu_percent']):.1f}"
            if _present(stats.get("mem_bytes")):
                limit = stats.get("mem_limit")
                cells["memory"] = human_bytes(stats["mem_bytes"]) + (
                    f" / {human_bytes(limit)}" if _present(limit) and limit else "")
        for title, value in cells.items():
            if self.cells[title].value != value:
                self.cells[title].value = value
        running = self.state == "running"
        enabled = {"start": not running, "stop": running, "restart": True,
                   "remove": self.agent is not None, "logs": True, "changes": changed is not None}
        for action, button in self.buttons.items():
            disabled = busy or not enabled[action]
            if button.disabled != disabled:
                button.disabled = disabled

    def close(self) -> None:
        for w in (*self.cells.values(), *self.buttons.values(), self.box):
            w.close()


class ContainersPanel(widgets.VBox):
    """A table of the lab's containers (name, role, state, health, CPU %, memory) with actions.

    `refresh` is the seconds between background updates; `stats` a running stats sampler
    (`lab.watch_stats()`) for the CPU and memory columns, or None to leave them empty.
    """

    def __init__(self, lab: "Lab", stats: Any = None, refresh: float = 2.0,
                 on_agents: Callable[[list[str]], None] | None = None):
        header = widgets.HBox([widgets.HTML(f"<b>{html.escape(title)}</b>", layout=_fixed(width))
                               for title, width in COLUMNS])
        table = widgets.VBox([header])
        new_id = widgets.Text(placeholder="agent-002", description="new agent",
                              layout=widgets.Layout(width="260px"))
        new_group = widgets.Text(placeholder="group (optional)", layout=widgets.Layout(width="160px"))
        create = widgets.Button(description="create", button_style="primary", tooltip="create the agent",
                                layout=widgets.Layout(width="80px"))
        create.add_class("claude-lab-create")
        message = widgets.HTML()
        message.add_class("claude-lab-message")
        logs = widgets.HTML()
        merge = widgets.Button(description="merge", button_style="warning", layout=widgets.Layout(
            width="80px", display="none"), tooltip="merge the agent's work into the project's branch")
        merge.add_class("claude-lab-merge")
        super().__init__([table, widgets.HBox([new_id, new_group, create]), message, logs, merge])
        self.add_class("claude-lab-containers")
        self.lab = lab
        self.stats = stats
        self.on_agents = on_agents
        self.table, self.header, self.message, self.logs = table, header, message, logs
        self.new_id, self.new_group, self.create_button = new_id, new_group, create
        self.merge_button, self.diff_of = merge, None  # the agent whose diff is shown
        merge.on_click(lambda _b: self.diff_of and self.request(self._rows_by_agent(self.diff_of), "merge"))
        self.errors: list[str] = []
        self.records: list[dict[str, Any]] = []  # the last status seen, for the static fallback
        self.agent_ids: list[str] = []
        self.last_refresh: float | None = None
        self._rows: dict[str, _Row] = {}
        self._busy: set[str] = set()
        self._lock = threading.RLock()
        self._stopped = False
        self._refresh_failed = False
        self._actions = ThreadPoolExecutor(max_workers=1, thread_name_prefix="claude-lab-action")
        create.on_click(lambda _b: self.create_agent())
        self.refresh_safely()
        self.refresher = Refresher("containers", refresh, self.refresh, self._refresh_error).start()

    # -- refreshing ---------------------------------------------------------------------------
    def short_name(self, name: str) -> str:
        prefix = f"{self.lab.name}_"
        return name[len(prefix):] if name.startswith(prefix) else name

    def _latest_stats(self) -> dict[str, dict[str, Any]]:
        if self.stats is None:
            return {}
        try:
            latest = self.stats.latest()
        except Exception:  # the sampler's own trouble shows in the stats tab
            return {}
        if latest is None or len(latest) == 0 or "name" not in latest:
            return {}
        return {str(r["name"]): r for r in latest.to_dict("records")}

    def refresh(self) -> None:
        """Read the lab's containers (and latest stats) and update the table in place."""
        if self._stopped:
            return
        records = self.lab.status().to_dict("records")
        stats = self._latest_stats()
        changed = {r["agent"]: self._changed(r["agent"]) for r in records
                   if r.get("role") == "agent" and r.get("state") == "running" and _present(r.get("agent"))}
        with self._lock:
            if self._stopped:
                return
            names = []
            for record in records:
                name = record["name"]
                row = self._rows.get(name)
                if row is None:
                    row = self._rows[name] = _Row(self, record)
                row.update(record, stats.get(name), busy=name in self._busy, changed=changed.get(row.agent))
                names.append(name)
            for gone in set(self._rows) - set(names):
                self._rows.pop(gone).close()
            ordered = sorted(names, key=lambda n: (ROLE_ORDER.get(self._rows[n].role or "", 9), n))
            children = (self.header, *(self._rows[n].box for n in ordered))
            if tuple(self.table.children) != children:
                self.table.children = children
            self.records = records
            self.agent_ids = sorted(r.agent for r in self._rows.values() if r.agent)
            self.last_refresh = time.time()
            if self._refresh_failed:  # the engine answers again: drop the stale error
                self._refresh_failed = False
                self._set_message("")
        if self.on_agents is not None:
            self.on_agents(list(self.agent_ids))

    def _changed(self, agent: str) -> int | None:
        """How many files a seeded agent changed against its base; None for an agent not seeded."""
        try:
            return len(self.lab.changes(agent))
        except LabError:
            return None

    def _rows_by_agent(self, agent: str) -> str:
        return self.row(agent).name

    def refresh_safely(self) -> None:
        try:
            self.refresh()
        except Exception as exc:
            self._refresh_error(exc)

    def _refresh_error(self, exc: BaseException) -> None:
        self._refresh_failed = True
        self.show_error(f"could not read the lab's containers: {exc}")

    # -- messages -------------------------------------------------------------------------------
    def _set_message(self, value: str) -> None:
        if not self._stopped:
            self.message.value = value

    def note(self, text: str) -> None:
        self._set_message(f"<span style='color:#2e7d32'>{html.escape(text)}</span>")

    def show_error(self, text: str) -> None:
        """Show an error in the panel (and keep it in `.errors`): nothing a click causes is lost."""
        self.errors.append(text)
        self._set_message(f"<span style='color:#c62828'>&#10007; {html.escape(text)}</span>")

    # -- actions --------------------------------------------------------------------------------
    def row(self, agent_or_name: str) -> _Row:
        """The row of a container, by agent id, short name or container name."""
        with self._lock:
            for row in self._rows.values():
                if agent_or_name in (row.name, row.short, row.agent):
                    return row
        raise LabError(f"no row for {agent_or_name!r} in the panel; rows: "
                       f"{', '.join(r.short for r in self._rows.values()) or 'none'}")

    def request(self, name: str, action: str) -> None:
        """Queue `action` on container `name` (what a row's button does)."""
        if action not in (*ACTIONS, "merge"):
            raise LabError(f"unknown action {action!r}; use one of {', '.join(ACTIONS)}, merge")
        with self._lock:
            if self._stopped or name in self._busy or name not in self._rows:
                return
            self._busy.add(name)
            row = self._rows[name]
            for button in row.buttons.values():
                button.disabled = True
        self.note(f"{_DOING[action]} {row.short}…")
        self._actions.submit(self._perform, row, action)

    def _perform(self, row: _Row, action: str) -> None:
        try:
            if action == "start":
                self.lab.start(row.name)
            elif action == "stop":
                self.lab.stop(row.name)
            elif action == "restart":
                self.lab.restart(row.name)
            elif action == "remove":
                if row.agent is None:
                    raise LabError(f"{row.short} is a service, not an agent: stop it instead")
                self.lab.remove_agent(row.agent)
            if action == "logs":
                self._show_logs(row)
                self.note(f"the last {LOG_LINES} log lines of {row.short} are below")
            elif action == "changes":
                self._show_changes(row)
                self.note(f"the changes of {row.short} against its base are below")
            elif action == "merge":
                result = self.lab.merge(row.agent or row.name)
                self.note(f"merged {result.branch} into {result.into}: {len(result.files)} files "
                          f"({', '.join(result.files[:6])}{', …' if len(result.files) > 6 else ''})")
            else:
                self.note(f"{_DONE[action]} {row.short}"
                          + (" (its workspace volume is kept)" if action == "remove" else ""))
        except Exception as exc:
            self.show_error(f"{action} {row.short}: {exc}")
        finally:
            with self._lock:
                self._busy.discard(row.name)
            self.refresh_safely()

    def _show_changes(self, row: _Row) -> None:
        diff = self.lab.diff(row.agent or row.name)
        shown = diff[:DIFF_CHARS] + (f"\n… {len(diff) - DIFF_CHARS:,} more characters (lab.diff)" if len(diff) > DIFF_CHARS else "")
        if not self._stopped:
            self.diff_of = row.agent
            self.logs.value = (f"<div><b>changes of {html.escape(row.short)}</b> against the commit it was seeded "
                               f"from</div><pre style='max-height:320px;overflow:auto;margin:2px 0'>"
                               f"{html.escape(shown) or '<i>(no changes)</i>'}</pre>")
            self.merge_button.layout.display = "" if diff else "none"

    def _show_logs(self, row: _Row) -> None:
        text = self.lab.logs(row.name, tail=LOG_LINES)
        assert isinstance(text, str)
        if not self._stopped:
            self.diff_of, self.merge_button.layout.display = None, "none"
            self.logs.value = (f"<div><b>log of {html.escape(row.short)}</b> (last {LOG_LINES} lines)</div>"
                               f"<pre style='max-height:240px;overflow:auto;margin:2px 0'>"
                               f"{html.escape(text) or '<i>(empty)</i>'}</pre>")

    def create_agent(self) -> None:
        """Create the agent named in the form (what the "create" button does)."""
        agent_id = self.new_id.value.strip()
        group = self.new_group.value.strip() or None
        if not agent_id:
            self.show_error("give the new agent an id, for example agent-002")
            return
        self.create_button.disabled = True
        self.note(f"creating {agent_id}…")
        self._actions.submit(self._perform_create, agent_id, group)

    def _perform_create(self, agent_id: str, group: str | None) -> None:
        try:
            self.lab.create_agent(agent_id, group=group, progress=False)
            self.note(f"created {agent_id}" + (f" in group {group}" if group else ""))
            if not self._stopped:
                self.new_id.value = ""
        except Exception as exc:
            self.show_error(f"create {agent_id}: {exc}")
        finally:
            if not self._stopped:
                self.create_button.disabled = False
            self.refresh_safely()

    # -- stopping and closing ---------------------------------------------------------------------
    def stop(self) -> None:
        """Stop the background refresh and the action worker (the widgets stay, frozen)."""
        if self._stopped:
            return
        self._stopped = True
        self.refresher.stop()
        self._actions.shutdown(wait=False, cancel_futures=True)

    def close(self) -> None:
        """Stop, then close the widgets (their views leave the notebook)."""
        self.stop()
        with self._lock:
            rows, self._rows = list(self._rows.values()), {}
        for row in rows:
            row.close()
        for w in (self.header, self.table, self.message, self.logs, self.new_id, self.new_group,
                  self.create_button, self.merge_button):
            w.close()
        super().close()
