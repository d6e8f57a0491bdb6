"""The warm pool, against the real engine and real git: filled, claimed, refilled; a pooled agent the same as a
cold one (limits, firewall self-check, seeded workspace, labels, its name on the network); two creators racing
for a pool of one; the pool seen by a new process and removed by `down` and `destroy`."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from claude_lab import ConfigError, Lab, LabError
from claude_lab import naming as n
from claude_lab.containers import pool
from claude_lab.netguard import sidecar as guard

from support import git, git_project, poll

ROOT = Path(__file__).resolve().parent.parent


def _repo(lab: Lab) -> Path:
    return git_project(lab.config.project_dir, {"README.md": "# pooled\n", "src/app.py": "print('hi')\n"})


def _ready(lab: Lab) -> list[str]:
    table = lab.pool()
    return sorted(table.loc[table["state"] == "ready", "name"])


def _same_labels(info) -> dict[str, str]:
    """An agent's labels without what differs by design: the create call's token and the pool name."""
    return {k: v for k, v in info.labels.items() if k not in (n.CREATOR, n.POOL)}


def test_pool_settings_are_checked():
    assert Lab(".", name="pool-settings", agent_pool={"": 2, "team-a": 1}).config.pool_sizes() == \
        {None: 2, "team-a": 1}
    for bad, said in ((-1, "not a count"), ({"Team A": 1}, "invalid group name"), ("two", "give a number"),
                      ({"": True}, "not a count")):
        with pytest.raises(LabError, match=said):  # ConfigError, InvalidName
            Lab(".", name="pool-settings", agent_pool=bad)


def test_identity_reads_a_pool_born_container_by_its_name():
    labels = n.labels("lab", "container", role="agent", agent="pool.abc", netguard="lab_pool.abc_netguard")
    assert n.identity("lab_pool.abc", labels)[n.ROLE] == "pool" and n.AGENT not in n.identity("lab_pool.abc", labels)
    assert n.identity("lab_pool.abc.ready", labels)[n.ROLE] == "pool"
    claimed = n.identity("lab_a1", labels)
    assert (claimed[n.ROLE], claimed[n.AGENT], claimed[n.NETGUARD], claimed[n.POOL]) == \
        ("agent", "a1", "lab_a1_netguard", "pool.abc")
    side = n.labels("lab", "container", role="netguard", agent="pool.abc")
    assert n.identity("lab_a1_netguard", side)[n.AGENT] == "a1"
    cold = n.labels("lab", "container", role="agent", agent="a1")
    assert n.identity("lab_a1", cold) == cold


def test_a_pooled_agent_is_a_cold_one_made_earlier(lab_factory):
    lab = lab_factory(agent_pool=2)
    project = _repo(lab)
    head = git(project, "rev-parse", "HEAD").strip()
    cold = lab.create_agent("cold", progress=False)  # the pool is empty: a cold start
    assert n.POOL not in cold.info.labels

    filled = lab.fill_pool()
    assert list(filled["state"]) == ["ready", "ready"] and set(filled["base"]) == {head[:12]}
    status = lab.status()
    assert sorted(status.loc[status["role"] == "pool", "name"]) == _ready(lab)
    assert [a.id for a in lab.agents()] == ["cold"]  # pooled pods are never agents

    warm = lab.create_agent("warm", progress=False)
    assert warm.info.labels[n.POOL].startswith("pool.") and warm.name == f"{lab.name}_warm"
    assert len(_ready(lab)) == 1
    assert [a.id for a in lab.agents()] == ["cold", "warm"]
    # the same as the cold one: labels (but the agent's id), limits, firewall, seeded workspace, its name
    rename = {"cold": "warm", f"{lab.name}_cold_netguard": f"{lab.name}_warm_netguard"}
    assert _same_labels(warm.info) == {k: rename.get(v, v) for k, v in _same_labels(cold.info).items()}
    for field in ("memory", "nano_cpus", "pids_limit", "image_id"):
        assert getattr(warm.info, field) == getattr(cold.info, field), field
    assert lab.egress("warm").ok and lab.egress("warm").result["allowed"] == lab.egress("cold").result["allowed"]
    assert lab.exec("warm", "git -C /workspace branch --show-current").check().stdout.strip() == "claude-lab/warm"
    assert lab.exec("warm", "git -C /workspace rev-parse HEAD").check().stdout.strip() == head
    assert lab.exec("warm", "cat /workspace/src/app.py").check().stdout == "print('hi')\n"
    assert lab.diff("warm") == "" and lab.changes("warm").empty
    assert lab.exec("cold", "getent hosts warm").exit_code == 0  # reachable by its id, as a cold agent is
    assert lab.exec("warm", "id -un").check().stdout.strip() == lab.exec("cold", "id -un").check().stdout.strip()
    assert warm.workspace_volume == n.workspace_volume(lab.name, warm.info.labels[n.POOL])

    assert lab.fill_pool()["state"].tolist() == ["ready", "ready"]  # refilled after the claim

    # another process sees the same pool (the engine holds it all)
    code = (f"from claude_lab import Lab; lab = Lab({str(project)!r}, name={lab.name!r}); "
            "import json; print(json.dumps(sorted(lab.pool()['state'])))")
    seen = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert seen.returncode == 0, seen.stderr
    assert json.loads(seen.stdout) == ["ready", "ready"]

    # a new commit: the pool's pods no longer match; a claim starts cold, the next fill replaces them
    (project / "README.md").write_text("# pooled, again\n")
    git(project, "commit", "-qam", "again")
    later = lab.create_agent("later", progress=False)
    assert n.POOL not in later.info.labels
    refilled = lab.fill_pool()
    assert set(refilled["base"]) == {git(project, "rev-parse", "HEAD").strip()[:12]}

    pooled_volumes = {n.workspace_volume(lab.name, p.labels[n.POOL]) for p in pool.pods(lab.engine, lab.name)}
    removed = lab.destroy()  # not volumes=True: the agents' workspaces stay, the pool's go
    assert pooled_volumes <= set(removed["volumes"])
    assert not [v for v in pooled_volumes if lab.engine.volume_exists(v)]
    assert lab.engine.volume_exists(warm.workspace_volume)  # a claimed agent's work is the user's


def test_two_creators_racing_for_a_pool_of_one(lab_factory):
    lab = lab_factory(agent_pool=1, agent_source="none")
    lab.fill_pool()
    start = threading.Barrier(2)
    made: dict[str, object] = {}

    def create(agent_id: str) -> None:
        start.wait()
        made[agent_id] = lab.create_agent(agent_id, progress=False)

    threads = [threading.Thread(target=create, args=(a,)) for a in ("r1", "r2")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(180)
    assert sorted(made) == ["r1", "r2"]
    pooled = [a for a, agent in made.items() if n.POOL in agent.info.labels]  # type: ignore[attr-defined]
    assert len(pooled) == 1  # one got the pod, the other started cold
    names = [c.name for c in lab.containers()]
    assert len(names) == len(set(names)) and {f"{lab.name}_r1", f"{lab.name}_r2"} <= set(names)
    assert all(lab.egress(a).ok for a in made)
    assert lab.pool().empty


def test_down_removes_the_pool_and_the_pool_needs_the_local_backend(lab_factory):
    lab = lab_factory(agent_pool=1, agent_source="none")
    lab.fill_pool()
    assert len(_ready(lab)) == 1
    lab.down()
    assert lab.pool().empty and not [v for v in lab.engine.volumes({n.LAB: lab.name}) if "pool." in v.name]
    empty = lab_factory(agent_source="none")
    with pytest.raises(ConfigError, match="agent_pool is 0"):
        empty.fill_pool()


def test_the_cli_fills_shows_and_drains_the_pool(lab_factory):
    lab = lab_factory(agent_source="none")

    def cli(*args: str, pool_size: str = "1") -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "CLAUDE_LAB_AGENT_POOL": pool_size, "CLAUDE_LAB_AGENT_SOURCE": "none"}
        return subprocess.run([sys.executable, "-m", "claude_lab.cli", "-C", str(lab.config.project_dir),
                               "-n", lab.name, "--json", *args], capture_output=True, text=True, env=env, cwd=ROOT,
                              timeout=300)

    refused = cli("pool", "fill", pool_size="0")
    said = refused.stdout + refused.stderr  # --json: the error is a JSON line
    assert refused.returncode != 0 and "agent_pool is 0" in said and "CLAUDE_LAB_AGENT_POOL=2" in said
    assert "Traceback" not in said
    filled = cli("pool", "fill")
    assert filled.returncode == 0, filled.stderr
    assert [row["state"] for row in json.loads(filled.stdout)] == ["ready"]
    made = cli("create", "c1")
    assert made.returncode == 0, made.stderr
    assert n.POOL in lab.agent("c1").info.labels  # claimed from the pool the other process filled
    assert cli("pool", "fill").returncode == 0
    drained = cli("pool", "drain")
    assert drained.returncode == 0 and "removed 1" in drained.stderr
    assert json.loads(cli("pool", "status").stdout) == []
    assert [a.id for a in lab.agents()] == ["c1"]  # the user's agent stays


def test_the_background_top_up_refills_after_a_claim(lab_factory):
    lab = lab_factory(agent_pool=1, agent_source="none")
    lab.start_pool()
    try:
        poll(lambda: len(_ready(lab)) == 1, timeout=120, interval=0.2)
        first = lab.create_agent("b1", progress=False)
        assert n.POOL in first.info.labels
        poll(lambda: len(_ready(lab)) == 1, timeout=120, interval=0.2)  # refilled by the process's thread
        assert lab.pool_error is None
    finally:
        lab.stop_pool()
    assert lab.drain_pool() and lab.pool().empty


def test_a_group_pools_agents_on_the_shared_services_network_too(lab_factory):
    lab = lab_factory(agent_pool={"team": 1}, agent_source="none", services_network="shared")
    lab.fill_pool()
    warm = lab.create_agent("t1", group="team", progress=False)
    assert warm.info.labels[n.POOL].startswith("pool.")
    cold = lab.create_agent("t2", group="team", progress=False)
    assert n.POOL not in cold.info.labels
    # the claimed pod is known as the agent everywhere a cold one is: its id on the group's network, its
    # container name on the services network
    nets = lab.engine.api.inspect_container(guard.sidecar_name(lab.name, "t1"))["NetworkSettings"]["Networks"]
    assert "t1" in nets[n.network_name(lab.name, "team")]["Aliases"]
    assert lab.container_name("t1") in nets[n.services_network(lab.name)]["Aliases"]
    assert set(nets) == set(lab.engine.api.inspect_container(guard.sidecar_name(lab.name, "t2"))["NetworkSettings"]
                            ["Networks"])
    assert lab.exec("t2", "getent hosts t1").exit_code == 0 and lab.egress("t1").ok
