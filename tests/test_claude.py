"""The real Claude Code CLI in agent containers, against a local ScriptedModel on the lab network's gateway.

Nothing here talks to anything but this machine: the scripted model listens on the gateway address
of the lab's own Docker network, and the "unreachable" endpoint is a closed port on that address.
"""
from __future__ import annotations

import hashlib
import json
import signal
import socket
import threading
import time
import uuid

import pytest

from claude_lab import AuthenticationError, Lab, LabError, ModelUnreachable, RunResult, ScriptedModel
from claude_lab.runs.events import AssistantMessage, ResultMessage, SystemMessage, ToolUseBlock
from claude_lab.naming import network_name
from support import leftovers, poll, tool


def gateway(lab: Lab) -> str:
    gw = lab.engine.network_gateway(network_name(lab.name))
    assert gw and not gw.startswith(("0.", "127."))
    return gw


LONG_TOOL = "touch {marker} && python3 -c 'import time; time.sleep(120)'"


def test_run_writes_edits_and_runs_a_file_with_events_streamed(lab: Lab):
    lab.create_agent("agent-001", progress=False)
    gate = f"/tmp/go-{uuid.uuid4().hex[:8]}"
    model = ScriptedModel([
        [{"type": "text", "text": "I'll create it."},
         *tool("Write", file_path="/workspace/hello.py", content="print('hello')\n")],
        tool("Edit", file_path="/workspace/hello.py", old_string="hello", new_string="hello world"),
        # The Bash step can only finish once the test has *seen* its tool_use event: on_event
        # creates the gate file. So events must reach us while the run is still going.
        tool("Bash", command=f"while [ ! -f {gate} ]; do sleep 0.1; done; python3 hello.py"),
        "All done: hello.py prints hello world.",
    ])
    seen: list = []

    def on_event(event):
        seen.append(event)
        if isinstance(event, AssistantMessage) and any(
                isinstance(b, ToolUseBlock) and b.name == "Bash" for b in event.content):
            lab.exec("agent-001", ["touch", gate]).check()

    try:
        result = lab.claude("agent-001", "Create hello.py, make it greet the world, run it.",
                            model=model, timeout=90, on_event=on_event)
    finally:
        model.stop()

    assert isinstance(result, RunResult)
    assert result.status == "success", result.error
    assert [c.name for c in result.tool_calls] == ["Write", "Edit", "Bash"]
    assert all(c.is_error is False for c in result.tool_calls)
    assert "hello world" in str(result.tool_calls[2].result)
    assert result.result == "All done: hello.py prints hello world."
    # The file is in the agent's workspace volume, edited.
    assert lab.exec("agent-001", "cat /workspace/hello.py").stdout == "print('hello world')\n"
    # Every event went to on_event, in order, typed.
    assert seen == result.events
    assert isinstance(seen[0], SystemMessage) and seen[0].subtype == "init"
    assert isinstance(seen[-1], ResultMessage)
    assert result.num_turns == 4 and result.input_tokens > 0 and result.output_tokens > 0
    assert result.cost_usd is not None and result.session_id == seen[0].data["session_id"]
    # The diff is what the run changed, between the recorded start and end commits.
    assert result.changed_files == ["hello.py"]
    assert "+print('hello world')" in result.diff
    log = lab.exec("agent-001", ["git", "-C", "/workspace", "log", "--format=%H %s", "-3"]).stdout.splitlines()
    assert log[0] == f"{result.end_commit} claude-lab: after run {result.run_id}"
    assert log[1] == f"{result.start_commit} claude-lab: before run {result.run_id}"
    assert log[2].endswith("claude-lab: baseline")
    # For people and for code.
    bundle = result._repr_mimebundle_()
    assert "SUCCESS" in bundle["text/plain"] and "Bash" in bundle["text/plain"]
    assert "hello.py" in bundle["text/html"] and "Edit" in bundle["text/html"]
    data = json.loads(json.dumps(result.to_dict()))
    assert data["status"] == "success" and data["events"][0]["type"] == "system"


def test_timeout_stops_claude_inside_the_container(lab: Lab):
    lab.create_agent("agent-001", progress=False)
    marker = f"/tmp/started-{uuid.uuid4().hex[:8]}"
    model = ScriptedModel([tool("Bash", command=LONG_TOOL.format(marker=marker)), "never reached"])
    try:
        result = lab.claude("agent-001", "wait a long time", model=model, timeout=15)
    finally:
        model.stop()
    assert result.status == "timeout"
    assert "15" in (result.error or "")
    assert lab.exec("agent-001", ["test", "-f", marker]).ok  # the long tool was running when time ran out
    assert leftovers(lab, "agent-001") == []
    assert result.duration_s < 60
    assert result.end_commit  # the workspace was still recorded after the stop


def test_cancel_from_another_thread_stops_claude_stream(lab: Lab):
    lab.create_agent("agent-001", progress=False)
    marker = f"/tmp/started-{uuid.uuid4().hex[:8]}"
    model = ScriptedModel([tool("Bash", command=LONG_TOOL.format(marker=marker)), "never reached"])
    try:
        run = lab.claude_stream("agent-001", "wait a long time", model=model, timeout=90)

        def canceller():
            poll(lambda: lab.exec("agent-001", ["test", "-f", marker]).ok, timeout=60)
            assert leftovers(lab, "agent-001")  # it is running right now...
            run.cancel()

        thread = threading.Thread(target=canceller, daemon=True)
        thread.start()
        with run:
            events = list(run)
        thread.join(timeout=30)
    finally:
        model.stop()
    assert run.result is not None and run.result.status == "cancelled"
    assert run.result.duration_s < 80  # stopped, not run to the end of the 120 s tool
    assert any(isinstance(e, AssistantMessage) for e in events)
    assert leftovers(lab, "agent-001") == []  # ...and nothing of it is left


def test_ctrl_c_stops_claude_and_returns_a_cancelled_result(lab: Lab):
    lab.create_agent("agent-001", progress=False)
    marker = f"/tmp/started-{uuid.uuid4().hex[:8]}"
    # One model per run: a stopped CLI may still send one last request, which must not eat the next run's turn.
    model = ScriptedModel([tool("Bash", command=LONG_TOOL.format(marker=marker))])
    model2 = ScriptedModel([tool("Bash", command=LONG_TOOL.format(marker=marker + "-2"))])
    main = threading.main_thread().ident
    assert threading.current_thread().ident == main

    def press_ctrl_c():  # a real SIGINT to the thread blocked in lab.claude, as Jupyter's stop button sends
        poll(lambda: lab.exec("agent-001", ["test", "-f", marker]).ok, timeout=60)
        signal.pthread_kill(main, signal.SIGINT)

    try:
        threading.Thread(target=press_ctrl_c, daemon=True).start()
        try:
            result = lab.claude("agent-001", "wait a long time", model=model, timeout=90)
        except KeyboardInterrupt:
            pytest.fail("Ctrl-C escaped lab.claude instead of returning a cancelled result")
        assert result.status == "cancelled"
        assert leftovers(lab, "agent-001") == []

        # Ctrl-C in the caller's own loop over claude_stream: leaving the `with` stops the run.
        with pytest.raises(KeyboardInterrupt):
            with lab.claude_stream("agent-001", "again", model=model2, timeout=90) as run:
                for event in run:
                    if isinstance(event, AssistantMessage) and any(isinstance(b, ToolUseBlock) for b in event.content):
                        poll(lambda: lab.exec("agent-001", ["test", "-f", marker + "-2"]).ok, timeout=60)
                        raise KeyboardInterrupt
        assert run.result is not None and run.result.status == "cancelled"
        assert leftovers(lab, "agent-001") == []
    finally:
        model.stop()
        model2.stop()


def test_unreachable_endpoint_and_bad_key_fail_fast_and_clearly(lab: Lab, tmp_path):
    lab.create_agent("agent-001", progress=False)
    gw = gateway(lab)
    with socket.socket() as s:  # a port on the gateway that nothing listens on
        s.bind((gw, 0))
        closed = s.getsockname()[1]
    key_file = tmp_path / "key"
    key_file.write_text("sk-ant-test-not-a-real-key\n")
    lab.config.model_base_url = f"http://{gw}:{closed}"
    lab.config.api_key_file = str(key_file)
    start = time.monotonic()
    with pytest.raises(ModelUnreachable) as err:
        lab.claude("agent-001", "hello")
    assert time.monotonic() - start < 15
    assert isinstance(err.value, LabError)
    assert f"{gw}:{closed}" in str(err.value) and "refused" in str(err.value).lower()
    assert leftovers(lab, "agent-001") == []

    rejecting = ScriptedModel(error=(401, "invalid x-api-key"))
    try:
        start = time.monotonic()
        with pytest.raises(AuthenticationError, match="ANTHROPIC_API_KEY") as auth:
            lab.claude("agent-001", "hello", model=rejecting)
        elapsed = time.monotonic() - start
    finally:
        rejecting.stop()
    assert elapsed < 20  # the CLI would retry a 401 ten times over minutes; we stop at the first
    assert "401" in str(auth.value)
    assert auth.value.result.status == "error"
    assert len(rejecting.requests) >= 1
    assert leftovers(lab, "agent-001") == []


def test_api_key_reaches_only_the_cli_exec(lab: Lab, tmp_path):
    secret = f"sk-ant-api03-claudelab-{uuid.uuid4().hex}"
    key_file = tmp_path / "anthropic-key"
    key_file.write_text(secret + "\n")
    agent = lab.create_agent("agent-001", progress=False)
    model = ScriptedModel([tool("Bash", command="printenv ANTHROPIC_API_KEY | sha256sum"), "checked",
                           tool("Bash", command="printenv ANTHROPIC_API_KEY"), "printed"],
                          host=gateway(lab)).start()
    try:
        lab.config.model_base_url = model.url  # a "real" endpoint: the configured key is used
        lab.config.api_key_file = str(key_file)
        result = lab.claude("agent-001", "check the key")
        assert result.status == "success", result.error
        # The key did reach the CLI's environment (its hash came back from the agent's shell)...
        assert hashlib.sha256((secret + "\n").encode()).hexdigest() in str(result.tool_calls[0].result)
        # ...and nothing else.
        name = agent.name
        assert secret not in json.dumps(lab.engine.api.inspect_container(name))
        assert secret not in json.dumps(lab.engine.api.history(lab.config.image("agent")))
        assert secret not in lab.logs("agent-001")
        assert secret not in json.dumps(result.to_dict()) and secret not in repr(result)
        assert secret not in json.dumps(result._repr_mimebundle_())
        assert lab.exec("agent-001", "printenv ANTHROPIC_API_KEY").exit_code == 1  # not in the container's env
        found = lab.exec("agent-001", ["grep", "-rlF", secret, "/home", "/workspace", "/tmp"])
        assert found.exit_code == 1 and found.stdout == ""  # nothing written down anywhere

        # An agent can read its own key, but what it prints is redacted from events and results.
        leaked = lab.claude("agent-001", "print the key")
        assert leaked.status == "success"
        assert "<redacted>" in str(leaked.tool_calls[0].result)
        assert secret not in json.dumps(leaked.to_dict())
    finally:
        model.stop()


def test_resume_continues_the_session(lab: Lab):
    lab.create_agent("agent-001", progress=False)
    token = uuid.uuid4().hex
    model = ScriptedModel(["first answer", "second answer"])
    lab.model = model  # the Lab-level scripted model, started by the lab on the gateway
    try:
        first = lab.claude("agent-001", f"remember {token}")
        second = lab.claude("agent-001", "what did I ask you to remember?", resume=first.session_id)
    finally:
        model.stop()
    assert first.status == second.status == "success"
    assert (first.result, second.result) == ("first answer", "second answer")
    assert model.host == gateway(lab)  # bound on the lab network's gateway, never 0.0.0.0
    assert second.session_id == first.session_id
    main = [r for r in model.requests if r.kind == "main"]
    assert [r.turn for r in main] == [0, 1]
    resumed = json.dumps(main[1].body["messages"])
    assert token in resumed and "first answer" in resumed and "what did I ask you" in resumed


def test_group_agents_reach_the_model_on_the_lab_gateway(lab: Lab):
    lab.create_agent("grouped", group="g1", progress=False)
    assert lab.agent("grouped").info.networks == (network_name(lab.name, "g1"),)
    model = ScriptedModel([tool("Bash", command="echo one"), tool("Bash", command="echo two"), "end"])
    try:
        result = lab.claude("grouped", "two steps", model=model, max_turns=1)
    finally:
        model.stop()
    assert model.host == gateway(lab)  # the lab network's gateway, reached from the group network
    assert model.main_turns_served >= 1
    assert result.status == "max_turns"
    assert [c.name for c in result.tool_calls][:1] == ["Bash"]


def test_shell_runs_are_recorded_like_claude_runs(lab: Lab):
    lab.create_agent("agent-001", progress=False)
    chunks = []
    failed = lab.shell("agent-001", "echo out; echo err >&2; echo data > made.txt; exit 3", on_event=chunks.append)
    assert failed.kind == "shell" and failed.status == "error" and failed.exit_code == 3
    assert "out\n" in failed.result and "err\n" in failed.result
    assert "".join(c.text for c in chunks) == failed.result
    assert failed.changed_files == ["made.txt"] and "+data" in failed.diff
    ok = lab.shell("agent-001", ["python3", "-c", "print(6 * 7)"])
    assert (ok.status, ok.result, ok.exit_code) == ("success", "42\n", 0)
    assert ok.changed_files == [] and ok.diff == "" and ok.end_commit != failed.end_commit
    slow = lab.shell("agent-001", "sleep 300", timeout=2)
    assert slow.status == "timeout"
    assert not [line for line in lab.exec("agent-001", ["ps", "-eo", "args="]).stdout.splitlines()
                if line.startswith("sleep 300")]
    with pytest.raises(LabError, match="reserved"):
        lab.shell("dev", "true")  # runs are for agents' workspaces only
