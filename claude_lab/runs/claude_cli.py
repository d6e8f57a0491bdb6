"""How claude-lab calls the real Claude Code CLI, and how its authentication failures read.

A Claude run is::

    claude -p --output-format stream-json --verbose --permission-mode bypassPermissions \
           [--allowedTools A,B] [--max-turns N] [--model M] [--resume SESSION] -- PROMPT

Why these flags:

- `-p` (print mode) runs one prompt non-interactively and skips the workspace trust dialog;
  `--output-format stream-json` prints one JSON event per line as things happen, and print mode
  requires `--verbose` for that format.
- `--permission-mode bypassPermissions` (the same as `--dangerously-skip-permissions`) lets tools
  run without a person to approve them: the container is the sandbox. The CLI refuses it as root,
  which agents are not. With `allowed_tools=` and no `permission_mode=` the mode is `dontAsk`
  instead, so exactly the listed tools are approved and any other tool use is denied.
- `--` ends the options, so a prompt that starts with `-` is still the prompt.
"""
from __future__ import annotations

from typing import Iterable

from ..errors import LabError
from .events import AssistantMessage, Message, ResultMessage, SystemMessage

MAX_PROMPT_BYTES = 100_000  # one argv string may hold at most 128 KiB on Linux


def claude_argv(prompt: str, *, max_turns: int | None = None, model: str | None = None,
                allowed_tools: str | Iterable[str] | None = None, permission_mode: str | None = None,
                resume: str | None = None, max_budget_usd: float | None = None) -> list[str]:
    if not isinstance(prompt, str) or not prompt.strip():
        raise LabError("empty prompt: tell the agent what to do, for example 'add a /health endpoint'")
    if len(prompt.encode("utf-8")) > MAX_PROMPT_BYTES:
        raise LabError(f"the prompt is {len(prompt.encode('utf-8')):,} bytes; at most {MAX_PROMPT_BYTES:,} fit on "
                       f"a command line: put the long part in a file in the workspace and refer to it")
    tools: list[str] | None = None
    if allowed_tools is not None:
        tools = [allowed_tools] if isinstance(allowed_tools, str) else [str(t) for t in allowed_tools]
    mode = permission_mode or ("dontAsk" if tools else "bypassPermissions")
    argv = ["claude", "-p", "--output-format", "stream-json", "--verbose", "--permission-mode", mode]
    if tools:
        argv += ["--allowedTools", ",".join(tools)]
    if max_turns is not None:
        if not isinstance(max_turns, int) or max_turns < 1:
            raise LabError(f"max_turns={max_turns!r}: give a positive number of turns")
        argv += ["--max-turns", str(max_turns)]
    if model:
        argv += ["--model", model]
    if resume:
        argv += ["--resume", resume]
    if max_budget_usd is not None:
        if not isinstance(max_budget_usd, (int, float)) or not max_budget_usd > 0:
            raise LabError(f"max_budget_usd={max_budget_usd!r}: give a positive amount in dollars")
        argv += ["--max-budget-usd", f"{max_budget_usd:g}"]
    return argv + ["--", prompt]


def is_auth_failure(event: Message) -> bool:
    if isinstance(event, SystemMessage) and event.subtype == "api_retry":
        return event.data.get("error_status") == 401 or event.data.get("error") == "authentication_failed"
    if isinstance(event, AssistantMessage):
        return event.error == "authentication_failed" or event.raw.get("api_error_status") == 401
    if isinstance(event, ResultMessage):
        return event.api_error_status == 401
    return False
