"""`LabPanel`: the lab at a glance in a notebook: containers, an agent runner and live stats, in tabs.

Made by `lab.panel()` or `%lab panel`. Its parts refresh on their own threads; `close()` (the
× button, or the kernel shutting down) stops them all. For renderers without widgets
(nbconvert, GitHub) its display also carries a static text and HTML table of the containers.
"""
from __future__ import annotations

import html
import threading
from typing import TYPE_CHECKING, Any

import ipywidgets as widgets

from .containers import ContainersPanel
from .refresher import track, untrack
from .runner import RunnerPanel
from .stats_panel import StatsPanel, start_sampler

if TYPE_CHECKING:
    from ..lab import Lab

STATIC_COLUMNS = ("name", "role", "state", "health", "agent", "group")


class LabPanel(widgets.VBox):
    """Containers (with actions and a new-agent form), an agent runner, and CPU/memory charts."""

    def __init__(self, lab: "Lab", refresh: float = 2.0, stats_interval: float = 2.0, window: float = 300.0):
        sampler, problem = start_sampler(lab, stats_interval, window)
        containers = ContainersPanel(lab, stats=sampler, refresh=refresh)
        runner = RunnerPanel(lab, agents=list(containers.agent_ids))
        stats = StatsPanel(lab, sampler=sampler, problem=problem, window=window, refresh=max(refresh, stats_interval))
        tabs = widgets.Tab(children=[containers, runner, stats], titles=("Containers", "Run an agent", "Stats"))
        title = widgets.HTML(f"<b>claude-lab</b> <code>{html.escape(lab.name)}</code>")
        close = widgets.Button(icon="times", tooltip="close the panel and stop its refresh threads",
                               layout=widgets.Layout(width="34px"))
        close.add_class("claude-lab-close")
        header = widgets.HBox([title, close], layout=widgets.Layout(justify_content="space-between"))
        super().__init__([header, tabs])
        self.add_class("claude-lab-panel")
        self.lab = lab
        self.sampler = sampler
        self.containers, self.runner, self.stats, self.tabs = containers, runner, stats, tabs
        self._header, self._title, self._close_button = header, title, close
        self._closed = self._stopped = False
        self._close_lock = threading.Lock()
        containers.on_agents = runner.set_agents
        close.on_click(lambda _b: self.close())
        track(self)

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def errors(self) -> list[str]:
        """Every error the panel has shown, from all its parts."""
        return [*self.containers.errors, *self.runner.errors, *self.stats.errors]

    @property
    def stopped(self) -> bool:
        return self._stopped

    def stop(self) -> None:
        """Stop every refresh thread and the stats sampler, and cancel a run still going.

        The widgets stay on screen, frozen. This is what the kernel's shutdown runs (atexit).
        """
        with self._close_lock:
            if self._stopped:
                return
            self._stopped = True
        untrack(self)
        self.containers.stop()
        self.runner.stop()
        self.stats.stop()
        if self.sampler is not None:
            try:
                self.sampler.stop()
            except Exception:
                pass

    def close(self) -> None:
        """Stop, then close the widgets (the × button)."""
        self.stop()
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        self.containers.close()
        self.runner.close()
        self.stats.close()
        for w in (self._title, self._close_button, self._header, self.tabs):
            w.close()
        super().close()

    # -- static fallback ----------------------------------------------------------------------------
    def _text(self) -> str:
        records = self.containers.records
        lines = [f"claude-lab panel for lab {self.lab.name}: {len(records)} containers"
                 + (" (closed)" if self._closed else "")]
        for r in records:
            health = r.get("health")
            lines.append(f"  {r['name']:<40} {str(r.get('role') or ''):<9} {r.get('state')}"
                         + (f" ({health})" if isinstance(health, str) else ""))
        return "\n".join(lines)

    def _html(self) -> str:
        rows = "".join(
            "<tr>" + "".join(f"<td>{html.escape(_cell(r.get(c)))}</td>" for c in STATIC_COLUMNS) + "</tr>"
            for r in self.containers.records)
        head = "".join(f"<th>{c}</th>" for c in STATIC_COLUMNS)
        return (f"<div class='claude-lab-static'><b>claude-lab</b> <code>{html.escape(self.lab.name)}</code> "
                f"&middot; {len(self.containers.records)} containers "
                f"<small>(static view: the live panel needs Jupyter widgets)</small>"
                f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table></div>")

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        data = super()._repr_mimebundle_(**kwargs) or {}
        data["text/plain"] = self._text()
        data["text/html"] = self._html()
        return data

    def __repr__(self) -> str:
        return f"<LabPanel lab={self.lab.name!r}{' closed' if self._closed else ''}>"


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return ""
    return str(value)
