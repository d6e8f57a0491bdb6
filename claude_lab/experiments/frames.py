"""An experiment's tables: one row per trial, and the summary per task and variant."""
from __future__ import annotations

from typing import Any


from .scoring import pass_at_k
from ..util.lazy import lazy

pd = lazy("pandas")  # loaded when a DataFrame is made (the CLI starts without it)

__all__ = ["ROW_COLUMNS", "rows_frame", "summary_frame"]

ROW_COLUMNS = ["experiment", "task", "variant", "trial", "agent", "run_id", "status", "passed", "score", "turns",
               "input_tokens", "output_tokens", "cost_usd", "duration_s", "files_changed", "lines_added",
               "lines_deleted", "error"]


def rows_frame(name: str, keys: list[tuple[str, str, int]], recorded: list[dict[str, Any]]) -> pd.DataFrame:
    by_key = {(r["task"], r["variant"], r["trial"]): r for r in recorded}
    rows = []
    for task, variant, trial in keys:
        rec = by_key.get((task, variant, trial), {})
        row = {c: rec.get(c) for c in ROW_COLUMNS}
        row.update(experiment=name, task=task, variant=variant, trial=trial, status=rec.get("status") or "pending")
        rows.append(row)
    frame = pd.DataFrame(rows, columns=ROW_COLUMNS)
    return frame.astype({"turns": "Int64", "input_tokens": "Int64", "output_tokens": "Int64",
                         "files_changed": "Int64", "lines_added": "Int64", "lines_deleted": "Int64",
                         "passed": "boolean", "score": "Float64", "cost_usd": "Float64", "duration_s": "Float64"})


def summary_frame(rows: pd.DataFrame, ks: list[int]) -> pd.DataFrame:
    out = []
    for (task, variant), group in rows.groupby(["task", "variant"], sort=False):
        scored = group[group["passed"].notna()]
        n, c = len(scored), int(scored["passed"].sum()) if len(scored) else 0
        row: dict[str, Any] = {"task": task, "variant": variant, "trials": len(group), "scored": n, "passed": c,
                               "pass_rate": c / n if n else float("nan")}
        for k in ks:
            row[f"pass@{k}"] = pass_at_k(n, c, k) if n else float("nan")
        turns = group["turns"].dropna().astype(float)
        row.update(turns_mean=turns.mean() if len(turns) else float("nan"),
                   turns_std=turns.std(ddof=1) if len(turns) > 1 else float("nan"),
                   score_mean=group["score"].dropna().astype(float).mean(),
                   cost_usd=group["cost_usd"].dropna().astype(float).sum(),
                   duration_s_mean=group["duration_s"].dropna().astype(float).mean(),
                   errors=int(group["status"].isin(["error", "timeout", "scorer_error"]).sum()))
        out.append(row)
    return pd.DataFrame(out)
