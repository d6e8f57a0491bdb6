"""Recording and replaying real Claude Code runs: the CLI in agent containers, a ScriptedModel upstream.

Everything talks only to this machine: the scripted model and the recording/replaying proxies listen
on the lab network's gateway (or loopback, for the proxy-only test).
"""
from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import tarfile
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests

from claude_lab import Lab, LabError, ReplayDivergence, RunResult, ScriptedModel
from claude_lab.naming import network_name
from claude_lab.model.grants import HELLO_PATH, TOKEN_PREFIX, Credential
from claude_lab.model.proxy import Exchange, ModelProxy
from claude_lab.runs.cassette import Divergence
from support import poll

PROMPT = "Make greet.py greet the world, add a test script and run it."
GREET = "print('hello')\n"


def tool(name: str, **tool_input) -> list[dict]:
    return [{"type": "tool_use", "name": name, "input": tool_input}]


def script() -> list:
    """Reads, edits, writes and runs files: the start state shows in the requests (the Read result)."""
    return [
        tool("Read", file_path="/workspace/greet.py"),
        tool("Edit", file_path="/workspace/greet.py", old_string="hello", new_string="hello world"),
        [{"type": "text", "text": "Now a test."},
         *tool("Write", file_path="/workspace/test_greet.py",
               content="import subprocess\nout = subprocess.check_output(['python3', 'greet.py']).decode()\n"
                       "assert out == 'hello world\\n', out\nprint('ok:', out.strip())\n")],
        tool("Bash", command="python3 test_greet.py > result.txt && cat result.txt"),
        "greet.py now greets the world; test_greet.py checks it.",
    ]


def gateway(lab: Lab) -> str:
    return lab.engine.network_gateway(network_name(lab.name))


def record_greeting(lab: Lab, agent: str = "agent-001") -> tuple[RunResult, ScriptedModel]:
    lab.create_agent(agent, progress=False)
    lab.exec(agent, ["sh", "-c", f"printf \"{GREET.strip()}\\n\" > /workspace/greet.py"]).check()
    model = ScriptedModel(script())
    try:
        result = lab.claude(agent, PROMPT, model=model, timeout=180)
    finally:
        model.stop()  # replay must not need it
    assert result.status == "success", result.error
    return result, model


def replay_agents(lab: Lab) -> list[str]:
    return [a.id for a in lab.agents() if a.id.startswith("replay-")]


def test_a_recorded_run_replays_five_times_with_the_same_diff(lab: Lab):
    original, model = record_greeting(lab)
    assert original.changed_files == ["greet.py", "result.txt", "test_greet.py"]
    assert "+print('hello world')" in original.diff and "+ok: hello world" in original.diff

    # What the store holds: the record, the cassette (every main request, streamed), the snapshot.
    row = lab.runs().set_index("run_id").loc[original.run_id]
    assert (row["status"], row["kind"], row["agent"], row["endpoint_kind"]) == (
        "success", "claude", "agent-001", "scripted model")
    cassette = lab.run_store.exchanges(original.run_id)
    assert [e.kind for e in cassette] == ["main"] * 5
    assert all(e.status == 200 and e.streamed and b"event: message_stop" in e.response_body for e in cassette)
    assert {"transcript.jsonl", "workspace.bundle"} <= set(lab.run_store.artifact_names(original.run_id))
    stored = lab.run(original.run_id)
    assert (stored.diff, stored.status, stored.result) == (original.diff, original.status, original.result)
    assert [c.name for c in stored.tool_calls] == ["Read", "Edit", "Write", "Bash"]

    served = len(model.requests)
    lab.remove_agent("agent-001", volumes=True)  # the original agent and its workspace are gone
    replays = [lab.replay(original.run_id) for _ in range(5)]

    for replayed in replays:
        assert replayed.status == "success", replayed.error
        assert replayed.replay_of == original.run_id and replayed.reproduced is True
        assert replayed.diff == original.diff  # byte for byte
        assert replayed.result == original.result
        assert [c.name for c in replayed.tool_calls] == ["Read", "Edit", "Write", "Bash"]
    assert len({r.run_id for r in replays}) == 5
    assert len(model.requests) == served  # the model was stopped and never asked again
    assert replay_agents(lab) == []  # replay agents are removed afterwards
    runs = lab.runs()
    assert len(runs) == 6
    assert runs["replay_of"].fillna("").tolist().count(original.run_id) == 5
    assert runs[runs["replay_of"] == original.run_id]["reproduced"].tolist() == [True] * 5


def test_a_changed_prompt_or_start_state_is_reported_as_divergence(lab: Lab):
    original, _ = record_greeting(lab)

    with pytest.raises(ReplayDivergence) as prompt_changed:
        lab.replay(original.run_id, prompt="Make greet.py say goodbye.")
    div = prompt_changed.value.divergence
    assert isinstance(div, Divergence)
    assert div.request == 1 and div.kind == "main"
    assert div.where is not None and div.where.startswith("body.messages[0]")
    assert (div.recorded, div.actual) == (PROMPT, "Make greet.py say goodbye.")
    assert "request 1" in str(prompt_changed.value) and original.run_id in str(prompt_changed.value)
    assert prompt_changed.value.result.reproduced is False

    def other_greeting(agent: str) -> None:
        lab.exec(agent, ["sh", "-c", "printf \"print('howdy')\\n\" > /workspace/greet.py"]).check()

    with pytest.raises(ReplayDivergence) as state_changed:
        lab.replay(original.run_id, setup=other_greeting)
    div = state_changed.value.divergence
    assert div.request == 2 and div.reason == "differs"  # the Read result is the first thing that differs
    assert "print('hello')" in div.recorded and "print('howdy')" in div.actual
    stopped = state_changed.value.result
    assert stopped.status in ("cancelled", "error") and stopped.reproduced is False
    assert stopped.diff != original.diff  # it did not silently produce a different diff as a success
    assert replay_agents(lab) == []
    assert lab.run(stopped.run_id).reproduced is False


def test_the_api_key_is_stored_nowhere_and_replay_needs_none(lab: Lab, tmp_path: Path):
    secret = f"sk-ant-api03-claudelab-{uuid.uuid4().hex}"
    key_file = tmp_path / "anthropic-key"
    key_file.write_text(secret + "\n")
    lab.create_agent("agent-001", progress=False)
    model = ScriptedModel([tool("Bash", command="printenv ANTHROPIC_API_KEY"), "printed it"],
                          host=gateway(lab), api_key=secret).start()
    try:
        lab.config.model_base_url = model.url  # a "real" endpoint: the configured key is used
        lab.config.api_key_file = str(key_file)
        result = lab.claude("agent-001", "print your API key", timeout=120)
    finally:
        model.stop()
    assert result.status == "success", result.error
    # The proxy wrote the key into every request; the CLI held a run token, which its tool printed...
    assert all(r.key_ok for r in model.requests)
    assert secret not in json.dumps(model.requests[1].body) and TOKEN_PREFIX in json.dumps(model.requests[1].body)
    # ...and both were replaced in what was stored.
    cassette = lab.run_store.exchanges(result.run_id)
    assert cassette[0].request_headers["x-api-key"] == "<redacted>"
    assert b"<redacted>" in cassette[1].request_body

    plain = lab.export_run(result.run_id, tmp_path / "run.tar")
    packed = lab.export_run(result.run_id, tmp_path / "run.tar.gz")
    with tarfile.open(plain) as tar:
        bundle = tar.extractfile(f"{result.run_id}/artifacts/workspace.bundle").read()
    (tmp_path / "ws.bundle").write_bytes(bundle)
    clone = tmp_path / "ws"
    subprocess.run(["git", "clone", "-q", str(tmp_path / "ws.bundle"), str(clone)], check=True,
                   env={**os.environ, "GIT_TERMINAL_PROMPT": "0"})
    subprocess.run(["git", "-C", str(clone), "checkout", "-q", "refs/claude-lab/snapshot"], check=False)
    history = subprocess.run(["git", "-C", str(clone), "log", "--all", "-p"], capture_output=True, check=True).stdout

    store_dir = Path(lab.config.project_dir) / ".claude-lab"
    places = {p.name: p.read_bytes() for p in store_dir.iterdir()}  # runs.sqlite, -wal, -shm
    assert "runs.sqlite" in places
    places["export.tar"] = plain.read_bytes()
    places["export.tar.gz (decompressed)"] = gzip.decompress(packed.read_bytes())
    places["workspace history"] = history
    places.update({f"workspace/{p.relative_to(clone)}": p.read_bytes()
                   for p in clone.rglob("*") if p.is_file() and ".git" not in p.parts})
    for where, data in places.items():
        assert secret.encode() not in data, f"the API key is in {where}"

    # Replay needs no key and no endpoint: the cassette answers (its redactions line up with the replay's).
    lab.config.model_base_url = lab.config.api_key_file = None
    replayed = lab.replay(result.run_id)
    assert replayed.status == "success" and replayed.reproduced is True
    assert replayed.result == "printed it"


KILLED_RUN = """
import sys
from claude_lab import Lab, ScriptedModel
project, name, marker = sys.argv[1:4]
lab = Lab(project, name=name)
bash = [{"type": "tool_use", "name": "Bash", "input": {"command": f"touch {marker} && sleep 600"}}]
lab.claude("agent-001", "wait for a long time", model=ScriptedModel([bash, "never reached"]), timeout=900)
"""


def test_a_killed_process_leaves_an_interrupted_record(lab: Lab):
    lab.create_agent("agent-001", progress=False)
    marker = f"/tmp/started-{uuid.uuid4().hex[:8]}"
    proc = subprocess.Popen([sys.executable, "-c", KILLED_RUN, str(lab.config.project_dir), lab.name, marker],
                            cwd=str(Path(__file__).parent.parent), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        def running_with_exchange():
            if proc.poll() is not None:
                raise AssertionError(f"the run's process ended early: {proc.stdout.read().decode()[-2000:]}")
            recs = lab.run_store.records() if lab.run_store.path.exists() else []
            return (recs and recs[0]["status"] == "running" and lab.run_store.exchanges(recs[0]["run_id"])
                    and lab.exec("agent-001", ["test", "-f", marker]).ok and recs[0])

        rec = poll(running_with_exchange, timeout=120, interval=0.3)
        assert rec["owner_pid"] == proc.pid
        proc.send_signal(signal.SIGKILL)  # as when a notebook kernel is killed
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()

    runs = lab.runs()
    assert runs["status"].tolist() == ["interrupted"]
    stored = lab.run(rec["run_id"])
    assert stored.status == "interrupted" and f"pid {proc.pid}" in (stored.error or "")
    assert lab.run_store.exchanges(rec["run_id"])[0].kind == "main"  # what was recorded is kept
    assert lab.run_store.integrity_check() == "ok"
    with pytest.raises(LabError, match="interrupted"):
        lab.replay(rec["run_id"])
    after = lab.shell("agent-001", "echo still writable > after.txt")  # the store takes new runs
    assert after.status == "success"
    assert lab.runs()["status"].tolist() == ["interrupted", "success"]


class _SlowSSE(BaseHTTPRequestHandler):
    """An upstream that sends one event, then waits for the test to say the client has it, then the rest."""

    protocol_version = "HTTP/1.1"
    gate: threading.Event
    opened_in_time: list[bool]
    seen_keys: list[str]

    def log_message(self, *args) -> None:
        pass

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.seen_keys.append(self.headers.get("x-api-key", ""))
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for i, event in enumerate((b"event: one\ndata: {}\n\n", b"event: two\ndata: {}\n\n")):
            if i == 1:
                self.opened_in_time.append(self.gate.wait(timeout=20))
            self.wfile.write(b"%x\r\n%s\r\n" % (len(event), event))
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()


def test_the_proxy_streams_chunk_by_chunk_and_strips_secrets():
    secret = f"sk-ant-api03-{uuid.uuid4().hex}"
    gate, opened, keys = threading.Event(), [], []
    handler = type("Handler", (_SlowSSE,), {"gate": gate, "opened_in_time": opened, "seen_keys": keys})
    upstream = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    stored = []
    proxy = ModelProxy("127.0.0.1").start()
    grant = proxy.grant("run", "agent", upstream=f"http://127.0.0.1:{upstream.server_address[1]}",
                        credential=Credential(secret), on_exchange=stored.append, expected_peers={"127.0.0.1"})
    try:
        assert requests.get(proxy.url + HELLO_PATH, headers={"x-api-key": grant.token}, timeout=5).ok
        body = {"model": "m", "stream": True, "tools": [{"name": "Bash"}], "messages": [
            {"role": "user", "content": f"my key is {secret}, my token {grant.token}"}]}
        with requests.post(proxy.url + "/v1/messages?beta=true", json=body, stream=True, timeout=30,
                           headers={"authorization": f"Bearer {grant.token}"}) as resp:
            chunks = resp.iter_content(chunk_size=None)
            first = next(chunks)
            assert b"event: one" in first and b"event: two" not in first  # before upstream sent the second
            gate.set()
            rest = b"".join(chunks)
        assert b"event: two" in rest
    finally:
        proxy.stop()
        upstream.shutdown()
        upstream.server_close()
    assert opened == [True]  # the client's first event opened the gate, not the 20 s timeout
    assert keys == [secret]  # the real key, written in by the proxy in place of the token
    (exchange,) = stored
    assert (exchange.kind, exchange.status, exchange.path) == ("main", 200, "/v1/messages?beta=true")
    assert exchange.response_body == b"event: one\ndata: {}\n\nevent: two\ndata: {}\n\n"
    assert exchange.request_headers["authorization"] == "<redacted>"  # what the CLI sent: the token
    assert secret.encode() not in exchange.request_body and grant.token.encode() not in exchange.request_body
    assert b"my key is <redacted>, my token <redacted>" in exchange.request_body


def cli_request(seq: int, *, sha: str, run_id: str, day: str, session: str, tool_id: str, listing_time: str,
                result: str = "hello", kind_tools: bool = True) -> Exchange:
    """A request shaped like Claude Code 2.1's, with the parts that vary between identical runs."""
    body = {
        "model": "claude-opus-5-5", "max_tokens": 128000, "stream": True,
        "metadata": {"user_id": json.dumps({"device_id": uuid.uuid4().hex, "session_id": session})},
        "system": [{"type": "text", "text": "You are Claude Code.", "cache_control": {"type": "ephemeral"}}],
        "tools": [{"name": "Bash"}] if kind_tools else [],
        "messages": [
            {"role": "user", "content": [
                {"type": "text", "text": f"<system-reminder>\nRecent commits:\n{sha} claude-lab: before run {run_id}\n"
                                         f"</system-reminder>"},
                {"type": "text", "text": "do it"}]},
            {"role": "system", "content": f" - OS Version: Linux 6.{seq}.0\nToday's date is {day}."},
            {"role": "assistant", "content": [{"type": "tool_use", "id": tool_id, "name": "Bash",
                                               "input": {"command": "ls -l && python3 greet.py"}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": tool_id, "cache_control": {},
                                          "content": f"-rw-r--r-- 1 dev dev 20 {listing_time} greet.py\n{result}"}]},
        ]}
    return Exchange(seq=seq, kind="main" if kind_tools else "side", method="POST", path="/v1/messages?beta=true",
                    request_headers={"anthropic-version": "2023-06-01", "x-claude-code-session-id": session,
                                     "anthropic-beta": "b,a"},
                    request_body=json.dumps(body).encode(), status=200,
                    response_headers={"content-type": "application/json"}, response_body=b'{"id": %d}' % seq)


def test_matching_ignores_what_varies_between_identical_runs_and_names_the_first_real_difference():
    from claude_lab.runs.cassette import Cassette
    from claude_lab.runs.normalize import first_difference, normalized_request

    recorded = cli_request(0, sha="8197303", run_id="20261127-001924-c64bf6", day="2026-11-26", session="s-1",
                           tool_id="toolu_01AAAA", listing_time="Nov 26 23:59")
    same = cli_request(0, sha="a1b2c3d", run_id="20261128-101010-0a0b0c", day="2026-11-28", session="s-2",
                       tool_id="toolu_01BBBB", listing_time="Nov 28 10:10")
    assert normalized_request(recorded) == normalized_request(same)
    other = cli_request(0, sha="a1b2c3d", run_id="20261128-101010-0a0b0c", day="2026-11-28", session="s-2",
                        tool_id="toolu_01BBBB", listing_time="Nov 28 10:10", result="howdy")
    where, was, now = first_difference(normalized_request(recorded), normalized_request(other))
    assert where == "body.messages[3].content[0].content" and was.endswith("hello") and now.endswith("howdy")

    # Side requests match by content in any order; main requests in order; unused main ones are reported.
    side_a = cli_request(1, sha="1111111", run_id="20261127-001924-c64bf6", day="2026-11-26", session="s",
                         tool_id="toolu_01C", listing_time="Nov 26 23:59", result="title a", kind_tools=False)
    side_b = cli_request(2, sha="1111111", run_id="20261127-001924-c64bf6", day="2026-11-26", session="s",
                         tool_id="toolu_01C", listing_time="Nov 26 23:59", result="title b", kind_tools=False)
    cassette = Cassette([recorded, side_a, side_b], "success")
    assert cassette.respond(side_b).body == side_b.response_body
    assert cassette.respond(side_a).body == side_a.response_body
    assert cassette.leftover() is not None and cassette.leftover().reason == "ended early"
    assert cassette.respond(same).body == recorded.response_body
    assert cassette.leftover() is None and cassette.divergence is None
    refused = cassette.respond(same)  # one more than recorded: its conversation is used up
    assert refused.status == 400 and b"claude-lab replay" in refused.body
    assert cassette.divergence is not None and cassette.divergence.request == 4
