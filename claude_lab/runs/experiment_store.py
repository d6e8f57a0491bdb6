"""The run store's experiment tables: each experiment's spec, and one row per trial linking it to its run.

Part of `RunStore` (a mixin). A trial row's `status` is its run's (success, error, timeout, max_turns),
or scorer_error, cancelled, not_started (a budget stopped it) or running (interrupted when its process
is gone): a resumed experiment runs again every trial not in `FINISHED`.
"""
from __future__ import annotations

import json
import sqlite3
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Iterable

EXPERIMENT_SCHEMA = """
CREATE TABLE IF NOT EXISTS experiments (
    name TEXT PRIMARY KEY, lab TEXT, spec TEXT, fingerprint TEXT, base_commit TEXT, source TEXT,
    created_at TEXT, updated_at TEXT
);
CREATE TABLE IF NOT EXISTS trials (
    experiment TEXT NOT NULL REFERENCES experiments (name) ON DELETE CASCADE,
    task TEXT NOT NULL, variant TEXT NOT NULL, trial INTEGER NOT NULL, agent TEXT, run_id TEXT, status TEXT,
    passed INTEGER, score REAL, scorer_output TEXT, error TEXT, lines_added INTEGER, lines_deleted INTEGER,
    started_at TEXT, ended_at TEXT, PRIMARY KEY (experiment, task, variant, trial)
)
"""
FINISHED = frozenset({"success", "error", "timeout", "max_turns", "scorer_error"})
TRIAL_FIELDS = ("agent", "run_id", "status", "passed", "score", "scorer_output", "error", "lines_added",
                "lines_deleted", "started_at", "ended_at")


class ExperimentTables:
    """RunStore methods for experiments (see the module docstring)."""

    if TYPE_CHECKING:  # provided by RunStore
        def _tx(self) -> AbstractContextManager[sqlite3.Connection]: ...
        def _query(self, sql: str, params: Iterable[Any] = ()) -> list[sqlite3.Row]: ...

    def put_experiment(self, name: str, lab: str, spec: dict[str, Any], fingerprint: str, base_commit: str | None,
                       source: str | None, now: str, replace: bool = False) -> None:
        with self._tx() as conn:
            if replace:
                conn.execute("DELETE FROM trials WHERE experiment = ?", (name,))
                conn.execute("DELETE FROM experiments WHERE name = ?", (name,))
            conn.execute("INSERT INTO experiments (name, lab, spec, fingerprint, base_commit, source, created_at, "
                         "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                         (name, lab, json.dumps(spec), fingerprint, base_commit, source, now, now))

    def experiment(self, name: str) -> dict[str, Any] | None:
        rows = self._query("SELECT * FROM experiments WHERE name = ?", (name,))
        if not rows:
            return None
        rec = dict(rows[0])
        rec["spec"] = json.loads(rec["spec"] or "{}")
        return rec

    def experiment_records(self, lab: str | None = None) -> list[dict[str, Any]]:
        sql = ("SELECT e.*, COUNT(t.trial) AS trials_recorded, "
               "SUM(CASE WHEN t.status IN ('success','error','timeout','max_turns','scorer_error') THEN 1 ELSE 0 END)"
               " AS trials_finished, SUM(COALESCE(t.passed, 0)) AS passed, SUM(COALESCE(r.cost_usd, 0)) AS cost_usd "
               "FROM experiments e LEFT JOIN trials t ON t.experiment = e.name "
               "LEFT JOIN runs r ON r.run_id = t.run_id")
        params: tuple[Any, ...] = ()
        if lab is not None:
            sql += " WHERE e.lab = ?"
            params = (lab,)
        rows = self._query(sql + " GROUP BY e.name ORDER BY e.created_at", params)
        out = []
        for row in rows:
            rec = dict(row)
            rec["spec"] = json.loads(rec["spec"] or "{}")
            out.append(rec)
        return out

    def put_trial(self, experiment: str, task: str, variant: str, trial: int, **fields: Any) -> None:
        unknown = set(fields) - set(TRIAL_FIELDS)
        if unknown:
            raise ValueError(f"unknown trial fields {sorted(unknown)}")
        cols = ["experiment", "task", "variant", "trial", *fields]
        values = [experiment, task, variant, trial, *(int(v) if isinstance(v, bool) else v for v in fields.values())]
        update = ", ".join(f"{c} = excluded.{c}" for c in fields) or "status = status"
        with self._tx() as conn:
            conn.execute(f"INSERT INTO trials ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))}) "
                         f"ON CONFLICT (experiment, task, variant, trial) DO UPDATE SET {update}", values)
            conn.execute("UPDATE experiments SET updated_at = COALESCE(?, updated_at) WHERE name = ?",
                         (fields.get("ended_at") or fields.get("started_at"), experiment))

    def trial_rows(self, experiment: str) -> list[dict[str, Any]]:
        rows = self._query(
            "SELECT t.*, r.num_turns AS turns, r.input_tokens, r.output_tokens, r.cost_usd, r.duration_s, "
            "r.changed_files, r.status AS run_status, r.model AS model FROM trials t LEFT JOIN runs r "
            "ON r.run_id = t.run_id WHERE t.experiment = ? ORDER BY t.task, t.variant, t.trial", (experiment,))
        out = []
        for row in rows:
            rec = dict(row)
            files = json.loads(rec.pop("changed_files") or "[]")
            rec["files_changed"] = len(files)
            rec["passed"] = None if rec["passed"] is None else bool(rec["passed"])
            out.append(rec)
        return out

    def put_artifact(self, run_id: str, name: str, data: bytes) -> None:
        with self._tx() as conn:
            conn.execute("INSERT OR REPLACE INTO artifacts (run_id, name, data) VALUES (?, ?, ?)", (run_id, name, data))

    def spent(self, experiment: str) -> float:
        rows = self._query("SELECT SUM(COALESCE(r.cost_usd, 0)) FROM trials t JOIN runs r ON r.run_id = t.run_id "
                           "WHERE t.experiment = ?", (experiment,))
        return float(rows[0][0] or 0.0)
