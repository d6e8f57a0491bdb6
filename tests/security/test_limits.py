"""Resource bombs from inside an agent: each stays inside that agent's limits."""
from __future__ import annotations

import time

from claude_lab import Lab
from support import poll

# A fork bomb that ends by itself (bash's $SECONDS), so the test needs no way in while it rages.
FORK_BOMB = "end=$((SECONDS+6)); f() { while [ $SECONDS -lt $end ]; do f & sleep 0.05; done; }; f 2>/dev/null; true"
PIDS = ("cat /sys/fs/cgroup/pids/pids.current /sys/fs/cgroup/pids/pids.events 2>/dev/null "
        "|| cat /sys/fs/cgroup/pids.current /sys/fs/cgroup/pids.events")


def test_fork_bomb_is_stopped_by_the_pids_limit(lab: Lab, probes):
    lab.create_agent("bomber", pids=64, cpus=0.5, progress=False)
    lab.create_agent("bystander", progress=False)
    stream = lab.exec_stream("bomber", ["bash", "-c", FORK_BOMB], timeout=120)
    chunks = iter(stream)
    # While it rages: the limit holds, another agent and this process keep working.
    def at_limit():
        out = lab.engine.exec_output(lab.agent("bystander").name, ["true"])  # noqa: F841 - the bystander answers
        return lab.engine.container_stats(lab.agent("bomber").name).pids >= 60
    assert poll(at_limit, timeout=30)
    started = time.monotonic()
    other = lab.exec("bystander", "echo alive")
    latency = time.monotonic() - started
    assert probes.record("another agent while a fork bomb runs", "works", "works" if other.stdout == "alive\n" else
                         other.stderr, area="limits", where="lab", note=f"its exec took {latency:.2f} s")
    assert latency < 10
    assert not lab.status().empty  # the controlling process works too
    peak = lab.engine.container_stats(lab.agent("bomber").name).pids
    assert probes.record("fork bomb (pids limit 64)", "held at the limit", "held at the limit" if peak <= 64
                         else f"{peak} processes", area="limits", where="agent")
    for _ in chunks:
        pass
    # It ended by itself; the agent is usable again and the kernel counted the refused forks.
    out = poll(lambda: (r := lab.exec("bomber", PIDS)).ok and r.stdout, timeout=60)
    refused = int(out.split()[-1])
    assert refused > 0
    assert probes.record("the bomber after its bomb", "usable again", "usable again" if lab.exec("bomber", "echo ok").ok
                         else "stuck", area="limits", where="agent", note=f"{refused} forks refused by the kernel")


def test_memory_bomb_kills_only_that_process_and_says_so(lab: Lab, probes):
    lab.create_agent("hog", memory="128m", progress=False)
    lab.create_agent("neighbour", progress=False)
    res = lab.exec("hog", ["python3", "-c", "b = bytearray(1 << 30); print('survived')"], timeout=120)
    assert probes.record("memory bomb (1 GiB in a 128 MiB agent)", "OOM-killed, reported",
                         "OOM-killed, reported" if res.exit_code == 137 and res.oom_killed else
                         f"exit {res.exit_code}, oom_killed={res.oom_killed}", area="limits", where="agent")
    try:
        res.check()
    except Exception as exc:  # the error a caller sees names the cause
        assert "OOM-killed" in str(exc)
    assert "survived" not in res.stdout
    assert lab.agent("hog").state == "running" and lab.exec("hog", "echo still here").stdout == "still here\n"
    assert probes.record("neighbour agent after the OOM kill", "works",
                         "works" if lab.exec("neighbour", "echo ok").ok else "broken", area="limits", where="lab")
    plain = lab.exec("hog", "kill -9 $$")  # a SIGKILL that is not the OOM killer's is not called one
    assert plain.exit_code == 137 and not plain.oom_killed
