"""The run store: where it lives, concurrency (threads and processes), interrupted runs, bundles, 10 agents."""
from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pandas as pd
import pytest

from claude_lab import AlreadyExists, Lab, NotFound, RunResult, RunStore, ScriptedModel
from claude_lab.model.proxy import Exchange
from claude_lab.runs.store import RUN_COLUMNS

WRITER = """
import sys, threading
from claude_lab.model.proxy import Exchange
from claude_lab.runs.store import RunStore
path, tag, count, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
store = RunStore.at(path)
def write(prefix):
    for i in range(count):
        run_id = f"{prefix}-{i}"
        store.start_run({"run_id": run_id, "lab": "stress", "agent_id": prefix, "kind": "shell", "prompt": "true"})
        for seq in range(3):
            store.add_exchange(run_id, Exchange(seq, "main", "POST", "/v1/messages", {}, b"{}", 200, {}, b"ok"))
        store.complete_run(run_id, {"status": "success", "exit_code": 0, "diff": f"diff {run_id}"},
                           {"transcript.jsonl": b"{}\\n"})
workers = [threading.Thread(target=write, args=(f"{tag}t{n}",)) for n in range(threads)]
for w in workers:
    w.start()
for w in workers:
    w.join()
"""

DIES_MID_RUN = """
import os, sys
from claude_lab.runs.store import RunStore
RunStore.at(sys.argv[1]).start_run({"run_id": sys.argv[2], "lab": "l", "agent_id": "a", "kind": "shell",
                                    "prompt": "sleep 600"})
os._exit(0)  # gone without completing: as when the kernel dies
"""


def src_env() -> dict[str, str]:
    root = str(Path(__file__).resolve().parent.parent)
    return {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}


def test_the_store_is_a_wal_sqlite_file_under_the_project_and_configurable(tmp_path: Path):
    lab = Lab(tmp_path, name=f"store-{uuid.uuid4().hex[:6]}")
    assert lab.run_store.path == tmp_path / ".claude-lab" / "runs.sqlite"
    assert lab.runs().columns.tolist() == RUN_COLUMNS and lab.runs().empty
    with sqlite3.connect(lab.run_store.path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")} == {
            "runs", "exchanges", "artifacts", "seeds", "experiments", "trials"}
    with pytest.raises(NotFound, match="no run 'nope'"):
        lab.run("nope")
    elsewhere = Lab(tmp_path, name=lab.name, run_store="records/r.sqlite")
    assert elsewhere.run_store.path == tmp_path / "records" / "r.sqlite"
    (tmp_path / "claude-lab.toml").write_text(f'run_store = "{tmp_path / "abs.sqlite"}"\n')
    assert Lab(tmp_path, name=lab.name).run_store.path == tmp_path / "abs.sqlite"


def test_a_store_of_the_first_schema_gains_the_seeds_table(tmp_path: Path):
    path = tmp_path / "old.sqlite"
    with sqlite3.connect(path) as conn:  # what schema 1 made: no seeds table
        conn.execute("CREATE TABLE runs (run_id TEXT PRIMARY KEY, status TEXT NOT NULL, started_at TEXT)")
        conn.execute("PRAGMA user_version = 1")
    store = RunStore(path)
    assert store.seeds() == [] and not store.has_seed("lab", "abc")
    store.put_seed("lab", "abc", b"bundle")
    assert store.seed("lab", "abc") == b"bundle" and store.seeds()[0]["size"] == 6
    store.close()


def test_writers_in_several_processes_and_threads_record_at_once(tmp_path: Path):
    """5 processes of 2 writing threads each, and 10 threads here: 20 writers on one file at once."""
    path = tmp_path / "runs.sqlite"
    per_writer = 10
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(path), f"proc{i}", str(per_writer), "2"],
                              env=src_env(), stderr=subprocess.PIPE) for i in range(5)]
    store = RunStore.at(path)
    errors: list[BaseException] = []

    def thread_writer(tag: str) -> None:
        try:
            for i in range(per_writer):
                run_id = f"{tag}-{i}"
                store.start_run({"run_id": run_id, "lab": "stress", "agent_id": tag, "kind": "shell",
                                 "prompt": "true"})
                for seq in range(3):
                    store.add_exchange(run_id, Exchange(seq, "main", "POST", "/v1/messages", {}, b"{}", 200, {}, b"ok"))
                store.complete_run(run_id, {"status": "success", "exit_code": 0, "diff": f"diff {run_id}"})
                store.records(agent=tag)  # reads interleaved with everyone's writes
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=thread_writer, args=(f"thread{i}",)) for i in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    for p in procs:
        assert p.wait(timeout=120) == 0, p.stderr.read().decode()[-2000:]
        p.stderr.close()
    assert errors == []
    recs = store.records(lab="stress")
    assert len(recs) == 20 * per_writer
    assert {r["status"] for r in recs} == {"success"}
    assert all(r["diff"] == f"diff {r['run_id']}" for r in recs)
    assert all(len(store.exchanges(r["run_id"])) == 3 for r in recs[:: per_writer])
    assert store.integrity_check() == "ok"


def test_a_run_whose_owner_died_reads_interrupted(tmp_path: Path):
    store = RunStore.at(tmp_path / "runs.sqlite")
    subprocess.run([sys.executable, "-c", DIES_MID_RUN, str(store.path), "dead-1"], env=src_env(), check=True)
    store.start_run({"run_id": "alive-1", "lab": "l", "agent_id": "a", "kind": "shell", "prompt": "p"})  # ours
    now = time.time()
    for run_id, beat in (("remote-stale", now - 600), ("remote-fresh", now)):
        store.start_run({"run_id": run_id, "lab": "l", "agent_id": "a", "kind": "shell", "prompt": "p",
                         "owner_host": f"not-{socket.gethostname()}", "owner_pid": 1, "heartbeat_at": beat})
    status = {r["run_id"]: r["status"] for r in store.records()}
    assert status == {"dead-1": "interrupted", "alive-1": "running", "remote-stale": "interrupted",
                      "remote-fresh": "running"}
    dead = store.record("dead-1")
    assert "ended before the run did" in dead["error"] and dead["ended_at"]
    # Marked in the file, so every reader agrees (a plain SQL reader included).
    with sqlite3.connect(store.path) as conn:
        assert conn.execute("SELECT status FROM runs WHERE run_id = 'dead-1'").fetchone()[0] == "interrupted"
    # A run this process still owns stays running; its completion is what ends it.
    store.complete_run("alive-1", {"status": "success"})
    assert store.record("alive-1")["status"] == "success"


def test_ten_agents_running_at_once_all_land_in_the_store(lab: Lab):
    agents = [f"agent-{i:03d}" for i in range(10)]
    models = {a: ScriptedModel([[{"type": "tool_use", "name": "Write", "input": {
        "file_path": f"/workspace/{a}.txt", "content": f"written by {a}\n"}}], f"{a} done"]) for a in agents}
    results: dict[str, RunResult] = {}
    errors: list[BaseException] = []

    def work(agent: str) -> None:
        try:
            results[agent] = lab.claude(agent, f"write {agent}.txt", model=models[agent], timeout=240)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    for agent in agents:  # created one by one: the runs are what happens at once
        lab.create_agent(agent, progress=False, memory="1g", cpus=0.5)
    threads = [threading.Thread(target=work, args=(a,)) for a in agents]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=300)
    finally:
        for model in models.values():
            model.stop()
    assert errors == []
    runs = lab.runs().set_index("agent")
    assert sorted(runs.index) == agents and set(runs["status"]) == {"success"}
    for agent in agents:
        res = results[agent]
        assert res.status == "success" and res.result == f"{agent} done", res.error
        row = runs.loc[agent]
        assert row["run_id"] == res.run_id and row["changed_files"] == [f"{agent}.txt"]
        assert [e.kind for e in lab.run_store.exchanges(res.run_id)] == ["main", "main"]
        rec = lab.run_store.record(res.run_id)
        assert rec["limits"] == {"memory": 2**30, "nano_cpus": 500_000_000, "pids": 512}
        assert rec["image_id"].startswith("sha256:") and rec["claude_code_version"]
    assert lab.run_store.integrity_check() == "ok"


def test_export_import_round_trip_and_replay_in_another_project(lab_factory, tmp_path: Path):
    first, second = lab_factory(), lab_factory()
    first.create_agent("agent-001", progress=False)
    first.exec("agent-001", "echo 1 > counter").check()
    run = first.shell("agent-001", "n=$(cat counter); echo $((n + 1)) > counter; echo counted $n")
    assert (run.status, run.result, run.changed_files) == ("success", "counted 1\n", ["counter"])

    bundle = first.export_run(run.run_id, tmp_path / "exported.tar.gz")
    imported = second.import_run(bundle)
    assert second.run_store.path != first.run_store.path
    for name in ("run_id", "kind", "status", "prompt", "result", "diff", "changed_files", "start_commit",
                 "end_commit", "exit_code"):
        assert getattr(imported, name) == getattr(run, name), name
    assert [e.text for e in imported.events] == [e.text for e in run.events]
    with pytest.raises(AlreadyExists):
        second.import_run(bundle)

    replayed = second.replay(run.run_id)  # another project's lab, from the bundle alone
    assert replayed.replay_of == run.run_id and replayed.reproduced is True
    assert replayed.result == "counted 1\n" and replayed.diff == run.diff
    rows = second.runs()
    assert rows["run_id"].tolist() == [run.run_id, replayed.run_id]
    assert isinstance(rows["started_at"].iloc[0], pd.Timestamp)


def test_record_exec_records_runs_in_the_dev_container(lab: Lab):
    lab.up(wait=False, progress=False)
    seen = []
    res = lab.record_exec("dev", "echo from dev; echo oops >&2; exit 4", env={"TOKEN": "x"}, on_event=seen.append)
    assert (res.kind, res.status, res.exit_code, res.agent_id) == ("exec", "error", 4, "dev")
    assert "from dev\n" in res.result and "oops\n" in res.result
    assert "".join(c.text for c in seen) == res.result
    stored = lab.run(res.run_id)
    assert (stored.kind, stored.status, stored.exit_code, stored.result) == ("exec", "error", 4, res.result)
    assert lab.run_store.record(res.run_id)["options"]["env_names"] == ["TOKEN"]  # names only, never values
    slow = lab.record_exec("dev", "sleep 300", timeout=2)
    assert slow.status == "timeout"
    assert lab.runs(kind="exec")["status"].tolist() == ["error", "timeout"]
