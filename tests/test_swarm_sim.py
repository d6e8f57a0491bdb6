"""The swarm sim on the real engine: a manager (the host engine) and Docker-in-Docker workers.

Most tests share the session's `swarm_sim` (conftest.py); the last one makes its own small sim to
watch `sim_down` remove everything. Services and networks made here are labelled
`claude-lab.sim=<name>` and removed in `finally` blocks (and by `sim_down` at the latest).
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

import claude_lab
from claude_lab import LabConfig, LabError, PortInUse
from claude_lab.engine import Engine
from claude_lab.images import DEFAULT_IMAGES, ImageBuilder, order
from claude_lab.naming import CONTENT_HASH
from claude_lab.swarmsim import SwarmSim, push, sim_down, sim_nodes, sim_status, sim_up, start_worker, stop_worker

from conftest import free_port
from support import poll

SIM = "claude-lab.sim"


def sim_nodes_by_host(sim: SwarmSim, engine: Engine) -> dict[str, object]:
    return {node.hostname: node for node in sim_nodes(sim.name, engine=engine)}


@pytest.fixture(scope="module")
def netguard_image(engine: Engine) -> str:
    """A small lab image with `nc` in it, for the overlay test (built once, cached by its content hash)."""
    builder = ImageBuilder(engine, LabConfig.load(Path(claude_lab.__file__).parent))
    builder.build(["netguard"])
    return builder.tag("netguard")


def test_sim_images_are_optional_and_build_by_name() -> None:
    assert "swarm-worker" not in DEFAULT_IMAGES and "registry" not in DEFAULT_IMAGES  # `claude-lab build` skips them
    assert [spec.name for spec in order(["swarm-worker", "registry"])] == ["base", "swarm-worker", "registry"]


def test_up_gives_ready_nodes_with_engines_and_labels(swarm_sim: SwarmSim, engine: Engine) -> None:
    nodes = sim_nodes_by_host(swarm_sim, engine)
    assert len(swarm_sim.workers) == 2
    assert len(nodes) == 3, nodes
    assert all(node.state == "ready" for node in nodes.values()), nodes
    assert sorted(node.role for node in nodes.values()) == ["manager", "worker", "worker"]
    for worker in swarm_sim.workers:
        assert worker.engine_url.startswith("tcp://") and worker.engine_url.endswith(":2375")
        remote = Engine(worker.engine_url)
        try:
            info = remote.info()
        finally:
            remote.close()
        assert info["Swarm"]["NodeID"] == worker.node_id
        assert info["Name"] == worker.hostname
        assert info["Driver"] == "overlay2"  # the inner /var/lib/docker is on a volume, not vfs
        labels = engine.api.inspect_node(worker.node_id)["Spec"]["Labels"]
        assert labels["claude-lab.engine"] == worker.engine_url
        assert labels[SIM] == swarm_sim.name
    manager = next(node for node in nodes.values() if node.role == "manager")
    assert manager.engine_url == ""  # the swarm backend reaches the manager through its own connection
    assert swarm_sim.registry.startswith("localhost:")
    assert swarm_sim.model_host == engine.network_gateway(swarm_sim.network)
    builder = ImageBuilder(engine, LabConfig.load(Path(claude_lab.__file__).parent))
    for image in ("swarm-worker", "registry"):  # built by name, labelled like every lab image
        assert builder.up_to_date(order([image])[-1])
        assert engine.image_labels(builder.tag(image))[CONTENT_HASH] == builder.content_hash(order([image])[-1])


def test_up_again_is_quick_and_changes_nothing(swarm_sim: SwarmSim, engine: Engine) -> None:
    port = int(swarm_sim.registry.rsplit(":", 1)[1])
    started = time.monotonic()
    again = sim_up(2, name=swarm_sim.name, registry_port=port, engine=engine)
    assert time.monotonic() - started < 15
    assert again == swarm_sim
    assert sim_status(swarm_sim.name, engine=engine) == swarm_sim


def test_cli_status_shows_nodes_registry_and_model_host(swarm_sim: SwarmSim) -> None:
    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "claude_lab.cli", *args], capture_output=True, text=True,
                              timeout=60, env={**os.environ, "COLUMNS": "200"})  # rich: no cut hostnames

    proc = cli("--json", "swarm-sim", "status", "--name", swarm_sim.name)
    assert proc.returncode == 0, proc.stderr
    shown = json.loads(proc.stdout)
    assert shown["registry"] == swarm_sim.registry and shown["model_host"] == swarm_sim.model_host
    assert sorted(node["role"] for node in shown["nodes"]) == ["manager", "worker", "worker"]
    assert {node["engine_url"] for node in shown["nodes"] if node["role"] == "worker"} == \
        {w.engine_url for w in swarm_sim.workers}
    table = cli("swarm-sim", "status", "--name", swarm_sim.name)
    assert table.returncode == 0 and swarm_sim.workers[0].hostname in table.stdout
    missing = cli("swarm-sim", "status", "--name", "pytest-sim-nosuch")
    assert missing.returncode == 4 and "swarm-sim up" in missing.stderr


def test_pushed_image_pulls_on_a_worker(swarm_sim: SwarmSim, engine: Engine) -> None:
    ref = push("claude-lab/base:0.1.0", swarm_sim.name, engine=engine)
    assert ref == f"{swarm_sim.registry}/claude-lab/base:0.1.0"
    worker = Engine(swarm_sim.workers[0].engine_url)
    try:
        worker.api.pull(ref)  # the same reference: the worker forwards localhost:<port> to the registry
        assert worker.image_id(ref) is not None
    finally:
        worker.close()


def test_service_spreads_over_workers_and_tasks_talk_over_overlay(
        swarm_sim: SwarmSim, engine: Engine, netguard_image: str) -> None:
    api = engine.api
    image = push(netguard_image, swarm_sim.name, engine=engine)
    suffix = uuid.uuid4().hex[:6]
    net_name, svc_name = f"{swarm_sim.name}_overlay_{suffix}", f"{swarm_sim.name}_svc_{suffix}"
    host = socket.socket()  # a listener on the model host: tasks on the workers must reach it
    host.bind((swarm_sim.model_host, 0))
    host.listen(4)
    host.settimeout(1)
    accepted: list[str] = []

    def accept() -> bool:
        try:
            accepted.append(host.accept()[1][0])
        except OSError:  # not yet (timeout)
            pass
        return bool(accepted)
    service_id = None
    api.create_network(net_name, driver="overlay", labels={SIM: swarm_sim.name})
    try:
        started = time.monotonic()
        service_id = api.create_service(
            {"ContainerSpec": {"Image": image, "Command": ["nc", "-lk", "7000"], "Init": True,
                               "StopGracePeriod": 1_000_000_000},
             # This sim's workers only: other sims' workers (parallel sessions) share the host's swarm.
             "Placement": {"Constraints": ["node.role==worker", f"node.labels.{SIM}=={swarm_sim.name}"],
                           "MaxReplicas": 1},
             "Networks": [{"Target": net_name}]},
            name=svc_name, labels={SIM: swarm_sim.name}, mode={"Replicated": {"Replicas": 2}},
        )["ID"]

        def running() -> list[dict]:
            tasks = [t for t in api.tasks(filters={"service": service_id, "desired-state": "running"})
                     if t["Status"]["State"] == "running"]
            return tasks if len(tasks) == 2 else []

        tasks = poll(running, timeout=120, interval=0.2)
        print(f"2 tasks running {time.monotonic() - started:.1f} s after service create (includes the pulls)")
        urls = {w.node_id: w.engine_url for w in swarm_sim.workers}
        assert {t["NodeID"] for t in tasks} == set(urls)  # one task on each worker
        where = []
        for t in tasks:
            ip = next(a["Addresses"][0].split("/")[0] for a in t["NetworksAttachments"]
                      if a["Network"]["Spec"]["Name"] == net_name)
            where.append((urls[t["NodeID"]], t["Status"]["ContainerStatus"]["ContainerID"], ip))
        ready = time.monotonic()
        for (url, container, _), (_, _, peer_ip) in ((where[0], where[1]), (where[1], where[0])):
            node = Engine(url)
            try:
                def connects(ip: str, port: int) -> bool:
                    exec_id, _, _ = node.exec_output(container, ["nc", "-z", "-w", "3", ip, str(port)])
                    return node.exec_exit_code(exec_id) == 0

                # The overlay's peer table spreads by gossip: a fresh task may wait a moment for its peer.
                poll(lambda: connects(peer_ip, 7000), timeout=30, interval=0.2)
                poll(lambda: connects(swarm_sim.model_host, host.getsockname()[1]), timeout=30, interval=0.2)
            finally:
                node.close()
        print(f"both tasks reached each other and the model host {time.monotonic() - ready:.1f} s after running")
        assert poll(accept, timeout=10)  # both connections wait in the backlog; one accept proves it
    finally:
        host.close()
        if service_id:
            api.remove_service(service_id)
        poll(lambda: _removed_network(engine, net_name), timeout=60, interval=0.2)


def _removed_network(engine: Engine, name: str) -> bool:
    try:
        engine.api.remove_network(name)
    except Exception as exc:  # noqa: BLE001 - "active endpoints" while the tasks shut down
        return "not found" in str(exc).lower()
    return True


def test_stopped_worker_goes_down_and_comes_back(swarm_sim: SwarmSim, engine: Engine) -> None:
    hostname = swarm_sim.workers[1].hostname
    started = time.monotonic()
    stop_worker(swarm_sim.name, 2, engine=engine)
    try:
        poll(lambda: sim_nodes_by_host(swarm_sim, engine)[hostname].state == "down", timeout=60, interval=0.2)
        print(f"node down {time.monotonic() - started:.1f} s after stop_worker was called")
    finally:
        back = start_worker(swarm_sim.name, 2, engine=engine)
    assert back.node_id == swarm_sim.workers[1].node_id  # same node: its swarm state lives on its volume
    assert sim_nodes_by_host(swarm_sim, engine)[hostname].state == "ready"
    assert engine.api.inspect_node(back.node_id)["Spec"]["Labels"]["claude-lab.engine"] == back.engine_url


def test_registry_port_in_use_is_a_clear_error_and_leaves_nothing(engine: Engine) -> None:
    name = f"pytest-simport-{uuid.uuid4().hex[:6]}"
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen(1)
        port = held.getsockname()[1]
        with pytest.raises(PortInUse, match=f"port {port}.*--registry-port"):
            sim_up(1, name=name, registry_port=port, engine=engine)
    label = {"label": f"{SIM}={name}"}
    assert not engine.api.containers(all=True, filters=label)
    assert not engine.api.volumes(filters=label).get("Volumes")
    assert not engine.api.networks(filters=label)
    assert sim_status(name, engine=engine) is None


def test_down_removes_everything_it_made(engine: Engine) -> None:
    name = f"pytest-simdown-{uuid.uuid4().hex[:6]}"
    api = engine.api
    try:
        sim = sim_up(1, name=name, registry_port=free_port(), engine=engine)
        assert len(sim.workers) == 1
        push("claude-lab/base:0.1.0", name, engine=engine)  # its host-side tag goes with the sim
        manager_id = api.info()["Swarm"]["NodeID"]
        made_swarm = api.inspect_node(manager_id)["Spec"]["Labels"].get("claude-lab.sim-init") == name
        if made_swarm:  # leaving would orphan lab services: refused, naming them
            lab_label = f"pytest-simdown-lab-{uuid.uuid4().hex[:6]}"
            svc = api.create_service({"ContainerSpec": {"Image": "claude-lab/base:0.1.0",
                                                        "Command": ["sleep", "infinity"], "Init": True}},
                                     name=lab_label, labels={"claude-lab.lab": lab_label},
                                     mode={"Replicated": {"Replicas": 0}})["ID"]
            try:
                with pytest.raises(LabError, match=lab_label):
                    sim_down(name, engine=engine)
            finally:
                api.remove_service(svc)
        removed = sim_down(name, engine=engine)
    finally:
        sim_down(name, force=True, engine=engine)  # whatever happened above: nothing of it stays
    # Made the swarm while another sim (a parallel session) uses it: handed over, network kept for it.
    handed = removed.get("handed_over_to")
    assert removed["left_swarm"] == (made_swarm and not handed)
    assert f"{name}_worker-1" in removed["containers"] and f"{name}_registry" in removed["containers"]
    assert not [t for i in api.images() for t in i.get("RepoTags") or [] if t.startswith(f"{sim.registry}/")]
    label = {"label": f"{SIM}={name}"}
    assert not api.containers(all=True, filters=label)
    assert not api.volumes(filters=label).get("Volumes")
    if not removed.get("kept_network"):
        assert f"{name}_net" in removed["networks"]
        assert not api.networks(filters=label)
    if removed["left_swarm"]:
        assert api.info()["Swarm"]["LocalNodeState"] == "inactive"
    else:  # the swarm stays: only this sim's worker node left it
        assert sim.workers[0].node_id not in {n["ID"] for n in api.nodes()}
    assert sim_status(name, engine=engine) is None
