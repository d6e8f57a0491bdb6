"""ScriptedModel, driven by the official `anthropic` SDK as a client (no Docker needed)."""
from __future__ import annotations

import http.client
import json
import socket
from concurrent.futures import ThreadPoolExecutor

import pytest

anthropic = pytest.importorskip("anthropic")

from claude_lab.errors import LabError, PortInUse  # noqa: E402
from claude_lab.model.scripted import DONE_TEXT, REDACTED, ScriptedModel, ScriptError  # noqa: E402

WRITE_INPUT = {"file_path": "/work/hello.py", "content": 'print("hello, world")\n# ünïcode and "quotes"\n'}
TOOLS = [
    {
        "name": "Write",
        "description": "Write a file.",
        "input_schema": {
            "type": "object",
            "properties": {"file_path": {"type": "string"}, "content": {"type": "string"}},
            "required": ["file_path", "content"],
        },
    }
]
MODEL = "claude-scripted"
USER = [{"role": "user", "content": "Write hello.py"}]


@pytest.fixture
def model_factory():
    made: list[ScriptedModel] = []

    def factory(turns=(), **kw) -> ScriptedModel:
        made.append(ScriptedModel(turns, host="127.0.0.1", port=0, **kw).start())
        return made[-1]

    yield factory
    for m in made:
        m.stop()


def client_for(model: ScriptedModel) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=model.url, api_key="test", max_retries=0, timeout=10)


def stream_main(client: anthropic.Anthropic, **kw):
    with client.messages.stream(model=MODEL, max_tokens=1024, messages=USER, tools=TOOLS, **kw) as s:
        return s.get_final_message()


def test_streaming_tool_use_accumulates_the_scripted_input(model_factory):
    model = model_factory([[{"type": "text", "text": "I'll write it."}, {"type": "tool_use", "name": "Write", "input": WRITE_INPUT}]])
    client = client_for(model)

    with client.messages.stream(model=MODEL, max_tokens=1024, messages=USER, tools=TOOLS) as stream:
        events = list(stream)
        final = stream.get_final_message()

    assert [b.type for b in final.content] == ["text", "tool_use"]
    assert final.content[0].text == "I'll write it."
    tool = final.content[1]
    assert tool.name == "Write" and tool.input == WRITE_INPUT
    assert tool.id.startswith("toolu_") and tool.id == model.turns[0][1]["id"]
    assert final.stop_reason == "tool_use"
    assert final.role == "assistant" and final.model == "claude-scripted" and final.id.startswith("msg_")
    assert final.usage.input_tokens > 0 and final.usage.output_tokens > 1

    raw_types = [e.type for e in events]
    assert raw_types[0] == "message_start" and raw_types[-1] == "message_stop"
    deltas = [e for e in events if e.type == "content_block_delta"]
    json_parts = [d.delta.partial_json for d in deltas if d.delta.type == "input_json_delta"]
    text_parts = [d.delta.text for d in deltas if d.delta.type == "text_delta"]
    assert len(json_parts) > 1 and json.loads("".join(json_parts)) == WRITE_INPUT
    assert len(text_parts) > 1 and "".join(text_parts) == "I'll write it."
    assert model.main_turns_served == 1


def test_raw_sse_wire_format(model_factory):
    """The bytes on the wire: named events whose data carries the same `type`, one after another."""
    model = model_factory([[{"type": "tool_use", "id": "toolu_fixed", "name": "Write", "input": {"a": 1}}]])
    conn = http.client.HTTPConnection("127.0.0.1", model.port, timeout=10)
    body = {"model": "m", "max_tokens": 10, "stream": True, "messages": USER, "tools": TOOLS}
    conn.request("POST", "/v1/messages?beta=true", json.dumps(body), {"content-type": "application/json"})
    resp = conn.getresponse()
    assert resp.status == 200
    assert resp.getheader("content-type").startswith("text/event-stream")
    text = resp.read().decode()
    conn.close()

    records = [r for r in text.split("\n\n") if r.strip()]
    parsed = []
    for rec in records:
        event_line, data_line = rec.split("\n")
        name = event_line.removeprefix("event: ")
        data = json.loads(data_line.removeprefix("data: "))
        assert data["type"] == name
        parsed.append(data)
    names = [d["type"] for d in parsed]
    assert names[:2] == ["message_start", "ping"]
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    start = parsed[0]["message"]
    assert start["content"] == [] and start["stop_reason"] is None and start["role"] == "assistant"
    block_start = parsed[2]
    assert block_start["content_block"] == {"type": "tool_use", "id": "toolu_fixed", "name": "Write", "input": {}}
    assert parsed[-2]["delta"] == {"stop_reason": "tool_use", "stop_sequence": None}
    assert parsed[-2]["usage"]["output_tokens"] > 0
    assert model.requests[0].path == "/v1/messages" and model.requests[0].query == "beta=true"


def test_text_turn_and_order_across_requests(model_factory):
    model = model_factory(
        [
            [{"type": "tool_use", "name": "Write", "input": WRITE_INPUT}],
            "All written.",
        ]
    )
    client = client_for(model)

    first = stream_main(client)
    assert first.stop_reason == "tool_use" and first.content[0].input == WRITE_INPUT
    second = stream_main(client)
    assert [b.type for b in second.content] == ["text"]
    assert second.content[0].text == "All written." and second.stop_reason == "end_turn"
    assert model.main_turns_served == 2 and model.exhausted
    assert [r.turn for r in model.requests] == [0, 1]


def test_side_requests_do_not_consume_turns(model_factory):
    model = model_factory(["first", "second"])
    client = client_for(model)

    title = client.messages.create(
        model=MODEL, max_tokens=50, messages=[{"role": "user", "content": "Title this chat"}]
    )
    quota = client.messages.create(model=MODEL, max_tokens=1, messages=[{"role": "user", "content": "quota"}])
    with client.messages.stream(model=MODEL, max_tokens=50, messages=USER, tools=[]) as s:
        empty_tools = s.get_final_message()
    assert title.content[0].text == quota.content[0].text == empty_tools.content[0].text == "OK"
    assert model.main_turns_served == 0

    assert stream_main(client).content[0].text == "first"
    client.messages.create(model=MODEL, max_tokens=50, messages=USER)
    assert stream_main(client).content[0].text == "second"
    assert [r.kind for r in model.requests] == ["side", "side", "side", "main", "side", "main"]


def test_exhausted_script_answers_done(model_factory):
    model = model_factory(["only turn"])
    client = client_for(model)
    assert stream_main(client).content[0].text == "only turn"
    for _ in range(2):
        final = stream_main(client)
        assert final.content[0].text == DONE_TEXT and final.stop_reason == "end_turn"
    assert model.main_turns_served == 1
    assert [r.turn for r in model.requests] == [0, None, None]


def test_non_streaming_call_gets_the_whole_message(model_factory):
    model = model_factory([[{"type": "text", "text": "Writing."}, {"type": "tool_use", "id": "toolu_mine", "name": "Write", "input": WRITE_INPUT}]])
    msg = client_for(model).messages.create(model=MODEL, max_tokens=1024, messages=USER, tools=TOOLS)
    assert msg.type == "message" and msg.stop_reason == "tool_use"
    assert msg.content[0].text == "Writing."
    assert (msg.content[1].id, msg.content[1].name, msg.content[1].input) == ("toolu_mine", "Write", WRITE_INPUT)
    assert msg.usage.input_tokens > 0 and msg.usage.output_tokens > 0


def test_count_tokens(model_factory):
    model = model_factory(["unused"])
    client = client_for(model)
    small = client.messages.count_tokens(model=MODEL, messages=[{"role": "user", "content": "hi"}])
    big = client.messages.count_tokens(model=MODEL, messages=USER * 50, tools=TOOLS)
    assert 0 < small.input_tokens < big.input_tokens
    assert model.main_turns_served == 0 and [r.kind for r in model.requests] == ["count_tokens"] * 2


def test_input_tokens_grow_with_the_conversation(model_factory):
    model = model_factory(["a", "b"])
    client = client_for(model)
    short = stream_main(client)
    with client.messages.stream(model=MODEL, max_tokens=10, messages=USER * 40, tools=TOOLS) as s:
        long = s.get_final_message()
    assert short.usage.input_tokens < long.usage.input_tokens


@pytest.mark.parametrize("via", ["constructor", "fail_with"])
def test_401_surfaces_as_authentication_error(model_factory, via):
    if via == "constructor":
        model = model_factory(["never"], error=(401, "invalid x-api-key"))
    else:
        model = model_factory(["never"])
        model.fail_with(401, {"type": "authentication_error", "message": "invalid x-api-key"})
    client = client_for(model)

    with pytest.raises(anthropic.AuthenticationError) as info:
        stream_main(client)
    assert info.value.status_code == 401
    assert info.value.body["type"] == "error"
    assert info.value.body["error"] == {"type": "authentication_error", "message": "invalid x-api-key"}
    with pytest.raises(anthropic.AuthenticationError):
        client.messages.create(model=MODEL, max_tokens=10, messages=USER)
    assert model.main_turns_served == 0 and len(model.requests) == 2

    model.fail_with(None)
    assert stream_main(client).content[0].text == "never"


def test_api_key_and_authorization_are_redacted(model_factory):
    model = model_factory(["x"])
    client = anthropic.Anthropic(base_url=model.url, api_key="sk-test-secret", max_retries=0, timeout=10)
    stream_main(client)
    conn = http.client.HTTPConnection("127.0.0.1", model.port, timeout=10)
    body = json.dumps({"model": MODEL, "max_tokens": 5, "messages": USER})
    conn.request("POST", "/v1/messages", body, {"X-Api-Key": "sk-raw", "Authorization": "Bearer tok", "Content-Type": "application/json"})
    conn.getresponse().read()
    conn.close()

    sdk, raw = model.requests
    # The SDK sends its key as x-api-key or (newer versions) Authorization; either way it is hidden.
    assert REDACTED in (sdk.headers.get("x-api-key"), sdk.headers.get("authorization"))
    assert "sk-test-secret" not in json.dumps(sdk.headers)
    assert raw.headers["x-api-key"] == raw.headers["authorization"] == REDACTED
    assert sdk.headers["content-type"] == "application/json"
    assert sdk.body["tools"] == TOOLS and sdk.body["stream"] is True and sdk.kind == "main"


def test_unknown_path_is_a_404_in_the_api_shape(model_factory):
    model = model_factory()
    conn = http.client.HTTPConnection("127.0.0.1", model.port, timeout=10)
    conn.request("POST", "/v1/complete", "{}", {"content-type": "application/json"})
    resp = conn.getresponse()
    payload = json.loads(resp.read())
    conn.close()
    assert resp.status == 404 and payload["type"] == "error" and payload["error"]["type"] == "not_found_error"


def test_lifecycle(model_factory):
    with ScriptedModel(["hi"]) as model:
        assert model.url == f"http://127.0.0.1:{model.port}" and model.port > 0
        assert model.start() is model
        port = model.port
    with pytest.raises(LabError):
        model.url
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    model.stop()  # a second stop is harmless

    taken = model_factory()
    with pytest.raises(PortInUse) as info:
        ScriptedModel([], port=taken.port).start()
    assert info.value.port == taken.port


@pytest.mark.parametrize(
    "turns",
    [
        "not a list of turns",
        [{"type": "text", "text": "a bare block"}],
        [[]],
        [[{"type": "image"}]],
        [[{"type": "tool_use", "input": {}}]],
        [[{"type": "tool_use", "name": "Write", "input": {"x": object()}}]],
    ],
)
def test_bad_scripts_are_rejected_early(turns):
    with pytest.raises(ScriptError):
        ScriptedModel(turns)


def test_tool_ids_are_filled_in_and_unique():
    model = ScriptedModel([[{"type": "tool_use", "name": "A", "input": {}}, {"type": "tool_use", "name": "B"}]])
    ids = [b["id"] for b in model.turns[0]]
    assert all(i.startswith("toolu_") for i in ids) and len(set(ids)) == 2


def test_concurrent_main_requests_each_get_a_distinct_turn(model_factory):
    model = model_factory([f"turn {i}" for i in range(8)])
    client = client_for(model)

    with ThreadPoolExecutor(8) as pool:
        texts = list(pool.map(lambda _: stream_main(client).content[0].text, range(8)))
    assert sorted(texts) == sorted(f"turn {i}" for i in range(8))
    assert model.main_turns_served == 8 and model.exhausted
