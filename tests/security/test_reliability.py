"""Reliability under abuse: a killed controller, racing creators, a decoy near cleanup, an engine restart.

The engine-restart test stops the shared Docker engine, so it runs only with
CLAUDE_LAB_DESTRUCTIVE_TESTS=1 (and never while other labs' tests run).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from claude_lab import Lab
from claude_lab.netguard import sidecar as ng
from claude_lab.engine import Engine
from support import poll

from .conftest import connect

REPO = Path(__file__).resolve().parents[2]

CHILD = r"""
import json, sys, time
from claude_lab import Lab
args = json.loads(sys.argv[1])
lab = Lab(args["project"], name=args["name"], postgres_port=args["pg"], redis_port=args["redis"])
if args["what"] == "run":
    def seen(event):
        print("started", flush=True)
    lab.shell(args["agent"], "echo started; sleep 300", on_event=seen)
elif args["what"] == "create":
    while time.time() < args["at"]:
        time.sleep(0.001)
    try:
        lab.create_agent(args["agent"], progress=False)
        print(json.dumps({"outcome": "created"}))
    except Exception as exc:
        print(json.dumps({"outcome": type(exc).__name__, "message": str(exc)}))
"""


def child(lab: Lab, **args) -> subprocess.Popen:
    cfg = lab.config
    payload = {"project": str(cfg.project_dir), "name": lab.name, "pg": cfg.postgres_port, "redis": cfg.redis_port,
               **args}
    return subprocess.Popen([sys.executable, "-c", CHILD, json.dumps(payload)], cwd=REPO, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_kill_9_of_the_controller_mid_run_loses_nothing(lab: Lab, probes):
    lab.create_agent("survivor", progress=False)
    proc = child(lab, what="run", agent="survivor")
    try:
        assert proc.stdout.readline().strip() == "started"  # the run is going inside the agent
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    again = Lab(lab.config.project_dir, name=lab.name, engine=Engine())  # a new process's view: labels only
    found = [a.id for a in again.agents()]
    rows = again.status().set_index("agent")
    assert probes.record("a new process after kill -9 of the controller", "finds agent and its firewall",
                         "finds agent and its firewall" if found == ["survivor"] and
                         rows.loc["survivor", "egress"].startswith("allowlist: checked") else f"{found} {rows}",
                         area="reliability", where="lab")
    status = poll(lambda: list(again.runs(agent="survivor")["status"]), timeout=30)
    assert probes.record("the run that was going", "interrupted", status[0] if len(status) == 1 else str(status),
                         area="reliability", where="run store")
    assert again.exec("survivor", "echo ok").stdout == "ok\n"


def test_two_processes_create_the_same_agent_once(lab: Lab, probes):
    lab.create_agent("first", progress=False)  # the lab network exists, as for every agent after a lab's first
    outcomes = []
    for round_ in range(2):
        agent = f"twin-{round_}"
        at = time.time() + 4  # both start at the same instant, imports done
        procs = [child(lab, what="create", agent=agent, at=at) for _ in range(2)]
        results = []
        for proc in procs:
            out, err = proc.communicate(timeout=180)
            assert out.strip(), err[-2000:]
            results.append(json.loads(out.strip().splitlines()[-1]))
        kinds = sorted(r["outcome"] for r in results)
        containers = [c.name for c in lab.containers() if c.labels.get("claude-lab.agent") == agent]
        outcomes.append((kinds, containers))
        assert kinds == ["AlreadyExists", "created"], results
        loser = next(r for r in results if r["outcome"] == "AlreadyExists")
        assert f"agent {agent!r} already exists" in loser["message"]
        assert sorted(containers) == [f"{lab.name}_{agent}", ng.sidecar_name(lab.name, agent)]
        assert lab.egress(agent).ok and lab.exec(agent, "echo ok").ok
        vols = [v.name for v in lab.engine.volumes({"claude-lab.lab": lab.name, "claude-lab.agent": agent})]
        assert vols == [f"{lab.name}_{agent}_workspace"]  # the loser did not take the winner's volume
    assert probes.record("two processes create the same agent at once (x2)", "one created, one AlreadyExists",
                         "one created, one AlreadyExists", area="reliability", where="lab")


def test_cleanup_never_touches_a_container_without_the_lab_label(lab: Lab, engine, probes):
    lab.create_agent("gone", progress=False)
    lab.stop("gone")
    api = engine.api
    decoys = [
        api.create_container(lab.config.image("base"), command=["true"], name=f"{lab.name}_decoy")["Id"],  # our name
        api.create_container(lab.config.image("base"), command=["true"], labels={"claude-lab.lab": lab.name + "x",
                             "claude-lab.kind": "container"})["Id"],  # another lab's label
        api.create_container(lab.config.image("base"), command=["true"], labels={"purpose": "decoy"})["Id"],
    ]
    try:
        removed = lab.cleanup(volumes=True)
        left = [api.inspect_container(d)["Id"] for d in decoys]
        ok = left == decoys and removed["containers"] == [f"{lab.name}_gone", f"{lab.name}_gone_netguard"]
        assert probes.record("cleanup() next to three unlabelled/foreign decoys", "decoys untouched",
                             "decoys untouched" if ok else f"removed {removed}", area="reliability", where="lab")
        destroyed = lab.destroy(volumes=True)
        assert [api.inspect_container(d)["Id"] for d in decoys] == decoys
        assert f"{lab.name}_decoy" not in destroyed["containers"]
    finally:
        for d in decoys:
            api.remove_container(d, force=True)


@pytest.mark.skipif(os.environ.get("CLAUDE_LAB_DESTRUCTIVE_TESTS") != "1",
                    reason="restarts the shared Docker engine: set CLAUDE_LAB_DESTRUCTIVE_TESTS=1 on a quiet machine")
def test_engine_restart_brings_the_lab_back_with_its_rules(lab: Lab, listener, probes):
    lab.up(progress=False)
    lab.create_agent("phoenix", progress=False)
    gw = lab.engine.network_gateway(f"{lab.name}_net")
    backend = listener("0.0.0.0")
    before = lab.egress("phoenix").result["at"]
    pid = int(subprocess.run(["pgrep", "-xo", "dockerd"], capture_output=True, text=True).stdout.split()[0])
    os.kill(pid, signal.SIGTERM)
    poll(lambda: not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2],
         timeout=60)
    subprocess.run([str(REPO / "scripts" / "ensure-engine.sh")], check=True, timeout=120)
    fresh = Lab(lab.config.project_dir, name=lab.name, engine=Engine())
    lab._engine = fresh.engine  # the fixture's destroy() needs a live connection
    fresh.wait_healthy(timeout=120)
    poll(lambda: fresh.egress("phoenix").ok and fresh.egress("phoenix").result.get("at", "") > before, timeout=90)
    rows = fresh.status().set_index("name")
    states = dict(zip(rows.index, rows["state"]))
    assert probes.record("services and agent after an engine restart", "all running",
                         "all running" if set(states.values()) == {"running"} else str(states),
                         area="reliability", where="engine")
    assert probes.record("lab.status() egress after the restart", "allowlist: checked",
                         rows.loc[f"{lab.name}_phoenix", "egress"].split(",")[0], area="reliability", where="lab")
    assert probes.record("the host from the agent, rules re-applied", "refused",
                         connect(fresh, "phoenix", gw, backend.port), area="reliability", where="agent")
    assert connect(fresh, "phoenix", "postgres", 5432) == "answered"
