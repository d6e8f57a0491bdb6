"""Notebook panels (ipywidgets) over `Lab`: containers, an agent runner, live stats.

Front ends only: every Docker action goes through `Lab` methods. Needs the `notebook` extra
(`pip install 'claude-lab[notebook]'`). Names load on first use, so `claude_lab.widgets.transcript`
(the text the magics print) never imports ipywidgets; a panel does, when one is made.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "ContainersPanel": "containers",
    "ExperimentView": "experiment",
    "LabPanel": "panel",
    "Refresher": "refresher",
    "RunnerPanel": "runner",
    "StatsPanel": "stats_panel",
    "draw_chart": "stats_panel",
    "event_lines": "transcript",
    "start_sampler": "stats_panel",
    "stop_all": "refresher",
    "summary_line": "transcript",
}
__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    from .containers import ContainersPanel
    from .experiment import ExperimentView
    from .panel import LabPanel
    from .refresher import Refresher, stop_all
    from .runner import RunnerPanel
    from .stats_panel import StatsPanel, draw_chart, start_sampler
    from .transcript import event_lines, summary_line


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
