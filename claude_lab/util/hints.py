"""Hints in the idiom of the front end that shows them.

The core writes the hints in its messages the Python way ("create one with lab.create_agent",
"start it with lab.start('agent-001')"); a front end shows an error through `in_idiom(text, front)`,
which rewrites those calls into its own commands: the CLI's `claude-lab create`, the magics' `%lab up`.
One table, so a new hint in the core needs one line here to read right everywhere.
"""
from __future__ import annotations

import re
from typing import Callable, Union

__all__ = ["in_idiom"]

Replacement = Union[str, Callable[["re.Match[str]"], str]]
_ID = r"['\"]([^'\"]*)['\"]"

_RULES: dict[str, list[tuple[str, Replacement]]] = {
    "cli": [
        (rf"lab\.create_agent\({_ID}\)", r"`claude-lab create \1`"),
        (r"lab\.create_agent(\(\))?", "`claude-lab create AGENT`"),
        (rf"lab\.remove_agent\({_ID}, volumes=True\)", r"`claude-lab remove \1 --volumes`"),
        (rf"lab\.remove_agent\({_ID}\)", r"`claude-lab remove \1`"),
        (rf"lab\.start\({_ID}\) or `claude-lab start`", r"`claude-lab start \1`"),
        (rf"lab\.start\({_ID}\)", r"`claude-lab start \1`"),
        (r"lab\.up(\(\))?", "`claude-lab start`"),
        (rf"lab\.agent\({_ID}\)", r"`claude-lab status`"),
        (rf"lab\.(merge|fetch|apply|diff|changes)\({_ID}\)", r"`claude-lab \1 \2`"),
        (rf"lab\.copy_from\({_ID}, \.\.\.\)", r"`claude-lab cp \1:PATH DEST`"),
        (rf"lab\.replay\({_ID}, image=\.\.\.\)", r"a `docker load` of that image"),
        (r"Lab\(model=ScriptedModel\(\[?\.\.\.\]?\)\)", "`claude-lab claude AGENT PROMPT --scripted TURNS.json`"),
        (r" \(or Lab\(api_key_file=\.\.\.\)\)", ""),
        (r"Lab\((\w+)=(\w+)\)", lambda m: f"CLAUDE_LAB_{m[1].upper()}={m[2]}"),
        (r"Lab\((\w+)=\.\.\.\)", lambda m: f"--{m[1].replace('_', '-')}" if m[1] == "name" else f"CLAUDE_LAB_{m[1].upper()}"),
    ],
    "magic": [
        (r"lab\.up(\(\))?", "`%lab up`"),
        (rf"lab\.start\({_ID}\) or `claude-lab start`", r"lab.start('\1') (or `%lab up` for the services)"),
        (rf"lab\.(merge|diff|changes)\({_ID}\)", r"`%lab \1 \2`"),
    ],
}


def in_idiom(text: str, front: str) -> str:
    """`text` with the core's Python hints rewritten for `front` ("cli" or "magic"; "api" leaves it)."""
    for pattern, replacement in _RULES.get(front, []):
        text = re.sub(pattern, replacement, text)
    return text
