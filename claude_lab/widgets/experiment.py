"""`exp.view()`: an experiment as a live progress bar and table, refreshed as each trial ends.

The refresh runs in the experiment's worker threads (never on the kernel's thread), so the next cell runs
while `exp.start()` works in the background; ipywidgets sends each change to the browser as it happens.
"""
from __future__ import annotations

from typing import Any

import ipywidgets as w

__all__ = ["ExperimentView"]


class ExperimentView(w.VBox):
    def __init__(self, exp: Any):
        self.exp = exp
        self.bar = w.IntProgress(min=0, max=exp.size, description=exp.name, bar_style="info",
                                 layout=w.Layout(width="60%"))
        self.line = w.HTML()
        self.table = w.HTML()
        super().__init__([w.HBox([self.bar, self.line]), self.table])
        self.refresh()
        chained = exp.on_trial

        def on_trial(row: dict[str, Any]) -> None:  # in a worker thread of the experiment
            if chained is not None:
                chained(row)
            self.refresh()

        exp.on_trial = on_trial

    def refresh(self) -> None:
        rows = self.exp.rows()
        finished = int(rows["status"].isin(["success", "error", "timeout", "max_turns", "scorer_error"]).sum())
        passed = int(rows["passed"].fillna(False).sum())
        self.bar.value = finished
        self.bar.bar_style = "success" if finished == self.exp.size else "info"
        self.line.value = f"{finished}/{self.exp.size} trials finished, {passed} passed"
        shown = rows[["task", "variant", "trial", "status", "passed", "score", "turns", "cost_usd", "duration_s",
                      "error"]]
        self.table.value = shown.to_html(index=False, na_rep="", float_format=lambda v: f"{v:.3g}")
