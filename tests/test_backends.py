"""The core on both backends: one Docker engine, and a real multi-node Swarm (2 Docker-in-Docker workers).

The same tests run against each (`backend_lab` is parametrized); the swarm-only ones cover what a
single engine has no notion of: placement on several nodes, pinning, and a node going down.
"""
from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from claude_lab import Lab, LabError, ScriptedModel
from claude_lab import naming as n
from claude_lab.engine import Engine
from claude_lab.engine.swarm import SwarmEngine
from claude_lab.model.gateway import lab_proxy
from claude_lab.swarmsim import start_worker, stop_worker
from conftest import TEST_PREFIX, free_port
from support import poll, tool

PROBE = ("python3 -c \"import socket,sys; socket.create_connection((sys.argv[1], int(sys.argv[2])), 2); "
         "print('open')\" {} {}")


@pytest.fixture(scope="session")
def swarm_engine(swarm_sim) -> SwarmEngine:
    engine = SwarmEngine(registry=swarm_sim.registry, model_host=swarm_sim.model_host,
                         constraints=swarm_sim.constraints)  # this sim's nodes only, whatever other sims run
    yield engine
    left = [c.name for c in engine.containers({"claude-lab.lab": None}) if c.labels["claude-lab.lab"].startswith(
        TEST_PREFIX)]
    for name in left:
        engine.remove(name, force=True)
    assert not left, f"swarm tests left behind: {left}"


def _swarm_lab(tmp_path: Path, swarm_engine: SwarmEngine, sim) -> Lab:
    project = tmp_path / "project"
    project.mkdir(exist_ok=True)
    return Lab(project, name=f"{TEST_PREFIX}{uuid.uuid4().hex[:8]}", engine=swarm_engine, backend="swarm",
               registry=sim.registry, model_host=sim.model_host,
               postgres_port=free_port(), redis_port=free_port())


@pytest.fixture(params=["local", "swarm"])
def backend_lab(request, tmp_path: Path, engine: Engine, images: None):
    if request.param == "local":
        project = tmp_path / "project"
        project.mkdir()
        lab = Lab(project, name=f"{TEST_PREFIX}{uuid.uuid4().hex[:8]}", engine=engine,
                  postgres_port=free_port(), redis_port=free_port())
    else:
        lab = _swarm_lab(tmp_path, request.getfixturevalue("swarm_engine"), request.getfixturevalue("swarm_sim"))
    yield lab
    lab.destroy(volumes=True)


@pytest.fixture
def swarm_lab(tmp_path: Path, images: None, swarm_engine: SwarmEngine, swarm_sim):
    lab = _swarm_lab(tmp_path, swarm_engine, swarm_sim)
    yield lab
    lab.destroy(volumes=True)


def _nodes(lab: Lab) -> dict[str, str]:
    return {row.agent: row.node for row in lab.status().itertuples() if row.role == "agent"}


# -- both backends ------------------------------------------------------------------------------------
def test_agents_exec_groups_and_services(backend_lab: Lab):
    lab = backend_lab
    lab.up(progress=False)
    swarm = lab.config.backend == "swarm"

    def versions() -> dict[str, int]:  # a swarm service's spec version goes up with every update
        return {r: lab.engine.api.inspect_service(n.container_name(lab.name, r))["Version"]["Index"]
                for r in n.SERVICE_ROLES} if swarm else {}

    before = versions()
    for agent, group in (("a1", "g1"), ("a2", "g2"), ("a3", "g1")):
        lab.create_agent(agent, group=group, progress=False)
    assert versions() == before  # on a swarm, new groups join the shared services network: no service update
    assert {a.id: a.group for a in lab.agents()} == {"a1": "g1", "a2": "g2", "a3": "g1"}
    out = lab.exec("a1", "id -u; hostname; grep CapEff /proc/self/status").check().stdout.split()
    assert out[:2] == ["1000", "a1"] and out[-1] == "0000000000000000"
    for agent in ("a2", "a3"):
        lab.exec(agent, "nohup python3 -m http.server 8000 >/dev/null 2>&1 &").check()
        poll(lambda: lab.exec(agent, PROBE.format("127.0.0.1", 8000)).ok, timeout=30)
    assert lab.exec("a1", PROBE.format("a3", 8000)).stdout == "open\n"  # same group, on any node
    assert lab.exec("a1", PROBE.format("a2", 8000)).exit_code != 0  # other group: no name
    for a2_ip in lab.agent("a2").info.ip_addresses.values():  # its group's network, and the services' (swarm)
        assert lab.exec("a1", PROBE.format(a2_ip, 8000)).exit_code != 0  # nor by address
    lab.exec("dev", "nohup python3 -m http.server 8000 >/dev/null 2>&1 &").check()
    poll(lambda: lab.exec("dev", PROBE.format("127.0.0.1", 8000)).ok, timeout=30)
    for agent in ("a1", "a2"):
        assert lab.exec(agent, PROBE.format("postgres", 5432)).stdout == "open\n"
        assert lab.exec(agent, PROBE.format("redis", 6379)).stdout == "open\n"
        assert lab.exec(agent, PROBE.format("dev", 8000)).stdout == "open\n"
    status = lab.status().set_index("agent")
    assert all(status.loc[a, "egress"].startswith("allowlist: checked") for a in ("a1", "a2", "a3")), status
    assert lab.exec("dev", "echo $DATABASE_URL").stdout.startswith("postgresql://")
    removed = lab.destroy(volumes=True)  # every container at once, their tasks awaited together
    assert len(removed["containers"]) >= 9 and lab.containers() == []  # 3 services, 3 agents, 3 sidecars
    everywhere = [e for _, e in lab.engine._live_engines()] if lab.config.backend == "swarm" else [lab.engine]
    mine = {"label": f"claude-lab.lab={lab.name}"}
    assert not [c for e in everywhere for c in e.api.containers(all=True, filters=mine)]
    assert not lab.engine.networks({"claude-lab.lab": lab.name})
    assert not lab.engine.volumes({"claude-lab.lab": lab.name})


def test_stats_and_streamed_exec(backend_lab: Lab):
    lab = backend_lab
    lab.create_agent("s1", progress=False)
    lines = list(lab.exec_stream("s1", "for i in 1 2 3; do echo line-$i; done"))
    assert "".join(chunk.text for chunk in lines).split() == ["line-1", "line-2", "line-3"]
    lab.exec("s1", "nohup python3 -c 'x = bytearray(150 << 20); import time; time.sleep(600)' "
                   ">/dev/null 2>&1 &").check()
    def grown():
        row = lab.stats().set_index("name").loc[lab.container_name("s1")]
        return (row,) if row["mem_bytes"] > 100 << 20 else None

    row, = poll(grown, timeout=30)
    assert row["state"] == "running" and row["pids"] >= 2 and row["mem_limit"] == 2 << 30


def test_scripted_claude_run(backend_lab: Lab):
    lab = backend_lab
    lab.create_agent("c1", progress=False)
    model = ScriptedModel([tool("Bash", command="echo swarm-or-not > /workspace/where.txt && hostname"),
                           "Wrote where.txt."])
    try:
        result = lab.claude("c1", "Write where.txt.", model=model, timeout=120)
    finally:
        model.stop()
    assert result.status == "success", result.error
    assert result.result == "Wrote where.txt."
    assert lab.exec("c1", "cat /workspace/where.txt").stdout == "swarm-or-not\n"
    assert "where.txt" in (result.diff or "")
    assert lab.run(result.run_id).status == "success"  # recorded in the run store
    # Through the lab's model proxy under a grant bound to the agent's address as the proxy sees it (on a
    # swarm worker: the node's, after its gateway bridge's NAT), and revoked at the run's end.
    grant = lab_proxy(lab.engine, lab.name).grants.of_run(result.run_id)
    assert grant is not None and grant.peer and not grant.live and grant.requests >= 2
    if lab.config.backend == "local":
        assert grant.expected_peers and grant.peer in grant.expected_peers  # one of the pod's own addresses


# -- swarm only ---------------------------------------------------------------------------------------
def test_an_agent_no_node_can_take_fails_fast_and_says_why(tmp_path: Path, images: None, swarm_sim,
                                                           swarm_engine: SwarmEngine):
    nowhere = SwarmEngine(registry=swarm_sim.registry, model_host=swarm_sim.model_host,
                          constraints=[*swarm_sim.constraints, "node.labels.claude-lab.pool==gpu"])
    lab = _swarm_lab(tmp_path, nowhere, swarm_sim)
    try:
        lab.build(["agent", "netguard"], progress=False)  # pushing to the sim's registry is not the wait measured
        started = time.monotonic()
        with pytest.raises(LabError) as err:
            lab.create_agent("nowhere", progress=False)
        assert time.monotonic() - started < 60  # not the 300 s task timeout
        text = str(err.value)
        assert "cannot be placed" in text and "node.labels.claude-lab.pool==gpu" in text
        assert all(w.hostname in text for w in swarm_sim.workers)  # the nodes that were considered
        assert lab.containers() == [] and not [s for s in nowhere.api.services() if lab.name in s["Spec"]["Name"]]
    finally:
        lab.destroy(volumes=True)



def test_six_agents_land_on_several_nodes_and_stay_pinned(swarm_lab: Lab, swarm_engine: SwarmEngine):
    lab = swarm_lab
    with ThreadPoolExecutor(3) as pool:  # concurrent first creators share the lab's one overlay network
        list(pool.map(lambda i: lab.create_agent(f"p{i}", progress=False), range(6)))
    nodes = _nodes(lab)
    assert len(set(nodes.values())) >= 2, nodes
    lab.exec("p1", "echo kept > /workspace/kept.txt").check()
    lab.restart("p1")
    assert _nodes(lab)["p1"] == nodes["p1"]  # pinned: its workspace volume lives on that node
    service = swarm_engine.api.inspect_service(lab.agent("p1").name)
    placed = service["Spec"]["TaskTemplate"]["Placement"]["Constraints"]
    assert swarm_engine.constraints[0] in placed and any(c.startswith("node.id==") for c in placed)
    assert lab.exec("p1", "cat /workspace/kept.txt").stdout == "kept\n"
    assert lab.egress("p1").ok  # the netguard came back with the new task
    lab.stop("p1")
    assert lab.agent("p1").state == "exited"
    lab.start("p1")
    assert lab.exec("p1", "cat /workspace/kept.txt").stdout == "kept\n"
    with pytest.raises(LabError, match="already exists"):
        lab.create_agent("p2", progress=False)


def test_a_node_going_down_shows_its_agents_lost_and_new_agents_go_elsewhere(swarm_lab: Lab, swarm_sim):
    lab = swarm_lab
    worker = swarm_sim.workers[-1]
    made = 0
    while worker.hostname not in _nodes(lab).values():  # until one agent is on the worker we stop
        lab.create_agent(f"d{made}", progress=False)
        made += 1
        assert made <= 6, _nodes(lab)
    on_worker = sorted(a for a, node in _nodes(lab).items() if node == worker.hostname)
    stop_worker(swarm_sim.name, len(swarm_sim.workers))
    try:
        def lost():
            df = lab.status().set_index("agent")
            return (df,) if all(df.loc[a, "state"] == "lost" for a in on_worker) else None

        status, = poll(lost, timeout=90, interval=1)
        assert set(status.loc[on_worker, "node"]) == {worker.hostname}
        with pytest.raises(LabError, match="lost"):
            lab.exec(on_worker[0], "true")
        for i in range(3):
            agent = lab.create_agent(f"new{i}", progress=False)
            assert agent.info.labels["claude-lab.node"] != worker.hostname
            assert lab.exec(f"new{i}", "echo ok").stdout == "ok\n"
    finally:
        start_worker(swarm_sim.name, len(swarm_sim.workers))
    poll(lambda: all(lab.agent(a).state == "running" for a in on_worker), timeout=120, interval=1)
    for agent in on_worker:  # back on its node with its workspace, and its new task guarded again
        assert lab.exec(agent, "test -d /workspace && echo back").stdout == "back\n"
        poll(lambda: lab.egress(agent).ok, timeout=60)


def test_two_sims_on_one_manager_keep_their_labs_tasks_apart(tmp_path: Path, images: None, engine: Engine,
                                                             swarm_sim, swarm_engine: SwarmEngine):
    """A second sim on the same manager (its own worker and registry): each lab's tasks stay on its own sim's
    nodes (the manager serves both), and the other sim's labs keep working while it is up."""
    from claude_lab.swarmsim import sim_down, sim_up

    other_name = f"{TEST_PREFIX}sim2-{uuid.uuid4().hex[:6]}"
    try:
        other = sim_up(1, name=other_name, registry_port=free_port(), engine=engine)
        other_engine = SwarmEngine(registry=other.registry, model_host=other.model_host,
                                   constraints=other.constraints)
        (tmp_path / "a").mkdir()
        (tmp_path / "b").mkdir()
        mine = _swarm_lab(tmp_path / "a", swarm_engine, swarm_sim)
        theirs = _swarm_lab(tmp_path / "b", other_engine, other)
        try:
            with ThreadPoolExecutor(4) as pool:
                list(pool.map(lambda job: job[0].create_agent(job[1], progress=False),
                              [(mine, "m0"), (mine, "m1"), (mine, "m2"), (theirs, "t0"), (theirs, "t1"), (theirs, "t2")]))
            manager = engine.api.info()["Name"]
            assert set(_nodes(mine).values()) <= {manager, *(w.hostname for w in swarm_sim.workers)}, _nodes(mine)
            assert set(_nodes(theirs).values()) <= {manager, other.workers[0].hostname}, _nodes(theirs)
            placed = {*_nodes(mine).values(), *_nodes(theirs).values()}
            assert placed - {manager}, placed  # six tasks spread: some on workers, where the sims differ
            for lab, agent in ((mine, "m0"), (mine, "m2"), (theirs, "t1")):
                assert lab.exec(agent, "echo ok").stdout == "ok\n"
        finally:
            mine.destroy(volumes=True)
            theirs.destroy(volumes=True)
    finally:
        sim_down(other_name, force=True, engine=engine)
