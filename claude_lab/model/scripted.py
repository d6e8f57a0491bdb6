"""A scripted stand-in for the Anthropic Messages API, so agents can run without a real model.

`ScriptedModel` is a small HTTP server (standard library only) that answers `POST /v1/messages`
the way the real API does -- server-sent events when the request streams, a Message JSON when it
does not -- but with assistant turns written in advance.  Point the Claude Code CLI at it with
`ANTHROPIC_BASE_URL=model.url` and the agent loop runs for real (tools execute, files change)
while the "model" is deterministic, free and offline.

Wire format, as the real API sends it::

    event: message_start        {"type":"message_start","message":{... "content":[], "usage":{...}}}
    event: ping                 {"type":"ping"}
    event: content_block_start  {"type":"content_block_start","index":i,"content_block":{...empty...}}
    event: content_block_delta  {"type":"content_block_delta","index":i,"delta":{"type":"text_delta","text":...}}
                                 (tool_use: {"type":"input_json_delta","partial_json":...})
    event: content_block_stop   {"type":"content_block_stop","index":i}
    event: message_delta        {"type":"message_delta","delta":{"stop_reason":...,"stop_sequence":null},"usage":{...}}
    event: message_stop         {"type":"message_stop"}
"""
from __future__ import annotations

import hmac
import json
import secrets
import string
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence, Union
from urllib.parse import urlsplit

from ..errors import LabError
from ..util.redaction import REDACTED, SECRET_HEADERS
from .grants import token_of
from .serving import BackgroundServer, StreamingHandler
from .wire import ERROR_TYPES, error_json, request_kind

__all__ = ["DONE_TEXT", "REDACTED", "SIDE_TEXT", "ModelRequest", "ScriptError", "ScriptedModel", "load_turns"]

Block = dict[str, Any]
Turn = Union[str, Sequence[Mapping[str, Any]]]

DONE_TEXT = "Done."
"""What a main request gets once the script is used up: a plain final answer ends the agent loop."""

SIDE_TEXT = "OK"
"""What side requests (titles, quota checks, ...) get by default; they never consume a turn."""

_ALPHABET = string.ascii_letters + string.digits


class ScriptError(LabError, ValueError):
    """A scripted turn is not in a shape the Messages API could have produced."""


def _random_id(prefix: str) -> str:
    # Real ids look like `toolu_01KFbKqPYSuAKujiL6mTfzYA`: a prefix, "01", then 22 base62 chars.
    return prefix + "01" + "".join(secrets.choice(_ALPHABET) for _ in range(22))


def _estimate_tokens(value: Any) -> int:
    """About four characters a token: rough, but non-zero and growing with the conversation."""
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return max(1, (len(text) + 3) // 4)


def _chunks(text: str, pieces: int = 3) -> list[str]:
    """Split `text` into up to `pieces` non-empty parts (one empty part for empty text)."""
    if not text:
        return [""]
    size = max(1, -(-len(text) // pieces))
    return [text[i : i + size] for i in range(0, len(text), size)]


def _normalize_turn(turn: Any, number: int) -> list[Block]:
    """Copy one scripted turn into API-shaped blocks, filling in tool-use ids; reject what the API never sends."""
    if isinstance(turn, str):
        return [{"type": "text", "text": turn}]
    if isinstance(turn, Mapping):
        raise ScriptError(
            f"turn {number} is a single block; wrap it in a list: [{dict(turn)!r}]"
        )
    if not isinstance(turn, Sequence) or not turn:
        raise ScriptError(f"turn {number} must be a string or a non-empty list of content blocks, not {turn!r}")
    blocks: list[Block] = []
    for i, raw in enumerate(turn):
        where = f"turn {number}, block {i}"
        if not isinstance(raw, Mapping):
            raise ScriptError(f"{where}: a content block is a dict like {{'type': 'text', 'text': ...}}, not {raw!r}")
        kind = raw.get("type")
        if kind == "text":
            if not isinstance(raw.get("text"), str):
                raise ScriptError(f"{where}: a text block needs a string 'text'")
            blocks.append({"type": "text", "text": raw["text"]})
        elif kind == "tool_use":
            name, tool_input = raw.get("name"), raw.get("input", {})
            if not isinstance(name, str) or not name:
                raise ScriptError(f"{where}: a tool_use block needs the tool's 'name'")
            if not isinstance(tool_input, Mapping):
                raise ScriptError(f"{where}: a tool_use block's 'input' must be a dict, not {tool_input!r}")
            try:  # the input travels as JSON, so it must be JSON; copy it so later edits do not leak in
                tool_input = json.loads(json.dumps(tool_input))
            except (TypeError, ValueError) as e:
                raise ScriptError(f"{where}: the tool input is not JSON-serialisable: {e}") from None
            blocks.append(
                {"type": "tool_use", "id": raw.get("id") or _random_id("toolu_"), "name": name, "input": tool_input}
            )
        else:
            raise ScriptError(f"{where}: block type {kind!r} is not supported (use 'text' or 'tool_use')")
    return blocks


def _error_body(status: int, body: Mapping[str, Any] | str | None) -> dict[str, Any]:
    """Shape an error like the API does: {"type": "error", "error": {"type": ..., "message": ...}}."""
    if isinstance(body, Mapping) and body.get("type") == "error":
        return dict(body)
    if isinstance(body, Mapping):
        inner = dict(body)
        inner.setdefault("type", ERROR_TYPES.get(status, "api_error"))
        inner.setdefault("message", f"scripted error {status}")
        return {"type": "error", "error": inner}
    message = body if isinstance(body, str) else {401: "invalid x-api-key"}.get(status, f"scripted error {status}")
    return error_json(status, message)


@dataclass(frozen=True)
class ModelRequest:
    """One request the model received, kept for assertions (secrets in headers are redacted).

    `kind` is "main" (answered from the script), "side" (short reply, no turn used),
    "count_tokens" or "other"; `turn` is the index of the scripted turn served, or None.
    """

    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: Any
    kind: str
    turn: int | None = None
    key_ok: bool | None = None  # with `api_key=`: whether the request carried that key (else None)


@dataclass
class _Reply:
    """What one messages request is answered with."""

    content: list[Block]
    model: str
    input_tokens: int
    message_id: str = field(default_factory=lambda: _random_id("msg_"))

    @property
    def stop_reason(self) -> str:
        return "tool_use" if any(b["type"] == "tool_use" for b in self.content) else "end_turn"

    @property
    def output_tokens(self) -> int:
        # What a model would have had to generate: the text, or the tool's name and input.
        return sum(
            _estimate_tokens(b["text"]) if b["type"] == "text" else _estimate_tokens([b["name"], b["input"]])
            for b in self.content
        )

    def usage(self, output_tokens: int) -> dict[str, int]:
        return {
            "input_tokens": self.input_tokens,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "output_tokens": output_tokens,
        }

    def message(self) -> dict[str, Any]:
        """The whole Message, as a non-streaming call returns it."""
        return {
            "id": self.message_id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [dict(b) for b in self.content],
            "stop_reason": self.stop_reason,
            "stop_sequence": None,
            "usage": self.usage(self.output_tokens),
        }

    def events(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """The server-sent events of the same Message, in the API's order."""
        start = dict(self.message(), content=[], stop_reason=None, usage=self.usage(1))
        yield "message_start", {"type": "message_start", "message": start}
        yield "ping", {"type": "ping"}
        for index, block in enumerate(self.content):
            if block["type"] == "text":
                empty: Block = {"type": "text", "text": ""}
                deltas = [{"type": "text_delta", "text": part} for part in _chunks(block["text"])]
            else:
                empty = {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}
                encoded = json.dumps(block["input"], ensure_ascii=False)
                deltas = [{"type": "input_json_delta", "partial_json": part} for part in _chunks(encoded)]
            yield "content_block_start", {"type": "content_block_start", "index": index, "content_block": empty}
            for delta in deltas:
                yield "content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}
            yield "content_block_stop", {"type": "content_block_stop", "index": index}
        yield "message_delta", {
            "type": "message_delta",
            "delta": {"stop_reason": self.stop_reason, "stop_sequence": None},
            "usage": self.usage(self.output_tokens),  # cumulative totals, as the API sends them
        }
        yield "message_stop", {"type": "message_stop"}


class _Handler(StreamingHandler):
    def send_json(self, status: int, payload: Any, request_id: str) -> None:
        data = json.dumps(payload, ensure_ascii=False).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("request-id", request_id)
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()

    def send_events(self, events: Iterator[tuple[str, dict[str, Any]]], request_id: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("request-id", request_id)
        self.end_headers()
        for name, data in events:
            chunk = f"event: {name}\ndata: {json.dumps(data, ensure_ascii=False, separators=(',', ':'))}\n\n".encode()
            self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            self.wfile.flush()  # one event at a time, so clients see a real stream
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()


class ScriptedModel(BackgroundServer):
    """A local Anthropic Messages API that answers with pre-written assistant turns.

    `turns` is a list of assistant turns; each is a list of content blocks in the API's shape,
    `{"type": "text", "text": ...}` or `{"type": "tool_use", "name": ..., "input": {...}}`
    (ids are filled in as `toolu_...` when missing), or a plain string for one text block.

    Main vs side requests: a client such as Claude Code also sends requests that are not the
    agent's conversation -- title/topic generation, quota checks with `max_tokens=1`, and the
    like.  A request is *main* when its body carries a non-empty `tools` list, because the agent
    loop (and any subagent loop) always sends its tool definitions and those helper requests do
    not.  Main requests get the script's turns in order, then `DONE_TEXT` once it is used up;
    side requests get `side_reply` and never consume a turn.

    `error=(status, body)` or `fail_with(status, body)` makes every request fail with that HTTP
    status and the API's error JSON -- e.g. `(401, "invalid x-api-key")` to test a bad key.

    `api_key="sk-..."` makes it check credentials as the real API does: a request without that key
    (in `x-api-key`, or `Authorization: Bearer`) gets a 401 `authentication_error`; each
    `ModelRequest.key_ok` says whether it had it.

    A scripted model has no price: its runs report `cost_usd=None` ("cost n/a (scripted)"), the CLI's own
    figure (made-up token counts times a list price) staying in the result event; `priced=True` keeps
    that figure as the run's cost, for testing budgets and cost displays.

    `host` is the address to bind; containers need an address they can reach (such as the
    Docker bridge gateway), loopback only serves this machine.  `model_name=None` echoes the
    model each request asked for, as the real API does.
    """

    handler = _Handler
    what = "the scripted model"
    thread_name = "scripted-model"

    def __init__(
        self,
        turns: Sequence[Turn] = (),
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        model_name: str | None = "claude-scripted",
        error: tuple[int, Mapping[str, Any] | str | None] | None = None,
        side_reply: str = SIDE_TEXT,
        api_key: str | None = None,
        priced: bool = False,
    ):
        if isinstance(turns, (str, Mapping)):
            raise ScriptError("turns is a list of turns; wrap a single turn in a list")
        self._turns = [_normalize_turn(turn, n) for n, turn in enumerate(turns)]
        self._init_server(host, port)
        self.model_name = model_name
        self.side_reply = side_reply
        self.api_key = api_key
        self.priced = priced  # False: its runs' cost is n/a; True: the CLI's figure counts (to test budgets)
        self._lock = threading.Lock()
        self._requests: list[ModelRequest] = []
        self._served = 0
        self._error: tuple[int, dict[str, Any]] | None = None
        if error is not None:
            self.fail_with(*error)

    def __repr__(self) -> str:
        where = self.url if self._server is not None else "stopped"
        return f"<ScriptedModel {where} turns={self.main_turns_served}/{len(self._turns)}>"

    # -- state -------------------------------------------------------------------------------

    @property
    def turns(self) -> list[list[Block]]:
        """The script as served, tool-use ids filled in (a copy)."""
        return json.loads(json.dumps(self._turns))

    @property
    def requests(self) -> list[ModelRequest]:
        """A snapshot of every request received so far, oldest first."""
        with self._lock:
            return list(self._requests)

    @property
    def main_turns_served(self) -> int:
        """How many scripted turns have been handed out (the "Done." replies after the end do not count)."""
        with self._lock:
            return self._served

    @property
    def exhausted(self) -> bool:
        """Whether every scripted turn has been served."""
        with self._lock:
            return self._served >= len(self._turns)

    def fail_with(self, status: int | None, body: Mapping[str, Any] | str | None = None) -> None:
        """Answer every request from now on with HTTP `status` and the API's error JSON; `None` heals.

        `body` is a message string, an inner error dict ({"type": ..., "message": ...}) or the full
        {"type": "error", ...} document; the error type follows the status when not given.
        """
        with self._lock:
            self._error = None if status is None else (int(status), _error_body(int(status), body))

    # -- serving -----------------------------------------------------------------------------

    def _key_ok(self, handler: _Handler) -> bool | None:
        if self.api_key is None:
            return None
        given = token_of(dict(handler.headers.items())) or ""
        return hmac.compare_digest(given.encode(), self.api_key.encode())

    def _record(self, handler: _Handler, method: str, body: Any, kind: str, turn: int | None = None,
                key_ok: bool | None = None) -> None:
        headers = {
            k.lower(): (REDACTED if k.lower() in SECRET_HEADERS else v) for k, v in handler.headers.items()
        }
        parts = urlsplit(handler.path)
        self._requests.append(ModelRequest(method, parts.path, parts.query, headers, body, kind, turn, key_ok))

    def _handle(self, handler: _Handler, method: str) -> None:
        request_id = _random_id("req_")
        raw = handler.read_body() if method == "POST" else b""
        path = urlsplit(handler.path).path.rstrip("/")
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", "replace")

        kind = request_kind(method, path, body)
        key_ok = self._key_ok(handler)

        with self._lock:
            error = self._error
            if key_ok is False:
                error = (401, _error_body(401, "invalid x-api-key"))
            turn: int | None = None
            content: list[Block] | None = None
            if error is None and kind == "main" and isinstance(body, dict):
                if self._served < len(self._turns):
                    turn, content = self._served, self._turns[self._served]
                    self._served += 1
                else:
                    content = [{"type": "text", "text": DONE_TEXT}]
            self._record(handler, method, body, kind, turn, key_ok)

        if error is not None:
            handler.send_json(error[0], dict(error[1], request_id=request_id), request_id)
            return
        if kind == "other":
            if method == "GET" and path == "/v1/models":
                name = self.model_name or "claude-scripted"
                model = {"type": "model", "id": name, "display_name": name, "created_at": "2025-01-01T00:00:00Z"}
                handler.send_json(200, {"data": [model], "has_more": False, "first_id": name, "last_id": name}, request_id)
            else:
                handler.send_json(404, _error_body(404, f"{method} {path or '/'} is not served here"), request_id)
            return
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            handler.send_json(400, _error_body(400, "the body must be JSON with a 'messages' list"), request_id)
            return

        input_tokens = _estimate_tokens({k: body.get(k) for k in ("system", "messages", "tools") if k in body})
        if kind == "count_tokens":
            handler.send_json(200, {"input_tokens": input_tokens}, request_id)
            return
        if content is None:  # a side request
            content = [{"type": "text", "text": self.side_reply}]
        reply = _Reply(content, self.model_name or str(body.get("model") or "claude-scripted"), input_tokens)
        if body.get("stream") is True:
            try:
                handler.send_events(reply.events(), request_id)
            except (BrokenPipeError, ConnectionResetError):
                handler.close_connection = True  # the client went away mid-stream; nothing to tell
        else:
            handler.send_json(200, reply.message(), request_id)


def load_turns(path: str | Path) -> Any:
    """The turns in a JSON file: a list of turns, or {"task name": [turns], "*": [turns]} (experiments)."""
    p = Path(path).expanduser()
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ScriptError(f"the scripted turns {str(p)!r} cannot be read: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise ScriptError(f"{p} is not JSON ({exc}); give a list of turns, e.g. [[{{\"type\": \"tool_use\", "
                          f"\"name\": \"Bash\", \"input\": {{\"command\": \"ls\"}}}}], \"done\"]") from None
