"""One compact line per run event: what a cell's output and the runner panel's transcript show.

Shared by `%claude_exec` and the runner panel so a run reads the same in both: a line per tool
call, the assistant's text as it comes, a line for tool errors, and a summary at the end.
"""
from __future__ import annotations

from ..containers.execution import OutputChunk
from ..runs.events import AssistantMessage, SystemMessage, TextBlock, ToolResultBlock, ToolUseBlock, UserMessage
from ..runs.results import RunEvent, RunResult, ToolCall

TOOL = "⏺"
FAILED = "✗"


def _first_line(value: object, width: int = 100) -> str:
    if isinstance(value, list):  # tool_result content blocks
        value = " ".join(str(b.get("text", "")) for b in value if isinstance(b, dict))
    text = " ".join(str(value or "").split())
    return text if len(text) <= width else text[: width - 1] + "…"


def event_lines(event: RunEvent) -> list[str]:
    """The lines to show for one event (often none: results, hooks, bookkeeping)."""
    if isinstance(event, OutputChunk):  # a shell run: the output as it is
        return [event.text]
    lines: list[str] = []
    if isinstance(event, AssistantMessage):
        indent = "  ↳ " if event.parent_tool_use_id else ""  # inside a subagent
        for block in event.content:
            if isinstance(block, ToolUseBlock):
                lines.append(f"{indent}{TOOL} {block.name}: {ToolCall(block.id, block.name, block.input).summary()}")
            elif isinstance(block, TextBlock) and block.text.strip():
                lines.append(indent + block.text.strip())
    elif isinstance(event, UserMessage) and isinstance(event.content, list):
        for block in event.content:
            if isinstance(block, ToolResultBlock) and block.is_error:
                lines.append(f"  {FAILED} {_first_line(block.content)}")
    elif isinstance(event, SystemMessage):
        if event.subtype == "init":
            model = event.data.get("model") or "?"
            lines.append(f"claude {event.data.get('claude_code_version', '')} · model {model}".replace("  ", " "))
        elif event.subtype == "api_retry":
            lines.append(f"… the model API failed ({event.data.get('error_status') or event.data.get('error')}); "
                         f"retry {event.data.get('attempt', '?')}")
    return lines


def summary_line(result: RunResult) -> str:
    """Status, turns, cost, time and changed files of a finished run, on one line."""
    parts = [result.status.upper()]
    if result.kind == "claude":
        parts.append(f"{result.num_turns} turn{'s' if result.num_turns != 1 else ''}")
        if result.cost_text:
            parts.append(result.cost_text)
    if result.exit_code not in (None, 0):
        parts.append(f"exit {result.exit_code}")
    parts.append(f"{result.duration_s:.1f}s")
    parts.append(f"changed: {', '.join(result.changed_files)}" if result.changed_files else "no files changed")
    line = " · ".join(parts)
    if result.error:
        line += f"\n{FAILED} {result.error}"
    return line
