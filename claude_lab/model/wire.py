"""The Messages API on the wire, as both of the lab's servers need it: which kind a request is, and
errors in the API's own shape (so the CLI reports them like any API error)."""
from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

# The error `type` the real API uses for each HTTP status (see the API's "Errors" page).
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    409: "conflict_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}


def request_kind(method: str, path: str, body: Any) -> str:
    """main | side | count_tokens | other.

    A messages request is *main* (the agent's conversation, or a subagent's) when it carries a
    non-empty `tools` list: the agent loop always sends its tools, helper requests (titles, quota
    checks) do not. The path may carry a gateway's prefix and a query (`/gw/v1/messages?beta=true`).
    """
    route = urlsplit(path).path.rstrip("/")
    if method == "POST" and route.endswith("/v1/messages/count_tokens"):
        return "count_tokens"
    if method == "POST" and route.endswith("/v1/messages"):
        tools = body.get("tools") if isinstance(body, dict) else None
        return "main" if isinstance(tools, list) and tools else "side"
    return "other"


def error_json(status: int, message: str, kind: str | None = None) -> dict[str, Any]:
    """{"type": "error", "error": {"type": ..., "message": ...}}; the type follows the status unless given."""
    return {"type": "error", "error": {"type": kind or ERROR_TYPES.get(status, "api_error"), "message": message}}


def error_body(status: int, message: str, kind: str | None = None) -> bytes:
    return json.dumps(error_json(status, message, kind)).encode()
