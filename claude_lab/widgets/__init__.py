"""Notebook panels (ipywidgets) over `Lab`: containers, an agent runner, live stats.

Front ends only: every Docker action goes through `Lab` methods. Needs the `notebook` extra
(`pip install 'claude-lab[notebook]'`); `import claude_lab` alone never imports this package.
"""
from .containers import ContainersPanel
from .panel import LabPanel
from .refresher import Refresher, stop_all
from .runner import RunnerPanel
from .stats_panel import StatsPanel, draw_chart, start_sampler
from .transcript import event_lines, summary_line

__all__ = ["LabPanel", "ContainersPanel", "RunnerPanel", "StatsPanel", "Refresher", "stop_all",
           "draw_chart", "start_sampler", "event_lines", "summary_line"]
