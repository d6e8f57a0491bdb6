"""What replay compares of a model request: its normalized form, with the volatile parts masked.

See `replay` for the rules: method, path and query; two headers; the JSON body without `metadata` and
`cache_control`, tool-use ids renumbered, run ids, dates, times, durations, UUIDs, hex ids and the OS
line masked in every string.
"""
from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from ..model.proxy import Exchange

COMPARED_HEADERS = ("anthropic-version", "anthropic-beta")

_MASKS = [  # order matters: run ids before dates, dates before clock times
    (re.compile(r"\b\d{8}-\d{6}-[0-9a-f]{6}\b"), "<run-id>"),
    (re.compile(r"\b\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?)?\b"), "<date>"),
    (re.compile(r"\b(?:(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun)[a-z]*,?\s+)?(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)"
                r"[a-z]*\.?\s+\d{1,2}(?:,?\s+\d{4})?(?:\s+\d{1,2}:\d{2}(?::\d{2})?)?\b"), "<date>"),  # ls -l, date
    (re.compile(r"\b\d{1,2}:\d{2}:\d{2}(?:\.\d+)?\b"), "<time>"),
    (re.compile(r"\b\d+(?:\.\d+)?\s?(?:ns|us|µs|ms|s|secs?|seconds)\b"), "<duration>"),
    (re.compile(r"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b"), "<uuid>"),
    (re.compile(r"\b(?=[0-9a-f]*[a-f])(?=[0-9a-f]*[0-9])[0-9a-f]{7,64}\b"), "<hex>"),
    (re.compile(r"(?m)^[0-9a-f]{7,40}(?= )"), "<hex>"),  # a git log line's commit id, even all digits
    (re.compile(r"(OS Version: )[^\n\"]*"), r"\1<os>"),
]
_TOOL_ID = re.compile(r"^(?:srv)?toolu_[A-Za-z0-9_-]+$")


def _mask(text: str, extra: tuple[re.Pattern[str], ...] = ()) -> str:
    for pattern, repl in _MASKS:
        text = pattern.sub(repl, text)
    for pattern in extra:
        text = pattern.sub("<ignored>", text)
    return text


def normalize(body: Any, ignore: tuple[re.Pattern[str], ...] = ()) -> Any:
    """A request body with its volatile parts removed or masked (see the module docstring);
    `ignore` holds extra patterns whose matches are masked too."""
    ids: dict[str, str] = {}

    def walk(value: Any, top: bool = False) -> Any:
        if isinstance(value, dict):
            return {k: walk(v) for k, v in value.items()
                    if k != "cache_control" and not (top and k == "metadata")}
        if isinstance(value, list):
            return [walk(v) for v in value]
        if isinstance(value, str):
            if _TOOL_ID.match(value):
                return ids.setdefault(value, f"toolu#{len(ids) + 1}")
            return _mask(value, ignore)
        return value

    return walk(body, top=True)


def normalized_request(exchange: Exchange, ignore: tuple[re.Pattern[str], ...] = ()) -> dict[str, Any]:
    """What replay compares for one request: method, path, two headers, the normalized body."""
    headers: dict[str, Any] = {}
    for name in COMPARED_HEADERS:
        value = exchange.request_headers.get(name)
        if value is not None:
            headers[name] = sorted(p.strip() for p in value.split(",")) if name == "anthropic-beta" else value
    return {"method": exchange.method, "path": exchange.path, "headers": headers,
            "body": normalize(exchange.request_json(), ignore)}


def digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def conversation_key(norm: dict[str, Any]) -> str:
    """Which conversation a main request belongs to: its normalized system prompt and first message."""
    body = norm.get("body") if isinstance(norm.get("body"), dict) else {}
    messages = body.get("messages") or [None]
    return digest([norm.get("path"), body.get("system"), messages[0]])


def first_difference(recorded: Any, actual: Any, path: str = "") -> tuple[str, Any, Any] | None:
    """The first place (a JSON path) where two normalized requests differ, with both values there."""
    if type(recorded) is not type(actual):
        return path or "(root)", recorded, actual
    if isinstance(recorded, dict):
        for key in list(recorded) + [k for k in actual if k not in recorded]:
            here = f"{path}.{key}" if path else str(key)
            if key not in actual:
                return here, recorded[key], "<missing>"
            if key not in recorded:
                return here, "<missing>", actual[key]
            found = first_difference(recorded[key], actual[key], here)
            if found:
                return found
        return None
    if isinstance(recorded, list):
        for i, (a, b) in enumerate(zip(recorded, actual)):
            found = first_difference(a, b, f"{path}[{i}]")
            if found:
                return found
        if len(recorded) != len(actual):
            i = min(len(recorded), len(actual))
            return (f"{path}[{i}]", recorded[i] if i < len(recorded) else "<missing>",
                    actual[i] if i < len(actual) else "<missing>")
        return None
    return None if recorded == actual else (path or "(root)", recorded, actual)


def shown(value: Any, other: Any, width: int = 160) -> str:
    """A value for a message: long strings cut around where they start to differ from `other`."""
    if isinstance(value, str) and isinstance(other, str) and len(value) > width:
        at = next((i for i, (a, b) in enumerate(zip(value, other)) if a != b), min(len(value), len(other)))
        start = max(0, at - width // 3)
        piece = value[start:start + width]
        return repr(("…" if start else "") + piece + ("…" if start + width < len(value) else ""))
    text = json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else repr(value)
    return text if len(text) <= width else text[:width] + "…"


