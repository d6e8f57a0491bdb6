"""`RunResult`: what one `lab.claude(...)` or `lab.shell(...)` run did, for people and for code."""
from __future__ import annotations

import html
import json
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, Iterable, Union

from ..containers.execution import OutputChunk
from .events import AssistantMessage, Message, ToolResultBlock, ToolUseBlock, UserMessage

STATUSES = ("success", "error", "max_turns", "timeout", "cancelled", "interrupted")  # interrupted: store only
RunEvent = Union[Message, OutputChunk]

_HTML_DIFF_LIMIT = 200_000
_STATUS_COLOURS = {"success": "#2e7d32", "error": "#c62828", "max_turns": "#ef6c00",
                   "timeout": "#ef6c00", "cancelled": "#757575", "interrupted": "#757575"}


@dataclass
class ToolCall:
    """One tool use by the agent, paired with its result when the result came back."""

    id: str
    name: str
    input: dict[str, Any]
    result: Any = None  # the tool_result content: text, or a list of content blocks
    is_error: bool | None = None
    parent_tool_use_id: str | None = None  # set for tools used inside a subagent

    @property
    def done(self) -> bool:
        return self.is_error is not None or self.result is not None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self, width: int = 80) -> str:
        """One line: the tool's most telling argument (command, path, pattern...)."""
        for key in ("command", "file_path", "path", "pattern", "url", "description", "prompt"):
            if key in self.input:
                text = str(self.input[key])
                break
        else:
            text = json.dumps(self.input, ensure_ascii=False)
        text = " ".join(text.split())
        return text if len(text) <= width else text[: width - 1] + "…"


def tool_calls_from(events: Iterable[RunEvent]) -> list[ToolCall]:
    """Pair every tool_use block with its tool_result, in the order the tools were called."""
    calls: dict[str, ToolCall] = {}
    for event in events:
        if isinstance(event, AssistantMessage):
            for block in event.content:
                if isinstance(block, ToolUseBlock) and block.id not in calls:
                    calls[block.id] = ToolCall(block.id, block.name, block.input,
                                               parent_tool_use_id=event.parent_tool_use_id)
        elif isinstance(event, UserMessage) and isinstance(event.content, list):
            for block in event.content:
                if isinstance(block, ToolResultBlock) and block.tool_use_id in calls:
                    call = calls[block.tool_use_id]
                    call.result, call.is_error = block.content, bool(block.is_error)
    return list(calls.values())


def event_dict(event: RunEvent) -> dict[str, Any]:
    if isinstance(event, OutputChunk):
        return {"type": "output", "stream": event.stream, "text": event.text}
    return event.to_dict()


@dataclass
class RunResult:
    """The outcome of one run in an agent's workspace.

    `status` is one of success, error, max_turns, timeout, cancelled. `diff` is what the run
    changed in /workspace (git, against `start_commit`); `start_commit`/`end_commit` are the
    "claude-lab: before/after run <run_id>" commits in the workspace's repository.
    """

    run_id: str
    agent_id: str
    kind: str  # "claude" | "shell"
    status: str
    prompt: str  # the prompt, or the shell command
    result: str = ""  # the final answer (claude) or the output (shell)
    events: list[RunEvent] = field(default_factory=list, repr=False)
    tool_calls: list[ToolCall] = field(default_factory=list, repr=False)
    num_turns: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_creation_tokens: int = 0
    cost_usd: float | None = None
    duration_s: float = 0.0
    session_id: str | None = None
    diff: str = field(default="", repr=False)
    changed_files: list[str] = field(default_factory=list)
    start_commit: str | None = None
    end_commit: str | None = None
    exit_code: int | None = None
    model: str | None = None
    error: str | None = None  # why it failed, when it did (the CLI's error, stderr's tail, git trouble)
    stderr: str = field(default="", repr=False)
    started_at: datetime | None = None
    # peak_mem_bytes, cpu_seconds (and samples, interval, source, since, until) of the agent's container
    # over the run, when a `lab.watch_stats()` sampler was running; else None
    resources: dict | None = None
    # run store (runs/store.py, runs/replay.py): the run this one replays, and whether its diff came out byte for byte
    replay_of: str | None = None
    reproduced: bool | None = None
    # why `cost_usd` is None for a Claude run that ran: "scripted" (a ScriptedModel has no price) or "replay"
    # (answered from a cassette: nothing was paid); the CLI's own figure stays in the result event
    cost_note: str | None = None

    @property
    def cost_text(self) -> str:
        """"$0.0123", or "cost n/a (scripted)" / "cost n/a (replay)", or "" when unknown."""
        if self.cost_usd is not None:
            return f"${self.cost_usd:.4f}"
        return f"cost n/a ({self.cost_note})" if self.cost_note else ""

    @property
    def ok(self) -> bool:
        return self.status == "success"

    def to_dict(self) -> dict[str, Any]:
        """Everything, JSON-ready (events as the CLI printed them)."""
        out: dict[str, Any] = {}
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            if name == "events":
                value = [event_dict(e) for e in value]
            elif name == "tool_calls":
                value = [c.to_dict() for c in value]
            elif isinstance(value, datetime):
                value = value.isoformat()
            out[name] = value
        return out

    # -- display ------------------------------------------------------------------------------
    def _facts(self) -> list[str]:
        facts = [f"{self.duration_s:.1f}s"]
        if self.kind == "claude":
            facts.append(f"{self.num_turns} turns")
            facts.append(f"{self.input_tokens:,} in / {self.output_tokens:,} out tokens")
            if self.cost_text:
                facts.append(self.cost_text)
        if self.exit_code is not None:
            facts.append(f"exit {self.exit_code}")
        if self.resources:
            facts.append(f"peak {self.resources['peak_mem_bytes'] / (1 << 20):,.0f} MiB, "
                         f"{self.resources['cpu_seconds']:.1f} CPU-s")
        if self.replay_of:
            facts.append(f"replay of {self.replay_of}: " + ("reproduced" if self.reproduced else "not reproduced"))
        return facts

    def __repr__(self) -> str:
        tools = ", ".join(c.name for c in self.tool_calls[:12]) + (", …" if len(self.tool_calls) > 12 else "")
        return (f"RunResult(run_id={self.run_id!r}, agent={self.agent_id!r}, kind={self.kind!r}, "
                f"status={self.status!r}, turns={self.num_turns}, cost_usd={self.cost_usd}, "
                f"tools=[{tools}], files={self.changed_files})")

    def _text(self) -> str:
        lines = [f"{self.kind} run {self.run_id} in {self.agent_id}: {self.status.upper()} ("
                 + ", ".join(self._facts()) + ")"]
        if self.error:
            lines.append(f"error: {self.error}")
        if self.tool_calls:
            lines.append("tool calls:")
            lines += [f"  {'✗' if c.is_error else '✓' if c.done else '…'} {c.name}: {c.summary()}"
                      for c in self.tool_calls]
        if self.result:
            lines.append("result:")
            lines.append("  " + self.result[-2000:].replace("\n", "\n  "))
        if self.changed_files:
            lines.append(f"changed: {', '.join(self.changed_files)}")
        return "\n".join(lines)

    def _html(self) -> str:
        esc = html.escape
        colour = _STATUS_COLOURS.get(self.status, "#757575")
        parts = [f"<div><b>{esc(self.kind)}</b> run <code>{esc(self.run_id)}</code> in <code>{esc(self.agent_id)}</code> "
                 f"<span style='color:{colour};font-weight:bold'>{esc(self.status)}</span> &middot; "
                 + " &middot; ".join(esc(f) for f in self._facts()) + "</div>"]
        if self.error:
            parts.append(f"<div style='color:#c62828'>{esc(self.error)}</div>")
        if self.tool_calls:
            rows = "".join(
                f"<tr><td>{'&#10007;' if c.is_error else '&#10003;' if c.done else '&hellip;'}</td>"
                f"<td><code>{esc(c.name)}</code></td><td><code>{esc(c.summary(120))}</code></td></tr>"
                for c in self.tool_calls)
            parts.append(f"<details open><summary>{len(self.tool_calls)} tool calls</summary>"
                         f"<table>{rows}</table></details>")
        if self.result:
            parts.append(f"<pre style='white-space:pre-wrap;margin:2px 0'>{esc(self.result[-20000:])}</pre>")
        if self.diff:
            parts.append(f"<details open><summary>diff: {esc(', '.join(self.changed_files) or 'changes')}</summary>"
                         f"<pre style='margin:2px 0'>{_diff_html(self.diff)}</pre></details>")
        return "<div class='claude-lab-run'>" + "".join(parts) + "</div>"

    def _repr_html_(self) -> str:
        return self._html()

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, str]:
        return {"text/plain": self._text(), "text/html": self._html()}


def _diff_html(diff: str) -> str:
    cut = len(diff) > _HTML_DIFF_LIMIT
    out = []
    for line in diff[:_HTML_DIFF_LIMIT].splitlines():
        text = html.escape(line)
        if line.startswith("+") and not line.startswith("+++"):
            out.append(f"<span style='color:#2e7d32'>{text}</span>")
        elif line.startswith("-") and not line.startswith("---"):
            out.append(f"<span style='color:#c62828'>{text}</span>")
        elif line.startswith(("diff --git", "@@")):
            out.append(f"<span style='color:#1565c0'>{text}</span>")
        else:
            out.append(text)
    if cut:
        out.append(f"<i>… {len(diff) - _HTML_DIFF_LIMIT:,} more characters (see .diff)</i>")
    return "\n".join(out)
