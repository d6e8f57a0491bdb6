"""Agents on the real engine: hardening, limits, workspaces, groups, exec, logs, cleanup, errors."""
from __future__ import annotations

import threading

import pytest

from claude_lab import AlreadyExists, EngineUnavailable, InvalidName, Lab, LabError, LabTimeout, NotFound
from claude_lab.engine import Engine
from support import poll


def test_agent_is_non_root_without_capabilities_and_limited(lab: Lab):
    agent = lab.create_agent("agent-001", memory="256m", cpus=0.5, pids=64, progress=False)
    assert agent.state == "running"
    res = lab.exec("agent-001", "id -u; id -un; grep -E '^(CapEff|CapPrm|CapBnd|NoNewPrivs)' /proc/self/status")
    lines = res.stdout.split("\n")
    assert lines[0] == "1000" and lines[1] == "developer"
    status = dict(line.split(":\t") for line in lines[2:] if line)
    assert status["CapEff"].strip("0") == "" and status["CapPrm"].strip("0") == ""
    assert status["CapBnd"].strip("0") == ""
    assert status["NoNewPrivs"] == "1"
    limits = lab.exec("agent-001", "cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null "
                                   "|| cat /sys/fs/cgroup/memory.max; cat /sys/fs/cgroup/pids/pids.max 2>/dev/null "
                                   "|| cat /sys/fs/cgroup/pids.max").stdout.split()
    assert limits == [str(256 * 2**20), "64"]
    # No Docker socket, no published ports.
    assert lab.exec("agent-001", "test -e /var/run/docker.sock").exit_code == 1
    assert lab.agent("agent-001").info.ports == {}


def test_workspace_volume_survives_removal_down_and_cleanup(lab: Lab):
    lab.create_agent("keeper", progress=False)
    lab.exec("keeper", "echo precious > /workspace/notes.txt").check()
    lab.down()
    lab.cleanup()  # removes the stopped container, keeps the volume
    assert [a.id for a in lab.agents()] == []
    lab.create_agent("keeper", progress=False)
    assert lab.exec("keeper", "cat /workspace/notes.txt").stdout == "precious\n"
    lab.remove_agent("keeper")
    lab.create_agent("keeper", progress=False)
    assert lab.exec("keeper", "cat /workspace/notes.txt").stdout == "precious\n"
    lab.remove_agent("keeper", volumes=True)
    lab.create_agent("keeper", progress=False)
    assert lab.exec("keeper", "cat /workspace/notes.txt").exit_code != 0


def test_exec_result_stderr_exit_code_env_user_workdir(lab: Lab):
    lab.create_agent("runner", progress=False)
    res = lab.exec("runner", "echo out; echo err >&2; exit 3")
    assert (res.stdout, res.stderr, res.exit_code, res.ok) == ("out\n", "err\n", 3, False)
    with pytest.raises(LabError, match="exited 3: err"):
        res.check()
    res = lab.exec("runner", ["sh", "-c", 'echo "$GREETING from $(pwd) as $(id -un)"'],
                   env={"GREETING": "hi"}, workdir="/tmp", user="root")
    assert res.stdout == "hi from /tmp as root\n"
    binary = lab.exec("runner", "printf 'ok \\377\\376 end'")
    assert binary.stdout == "ok \ufffd\ufffd end"  # invalid UTF-8 is replaced, never a crash


def test_exec_streams_output_as_it_comes(lab: Lab):
    lab.create_agent("streamer", progress=False)
    stream = lab.exec_stream("streamer", "echo first; while [ ! -f /tmp/go ]; do sleep 0.05; done; echo second")
    chunks = iter(stream)
    first = next(chunks)
    # "second" cannot exist yet: it is only printed after we create /tmp/go below.
    assert first.stream == "stdout" and first.text == "first\n"
    lab.exec("streamer", "touch /tmp/go").check()
    rest = "".join(c.text for c in chunks)
    assert rest == "second\n"
    assert stream.result is not None and stream.result.exit_code == 0
    assert stream.result.stdout == "first\nsecond\n"


def test_timeout_stops_the_command_inside_the_container(lab: Lab):
    lab.create_agent("slow", progress=False)
    with pytest.raises(LabTimeout) as err:
        lab.exec("slow", "sleep 300 & sleep 301; echo never", timeout=1)
    assert err.value.result.timed_out
    ps = lambda: lab.exec("slow", "ps -eo args").stdout  # noqa: E731
    poll(lambda: "sleep 30" not in ps())


def test_cancel_from_another_thread_stops_it_too(lab: Lab):
    lab.create_agent("cancel-me", progress=False)
    stream = lab.exec_stream("cancel-me", "echo started; sleep 300")
    chunks = iter(stream)
    assert next(chunks).text == "started\n"
    threading.Thread(target=stream.cancel).start()
    list(chunks)
    assert stream.result.cancelled
    assert "sleep 300" not in lab.exec("cancel-me", "ps -eo args").stdout


def test_logs(lab: Lab):
    lab.up(progress=False)
    text = lab.logs("postgres")
    assert "database system is ready to accept connections" in text
    assert len(lab.logs("postgres", tail=1).strip().splitlines()) == 1


def test_errors_name_what_exists(lab: Lab):
    lab.create_agent("agent-001", progress=False)
    with pytest.raises(NotFound) as err:
        lab.exec("agent-999", "true")
    assert "agent-999" in str(err.value) and "agent-001" in str(err.value)
    with pytest.raises(AlreadyExists, match="already exists"):
        lab.create_agent("agent-001", progress=False)
    with pytest.raises(InvalidName, match="Agent_1"):
        lab.create_agent("Agent_1", progress=False)
    with pytest.raises(InvalidName, match="reserved"):
        lab.create_agent("dev", progress=False)
    with pytest.raises(InvalidName, match="group name"):
        lab.create_agent("ok", group="G 1", progress=False)
    with pytest.raises(LabError, match="memory limit 'lots'"):
        lab.create_agent("ok", memory="lots", progress=False)
    with pytest.raises(LabError, match="empty command"):
        lab.exec("agent-001", "  ")
    lab.stop("agent-001")
    with pytest.raises(LabError, match="not running"):
        lab.exec("agent-001", "true")


def test_failed_create_agent_leaves_nothing_behind(lab: Lab, engine: Engine):
    # 64 CPUs is more than the engine has: Docker refuses at create, after network and volume exist.
    with pytest.raises(LabError):
        lab.create_agent("greedy", group="solo", cpus=64, progress=False)
    flt = {"label": f"claude-lab.lab={lab.name}"}
    assert engine.api.containers(all=True, filters=flt) == []
    assert engine.api.networks(filters=flt) == []
    assert (engine.api.volumes(filters=flt).get("Volumes") or []) == []


def test_two_labs_coexist_and_never_touch_each_other(lab_factory, engine: Engine):
    one, two = lab_factory(), lab_factory()
    one.create_agent("agent-001", progress=False)
    two.create_agent("agent-001", progress=False)
    one.exec("agent-001", "echo one > /workspace/who").check()
    two.exec("agent-001", "echo two > /workspace/who").check()
    assert one.exec("agent-001", "cat /workspace/who").stdout == "one\n"
    assert [a.name for a in one.agents()] == [f"{one.name}_agent-001"]
    one.destroy(volumes=True)
    assert two.exec("agent-001", "cat /workspace/who").stdout == "two\n"


def test_cleanup_touches_only_stopped_containers_of_this_lab(lab: Lab, engine: Engine):
    lab.create_agent("running", progress=False)
    lab.create_agent("stopped", progress=False)
    lab.stop("stopped")
    decoy = engine.api.create_container(lab.config.image("base"), command=["true"],
                                        labels={"purpose": "decoy"})
    try:
        removed = lab.cleanup(volumes=True)
        assert removed["containers"] == [f"{lab.name}_stopped", f"{lab.name}_stopped_netguard"]  # + its firewall
        assert removed["volumes"] == [f"{lab.name}_stopped_workspace"]
        assert [a.id for a in lab.agents()] == ["running"]
        assert engine.api.inspect_container(decoy["Id"])["Id"] == decoy["Id"]
    finally:
        engine.api.remove_container(decoy["Id"], force=True)


def test_a_new_process_finds_the_lab_from_labels(lab: Lab, engine: Engine):
    lab.create_agent("found", group="g9", progress=False)
    again = Lab(lab.config.project_dir, name=lab.name, engine=Engine())
    assert [(a.id, a.group) for a in again.agents()] == [("found", "g9")]
    assert again.exec("found", "hostname").stdout == "found\n"


def test_engine_unavailable_says_how_to_start_one():
    with pytest.raises(EngineUnavailable, match="make setup.*DOCKER_HOST"):
        Engine(base_url="tcp://127.0.0.1:1")


def test_concurrent_create_agent_in_a_new_lab_shares_one_network(lab: Lab, engine: Engine):
    from concurrent.futures import ThreadPoolExecutor

    # Separate Lab objects (as separate callers would have), all racing to make the lab network.
    labs = [Lab(lab.config.project_dir, name=lab.name, engine=Engine()) for _ in range(6)]
    with ThreadPoolExecutor(6) as pool:
        agents = list(pool.map(lambda i: labs[i].create_agent(f"racer-{i}", progress=False), range(6)))
    assert sorted(a.id for a in agents) == [f"racer-{i}" for i in range(6)]
    nets = [n for n in engine.api.networks(names=[f"{lab.name}_net"]) if n["Name"] == f"{lab.name}_net"]
    assert len(nets) == 1
    for i in range(6):
        assert lab.exec(f"racer-{i}", "true").ok
