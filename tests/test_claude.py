"""The real Claude Code CLI in agent containers, through the lab's model proxy, against a local ScriptedModel.

Nothing here talks to anything but this machine: the proxy listens on the gateway address of the
lab's own Docker network, the scripted models on loopback (or that gateway), and the "unreachable"
endpoint is a closed port on that address.
"""
from __future__ import annotations

import json
import signal
import socket
import threading
import time
import uuid

import pandas as pd
import pytest

from claude_lab import AuthenticationError, Lab, LabError, ModelUnreachable, RunResult, ScriptedModel
from claude_lab.runs.events import AssistantMessage, ResultMessage, SystemMessage, ToolUseBlock
from claude_lab.model.gateway import lab_proxy
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
    assert result.session_id == seen[0].data["session_id"]
    # A scripted model has no price: n/a, with the CLI's own figure kept in the result event.
    assert result.cost_usd is None and result.cost_text == "cost n/a (scripted)"
    assert seen[-1].total_cost_usd is not None and "cost n/a (scripted)" in result._text()
    assert pd.isna(lab.runs().set_index("run_id").loc[result.run_id, "cost_usd"])
    assert lab.run(result.run_id).cost_text == "cost n/a (scripted)"
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


def test_ctrl_c_stops_claude_and_returns_a_cancelled_result(lab: Lab, ctrl_c):
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
        assert result.status == "cancelled", (result.error, [e.type for e in result.events], result.stderr[-500:])
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


def test_a_gateway_gets_the_key_as_a_bearer_token_and_the_cli_holds_only_a_run_token(lab: Lab, tmp_path):
    secret = f"gw-token-{uuid.uuid4().hex}"
    key_file = tmp_path / "gateway-token"
    key_file.write_text(secret + "\n")
    lab.create_agent("agent-001", progress=False)
    gateway_model = ScriptedModel([tool("Bash", command="printenv | grep ^ANTHROPIC_ | cut -d= -f1 | sort"), "ok"],
                                  api_key=secret).start()  # checks `Authorization: Bearer <secret>` or x-api-key
    try:
        lab.config.model_base_url = gateway_model.url + "/gw"
        lab.config.api_key_file = str(key_file)
        lab.config.model_auth = "bearer"
        result = lab.claude("agent-001", "which variables do you have?")
    finally:
        gateway_model.stop()
    assert result.status == "success", result.error
    # The CLI was given ANTHROPIC_AUTH_TOKEN (a run token) and the proxy's URL; never the key.
    assert str(result.tool_calls[0].result).split() == ["ANTHROPIC_AUTH_TOKEN", "ANTHROPIC_BASE_URL"]
    assert gateway_model.requests and all(r.key_ok for r in gateway_model.requests)
    assert all("authorization" in r.headers and "x-api-key" not in r.headers for r in gateway_model.requests)
    assert all(r.path.startswith("/gw/v1/") for r in gateway_model.requests)  # the gateway's prefix kept
    with pytest.raises(LabError, match="model_auth='basic'"):
        lab.config.model_auth = "basic"
        lab.claude("agent-001", "hello")


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
    assert model.host == "127.0.0.1"  # only the lab's model proxy talks to it, never a container
    assert lab_proxy(lab.engine, lab.name).host == gateway(lab)  # the proxy: on the lab network's gateway
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
    # The lab's model proxy on the lab network's gateway, reached from the group network.
    assert lab_proxy(lab.engine, lab.name).host == gateway(lab) and model.host == "127.0.0.1"
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
    assert "\x1e" not in failed.result and "claude-lab:" not in failed.result  # the envelope's reports stay out
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


def test_a_stopped_and_started_agent_runs_again_though_its_firewall_forgot_the_model_rule(lab: Lab, monkeypatch):
    """The endpoint rule is opened once per sidecar and remembered; a restarted pod's netguard starts from its
    policy without it, the run's probe finds that, and the rule is opened again before the CLI starts."""
    from claude_lab.runs import runner
    calls: list[tuple[bool, bool]] = []  # (again, added)

    def counted(*args, again=False):
        added = allow_endpoint(*args, again=again)
        calls.append((again, added))
        return added

    allow_endpoint = runner.allow_endpoint
    monkeypatch.setattr(runner, "allow_endpoint", counted)
    lab.create_agent("agent-001", progress=False)
    model = ScriptedModel(["first", "second"])
    try:
        first = lab.claude("agent-001", "say first", model=model, timeout=90)
        lab.stop("agent-001")  # the agent, then its netguard
        lab.start("agent-001")  # the netguard first, from its policy (no endpoint rule), then the agent
        second = lab.claude("agent-001", "say second", model=model, timeout=90)
    finally:
        model.stop()
    assert (first.status, first.result) == ("success", "first"), first.error
    assert (second.status, second.result) == ("success", "second"), second.error
    # first run: added; second: remembered, refused by the restarted firewall, added again
    assert calls == [(False, True), (False, False), (True, True)]
    parent = lab.exec("agent-001", ["git", "rev-parse", f"{second.start_commit}^"]).check().stdout.strip()
    assert parent == first.end_commit  # one history of runs across the restart
