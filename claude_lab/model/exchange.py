"""One model exchange as the lab stores it (request and response, secrets already redacted), the reply a
responder gives in replay, and the body encodings both need."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

__all__ = ["Exchange", "Reply", "Responder", "json_or_text", "sse_events"]


@dataclass
class Exchange:
    """One request and its response, as stored: secrets already redacted.

    `seq` numbers the run's requests in the order they arrived (from 0); `path` keeps the query.
    `status` is None when no response was ever sent; `error` says what went wrong on the way.
    """

    seq: int
    kind: str
    method: str
    path: str
    request_headers: dict[str, str]
    request_body: bytes
    status: int | None = None
    response_headers: dict[str, str] = field(default_factory=dict)
    response_body: bytes = b""
    started_at: float = 0.0
    duration_s: float = 0.0
    error: str | None = None

    def request_json(self) -> Any:
        """The request body decoded as JSON (None when empty, the text when it is not JSON)."""
        return json_or_text(self.request_body)

    @property
    def streamed(self) -> bool:
        return "text/event-stream" in self.response_headers.get("content-type", "")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, bodies as text when they are UTF-8 (else base64, marked)."""
        out: dict[str, Any] = {}
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            if isinstance(value, bytes):
                out.update(_encode_body(name, value))
            else:
                out[name] = value
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Exchange":
        values = dict(data)
        for name in ("request_body", "response_body"):
            values[name] = _decode_body(name, values)
            values.pop(name + "_base64", None)
        known = {k: v for k, v in values.items() if k in cls.__dataclass_fields__}
        return cls(**known)


@dataclass
class Reply:
    """What a responder answers a request with (replay mode)."""

    status: int
    headers: dict[str, str]
    body: bytes


Responder = Callable[[Exchange], Reply]


def json_or_text(data: bytes) -> Any:
    if not data:
        return None
    try:
        return json.loads(data)
    except ValueError:
        return data.decode("utf-8", "replace")


def _encode_body(name: str, value: bytes) -> dict[str, Any]:
    try:
        return {name: value.decode("utf-8")}
    except UnicodeDecodeError:
        import base64

        return {name: base64.b64encode(value).decode("ascii"), name + "_base64": True}


def _decode_body(name: str, values: dict[str, Any]) -> bytes:
    value = values.get(name) or ""
    if isinstance(value, bytes):
        return value
    if values.get(name + "_base64"):
        import base64

        return base64.b64decode(value)
    return str(value).encode("utf-8")


def sse_events(body: bytes) -> Iterator[bytes]:
    """Split a server-sent-events body after each blank line (keeping the separators)."""
    start = 0
    while start < len(body):
        end = body.find(b"\n\n", start)
        if end < 0:
            yield body[start:]
            return
        yield body[start:end + 2]
        start = end + 2
