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

import io
import json
import os
import socket
import sqlite3
import tarfile
import threading
import time
import warnings
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator

import pandas as pd
import psutil

from ._version import __version__
from .errors import AlreadyExists, LabError, NotFound
from .execution import OutputChunk
from .proxy import Exchange, ModelProxy

if TYPE_CHECKING:
    from .claude import Run
    from .endpoint import Endpoint
    from .engine import ContainerInfo
    from .lab import Lab
    from .runs import RunEvent, RunResult

__all__ = ["RunStore", "RunRecorder", "record_exec", "DEFAULT_PATH", "RUN_COLUMNS"]

DEFAULT_PATH = ".claude-lab/runs.sqlite"
SCHEMA_VERSION = 1
BUSY_TIMEOUT_S = 30.0
HEARTBEAT_S = 10.0
STALE_AFTER_S = 60.0
BUNDLE_FORMAT = "claude-lab-run"
BUNDLE_VERSION = 1

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
CREATE TABLE IF NOT EXISTS artifacts (
    run_id TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
    name TEXT NOT NULL, data BLOB, PRIMARY KEY (run_id, name)
);
"""
_JSON_COLUMNS = ("options", "limits", "changed_files", "resources")
_RUN_FIELDS = ("run_id", "lab", "agent_id", "kind", "status", "prompt", "options", "model", "endpoint_kind",
               "endpoint", "image", "image_id", "limits", "start_commit", "end_commit", "diff", "changed_files",
               "exit_code", "num_turns", "input_tokens", "output_tokens", "cache_read_tokens",
               "cache_creation_tokens", "cost_usd", "duration_s", "resources", "result", "error", "session_id",
               "replay_of", "reproduced", "started_at", "ended_at", "owner_host", "owner_pid", "owner_started",
               "heartbeat_at", "claude_code_version", "claude_lab_version")
_EXCHANGE_FIELDS = ("seq", "kind", "method", "path", "request_headers", "request_body", "status",
                    "response_headers", "response_body", "started_at", "duration_s", "error")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


def _json(value: Any) -> str | None:
    return None if value is None else json.dumps(value, ensure_ascii=False, default=str)


def _owner() -> dict[str, Any]:
    me = psutil.Process()
    return {"owner_host": socket.gethostname(), "owner_pid": os.getpid(), "owner_started": me.create_time(),
            "heartbeat_at": time.time()}


def owner_alive(rec: dict[str, Any], now: float | None = None) -> bool:
    """Whether the process that wrote a `running` record still exists (see the module docstring)."""
    if rec.get("owner_host") == socket.gethostname() and rec.get("owner_pid"):
        try:
            proc = psutil.Process(int(rec["owner_pid"]))
            if proc.status() == psutil.STATUS_ZOMBIE:
                return False
            started = rec.get("owner_started")
            return started is None or abs(proc.create_time() - float(started)) < 1.0  # not a reused pid
        except psutil.NoSuchProcess:
            return False
        except psutil.Error:  # exists, but not ours to look at
            return True
    return (now or time.time()) - float(rec.get("heartbeat_at") or 0) < STALE_AFTER_S


class _Heartbeat:
    """One daemon thread per process refreshing `heartbeat_at` of the runs this process is recording."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._runs: dict[str, tuple["RunStore", set[str]]] = {}
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()

    def add(self, store: "RunStore", run_id: str) -> None:
        with self._lock:
            if self._pid != os.getpid():  # forked: the parent's thread did not come along
                self._runs, self._thread, self._pid = {}, None, os.getpid()
            self._runs.setdefault(str(store.path), (store, set()))[1].add(run_id)
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="claude-lab-run-heartbeat", daemon=True)
                self._thread.start()

    def remove(self, store: "RunStore", run_id: str) -> None:
        with self._lock:
            entry = self._runs.get(str(store.path))
            if entry:
                entry[1].discard(run_id)

    def _loop(self) -> None:
        while True:
            self._wake.wait(HEARTBEAT_S)
            with self._lock:
                work = [(store, list(ids)) for store, ids in self._runs.values() if ids]
            for store, ids in work:
                try:
                    store._beat(ids)
                except Exception:  # noqa: BLE001 - a missed beat is retried in 10 s
                    pass


_heartbeat = _Heartbeat()
_stores: dict[str, "RunStore"] = {}
_stores_lock = threading.Lock()


class RunStore:
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
            self.path.parent.mkdir(parents=True, exist_ok=True)
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
        row = {"status": "running", "started_at": _now(), "claude_lab_version": __version__, **_owner(), **record}
        self._insert_run(row)

    def _insert_run(self, row: dict[str, Any]) -> None:
        unknown = set(row) - set(_RUN_FIELDS)
        if unknown:
            raise LabError(f"unknown run store fields: {', '.join(sorted(unknown))}")
        values = {k: (_json(v) if k in _JSON_COLUMNS else v) for k, v in row.items()}
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
                  _json(exchange.request_headers), exchange.request_body, exchange.status,
                  _json(exchange.response_headers), exchange.response_body, exchange.started_at,
                  exchange.duration_s, exchange.error)
        with self._tx() as conn:
            conn.execute(f"INSERT OR REPLACE INTO exchanges (run_id, {', '.join(_EXCHANGE_FIELDS)}) "
                         f"VALUES ({', '.join('?' for _ in values)})", values)

    def complete_run(self, run_id: str, fields: dict[str, Any], artifacts: dict[str, bytes] | None = None) -> None:
        """Write what a run ended with, and its artifacts, in one transaction."""
        unknown = set(fields) - set(_RUN_FIELDS)
        if unknown:
            raise LabError(f"unknown run store fields: {', '.join(sorted(unknown))}")
        values = {k: (_json(v) if k in _JSON_COLUMNS else v) for k, v in fields.items()}
        values.setdefault("ended_at", _now())
        with self._tx() as conn:
            sets = ", ".join(f"{k} = ?" for k in values)
            cur = conn.execute(f"UPDATE runs SET {sets} WHERE run_id = ?", (*values.values(), run_id))
            if cur.rowcount == 0:
                raise NotFound(f"run {run_id} has no record in the run store {self.path}")
            for name, data in (artifacts or {}).items():
                conn.execute("INSERT OR REPLACE INTO artifacts (run_id, name, data) VALUES (?, ?, ?)",
                             (run_id, name, data))

    def put_artifact(self, run_id: str, name: str, data: bytes) -> None:
        with self._tx() as conn:
            conn.execute("INSERT OR REPLACE INTO artifacts (run_id, name, data) VALUES (?, ?, ?)", (run_id, name, data))

    def _beat(self, run_ids: list[str]) -> None:
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
        for key in _JSON_COLUMNS:
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
        for row in self._query(f"SELECT {', '.join(_EXCHANGE_FIELDS)} FROM exchanges WHERE run_id = ? ORDER BY seq",
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

    def events(self, run_id: str) -> list["RunEvent"]:
        """The run's events, typed again from the stored transcript."""
        from .events import parse_message

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

    def result(self, run_id: str) -> "RunResult":
        """The run as a `RunResult`, as it was returned when it ended (or as far as it got)."""
        from .runs import RunResult, tool_calls_from

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
        for name in ("resources", "replay_of", "reproduced"):
            if name in RunResult.__dataclass_fields__:
                setattr(res, name, rec.get(name))
        return res

    # -- portable bundles ------------------------------------------------------------------------
    def export_run(self, run_id: str, path: str | os.PathLike) -> Path:
        """Write one run (record, cassette, artifacts) as a tar file; `.tar.gz`/`.tgz` compresses it."""
        rec = self.record(run_id)
        target = Path(path).expanduser()
        if target.is_dir():
            target = target / f"{run_id}.tar"
        mode = "w:gz" if target.name.endswith((".gz", ".tgz")) else "w"
        members: list[tuple[str, bytes]] = [
            ("manifest.json", json.dumps({"format": BUNDLE_FORMAT, "version": BUNDLE_VERSION, "run_id": run_id,
                                          "exported_at": _now(), "claude_lab_version": __version__}).encode()),
            ("run.json", json.dumps(rec, ensure_ascii=False, indent=1, default=str).encode()),
            ("cassette.jsonl", "".join(json.dumps(ex.to_dict(), ensure_ascii=False) + "\n"
                                       for ex in self.exchanges(run_id)).encode()),
            ("diff.patch", (rec.get("diff") or "").encode()),
        ]
        members += [(f"artifacts/{name}", self.artifact(run_id, name) or b"") for name in self.artifact_names(run_id)]
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + ".partial")
        with tarfile.open(partial, mode) as tar:
            for name, data in members:
                info = tarfile.TarInfo(f"{run_id}/{name}")
                info.size, info.mode, info.mtime = len(data), 0o644, int(time.time())
                tar.addfile(info, io.BytesIO(data))
        partial.replace(target)
        return target

    def import_run(self, path: str | os.PathLike) -> str:
        """Read a bundle written by `export_run` into this store; returns the run id."""
        source = Path(path).expanduser()
        files: dict[str, bytes] = {}
        try:
            with tarfile.open(source, "r:*") as tar:
                for member in tar.getmembers():
                    if member.isfile():  # read in memory only: nothing is extracted to disk
                        handle = tar.extractfile(member)
                        if handle is not None:
                            files[member.name.split("/", 1)[-1]] = handle.read()
        except (OSError, tarfile.TarError) as exc:
            raise LabError(f"{source} is not a run bundle that can be read: {exc}") from exc
        try:
            manifest = json.loads(files["manifest.json"])
            rec = json.loads(files["run.json"])
        except (KeyError, ValueError):
            raise LabError(f"{source} is not a claude-lab run bundle (no manifest.json/run.json); "
                           f"make one with lab.export_run(run_id, path)") from None
        if manifest.get("format") != BUNDLE_FORMAT or int(manifest.get("version") or 0) > BUNDLE_VERSION:
            raise LabError(f"{source} is a {manifest.get('format')!r} bundle of version {manifest.get('version')}; "
                           f"this claude-lab reads {BUNDLE_FORMAT!r} up to version {BUNDLE_VERSION}")
        row = {k: rec.get(k) for k in _RUN_FIELDS if k in rec}
        if row.get("status") == "running":  # its owner is on another machine, or gone
            row["status"] = "interrupted"
        run_id = row["run_id"]
        exchanges = [Exchange.from_dict(json.loads(line))
                     for line in files.get("cassette.jsonl", b"").decode("utf-8").splitlines() if line.strip()]
        artifacts = {name.split("/", 1)[1]: data for name, data in files.items() if name.startswith("artifacts/")}
        values = {k: (_json(v) if k in _JSON_COLUMNS else v) for k, v in row.items()}
        if "reproduced" in values and values["reproduced"] is not None:
            values["reproduced"] = int(bool(values["reproduced"]))
        try:
            with self._tx() as conn:
                conn.execute(f"INSERT INTO runs ({', '.join(values)}) VALUES ({', '.join('?' for _ in values)})",
                             tuple(values.values()))
                for ex in exchanges:
                    conn.execute(f"INSERT INTO exchanges (run_id, {', '.join(_EXCHANGE_FIELDS)}) VALUES "
                                 f"({', '.join('?' for _ in range(len(_EXCHANGE_FIELDS) + 1))})",
                                 (run_id, ex.seq, ex.kind, ex.method, ex.path, _json(ex.request_headers),
                                  ex.request_body, ex.status, _json(ex.response_headers), ex.response_body,
                                  ex.started_at, ex.duration_s, ex.error))
                for name, data in artifacts.items():
                    conn.execute("INSERT INTO artifacts (run_id, name, data) VALUES (?, ?, ?)", (run_id, name, data))
        except sqlite3.IntegrityError:
            raise AlreadyExists(f"run {run_id} is already in the run store {self.path}") from None
        return run_id


# -- recording a run ------------------------------------------------------------------------------

def _endpoint_address(url: str | None) -> str | None:
    """scheme://host[:port] only: a URL's user info, path and query may hold credentials."""
    if not url:
        return None
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    host = parts.hostname or ""
    return f"{parts.scheme}://{host}" + (f":{parts.port}" if parts.port else "")


def _limits(info: "ContainerInfo") -> dict[str, Any]:
    return {"memory": getattr(info, "memory", None), "nano_cpus": getattr(info, "nano_cpus", None),
            "pids": getattr(info, "pids_limit", None)}


def _transcript(events: list["RunEvent"]) -> tuple[bytes, bytes]:
    from .runs import _event_dict

    lines = [json.dumps(_event_dict(e), ensure_ascii=False, default=str) + "\n" for e in events]
    times = [getattr(e, "received_at", None) for e in events]
    return "".join(lines).encode("utf-8"), json.dumps(times).encode()


def _result_fields(res: "RunResult") -> dict[str, Any]:
    fields = {name: getattr(res, name) for name in (
        "status", "start_commit", "end_commit", "diff", "changed_files", "exit_code", "num_turns", "input_tokens",
        "output_tokens", "cache_read_tokens", "cache_creation_tokens", "cost_usd", "duration_s", "result",
        "error", "session_id")}
    fields["model"] = res.model
    fields["resources"] = getattr(res, "resources", None)
    for name in ("replay_of", "reproduced"):
        if getattr(res, name, None) is not None:
            fields[name] = getattr(res, name)
    return fields


class RunRecorder:
    """What one run writes to the store: its record at the start, its model exchanges as they happen
    (through `proxy`, when there is one), and everything it ended with at the end.

    `Run` calls `begin` once the workspace's start commit is known and before the command starts,
    and `finish` at the very end of `_finalize`; `judge` (replays) may set fields of the result first.
    """

    def __init__(self, store: RunStore, lab: "Lab", kind: str, prompt: str, options: dict[str, Any], *,
                 endpoint: "Endpoint | None" = None, proxy: ModelProxy | None = None, replay_of: str | None = None,
                 judge: Callable[["RunResult"], None] | None = None):
        self.store, self.lab, self.kind, self.prompt = store, lab, kind, prompt
        self.options = options
        self.endpoint, self.proxy = endpoint, proxy
        self.replay_of, self.judge = replay_of, judge
        self.run_id: str | None = None
        self._lock = threading.Lock()
        self._pending: list[Exchange] = []
        self._finished = False
        if proxy is not None:
            proxy.on_exchange = self.exchange

    @property
    def url(self) -> str | None:
        """Where the CLI is to send its model requests (the proxy), when recording them."""
        return self.proxy.url if self.proxy is not None else None

    def begin(self, run: "Run", info: "ContainerInfo") -> None:
        endpoint = self.endpoint
        self.store.start_run({
            "run_id": run.run_id, "lab": self.lab.name, "agent_id": run.agent_id, "kind": self.kind,
            "prompt": self.prompt, "options": self.options, "model": self.options.get("model"),
            "endpoint_kind": endpoint.source if endpoint else None,
            "endpoint": _endpoint_address(endpoint.base_url or endpoint.url) if endpoint and endpoint.source != "replay"
            else None,
            "image": info.image, "image_id": info.image_id, "limits": _limits(info),
            "start_commit": run.start_commit, "replay_of": self.replay_of,
        })
        with self._lock:
            self.run_id, pending, self._pending = run.run_id, self._pending, []
        for exchange in pending:
            self._store_exchange(exchange)
        _heartbeat.add(self.store, run.run_id)

    def exchange(self, exchange: Exchange) -> None:
        with self._lock:
            if self.run_id is None:
                self._pending.append(exchange)
                return
        self._store_exchange(exchange)

    def _store_exchange(self, exchange: Exchange) -> None:
        try:
            self.store.add_exchange(self.run_id or "", exchange)
        except Exception as exc:  # noqa: BLE001 - the run goes on; say what the cassette misses
            warnings.warn(f"run {self.run_id}: exchange {exchange.seq} could not be stored: {exc}", stacklevel=2)

    def fail(self, error: str) -> None:
        """The command never started: close the record as an error."""
        if self.run_id is not None and not self._finished:
            self._finished = True
            try:
                self.store.complete_run(self.run_id, {"status": "error", "error": error})
            finally:
                _heartbeat.remove(self.store, self.run_id)
        self.close()

    def close(self) -> None:
        if self.proxy is not None:
            self.proxy.stop()

    def finish(self, run: "Run") -> None:
        """Store the run's result, transcript and workspace snapshot; never raises (warns instead)."""
        if self._finished:
            return
        self._finished = True
        res = run.result
        try:
            self.close()
            if res is not None and self.judge is not None:
                self.judge(res)
            if self.run_id is None or res is None:
                return
            transcript, times = _transcript(res.events)
            artifacts = {"transcript.jsonl": transcript, "event_times.json": times}
            if res.stderr:
                artifacts["stderr.txt"] = res.stderr.encode("utf-8")
            if res.start_commit:
                from .replay import snapshot_workspace

                try:
                    artifacts["workspace.bundle"] = snapshot_workspace(self.lab.engine, run._container, "/workspace",
                                                                       res.start_commit)
                except LabError as exc:
                    artifacts["workspace.error"] = str(exc).encode("utf-8")
            fields = _result_fields(res)
            init = next((e for e in res.events if getattr(e, "subtype", None) == "init"), None)
            if init is not None:
                fields["claude_code_version"] = init.data.get("claude_code_version")  # type: ignore[attr-defined]
            self.store.complete_run(self.run_id, fields, artifacts)
        except Exception as exc:  # noqa: BLE001 - the caller still gets the result; the store says what it has
            warnings.warn(f"run {self.run_id} could not be completed in the run store {self.store.path}: {exc}",
                          stacklevel=2)
        finally:
            if self.run_id is not None:
                _heartbeat.remove(self.store, self.run_id)


def record_exec(lab: "Lab", target: str, command: str | Iterable[str], *, user: str | None = None,
                workdir: str | None = None, env: dict[str, str] | None = None, timeout: float | None = None,
                on_event: Callable[["RunEvent"], None] | None = None) -> "RunResult":
    """Run a command in any container of the lab (the dev container too) as a recorded run of kind "exec".

    No workspace commits are made (the dev container's folder is your project): the record holds the
    command, its output, exit code, status and times. Environment values are not stored (only names).
    """
    from .claude import new_run_id
    from .errors import LabTimeout
    from .lab import _command
    from .runs import RunResult

    argv = _command(command)
    shown = command if isinstance(command, str) else " ".join(argv)
    info = lab.engine.container(lab.container_name(target))
    if info is None:
        raise lab._not_found(target)
    store = lab.run_store
    run_id = new_run_id()
    started_at, started = datetime.now(timezone.utc), time.monotonic()
    store.start_run({"run_id": run_id, "lab": lab.name, "agent_id": target, "kind": "exec", "prompt": shown,
                     "options": {"argv": argv, "user": user, "workdir": workdir, "timeout": timeout,
                                 "env_names": sorted(env or {})},
                     "image": info.image, "image_id": info.image_id, "limits": _limits(info)})
    _heartbeat.add(store, run_id)
    events: list[RunEvent] = []
    status: str | None = None
    stream = None
    try:
        stream = lab.exec_stream(target, argv, user=user, workdir=workdir, env=env, timeout=timeout)
        try:
            for chunk in stream:
                events.append(chunk)
                if on_event is not None:
                    on_event(chunk)
        except LabTimeout:
            status = "timeout"
        except KeyboardInterrupt:  # the stream stopped the command; like lab.shell, return it as cancelled
            status = "cancelled"
        result = stream.result
        exit_code = result.exit_code if result else lab.engine.exec_exit_code(stream.exec_id)
        if status is None:
            status = "cancelled" if result is not None and result.cancelled else (
                "success" if exit_code == 0 else "error")
        output = "".join(c.text for c in events)
        res = RunResult(run_id=run_id, agent_id=target, kind="exec", status=status, prompt=shown, result=output,
                        events=list(events), duration_s=time.monotonic() - started, exit_code=exit_code,
                        stderr=result.stderr if result else "", started_at=started_at,
                        error={"timeout": f"did not finish within {timeout}s; stopped inside the container",
                               "cancelled": "cancelled; stopped inside the container",
                               "error": f"exited {exit_code}"}.get(status))
        transcript, times = _transcript(res.events)
        store.complete_run(run_id, _result_fields(res), {"transcript.jsonl": transcript, "event_times.json": times})
    except BaseException as exc:
        if stream is not None and stream.result is None:
            stream.cancel()
        store.complete_run(run_id, {"status": "error", "error": str(exc) or type(exc).__name__,
                                    "duration_s": time.monotonic() - started})
        raise
    finally:
        _heartbeat.remove(store, run_id)
    return res
