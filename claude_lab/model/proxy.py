"""A model proxy between the Claude Code CLI and its endpoint: records every exchange, or replays them.

A recorded run points the CLI's `ANTHROPIC_BASE_URL` at a `ModelProxy` that this process serves on
the lab network's gateway (where containers reach the host, as for `ScriptedModel`). In recording
mode the proxy forwards each request to the real upstream -- the Anthropic API, a gateway, or a
`ScriptedModel` -- and hands the finished exchange (request and response) to a callback that
stores it in the run's cassette. In replay mode it forwards nothing: a responder (the cassette,
see `replay`) answers every request.

Streaming: a response is written to the CLI as it arrives from upstream, chunk by chunk (each
transfer-encoding chunk, or whatever bytes the socket has), flushed each time, so server-sent
events reach the CLI with no added buffering. The copy kept for the cassette is collected on the side.

Keys: the proxy passes the CLI's own `x-api-key` / `authorization` headers through to upstream
(the key stays where `endpoint` puts it, in the CLI's exec environment), and never keeps them:
what is stored has those headers (and `proxy-authorization`, cookies) replaced by "<redacted>",
and every occurrence of a secret it was given (the resolved API key, which is also the key file's
content) replaced by "<redacted>" in headers, request bodies and response bodies.

Upstream traffic asks for `Accept-Encoding: identity`, so what is stored is readable text.
Proxy environment variables (HTTPS_PROXY, NO_PROXY) are honoured for the upstream, except for IP
addresses of this machine's private networks (a ScriptedModel on the Docker gateway), which no
corporate proxy could reach.
"""
from __future__ import annotations

import ipaddress
import json
import socket
import threading
import time
import zlib
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator
from urllib.parse import urlsplit

import requests
import requests.utils

from ..errors import LabError
from ..util.redaction import REDACTED, redact_bytes as redact, redact_headers as clean_headers
from .serving import BackgroundServer, StreamingHandler
from .wire import error_body, request_kind

__all__ = ["REDACTED", "Exchange", "ModelProxy", "Reply", "probe_upstream"]

# Not forwarded as they came: connection-level headers, and those requests/http.server set themselves.
_HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-connection", "te", "trailer", "trailers",
                         "transfer-encoding", "upgrade", "host", "content-length", "accept-encoding"})
_RESPONSE_DROP = frozenset({"connection", "keep-alive", "transfer-encoding", "content-length", "trailer"})
UPSTREAM_TIMEOUT = (10.0, 600.0)  # connect, read: the CLI's own request timeout is 600 s


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
        return _json_or_text(self.request_body)

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


def _json_or_text(data: bytes) -> Any:
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
    """Serve on `host` (port 0: a free one), forwarding to `upstream` or answering with `respond`.

    Exactly one of `upstream` (recording: a base URL such as https://api.anthropic.com) and
    `respond` (replay: a function from the stored-form request to a `Reply`) is given.
    `on_exchange` gets every finished `Exchange`, in the order responses end; `secrets` are
    redacted from everything it sees.
    """

    handler = _Handler
    what = "the model proxy"
    thread_name = "model-proxy"

    def __init__(self, host: str, *, upstream: str | None = None, respond: Responder | None = None,
                 on_exchange: Callable[[Exchange], None] | None = None, secrets: Iterable[str] = (),
                 port: int = 0):
        if (upstream is None) == (respond is None):
            raise LabError("a ModelProxy either forwards to an upstream URL or answers with a responder")
        self._init_server(host, port)
        self.upstream = upstream.rstrip("/") if upstream else None
        self._respond = respond
        self.on_exchange = on_exchange
        self.secrets = [s for s in secrets if s]
        self._lock = threading.Lock()
        self._seq = 0
        self._exchanges: list[Exchange] = []
        self._sessions = threading.local()

    @property
    def exchanges(self) -> list[Exchange]:
        """Every finished exchange so far (stored form), in the order their responses ended."""
        with self._lock:
            return list(self._exchanges)

    def __repr__(self) -> str:
        mode = f"-> {self.upstream}" if self.upstream else "replaying"
        where = self.url if self._server is not None else "stopped"
        return f"<ModelProxy {where} {mode}, {len(self._exchanges)} exchanges>"

    # -- serving -----------------------------------------------------------------------------
    def _session(self) -> requests.Session:
        session = getattr(self._sessions, "session", None)
        if session is None:
            session = self._sessions.session = requests.Session()
        return session

    def _handle(self, handler: _Handler, method: str) -> None:
        with self._lock:
            seq, self._seq = self._seq, self._seq + 1
        started = time.time()
        raw = handler.read_body()
        stored_body = redact(raw, self.secrets)
        exchange = Exchange(seq=seq, kind=request_kind(method, handler.path, _json_or_text(stored_body)),
                            method=method, path=handler.path,
                            request_headers=clean_headers(handler.headers.items(), self.secrets),
                            request_body=stored_body, started_at=started)
        try:
            if self._respond is not None:
                self._answer(handler, exchange)
            else:
                self._forward(handler, method, raw, exchange)
        except (BrokenPipeError, ConnectionResetError) as exc:
            exchange.error = exchange.error or f"the client went away: {exc}"
            handler.close_connection = True
        finally:
            exchange.duration_s = time.time() - started
            with self._lock:
                self._exchanges.append(exchange)
            if self.on_exchange is not None:
                self.on_exchange(exchange)

    def _answer(self, handler: _Handler, exchange: Exchange) -> None:
        assert self._respond is not None
        reply = self._respond(exchange)
        exchange.status = reply.status
        exchange.response_headers = clean_headers(reply.headers.items(), self.secrets)
        exchange.response_body = reply.body
        streamed = "text/event-stream" in {k.lower(): v for k, v in reply.headers.items()}.get("content-type", "")
        if not streamed:
            handler.start_response(reply.status, reply.headers, len(reply.body))
            handler.wfile.write(reply.body)
            handler.wfile.flush()
            return
        handler.start_response(reply.status, reply.headers, None)
        for event in _sse_events(reply.body):  # one event a chunk, as an API streams them
            handler.write_chunk(event)
        handler.end_chunks()

    def _forward(self, handler: _Handler, method: str, raw: bytes, exchange: Exchange) -> None:
        assert self.upstream is not None
        headers = {k: v for k, v in handler.headers.items() if k.lower() not in _HOP_BY_HOP}
        headers["Accept-Encoding"] = "identity"
        url = self.upstream + handler.path
        try:
            resp = self._session().request(method, url, data=raw, headers=headers, stream=True,
                                           timeout=UPSTREAM_TIMEOUT, allow_redirects=False,
                                           proxies=_proxies_for(url))
        except requests.RequestException as exc:
            message = f"claude-lab's recording proxy could not reach {self.upstream}: {exc}"
            body = error_body(502, message)
            exchange.status, exchange.error = 502, message
            exchange.response_headers = {"content-type": "application/json"}
            exchange.response_body = redact(body, self.secrets)
            handler.start_response(502, {"Content-Type": "application/json"}, len(body))
            handler.wfile.write(body)
            handler.wfile.flush()
            return
        kept = bytearray()
        try:
            length = resp.headers.get("Content-Length")
            exact = int(length) if length and length.isdigit() and not resp.raw.chunked else None
            exchange.status = resp.status_code
            exchange.response_headers = clean_headers(resp.headers.items(), self.secrets)
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
            exchange.response_body = redact(_decoded(bytes(kept), exchange.response_headers), self.secrets)


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


def _sse_events(body: bytes) -> Iterator[bytes]:
    """Split a server-sent-events body after each blank line (keeping the separators)."""
    start = 0
    while start < len(body):
        end = body.find(b"\n\n", start)
        if end < 0:
            yield body[start:]
            return
        yield body[start:end + 2]
        start = end + 2
