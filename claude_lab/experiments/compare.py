"""The trials of one task side by side: each trial's status, score and diff (HTML in a notebook, text elsewhere)."""
from __future__ import annotations

import html
from typing import Any

__all__ = ["Comparison"]


class Comparison:
    def __init__(self, experiment: str, task: str, rows: list[dict[str, Any]], diffs: dict[str, str]):
        self.experiment, self.task, self.rows, self.diffs = experiment, task, rows, diffs

    def _head(self, r: dict[str, Any]) -> str:
        score = "" if r.get("score") is None or r.get("score") != r.get("score") else f", score {r['score']:g}"
        passed = {True: "passed", False: "failed"}.get(r.get("passed"), "not scored")
        return f"{r['variant']} #{r['trial']}: {r['status']}, {passed}{score}"

    def __str__(self) -> str:
        parts = [f"experiment {self.experiment}, task {self.task}: {len(self.rows)} trials"]
        for r in self.rows:
            parts.append("=" * 72)
            parts.append(self._head(r) + (f"  (run {r['run_id']})" if r.get("run_id") else ""))
            parts.append("-" * 72)
            parts.append(self.diffs.get(r.get("run_id") or "", "") or "(no changes)")
        return "\n".join(parts)

    def __repr__(self) -> str:
        return str(self)

    def _repr_html_(self) -> str:
        cells = []
        for r in self.rows:
            diff = html.escape(self.diffs.get(r.get("run_id") or "", "") or "(no changes)")
            color = {True: "#1a7f37", False: "#cf222e"}.get(r.get("passed"), "#57606a")
            cells.append(f"<td style='vertical-align:top;min-width:22em'><div style='color:{color};font-weight:bold'>"
                         f"{html.escape(self._head(r))}</div><div style='font-size:80%'>"
                         f"{html.escape(r.get('run_id') or '')}</div>"
                         f"<pre style='font-size:75%;max-height:30em;overflow:auto'>{diff}</pre></td>")
        return (f"<p><b>{html.escape(self.experiment)}</b>: task <b>{html.escape(self.task)}</b></p>"
                f"<div style='overflow-x:auto'><table><tr>{''.join(cells)}</tr></table></div>")
