"""The CLI does what the notebook does: Claude runs, the run store, replay, lifecycle of one container, stats,
destroy; tables that stay readable at 80 columns and in a pipe; hints in the CLI's own words."""
from __future__ import annotations

import json
import re

from claude_lab import Lab
from support import tool
from test_cli import cli, flat, ok, run_cli

WRITE = [tool("Write", file_path="/workspace/hello.py", content="print('hello')\n"),
         tool("Bash", command="python3 hello.py"), "Wrote hello.py."]


def turns(tmp_path, script=WRITE) -> str:
    path = tmp_path / "turns.json"
    path.write_text(json.dumps(script))
    return str(path)


def test_claude_streams_a_scripted_run_and_exits_by_its_status(lab: Lab, tmp_path):
    lab.create_agent("agent-001", progress=False)
    proc = ok(cli(lab, "claude", "agent-001", "write", "hello.py", "--scripted", turns(tmp_path)))
    lines = proc.stdout.splitlines()
    assert any(line.startswith("⏺ Write: /workspace/hello.py") for line in lines), proc.stdout
    assert any(line.startswith("⏺ Bash: python3 hello.py") for line in lines)
    assert "Wrote hello.py." in proc.stdout
    summary = next(line for line in lines if line.startswith("SUCCESS"))
    assert "cost n/a (scripted)" in summary and "changed: hello.py" in summary and "$" not in summary
    assert lab.exec("agent-001", "cat /workspace/hello.py").stdout == "print('hello')\n"

    # The prompt on stdin; --json prints the result; the run is in the store with its cost n/a (NaN).
    proc = run_cli("-C", str(lab.config.project_dir), "-n", lab.name, "--json", "claude", "agent-001",
                   "--scripted", turns(tmp_path, ["Nothing to do."]), input_text="just answer")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert (result["status"], result["prompt"], result["cost_usd"], result["cost_note"]) == (
        "success", "just answer", None, "scripted")

    proc = cli(lab, "claude", "agent-001", "two steps", "--max-turns", "1", "--scripted", turns(tmp_path))
    assert proc.returncode == 21 and "MAX_TURNS" in proc.stdout
    proc = cli(lab, "claude", "nobody", "hi", "--scripted", turns(tmp_path))
    assert proc.returncode == 4 and "start them with `claude-lab start`" in flat(proc.stderr)
    assert "lab.up" not in proc.stderr  # hints in the CLI's words, not Python's
    lab.stop("agent-001")
    proc = cli(lab, "claude", "agent-001", "hi", "--scripted", turns(tmp_path))
    assert proc.returncode == 1 and "start it with `claude-lab start agent-001`" in flat(proc.stderr)


def test_runs_show_replay_export_and_import(lab: Lab, lab_factory, tmp_path):
    lab.create_agent("agent-001", progress=False)
    ok(cli(lab, "claude", "agent-001", "write hello.py", "--scripted", turns(tmp_path), "--quiet"))
    runs = json.loads(ok(cli(lab, "runs", "--kind", "claude", as_json=True)).stdout)
    assert len(runs) == 1 and runs[0]["status"] == "success" and runs[0]["cost_usd"] is None
    run_id = runs[0]["run_id"]

    shown = ok(cli(lab, "show", run_id)).stdout
    assert "Write" in shown and "python3 hello.py" in shown and "+print('hello')" in shown
    assert json.loads(ok(cli(lab, "show", run_id, as_json=True)).stdout)["diff"].count("+print('hello')") == 1

    replayed = cli(lab, "replay", run_id, timeout=300)
    assert replayed.returncode == 0 and "reproduced" in replayed.stdout, replayed.stderr

    bundle = tmp_path / "run.tar.gz"
    ok(cli(lab, "export", run_id, str(bundle)))
    other = lab_factory()
    imported = ok(cli(other, "import", str(bundle), as_json=True))
    assert json.loads(imported.stdout)["run_id"] == run_id
    assert [r["run_id"] for r in json.loads(ok(cli(other, "runs", as_json=True)).stdout)] == [run_id]
    proc = cli(lab, "show", "20990101-000000-abcdef")
    assert proc.returncode == 4


def test_one_container_lifecycle_stats_and_destroy(lab: Lab):
    lab.create_agent("agent-001", progress=False)
    assert json.loads(ok(cli(lab, "stop", "agent-001", as_json=True)).stdout)[0]["state"] == "exited"
    assert json.loads(ok(cli(lab, "start", "agent-001", as_json=True)).stdout)[0]["state"] == "running"
    ok(cli(lab, "restart", "agent-001"))
    assert lab.agent("agent-001").info.running and lab.egress("agent-001").ok

    samples = ok(cli(lab, "stats", "--watch", "--interval", "0.2", "--count", "2", as_json=True)).stdout.splitlines()
    assert len(samples) == 2 and all(json.loads(s)[0]["name"].endswith("agent-001") for s in samples)

    refused = cli(lab, "destroy")  # no terminal to ask: refused, nothing removed
    assert refused.returncode == 2 and "--yes" in refused.stderr and lab.containers()
    gone = json.loads(ok(cli(lab, "destroy", "--yes", "--volumes", as_json=True)).stdout)
    assert len(gone["containers"]) == 2 and gone["volumes"]  # the agent, its netguard; its workspace
    assert lab.containers() == [] and lab.engine.volumes({"claude-lab.lab": lab.name}) == []


def test_tables_stay_readable_at_80_columns_and_in_a_pipe(lab: Lab):
    for agent in ("agent-with-a-long-name-001", "agent-with-a-long-name-002"):
        lab.create_agent(agent, group="a-group-with-a-long-name", progress=False)
    names = {c.name[len(lab.name) + 1:] for c in lab.containers() if c.labels.get("claude-lab.role") == "agent"}
    for env in ({"COLUMNS": "80"}, {}):  # a narrow terminal, and a pipe (rich then assumes 80)
        proc = run_cli("-C", str(lab.config.project_dir), "-n", lab.name, "status", env=env, columns=None)
        assert proc.returncode == 0, proc.stderr
        lines = proc.stdout.splitlines()
        assert max(len(line) for line in lines) <= 80, proc.stdout
        for name in names:  # every row's name (without the lab's prefix: the title has it), role and state whole
            row = next(line for line in lines if name in line)
            assert "agent" in row and "running" in row
        assert "not shown at 80 columns" in proc.stdout
    listed = ok(cli(lab, "list")).stdout
    assert re.search(r"\b20\d\d-\d\d-\d\d \d\d:\d\d:\d\d\b", listed)  # local time, no microseconds or offset
    assert "+00:00" not in listed and not re.search(r"\d\d:\d\d:\d\d\.\d", listed)


def test_start_builds_every_image_an_agent_needs(lab: Lab):
    proc = ok(cli(lab, "start", timeout=600))
    assert "netguard" in proc.stderr  # checked (and built if missing) with the rest, before `create` needs it
    created = ok(cli(lab, "create", "agent-001"))
    checked = [line for line in created.stderr.splitlines() if line.startswith(("agent ", "netguard "))]
    assert checked and all("is up to date" in line for line in checked), created.stderr  # nothing to build
