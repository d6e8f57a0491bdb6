"""Secrets out of everything stored or shown: one placeholder, one set of secret headers, one way to redact."""
from __future__ import annotations

from typing import Iterable

REDACTED = "<redacted>"
# Headers whose values are credentials, whoever sent them (requests, responses, the model's own log).
SECRET_HEADERS = frozenset({"x-api-key", "authorization", "proxy-authorization", "cookie", "set-cookie"})


def redact_text(text: str, secrets: Iterable[str | None]) -> str:
    """`text` with every secret replaced by REDACTED (empty and None secrets are skipped)."""
    for secret in secrets:
        if secret and secret in text:
            text = text.replace(secret, REDACTED)
    return text


def redact_bytes(data: bytes, secrets: Iterable[str | None]) -> bytes:
    for secret in secrets:
        if secret:
            data = data.replace(secret.encode("utf-8"), REDACTED.encode())
    return data


def redact_headers(headers: Iterable[tuple[str, str]], secrets: Iterable[str | None] = ()) -> dict[str, str]:
    """Headers as stored: names lower-cased, secret headers' values replaced, secrets redacted elsewhere."""
    secrets = [s for s in secrets if s]
    out: dict[str, str] = {}
    for key, value in headers:
        key = key.lower()
        out[key] = REDACTED if key in SECRET_HEADERS else redact_text(value, secrets)
    return out
