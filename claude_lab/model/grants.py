"""Per-run tokens: what the CLI in an agent holds instead of the API key, and the rules the proxy checks.

A `Grant` is issued for one run. Its token is random (192 bits from `secrets`), lives only in this
process's memory and in the environment of that run's CLI, and is never stored: the proxy redacts it
from everything it records, like the key. A request is served under a grant only when

- it carries the grant's token (`x-api-key`, or `Authorization: Bearer`), compared in constant time;
- it comes from the grant's peer: the address the run's own set-up step called from (`bind`), which
  must also be one of the agent's addresses when the engine knows them (the local backend);
- the grant is live: issued, bound, and not yet revoked (the run's end revokes it).

Everything else is refused and counted by reason (`Grants.refusals`).
"""
from __future__ import annotations

import hmac
import secrets
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Iterable, Mapping

if TYPE_CHECKING:
    from .exchange import Exchange, Responder

__all__ = ["BEARER", "HELLO_PATH", "TOKEN_PREFIX", "X_API_KEY", "Credential", "Grant", "Grants", "Refusal", "token_of"]

TOKEN_PREFIX = "sk-ant-lab-"  # the CLI only checks that a key is there; the prefix says what it is when seen
X_API_KEY, BEARER = "x-api-key", "bearer"
HELLO_PATH = "/.claude-lab/hello"  # the run's set-up step calls here from the agent: binds the token to its address


@dataclass(frozen=True)
class Credential:
    """The real credential the proxy writes into upstream requests; its value never shows in repr."""

    value: str = field(repr=False)
    scheme: str = X_API_KEY  # "x-api-key" (Anthropic API keys) | "bearer" (gateways, OAuth-style tokens)
    source: str = "dummy"  # where it came from: api_key_command | api_key_file | ANTHROPIC_API_KEY | ...

    def headers(self) -> dict[str, str]:
        if self.scheme == BEARER:
            return {"Authorization": f"Bearer {self.value}"}
        return {"x-api-key": self.value}


@dataclass(frozen=True)
class Refusal:
    """Why a request was refused: a short reason (the counter's key) and the message the client gets."""

    reason: str  # no-token | unknown-token | wrong-peer | not-bound | revoked
    message: str


def token_of(headers: Mapping[str, str]) -> str | None:
    """The token a request presents: its `x-api-key`, else the `Authorization: Bearer` value."""
    lowered = {k.lower(): v for k, v in headers.items()}
    key = (lowered.get("x-api-key") or "").strip()
    if key:
        return key
    auth = (lowered.get("authorization") or "").strip()
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip() or None
    return None


@dataclass(eq=False)
class Grant:
    """One run's right to the model through the proxy. `upstream` (forward there with `credential`) or
    `respond` (answer from a recording) says what serves it; `on_exchange` gets each stored exchange."""

    run_id: str
    agent_id: str
    token: str = field(repr=False)
    url: str  # the proxy's base URL: the run's ANTHROPIC_BASE_URL
    upstream: str | None = None
    respond: "Responder | None" = field(default=None, repr=False)
    credential: Credential | None = None
    secrets: tuple[str, ...] = field(default=(), repr=False)  # redacted from every stored exchange
    expected_peers: frozenset[str] | None = None  # the agent's addresses, when the engine knows them
    on_exchange: "Callable[[Exchange], None] | None" = field(default=None, repr=False)
    peer: str | None = None  # bound by the run's set-up step
    live: bool = True
    requests: int = 0
    _seq: int = field(default=0, repr=False)
    _revoke: "Callable[[Grant], None] | None" = field(default=None, repr=False)

    def revoke(self) -> None:
        """The run is over: its token is refused from now on."""
        if self._revoke is not None:
            self._revoke(self)
        self.live = False

    @property
    def token_var(self) -> str:
        """Where the CLI takes the token from: where it would put this kind of credential."""
        bearer = self.credential is not None and self.credential.scheme == BEARER
        return "ANTHROPIC_AUTH_TOKEN" if bearer else "ANTHROPIC_API_KEY"

    def env(self) -> dict[str, str]:
        """The variables of the run's CLI: the token where the CLI puts its key, the proxy as its base URL."""
        return {self.token_var: self.token, "ANTHROPIC_BASE_URL": self.url}

    def next_seq(self) -> int:
        seq, self._seq = self._seq, self._seq + 1
        return seq

    @property
    def redacted(self) -> list[str]:
        """What must never be stored: the token, the real credential, the secrets given."""
        out = [self.token, *self.secrets]
        if self.credential is not None and self.credential.value:
            out.append(self.credential.value)
        return [s for s in out if s]


class Grants:
    """The live grants of one proxy, and the count of what it refused."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._grants: list[Grant] = []
        self.refusals: Counter[str] = Counter()

    def issue(self, run_id: str, agent_id: str, url: str, *, upstream: str | None = None,
              respond: "Responder | None" = None, credential: Credential | None = None, secrets_: Iterable[str] = (),
              expected_peers: Iterable[str] | None = None,
              on_exchange: "Callable[[Exchange], None] | None" = None) -> Grant:
        if (upstream is None) == (respond is None):
            raise ValueError("a grant is served either by an upstream URL or by a responder")
        grant = Grant(run_id=run_id, agent_id=agent_id, token=TOKEN_PREFIX + secrets.token_urlsafe(24), url=url,
                      upstream=upstream.rstrip("/") if upstream else None, respond=respond, credential=credential,
                      secrets=tuple(s for s in secrets_ if s),
                      expected_peers=frozenset(expected_peers) if expected_peers is not None else None,
                      on_exchange=on_exchange, _revoke=self.revoke)
        with self._lock:
            self._grants.append(grant)
        return grant

    def revoke(self, grant: Grant) -> None:
        """The run is over: its token is refused from now on (and forgotten once a few more runs ended)."""
        with self._lock:
            grant.live = False
            # Keep the last revoked grants a while so a late request gets "revoked", not "unknown"; then forget.
            dead = [g for g in self._grants if not g.live]
            for old in dead[:-64]:
                self._grants.remove(old)

    def _find(self, token: str) -> Grant | None:
        found = None
        with self._lock:
            grants = list(self._grants)
        for grant in grants:  # every comparison runs, in constant time each: no early exit to time
            if hmac.compare_digest(grant.token.encode(), token.encode()):
                found = grant
        return found

    def refuse(self, reason: str, message: str) -> Refusal:
        with self._lock:
            self.refusals[reason] += 1
        return Refusal(reason, message)

    def bind(self, token: str | None, peer: str) -> Grant | Refusal:
        """The run's set-up step calls from inside the agent: its address becomes the grant's peer."""
        grant = self._check_token(token)
        if isinstance(grant, Refusal):
            return grant
        if grant.expected_peers is not None and peer not in grant.expected_peers:
            return self.refuse("wrong-peer", f"this token belongs to {grant.agent_id}, and {peer} is not its address")
        with self._lock:
            if grant.peer is not None and grant.peer != peer:
                self.refusals["wrong-peer"] += 1
                return Refusal("wrong-peer", f"this token is bound to another address than {peer}")
            grant.peer = peer
        return grant

    def authorize(self, token: str | None, peer: str) -> Grant | Refusal:
        """The grant a request may be served under, or why not."""
        grant = self._check_token(token)
        if isinstance(grant, Refusal):
            return grant
        if grant.peer is None:
            return self.refuse("not-bound", "this token's run has not started yet")
        if peer != grant.peer:
            return self.refuse("wrong-peer", f"this token belongs to {grant.agent_id}; {peer} may not use it")
        with self._lock:
            grant.requests += 1
        return grant

    def _check_token(self, token: str | None) -> Grant | Refusal:
        if not token:
            return self.refuse("no-token", "no token: claude-lab's model proxy serves only the runs it started")
        grant = self._find(token)
        if grant is None:
            return self.refuse("unknown-token", "unknown token: claude-lab's model proxy serves only the runs it "
                                                "started")
        if not grant.live:
            return self.refuse("revoked", f"the run this token was issued to ({grant.run_id}) has ended")
        return grant

    def of_run(self, run_id: str) -> Grant | None:
        """A run's grant (live, or among the last revoked ones): its peer and request count, for a look."""
        with self._lock:
            return next((g for g in reversed(self._grants) if g.run_id == run_id), None)

    def live(self) -> list[Grant]:
        with self._lock:
            return [g for g in self._grants if g.live]
