"""Typed events of a Claude Code run: the CLI's `--output-format stream-json` lines, parsed.

The names and fields follow `claude-agent-sdk`'s `types` module (AssistantMessage, UserMessage,
SystemMessage, ResultMessage, StreamEvent, TextBlock, ThinkingBlock, ToolUseBlock, ToolResultBlock)
so code written against the SDK reads the same here. We do not depend on that package: its wheel
is ~178 MB because it bundles its own ~400 MB Claude Code binary (we run the CLI inside the
agent's container, never on the host), it pulls in `mcp` and its web stack, and its parser lives
in a private module (`claude_agent_sdk._internal.message_parser`). These small dataclasses are
the part we need.

Every event keeps the line it came from (`raw`, the JSON object as the CLI printed it, with any
secret already redacted) and when it arrived here (`received_at`, `time.time()`), so nothing the
CLI said is lost and a run can be replayed in time.

Shapes seen from Claude Code 2.1.332 (`claude -p ... --output-format stream-json --verbose`)::

    {"type":"system","subtype":"init","session_id":..,"cwd":..,"tools":[..],"model":..,"permissionMode":..,
     "apiKeySource":"ANTHROPIC_API_KEY","claude_code_version":"2.1.332",...}
    {"type":"assistant","message":{"id":"msg_..","model":..,"content":[{"type":"text"|"tool_use",..}],
     "usage":{..}},"parent_tool_use_id":null,"session_id":..,"uuid":..}      (one line per content block)
    {"type":"user","message":{"role":"user","content":[{"type":"tool_result","tool_use_id":..,
     "content":..,"is_error":..}]},"tool_use_result":{..},"session_id":..}
    {"type":"system","subtype":"api_retry","attempt":1,"max_retries":10,"error_status":401,
     "error":"authentication_failed",...}
    {"type":"system","subtype":"task_started"|"task_notification"|"permission_denied",...}
    {"type":"result","subtype":"success"|"error_max_turns"|..,"is_error":..,"num_turns":..,
     "result":"final text","total_cost_usd":..,"usage":{"input_tokens":..,"output_tokens":..},
     "session_id":..,"terminal_reason":"completed"|"max_turns"|"api_error",
     "api_error_status":401|null,"errors":[..]}
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Union

__all__ = [
    "TextBlock", "ThinkingBlock", "ToolUseBlock", "ToolResultBlock", "ContentBlock",
    "SystemMessage", "AssistantMessage", "UserMessage", "ResultMessage", "StreamEvent", "UnknownMessage",
    "Message", "parse_message", "parse_line",
]


# -- content blocks -----------------------------------------------------------------------

@dataclass
class TextBlock:
    text: str


@dataclass
class ThinkingBlock:
    thinking: str
    signature: str = ""


@dataclass
class ToolUseBlock:
    id: str
    name: str
    input: dict[str, Any]


@dataclass
class ToolResultBlock:
    tool_use_id: str
    content: str | list[dict[str, Any]] | None = None
    is_error: bool | None = None


ContentBlock = Union[TextBlock, ThinkingBlock, ToolUseBlock, ToolResultBlock, dict]


def _block(raw: Any) -> ContentBlock:
    if not isinstance(raw, dict):
        return {"type": "unknown", "value": raw}
    kind = raw.get("type")
    if kind == "text":
        return TextBlock(str(raw.get("text", "")))
    if kind == "thinking":
        return ThinkingBlock(str(raw.get("thinking", "")), str(raw.get("signature", "")))
    if kind == "tool_use":
        return ToolUseBlock(str(raw.get("id", "")), str(raw.get("name", "")), dict(raw.get("input") or {}))
    if kind == "tool_result":
        return ToolResultBlock(str(raw.get("tool_use_id", "")), raw.get("content"), raw.get("is_error"))
    return dict(raw)  # image, redacted_thinking, server tool blocks...: kept as they came


def _blocks(content: Any) -> str | list[ContentBlock]:
    if isinstance(content, str):
        return content
    return [_block(b) for b in content or []]


# -- messages -----------------------------------------------------------------------------

@dataclass(kw_only=True)
class _Event:
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)
    received_at: float | None = field(default=None, repr=False, compare=False)

    @property
    def type(self) -> str:
        return str(self.raw.get("type", ""))

    def to_dict(self) -> dict[str, Any]:
        """The event as the CLI printed it (JSON-ready)."""
        return dict(self.raw) if self.raw else asdict(self)


@dataclass
class SystemMessage(_Event):
    """`init` (session metadata), `api_retry`, `task_started`, `permission_denied`, ...; fields in `data`."""

    subtype: str
    data: dict[str, Any]


@dataclass
class AssistantMessage(_Event):
    content: list[ContentBlock]
    model: str
    parent_tool_use_id: str | None = None
    error: str | None = None  # e.g. "authentication_failed" on a synthetic API-error message
    usage: dict[str, Any] | None = None
    message_id: str | None = None
    stop_reason: str | None = None
    session_id: str | None = None
    uuid: str | None = None

    @property
    def text(self) -> str:
        return "".join(b.text for b in self.content if isinstance(b, TextBlock))


@dataclass
class UserMessage(_Event):
    content: str | list[ContentBlock]
    uuid: str | None = None
    parent_tool_use_id: str | None = None
    tool_use_result: dict[str, Any] | str | None = None
    session_id: str | None = None


@dataclass
class ResultMessage(_Event):
    subtype: str  # success | error_max_turns | error_during_execution | ...
    duration_ms: int
    duration_api_ms: int
    is_error: bool
    num_turns: int
    session_id: str
    stop_reason: str | None = None
    total_cost_usd: float | None = None
    usage: dict[str, Any] | None = None
    result: str | None = None
    errors: list[str] | None = None
    api_error_status: int | None = None
    terminal_reason: str | None = None
    permission_denials: list[Any] | None = None
    model_usage: dict[str, Any] | None = None


@dataclass
class StreamEvent(_Event):
    """A raw API stream event (only with `--include-partial-messages`)."""

    uuid: str
    session_id: str
    event: dict[str, Any]
    parent_tool_use_id: str | None = None


@dataclass
class UnknownMessage(_Event):
    """A line of a type this version does not know, or a stdout line that is not JSON (`type` "text")."""

    kind: str
    data: dict[str, Any]


Message = Union[SystemMessage, AssistantMessage, UserMessage, ResultMessage, StreamEvent, UnknownMessage]


def _int(value: Any) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


def parse_message(data: dict[str, Any], received_at: float | None = None) -> Message:
    """Turn one decoded stream-json object into its typed event (never raises on odd input)."""
    kind = data.get("type")
    meta = {"raw": data, "received_at": received_at}
    if kind == "system":
        rest = {k: v for k, v in data.items() if k not in ("type", "subtype")}
        return SystemMessage(str(data.get("subtype", "")), rest, **meta)
    if kind == "assistant" and isinstance(data.get("message"), dict):
        msg = data["message"]
        return AssistantMessage(
            _blocks(msg.get("content")) if not isinstance(msg.get("content"), str) else [TextBlock(msg["content"])],
            str(msg.get("model", "")),
            parent_tool_use_id=data.get("parent_tool_use_id"),
            error=data.get("error"),
            usage=msg.get("usage"),
            message_id=msg.get("id"),
            stop_reason=msg.get("stop_reason"),
            session_id=data.get("session_id"),
            uuid=data.get("uuid"),
            **meta,
        )
    if kind == "user" and isinstance(data.get("message"), dict):
        return UserMessage(
            _blocks(data["message"].get("content")),
            uuid=data.get("uuid"),
            parent_tool_use_id=data.get("parent_tool_use_id"),
            tool_use_result=data.get("tool_use_result"),
            session_id=data.get("session_id"),
            **meta,
        )
    if kind == "result":
        return ResultMessage(
            str(data.get("subtype", "")),
            _int(data.get("duration_ms")),
            _int(data.get("duration_api_ms")),
            bool(data.get("is_error")),
            _int(data.get("num_turns")),
            str(data.get("session_id", "")),
            stop_reason=data.get("stop_reason"),
            total_cost_usd=data.get("total_cost_usd"),
            usage=data.get("usage"),
            result=data.get("result"),
            errors=data.get("errors"),
            api_error_status=data.get("api_error_status"),
            terminal_reason=data.get("terminal_reason"),
            permission_denials=data.get("permission_denials"),
            model_usage=data.get("modelUsage"),
            **meta,
        )
    if kind == "stream_event":
        return StreamEvent(str(data.get("uuid", "")), str(data.get("session_id", "")), dict(data.get("event") or {}),
                           parent_tool_use_id=data.get("parent_tool_use_id"), **meta)
    return UnknownMessage(str(kind), data, **meta)


def parse_line(line: str, received_at: float | None = None) -> Message | None:
    """Parse one stdout line; blank lines give None, non-JSON lines an `UnknownMessage` of kind "text"."""
    line = line.strip()
    if not line:
        return None
    try:
        data = json.loads(line)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        return UnknownMessage("text", {"text": line}, raw={"type": "text", "text": line}, received_at=received_at)
    return parse_message(data, received_at)
