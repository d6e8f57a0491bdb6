"""The async service (`claude_lab.service`): real agents, the real Claude Code CLI, one event loop.

Every agent talks to its own ScriptedModel (a script is consumed in order across all requests, so
one per agent keeps each agent's turns its own); the lab starts each on its network's gateway.
Nothing here talks to anything but this machine.
"""
from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from claude_lab import InvalidName, Lab, LabError, ScriptedModel
from claude_lab.runs.events import AssistantMessage, ResultMessage, SystemMessage, ToolUseBlock
from claude_lab.naming import network_name
from claude_lab.service import AgentRunStream, ClaudeCodeDockerService, ExecutionResult
from support import leftovers, poll, tool

AGENTS = 10
LONG_TOOL = "touch {marker} && python3 -c 'import time; time.sleep(120)'"


class Heartbeat:
    """Ticks on the event loop; if anything blocked the loop, the gaps between ticks show it."""

    def __init__(self, interval: float = 0.02):
        self.interval, self.ticks, self._stop = interval, [], asyncio.Event()

    async def run(self) -> None:
        while not self._stop.is_set():
            self.ticks.append(time.monotonic())
            await asyncio.sleep(self.interval)

    def stop(self) -> None:
        self._stop.set()

    @property
    def longest_gap(self) -> float:
        return max((b - a for a, b in zip(self.ticks, self.ticks[1:])), default=float("inf"))


def test_ten_agents_run_concurrently_from_one_event_loop(lab: Lab):
    service = ClaudeCodeDockerService(lab)
    ids = [f"agent-{i:03d}" for i in range(AGENTS)]
    tokens = {a: uuid.uuid4().hex for a in ids}
    models = {a: ScriptedModel([
        tool("Write", file_path=f"/workspace/{a}.txt", content=f"{a} wrote {tokens[a]}\n"),
        f"{a} finished {tokens[a]}",
    ]) for a in ids}
    heartbeat = Heartbeat()

    async def main() -> tuple[list[ExecutionResult], float]:
        beat = asyncio.create_task(heartbeat.run())
        start = time.monotonic()
        try:  # none of the agents exists yet: each call creates its own
            results = await asyncio.gather(*(
                service.execute_for_agent(agent_id=a, command=f"write {a}.txt", is_claude_command=True,
                                          model=models[a], timeout=240) for a in ids))
        finally:
            heartbeat.stop()
            await beat
        return results, time.monotonic() - start

    try:
        results, elapsed = asyncio.run(main())
    finally:
        for m in models.values():
            m.stop()

    for a, res in zip(ids, results):
        assert isinstance(res, ExecutionResult)
        assert res.agent_id == a and res.created_agent
        assert res.success and res.status == "success", (a, res.error)
        assert res.exit_code == 0 and res.error is None
        assert res.output == f"{a} finished {tokens[a]}"  # its own model's answer, nobody else's
        assert res.run is not None and res.run.agent_id == a
        assert [c.name for c in res.run.tool_calls] == ["Write"]
        assert res.run.changed_files == [f"{a}.txt"]
        assert f"+{a} wrote {tokens[a]}" in res.run.diff
        assert not any(tokens[o] in res.run.diff for o in ids if o != a)
        assert 0 < res.run.duration_s <= res.duration_s <= elapsed + 0.5
        assert models[a].main_turns_served == 2
    # Each workspace holds that agent's file and only that.
    for a in ids:
        files = lab.exec(a, "ls /workspace").stdout.split()
        assert files == [f"{a}.txt"]
        assert lab.exec(a, f"cat /workspace/{a}.txt").stdout == f"{a} wrote {tokens[a]}\n"
    assert sorted(x.id for x in lab.agents()) == ids
    # The event loop kept turning the whole time: a blocked loop would show a gap as long as the runs.
    assert len(heartbeat.ticks) >= elapsed / heartbeat.interval / 4
    assert heartbeat.longest_gap < min(1.5, elapsed / 4), heartbeat.longest_gap


def test_shell_commands_create_a_missing_agent_once_and_failures_are_data(lab: Lab, tmp_path):
    service = ClaudeCodeDockerService(lab, max_concurrency=3)

    async def main():
        # Two calls at once for an agent that does not exist: it is created once, both run.
        return await asyncio.gather(
            service.execute_for_agent("fresh", "echo out; echo err >&2; exit 3", is_claude_command=False),
            service.execute_for_agent("fresh", ["python3", "-c", "print(6 * 7)"], is_claude_command=False),
        )

    failed, ok = asyncio.run(main())
    assert sorted([failed.created_agent, ok.created_agent]) == [False, True]
    assert [a.id for a in lab.agents()] == ["fresh"]
    assert (failed.success, failed.exit_code, failed.status) == (False, 3, "error")
    assert "out\n" in failed.output and "err\n" in failed.output and failed.run.kind == "shell"
    assert (ok.success, ok.exit_code, ok.output) == (True, 0, "42\n")

    # A stopped agent is started again rather than failing the call.
    lab.stop("fresh")
    again = asyncio.run(service.execute_for_agent("fresh", "cat /proc/1/cmdline >/dev/null && echo up",
                                                  is_claude_command=False))
    assert (again.success, again.output, again.created_agent) == (True, "up\n", False)

    # A model endpoint that cannot be reached is a failed result, not an exception.
    gw = lab.engine.network_gateway(network_name(lab.name))
    with socket.socket() as s:
        s.bind((gw, 0))
        closed = s.getsockname()[1]
    key_file = tmp_path / "key"
    key_file.write_text("sk-ant-test-not-a-real-key\n")
    lab.config.model_base_url = f"http://{gw}:{closed}"
    lab.config.api_key_file = str(key_file)
    unreachable = asyncio.run(service.execute_for_agent("fresh", "hello"))
    assert unreachable.success is False and unreachable.run is None
    assert f"{gw}:{closed}" in unreachable.error and "cannot be reached" in unreachable.error
    assert json.loads(json.dumps(unreachable.to_dict()))["success"] is False

    # Bad input raises at once, before any container is touched.
    with pytest.raises(InvalidName):
        asyncio.run(service.execute_for_agent("Not_Valid", "echo", is_claude_command=False))
    with pytest.raises(InvalidName, match="reserved"):
        asyncio.run(service.execute_for_agent("dev", "echo", is_claude_command=False))
    with pytest.raises(LabError, match="empty prompt"):
        asyncio.run(service.execute_for_agent("fresh", "   "))
    assert [a.id for a in lab.agents()] == ["fresh"]


def test_cancelling_the_awaiting_task_stops_the_run_in_the_container(lab: Lab):
    service = ClaudeCodeDockerService(lab)
    marker = f"/tmp/started-{uuid.uuid4().hex[:8]}"
    model = ScriptedModel([tool("Bash", command=LONG_TOOL.format(marker=marker)), "never reached"])

    async def main() -> float:
        task = asyncio.create_task(service.execute_for_agent("agent-001", "wait a long time", model=model,
                                                             timeout=120))
        # The long tool is running inside the container...
        await asyncio.to_thread(poll, lambda: lab.agents() and lab.exec("agent-001", ["test", "-f", marker]).ok,
                                timeout=90, interval=0.2)
        assert await asyncio.to_thread(leftovers, lab, "agent-001")
        started = time.monotonic()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return time.monotonic() - started

    try:
        took = asyncio.run(main())
    finally:
        model.stop()
    assert took < 30  # stopped, not run to the end of the 120 s tool
    assert leftovers(lab, "agent-001") == []  # ...and nothing of it is left once CancelledError arrives
    log = lab.exec("agent-001", ["git", "-C", "/workspace", "log", "--format=%s", "-1"]).stdout
    assert log.startswith("claude-lab: after run")  # the cancelled run was still recorded


def test_stream_for_agent_yields_events_while_the_run_goes(lab: Lab):
    service = ClaudeCodeDockerService(lab)
    gate = f"/tmp/go-{uuid.uuid4().hex[:8]}"
    marker = f"/tmp/started-{uuid.uuid4().hex[:8]}"
    model = ScriptedModel([
        # The Bash step finishes only once the consumer has *seen* its tool_use event and opened the gate.
        tool("Bash", command=f"while [ ! -f {gate} ]; do sleep 0.1; done; echo gate open"),
        "through the gate",
        tool("Bash", command=LONG_TOOL.format(marker=marker)),
        "never reached",
    ])

    def is_bash(event) -> bool:
        return isinstance(event, AssistantMessage) and any(
            isinstance(b, ToolUseBlock) and b.name == "Bash" for b in event.content)

    async def main():
        seen = []
        stream = service.stream_for_agent("agent-001", "open the gate", model=model, timeout=120)
        assert isinstance(stream, AgentRunStream)
        async for event in stream:
            seen.append(event)
            if is_bash(event):
                await asyncio.to_thread(lambda: lab.exec("agent-001", ["touch", gate]).check())
        first = stream.result

        # Leaving the `async with` early stops the run inside the container.
        async with service.stream_for_agent("agent-001", "wait a long time", model=model, timeout=120) as early:
            async for event in early:
                if is_bash(event):
                    await asyncio.to_thread(poll, lambda: lab.exec("agent-001", ["test", "-f", marker]).ok,
                                            timeout=60, interval=0.2)
                    break
        return seen, first, early

    try:
        seen, first, early = asyncio.run(main())
    finally:
        model.stop()
    assert isinstance(first, ExecutionResult) and first.success, first.error
    assert first.output == "through the gate" and first.created_agent
    assert seen == first.run.events  # every event came through, in order
    assert isinstance(seen[0], SystemMessage) and isinstance(seen[-1], ResultMessage)
    assert "gate open" in str(first.run.tool_calls[0].result)
    assert early.result is None  # it never ran to its end...
    assert leftovers(lab, "agent-001") == []  # ...because it was stopped


def test_default_service_makes_its_lab_lazily_from_the_working_directory(lab: Lab, tmp_path):
    # Importing reads no settings and calls no engine: a broken config and no engine do not matter yet.
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "claude-lab.toml").write_text("this is = = not toml\n")
    imported = subprocess.run(
        [sys.executable, "-c", "from claude_lab.service import claude_code_docker_service as s; print(repr(s))"],
        cwd=broken, env={**os.environ, "DOCKER_HOST": "unix:///nonexistent/docker.sock"},
        capture_output=True, text=True, timeout=120)
    assert imported.returncode == 0, imported.stderr
    assert "lab=not made yet" in imported.stdout

    # On first use it makes the Lab of the working directory, with the environment's settings.
    project: Path = lab.config.project_dir
    env = {**os.environ, "CLAUDE_LAB_NAME": lab.name}
    code = (
        "import asyncio, json\n"
        "from claude_lab.service import claude_code_docker_service as svc\n"
        "res = asyncio.run(svc.execute_for_agent(agent_id='agent-001', command='pwd; echo $((6*7))',\n"
        "                                        is_claude_command=False))\n"
        "print(json.dumps({'lab': svc.lab.name, 'project': str(svc.lab.config.project_dir),\n"
        "                  'success': res.success, 'output': res.output, 'created': res.created_agent}))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=project, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out == {"lab": lab.name, "project": str(project), "success": True, "output": "/workspace\n42\n",
                   "created": True}
    assert [a.id for a in lab.agents()] == ["agent-001"]  # made in this test's lab, removed with it

    # Keywords for the Lab work too; a Lab and keywords at once do not.
    assert ClaudeCodeDockerService(project_dir=project, name=lab.name).lab.name == lab.name
    with pytest.raises(LabError, match="either a Lab or keywords"):
        ClaudeCodeDockerService(lab, name="other")
    with pytest.raises(LabError, match="max_concurrency"):
        ClaudeCodeDockerService(lab, max_concurrency=0)
