"""The lab's model proxy: the credential boundary between the Claude Code CLI in an agent and its model.

Every Claude run's CLI talks to a `ModelProxy` that this process serves on the lab network's gateway
(where containers reach the host). The CLI holds a per-run token (`grants`), never the API key: the
proxy serves a request only under a live grant -- the right token, from the agent's address, while
the run lasts -- and then either forwards it to the grant's upstream (the Anthropic API, a gateway,
a `ScriptedModel`), writing the real credential into it, or answers it from a recording (replay).
Anything else gets a 401 in the Messages API's error format, and is counted.

Each exchange (request and response) goes to the grant's `on_exchange` (the run's cassette when
the run is recorded), with the token, the real key and the grant's secrets replaced by "<redacted>"
in headers and bodies; credential headers are stored as "<redacted>" whatever they held.

Streaming: a response is written to the CLI as it arrives from upstream, chunk by chunk, flushed
each time, so server-sent events reach the CLI with no added buffering.

Upstream traffic asks for `Accept-Encoding: identity`, so what is stored is readable text.
Proxy environment variables (HTTPS_PROXY, NO_PROXY) are honoured for the upstream, except for IP
addresses of this machine's private networks and loopback (a ScriptedModel), which no corporate
proxy could reach.
"""
from __future__ import annotations

import ipaddress
import json
import socket
import threading
import time
import zlib
from typing import Callable, Iterable, Iterator
from urllib.parse import urlsplit

import requests
import requests.utils

from ..util.redaction import REDACTED, redact_bytes as redact, redact_headers as clean_headers
from .exchange import Exchange, Reply, Responder, json_or_text, sse_events
from .grants import HELLO_PATH, Credential, Grant, Grants, Refusal, token_of
from .serving import BackgroundServer, StreamingHandler
from .wire import error_body, request_kind

__all__ = ["HELLO_PATH", "REDACTED", "Exchange", "ModelProxy", "Reply", "probe_upstream"]

# Not forwarded as they came: connection-level headers, and those requests/http.server set themselves.
_HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-connection", "te", "trailer", "trailers",
                         "transfer-encoding", "upgrade", "host", "content-length", "accept-encoding"})
_RESPONSE_DROP = frozenset({"connection", "keep-alive", "transfer-encoding", "content-length", "trailer"})
_CREDENTIALS = frozenset({"x-api-key", "authorization"})  # the CLI's token: replaced by the real credential
UPSTREAM_TIMEOUT = (10.0, 600.0)  # connect, read: the CLI's own request timeout is 600 s


def _private_ip(host: str) -> bool:
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return ip.is_private or ip.is_loopback or ip.is_link_local


def _proxies_for(url: str) -> dict[str, str | None] | None:
    """None: requests' own choice from the environment; no proxy for this machine's private addresses."""
    host = urlsplit(url).hostname or ""
    if _private_ip(host):
        return {"http": None, "https": None, "all": None}
    return None


def probe_upstream(url: str, timeout: float = 3.0) -> str | None:
    """Check from this machine that `url` (or the HTTP proxy the environment routes it through) accepts
    TCP connections; None when it does, else "host:port: reason"."""
    parts = urlsplit(url)
    host, port = parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)
    via = ""
    if not _private_ip(host):
        proxy = requests.utils.get_environ_proxies(url).get(parts.scheme) or \
            requests.utils.get_environ_proxies(url).get("all")
        if proxy:
            p = urlsplit(proxy if "://" in proxy else "http://" + proxy)
            via = f" via proxy {p.hostname}:{p.port or 80}"
            host, port = p.hostname or "", p.port or 80
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except socket.timeout:
        return f"{host}:{port}{via}: no answer within {timeout:g}s"
    except OSError as exc:
        return f"{host}:{port}{via}: {exc.strerror or exc}"
    return None


class _Handler(StreamingHandler):
    def do_PUT(self) -> None:
        self.server.owner._handle(self, "PUT")

    def do_PATCH(self) -> None:
        self.server.owner._handle(self, "PATCH")

    def do_DELETE(self) -> None:
        self.server.owner._handle(self, "DELETE")

    def start_response(self, status: int, headers: dict[str, str], length: int | None) -> None:
        self.send_response(status)
        for name, value in headers.items():
            if name.lower() not in _RESPONSE_DROP:
                self.send_header(name, value)
        if length is None:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Content-Length", str(length))
        self.end_headers()

    def write_chunk(self, data: bytes) -> None:
        if data:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()

    def end_chunks(self) -> None:
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()


class ModelProxy(BackgroundServer):
    """Serve on `host` (port 0: a free one); requests are served under the grants it issues (`grant`)."""

    handler = _Handler
    what = "the model proxy"
    thread_name = "model-proxy"

    def __init__(self, host: str, port: int = 0):
        self._init_server(host, port)
        self.grants = Grants()
        self._sessions = threading.local()

    def grant(self, run_id: str, agent_id: str, *, upstream: str | None = None, respond: Responder | None = None,
              credential: Credential | None = None, secrets: Iterable[str] = (),
              expected_peers: Iterable[str] | None = None,
              on_exchange: Callable[[Exchange], None] | None = None) -> Grant:
        """A new run's grant: forwarded to `upstream` with `credential`, or answered by `respond` (replay)."""
        return self.grants.issue(run_id, agent_id, self.url, upstream=upstream, respond=respond,
                                 credential=credential, secrets_=secrets, expected_peers=expected_peers,
                                 on_exchange=on_exchange)

    def revoke(self, grant: Grant) -> None:
        self.grants.revoke(grant)

    @property
    def refusals(self) -> dict[str, int]:
        """How many requests were refused, by reason (no-token, unknown-token, wrong-peer, not-bound, revoked)."""
        return dict(self.grants.refusals)

    def __repr__(self) -> str:
        where = self.url if self._server is not None else "stopped"
        return (f"<ModelProxy {where}: {len(self.grants.live())} live grants, "
                f"{sum(self.grants.refusals.values())} requests refused>")

    # -- serving -----------------------------------------------------------------------------
    def _session(self) -> requests.Session:
        session = getattr(self._sessions, "session", None)
        if session is None:
            session = self._sessions.session = requests.Session()
        return session

    def _refuse(self, handler: _Handler, refusal: Refusal) -> None:
        body = error_body(401, f"claude-lab's model proxy refused the request: {refusal.message}",
                          "authentication_error")
        handler.start_response(401, {"Content-Type": "application/json"}, len(body))
        handler.wfile.write(body)
        handler.wfile.flush()

    def _handle(self, handler: _Handler, method: str) -> None:
        peer = handler.client_address[0]
        token = token_of(dict(handler.headers.items()))
        raw = handler.read_body()
        if urlsplit(handler.path).path == HELLO_PATH:
            bound = self.grants.bind(token, peer)
            if isinstance(bound, Refusal):
                return self._refuse(handler, bound)
            body = json.dumps({"ok": True, "run_id": bound.run_id, "peer": peer}).encode()
            handler.start_response(200, {"Content-Type": "application/json"}, len(body))
            handler.wfile.write(body)
            handler.wfile.flush()
            return
        grant = self.grants.authorize(token, peer)
        if isinstance(grant, Refusal):
            return self._refuse(handler, grant)
        started = time.time()
        secrets = grant.redacted
        stored_body = redact(raw, secrets)
        exchange = Exchange(seq=grant.next_seq(), kind=request_kind(method, handler.path, json_or_text(stored_body)),
                            method=method, path=handler.path,
                            request_headers=clean_headers(handler.headers.items(), secrets),
                            request_body=stored_body, started_at=started)
        try:
            if grant.respond is not None:
                self._answer(handler, grant, exchange)
            else:
                self._forward(handler, grant, method, raw, exchange)
        except (BrokenPipeError, ConnectionResetError) as exc:
            exchange.error = exchange.error or f"the client went away: {exc}"
            handler.close_connection = True
        finally:
            exchange.duration_s = time.time() - started
            if grant.on_exchange is not None:
                grant.on_exchange(exchange)

    def _answer(self, handler: _Handler, grant: Grant, exchange: Exchange) -> None:
        assert grant.respond is not None
        reply = grant.respond(exchange)
        exchange.status = reply.status
        exchange.response_headers = clean_headers(reply.headers.items(), grant.redacted)
        exchange.response_body = reply.body
        streamed = "text/event-stream" in {k.lower(): v for k, v in reply.headers.items()}.get("content-type", "")
        if not streamed:
            handler.start_response(reply.status, reply.headers, len(reply.body))
            handler.wfile.write(reply.body)
            handler.wfile.flush()
            return
        handler.start_response(reply.status, reply.headers, None)
        for event in sse_events(reply.body):  # one event a chunk, as an API streams them
            handler.write_chunk(event)
        handler.end_chunks()

    def _forward(self, handler: _Handler, grant: Grant, method: str, raw: bytes, exchange: Exchange) -> None:
        assert grant.upstream is not None
        secrets = grant.redacted
        headers = {k: v for k, v in handler.headers.items() if k.lower() not in _HOP_BY_HOP | _CREDENTIALS}
        headers["Accept-Encoding"] = "identity"
        if grant.credential is not None:
            headers.update(grant.credential.headers())  # the real credential: written here, on the host
        url = grant.upstream + handler.path
        try:
            resp = self._session().request(method, url, data=raw, headers=headers, stream=True,
                                           timeout=UPSTREAM_TIMEOUT, allow_redirects=False,
                                           proxies=_proxies_for(url))
        except requests.RequestException as exc:
            message = redact(f"claude-lab's model proxy could not reach {grant.upstream}: {exc}".encode(),
                             secrets).decode("utf-8", "replace")
            body = error_body(502, message)
            exchange.status, exchange.error = 502, message
            exchange.response_headers = {"content-type": "application/json"}
            exchange.response_body = body
            handler.start_response(502, {"Content-Type": "application/json"}, len(body))
            handler.wfile.write(body)
            handler.wfile.flush()
            return
        kept = bytearray()
        try:
            length = resp.headers.get("Content-Length")
            exact = int(length) if length and length.isdigit() and not resp.raw.chunked else None
            exchange.status = resp.status_code
            exchange.response_headers = clean_headers(resp.headers.items(), secrets)
            handler.start_response(resp.status_code, dict(resp.headers), exact)
            for data in _raw_chunks(resp):
                kept += data
                if exact is None:
                    handler.write_chunk(data)
                else:
                    handler.wfile.write(data)
                    handler.wfile.flush()
            if exact is None:
                handler.end_chunks()
        except requests.RequestException as exc:  # upstream broke off mid-response
            exchange.error = f"upstream broke off: {exc}"
            handler.close_connection = True
        finally:
            resp.close()
            exchange.response_body = redact(_decoded(bytes(kept), exchange.response_headers), secrets)


def _raw_chunks(resp: requests.Response) -> Iterator[bytes]:
    """The body's bytes as they arrive: each transfer chunk, or what the socket has (never waits to fill a buffer)."""
    raw = resp.raw
    try:
        if raw.chunked and raw.supports_chunked_reads():
            yield from raw.read_chunked(None, decode_content=False)
            return
        while True:
            data = raw.read1(65536, decode_content=False)
            if not data:
                return
            yield data
    except Exception as exc:  # urllib3's ProtocolError and friends: surface as requests' family
        raise requests.ConnectionError(str(exc)) from exc


def _decoded(body: bytes, headers: dict[str, str]) -> bytes:
    """The stored copy is decoded when upstream compressed it anyway (gzip/deflate); the header goes too."""
    encoding = headers.get("content-encoding", "").lower()
    if encoding in ("gzip", "deflate") and body:
        try:
            body = zlib.decompress(body, 47 if encoding == "gzip" else 15)
            headers.pop("content-encoding", None)
        except zlib.error:
            pass
    return body
