"""The run store: every run recorded durably in SQLite under the project, and read back as data.

Where: `.claude-lab/runs.sqlite` in the project folder (the `run_store` setting: a path, relative to
the project unless absolute). One file serves every lab, kernel, CLI and process of the project.

What: table `runs` (one row a run: ids, times, lab, agent, kind, prompt or command, options and
command line, model, endpoint kind and address -- never the key --, image id, container limits,
start/end commits, diff, status, exit code, tokens, cost, resource summary, replay link);
table `exchanges` (the run's cassette: each model request and response, in arrival order, secrets
redacted by the proxy); table `artifacts` (`transcript.jsonl`: the stream-json events as the CLI
printed them, or the output chunks of a shell run; `event_times.json`; `stderr.txt`;
`workspace.bundle`: git bundle of the workspace up to the start commit, for replay, or
`workspace.error` saying why there is none).

Durability and concurrency: WAL journal (readers never wait for the writer), `synchronous=NORMAL`
(a committed run survives the process being killed), a 30 s busy timeout, and every write one short
`BEGIN IMMEDIATE` transaction, so any number of threads and processes can record at once. Each
process keeps one connection per store file, shared by its threads under a lock.

Interrupted runs: a run's row is written with status `running` when it starts, with the owning
process's host name, pid and start time, and a heartbeat that this process refreshes every 10 s
while the run lasts. A reader seeing `running` decides whether the owner is gone: on the same host,
the process with that pid and start time no longer exists (or is a zombie) -- exact and immediate;
from another host, the heartbeat is more than 60 s old. Such a run is marked `interrupted` (in the
store, so every later reader agrees) with what was recorded until then, its exchanges included.
If its owner was only paused and completes the run later, the completion overwrites the mark.
"""
from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Iterator


from .._version import __version__
from ..containers.execution import OutputChunk
from ..errors import AlreadyExists, LabError, NotFound
from ..model.proxy import Exchange
from .events import parse_message
from .experiment_store import EXPERIMENT_SCHEMA, ExperimentTables
from ..util.folders import ensure_folder
from .heartbeat import owner, owner_alive
from .results import RunEvent, RunResult, tool_calls_from
from ..util.lazy import lazy

pd = lazy("pandas")  # loaded when a DataFrame is made (the CLI starts without it)

__all__ = ["DEFAULT_PATH", "RUN_COLUMNS", "RunStore"]

DEFAULT_PATH = ".claude-lab/runs.sqlite"
SCHEMA_VERSION = 3  # 2: the seeds table; 3: experiments and trials (experiment_store.py)
BUSY_TIMEOUT_S = 30.0

RUN_COLUMNS = ["run_id", "lab", "agent", "kind", "status", "started_at", "ended_at", "duration_s", "prompt",
               "model", "endpoint_kind", "exit_code", "num_turns", "input_tokens", "output_tokens", "cost_usd",
               "changed_files", "start_commit", "end_commit", "replay_of", "reproduced", "error"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY, lab TEXT, agent_id TEXT, kind TEXT, status TEXT NOT NULL, prompt TEXT,
    options TEXT, model TEXT, endpoint_kind TEXT, endpoint TEXT, image TEXT, image_id TEXT, limits TEXT,
    start_commit TEXT, end_commit TEXT, diff TEXT, changed_files TEXT, exit_code INTEGER,
    num_turns INTEGER, input_tokens INTEGER, output_tokens INTEGER, cache_read_tokens INTEGER,
    cache_creation_tokens INTEGER, cost_usd REAL, duration_s REAL, resources TEXT, result TEXT, error TEXT,
    session_id TEXT, replay_of TEXT, reproduced INTEGER, started_at TEXT, ended_at TEXT,
    owner_host TEXT, owner_pid INTEGER, owner_started REAL, heartbeat_at REAL,
    claude_code_version TEXT, claude_lab_version TEXT
);
CREATE INDEX IF NOT EXISTS runs_started_at ON runs (started_at);
CREATE TABLE IF NOT EXISTS exchanges (
    run_id TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
    seq INTEGER NOT NULL, kind TEXT, method TEXT, path TEXT, request_headers TEXT, request_body BLOB,
    status INTEGER, response_headers TEXT, response_body BLOB, started_at REAL, duration_s REAL, error TEXT,
    PRIMARY KEY (run_id, seq)
);
CREATE TABLE IF NOT EXISTS seeds (
    lab TEXT NOT NULL, commit_id TEXT NOT NULL, bundle BLOB, stored_at TEXT, PRIMARY KEY (lab, commit_id)
);
CREATE TABLE IF NOT EXISTS artifacts (
    run_id TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
    name TEXT NOT NULL, data BLOB, PRIMARY KEY (run_id, name)
);
""" + EXPERIMENT_SCHEMA
JSON_COLUMNS = ("options", "limits", "changed_files", "resources")
RUN_FIELDS = ("run_id", "lab", "agent_id", "kind", "status", "prompt", "options", "model", "endpoint_kind",
               "endpoint", "image", "image_id", "limits", "start_commit", "end_commit", "diff", "changed_files",
               "exit_code", "num_turns", "input_tokens", "output_tokens", "cache_read_tokens",
               "cache_creation_tokens", "cost_usd", "duration_s", "resources", "result", "error", "session_id",
               "replay_of", "reproduced", "started_at", "ended_at", "owner_host", "owner_pid", "owner_started",
               "heartbeat_at", "claude_code_version", "claude_lab_version")
EXCHANGE_FIELDS = ("seq", "kind", "method", "path", "request_headers", "request_body", "status",
                    "response_headers", "response_body", "started_at", "duration_s", "error")


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat()


def to_json(value: Any) -> str | None:
    return None if value is None else json.dumps(value, ensure_ascii=False, default=str)




_stores: dict[str, "RunStore"] = {}
_stores_lock = threading.Lock()


class RunStore(ExperimentTables):
    """The SQLite run store at `path`; `RunStore.at(path)` shares one instance per file in a process."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path).expanduser().resolve()
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        self._pid = 0

    @classmethod
    def at(cls, path: str | os.PathLike) -> "RunStore":
        key = str(Path(path).expanduser().resolve())
        with _stores_lock:
            store = _stores.get(key)
            if store is None:
                store = _stores[key] = cls(key)
            return store

    def __repr__(self) -> str:
        return f"RunStore({str(self.path)!r})"

    # -- connection ------------------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        if self._conn is not None and self._pid == os.getpid():
            return self._conn
        try:
            ensure_folder(self.path.parent)
            conn = sqlite3.connect(str(self.path), timeout=BUSY_TIMEOUT_S, isolation_level=None,
                                   check_same_thread=False)
            conn.row_factory = sqlite3.Row
            conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise sqlite3.OperationalError(f"the file system does not allow WAL mode (journal mode {mode})")
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA foreign_keys = ON")
            if conn.execute("PRAGMA user_version").fetchone()[0] < SCHEMA_VERSION:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    for statement in _SCHEMA.split(";"):  # not executescript: it would commit first
                        if statement.strip():
                            conn.execute(statement)
                    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                    conn.execute("COMMIT")
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
        except (sqlite3.Error, OSError) as exc:
            raise LabError(f"cannot open the run store {self.path}: {exc}; set `run_store` to a writable path "
                           f"in claude-lab.toml, or `record_runs = false` to run without recording") from exc
        self._conn, self._pid = conn, os.getpid()
        return conn

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, taken up front (BEGIN IMMEDIATE) so it never deadlocks on upgrade."""
        with self._lock:
            conn = self._connect()
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise LabError(f"the run store {self.path} stayed locked for {BUSY_TIMEOUT_S:g}s: {exc}") from exc
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            else:
                conn.execute("COMMIT")

    def _query(self, sql: str, params: Iterable[Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            try:
                return self._connect().execute(sql, tuple(params)).fetchall()
            except sqlite3.Error as exc:
                raise LabError(f"cannot read the run store {self.path}: {exc}") from exc

    def close(self) -> None:
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None

    def integrity_check(self) -> str:
        """SQLite's own check of the file ("ok" when sound)."""
        return str(self._query("PRAGMA integrity_check")[0][0])

    # -- writing ---------------------------------------------------------------------------------
    def start_run(self, record: dict[str, Any]) -> None:
        """Write a run's record at its start (status "running", owner and heartbeat filled in here)."""
        row = {"status": "running", "started_at": now_iso(), "claude_lab_version": __version__, **owner(), **record}
        self._insert_run(row)

    def _insert_run(self, row: dict[str, Any]) -> None:
        unknown = set(row) - set(RUN_FIELDS)
        if unknown:
            raise LabError(f"unknown run store fields: {', '.join(sorted(unknown))}")
        values = {k: (to_json(v) if k in JSON_COLUMNS else v) for k, v in row.items()}
        names = ", ".join(values)
        marks = ", ".join("?" for _ in values)
        try:
            with self._tx() as conn:
                conn.execute(f"INSERT INTO runs ({names}) VALUES ({marks})", tuple(values.values()))
        except sqlite3.IntegrityError:
            raise AlreadyExists(f"run {row.get('run_id')} is already in the run store {self.path}") from None

    def add_exchange(self, run_id: str, exchange: Exchange) -> None:
        """Append one model exchange to a run's cassette (written as it happens)."""
        values = (run_id, exchange.seq, exchange.kind, exchange.method, exchange.path,
                  to_json(exchange.request_headers), exchange.request_body, exchange.status,
                  to_json(exchange.response_headers), exchange.response_body, exchange.started_at,
                  exchange.duration_s, exchange.error)
        with self._tx() as conn:
            conn.execute(f"INSERT OR REPLACE INTO exchanges (run_id, {', '.join(EXCHANGE_FIELDS)}) "
                         f"VALUES ({', '.join('?' for _ in values)})", values)

    def complete_run(self, run_id: str, fields: dict[str, Any], artifacts: dict[str, bytes] | None = None) -> None:
        """Write what a run ended with, and its artifacts, in one transaction."""
        unknown = set(fields) - set(RUN_FIELDS)
        if unknown:
            raise LabError(f"unknown run store fields: {', '.join(sorted(unknown))}")
        values = {k: (to_json(v) if k in JSON_COLUMNS else v) for k, v in fields.items()}
        values.setdefault("ended_at", now_iso())
        with self._tx() as conn:
            sets = ", ".join(f"{k} = ?" for k in values)
            cur = conn.execute(f"UPDATE runs SET {sets} WHERE run_id = ?", (*values.values(), run_id))
            if cur.rowcount == 0:
                raise NotFound(f"run {run_id} has no record in the run store {self.path}")
            for name, data in (artifacts or {}).items():
                conn.execute("INSERT OR REPLACE INTO artifacts (run_id, name, data) VALUES (?, ?, ?)",
                             (run_id, name, data))

    def beat(self, run_ids: list[str]) -> None:
        """Refresh the heartbeat of runs this process is recording."""
        now = time.time()
        with self._tx() as conn:
            conn.executemany("UPDATE runs SET heartbeat_at = ? WHERE run_id = ? AND status = 'running'",
                             [(now, r) for r in run_ids])

    def _mark_interrupted(self, recs: list[dict[str, Any]]) -> None:
        with self._tx() as conn:
            for rec in recs:
                error = (f"interrupted: the process recording it (pid {rec.get('owner_pid')} on "
                         f"{rec.get('owner_host')}) ended before the run did")
                ended = datetime.fromtimestamp(float(rec.get("heartbeat_at") or time.time()), timezone.utc).isoformat()
                conn.execute("UPDATE runs SET status = 'interrupted', error = ?, ended_at = ? "
                             "WHERE run_id = ? AND status = 'running'", (error, ended, rec["run_id"]))
                rec.update(status="interrupted", error=error, ended_at=ended)

    # -- reading ---------------------------------------------------------------------------------
    def _decode(self, row: sqlite3.Row) -> dict[str, Any]:
        rec = dict(row)
        for key in JSON_COLUMNS:
            if rec.get(key) is not None:
                rec[key] = json.loads(rec[key])
        if rec.get("reproduced") is not None:
            rec["reproduced"] = bool(rec["reproduced"])
        return rec

    def _settle(self, recs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        dead = [r for r in recs if r["status"] == "running" and not owner_alive(r)]
        if dead:
            try:
                self._mark_interrupted(dead)
            except LabError:  # a read-only store: say it anyway, the next writer records it
                for rec in dead:
                    rec["status"] = "interrupted"
        return recs

    def record(self, run_id: str) -> dict[str, Any]:
        """A run's row as a dict (JSON columns decoded); NotFound names recent runs."""
        rows = self._query("SELECT * FROM runs WHERE run_id = ?", (run_id,))
        if not rows:
            recent = [r[0] for r in self._query("SELECT run_id FROM runs ORDER BY started_at DESC LIMIT 5")]
            raise NotFound(f"no run {run_id!r} in the run store {self.path}; recent runs: "
                           f"{', '.join(recent) or 'none yet'} (see lab.runs())")
        return self._settle([self._decode(rows[0])])[0]

    def records(self, *, lab: str | None = None, agent: str | None = None, kind: str | None = None,
                status: str | None = None) -> list[dict[str, Any]]:
        """Every run's row, oldest first, optionally filtered."""
        where, params = [], []
        for column, value in (("lab", lab), ("agent_id", agent), ("kind", kind)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        sql = "SELECT * FROM runs" + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY started_at, run_id"
        recs = self._settle([self._decode(r) for r in self._query(sql, params)])
        return [r for r in recs if status is None or r["status"] == status]

    def frame(self, **filters: Any) -> pd.DataFrame:
        """The runs as a DataFrame, one row a run (columns: `RUN_COLUMNS`)."""
        rows = []
        for rec in self.records(**filters):
            row = {c: rec.get(c) for c in RUN_COLUMNS}
            row["agent"] = rec.get("agent_id")
            for key in ("started_at", "ended_at"):
                row[key] = pd.Timestamp(rec[key]) if rec.get(key) else pd.NaT
            rows.append(row)
        return pd.DataFrame(rows, columns=RUN_COLUMNS)

    def exchanges(self, run_id: str) -> list[Exchange]:
        """The run's cassette, in the order the requests arrived."""
        out = []
        for row in self._query(f"SELECT {', '.join(EXCHANGE_FIELDS)} FROM exchanges WHERE run_id = ? ORDER BY seq",
                               (run_id,)):
            rec = dict(row)
            rec["request_headers"] = json.loads(rec["request_headers"] or "{}")
            rec["response_headers"] = json.loads(rec["response_headers"] or "{}")
            rec["request_body"] = bytes(rec["request_body"] or b"")
            rec["response_body"] = bytes(rec["response_body"] or b"")
            out.append(Exchange(**rec))
        return out

    def artifact(self, run_id: str, name: str) -> bytes | None:
        rows = self._query("SELECT data FROM artifacts WHERE run_id = ? AND name = ?", (run_id, name))
        return bytes(rows[0][0]) if rows and rows[0][0] is not None else None

    def artifact_names(self, run_id: str) -> list[str]:
        return [r[0] for r in self._query("SELECT name FROM artifacts WHERE run_id = ? ORDER BY name", (run_id,))]

    def events(self, run_id: str) -> list[RunEvent]:
        """The run's events, typed again from the stored transcript."""
        data = self.artifact(run_id, "transcript.jsonl")
        times = json.loads(self.artifact(run_id, "event_times.json") or b"[]")
        events: list[RunEvent] = []
        for i, line in enumerate((data or b"").decode("utf-8").splitlines()):
            if not line.strip():
                continue
            item = json.loads(line)
            if item.get("type") == "output" and set(item) == {"type", "stream", "text"}:
                events.append(OutputChunk(item["stream"], item["text"]))
            else:
                events.append(parse_message(item, times[i] if i < len(times) else None))
        return events

    def result(self, run_id: str) -> RunResult:
        """The run as a `RunResult`, as it was returned when it ended (or as far as it got)."""
        rec = self.record(run_id)
        events = self.events(run_id)
        res = RunResult(
            run_id=rec["run_id"], agent_id=rec["agent_id"] or "", kind=rec["kind"] or "", status=rec["status"],
            prompt=rec["prompt"] or "", result=rec["result"] or "", events=events,
            tool_calls=tool_calls_from(events) if rec["kind"] == "claude" else [],
            num_turns=rec["num_turns"] or 0, input_tokens=rec["input_tokens"] or 0,
            output_tokens=rec["output_tokens"] or 0, cache_read_tokens=rec["cache_read_tokens"] or 0,
            cache_creation_tokens=rec["cache_creation_tokens"] or 0, cost_usd=rec["cost_usd"],
            duration_s=rec["duration_s"] or 0.0, session_id=rec["session_id"], diff=rec["diff"] or "",
            changed_files=list(rec["changed_files"] or []), start_commit=rec["start_commit"],
            end_commit=rec["end_commit"], exit_code=rec["exit_code"], model=rec["model"], error=rec["error"],
            stderr=(self.artifact(run_id, "stderr.txt") or b"").decode("utf-8", "replace"),
            started_at=datetime.fromisoformat(rec["started_at"]) if rec["started_at"] else None,
        )
        res.resources, res.replay_of, res.reproduced = rec.get("resources"), rec.get("replay_of"), rec.get("reproduced")
        if res.kind == "claude" and res.cost_usd is None and res.status not in ("running", "interrupted"):
            res.cost_note = "replay" if res.replay_of else "scripted" if (rec.get("options") or {}).get(
                "scripted_model") else None
        return res

    def insert_run(self, row: dict[str, Any], exchanges: list[Exchange], artifacts: dict[str, bytes]) -> None:
        """Write a whole run (its record, cassette and artifacts) in one transaction: an imported bundle."""
        values = {k: (to_json(v) if k in JSON_COLUMNS else v) for k, v in row.items() if k in RUN_FIELDS}
        if values.get("reproduced") is not None:
            values["reproduced"] = int(bool(values["reproduced"]))
        run_id = values["run_id"]
        try:
            with self._tx() as conn:
                conn.execute(f"INSERT INTO runs ({', '.join(values)}) VALUES ({', '.join('?' for _ in values)})",
                             tuple(values.values()))
                for ex in exchanges:
                    conn.execute(f"INSERT INTO exchanges (run_id, {', '.join(EXCHANGE_FIELDS)}) VALUES "
                                 f"({', '.join('?' for _ in range(len(EXCHANGE_FIELDS) + 1))})",
                                 (run_id, ex.seq, ex.kind, ex.method, ex.path, to_json(ex.request_headers),
                                  ex.request_body, ex.status, to_json(ex.response_headers), ex.response_body,
                                  ex.started_at, ex.duration_s, ex.error))
                for name, data in artifacts.items():
                    conn.execute("INSERT INTO artifacts (run_id, name, data) VALUES (?, ?, ?)", (run_id, name, data))
        except sqlite3.IntegrityError:
            raise AlreadyExists(f"run {run_id} is already in the run store {self.path}") from None

    # -- seeds: a seeded workspace's base, stored once per lab and commit, not once per run ------------
    def has_seed(self, lab: str, commit: str) -> bool:
        return bool(self._query("SELECT 1 FROM seeds WHERE lab = ? AND commit_id = ?", (lab, commit)))

    def put_seed(self, lab: str, commit: str, bundle: bytes) -> None:
        with self._tx() as conn:
            conn.execute("INSERT OR IGNORE INTO seeds (lab, commit_id, bundle, stored_at) VALUES (?, ?, ?, ?)",
                         (lab, commit, bundle, now_iso()))

    def seed(self, lab: str, commit: str) -> bytes | None:
        rows = self._query("SELECT bundle FROM seeds WHERE lab = ? AND commit_id = ?", (lab, commit))
        return bytes(rows[0][0]) if rows else None

    def seeds(self, lab: str | None = None) -> list[dict[str, Any]]:
        """The stored seeds (lab, commit, size in bytes, stored_at), oldest first."""
        sql = "SELECT lab, commit_id, length(bundle), stored_at FROM seeds"
        rows = self._query(sql + (" WHERE lab = ?" if lab else "") + " ORDER BY stored_at", (lab,) if lab else ())
        return [{"lab": r[0], "commit": r[1], "size": r[2], "stored_at": r[3]} for r in rows]
