"""Background HTTP servers of the lab (ScriptedModel, the recording proxy): the server, its handler base,
and `BackgroundServer`, the start/stop/url of an object that serves.

Both serve the Claude Code CLI: HTTP/1.1 keep-alive, streamed responses that must leave at once
(TCP_NODELAY), and a stop that drops open connections so clients fail fast instead of hanging.
"""
from __future__ import annotations

import errno
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from ..errors import LabError, PortInUse


class LabHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], family: int,
                 owner: Any):
        self.address_family = family
        self.owner = owner  # has `_handle(handler, method)`: the ScriptedModel or the ModelProxy
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(address, handler)

    def handle_error(self, request: object, client_address: object) -> None:
        """A client hanging up (a stopped CLI) is normal: no traceback on stderr for it."""
        if isinstance(sys.exc_info()[1], (ConnectionResetError, BrokenPipeError, ConnectionAbortedError)):
            return
        super().handle_error(request, client_address)


class StreamingHandler(BaseHTTPRequestHandler):
    # HTTP/1.1 so clients (the SDK's httpx, Node's undici) keep connections alive: every response
    # carries Content-Length or is chunked. TCP_NODELAY: with Nagle a small write waits for the
    # ACK of the previous one, which a client delays up to 40 ms -- a stall per streamed event.
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: LabHTTPServer

    def setup(self) -> None:
        super().setup()
        with self.server.connections_lock:
            self.server.connections.add(self.connection)

    def finish(self) -> None:
        with self.server.connections_lock:
            self.server.connections.discard(self.connection)
        super().finish()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass  # the owners record what matters; stderr noise helps nobody

    def do_GET(self) -> None:
        self.server.owner._handle(self, "GET")

    def do_POST(self) -> None:
        self.server.owner._handle(self, "POST")

    def read_body(self) -> bytes:
        """The request body, whether sent with Content-Length or chunked (Node's fetch does both)."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            parts: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""


def serve_in_background(server: LabHTTPServer, name: str) -> threading.Thread:
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, name=name, daemon=True)
    thread.start()
    return thread


def shutdown(server: LabHTTPServer, thread: threading.Thread | None) -> None:
    """Stop serving and drop open connections."""
    server.shutdown()
    server.server_close()
    with server.connections_lock:
        open_connections = list(server.connections)
    for conn in open_connections:
        try:
            conn.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
    if thread is not None:
        thread.join(timeout=5)


class BackgroundServer:
    """Serves `handler` on (`host`, port) in a daemon thread: `start()`, `stop()`, a context manager, `port`, `url`.

    Subclasses set `handler`, `what` (for messages, "the scripted model") and `thread_name`, call
    `_init_server(host, port)` in their `__init__`, and implement `_handle(handler, method)`.
    """

    handler: type[StreamingHandler] = StreamingHandler
    what = "the server"
    thread_name = "claude-lab-server"

    def _init_server(self, host: str, port: int) -> None:
        self.host, self._requested_port = host, port
        self._server: LabHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def _handle(self, handler: StreamingHandler, method: str) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def start(self) -> Any:
        """Bind and serve in a background thread; returns self (`m = ScriptedModel(...).start()`)."""
        if self._server is not None:
            return self
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        where = f"{self.host}:{self._requested_port}"
        try:
            server = LabHTTPServer((self.host, self._requested_port), self.handler, family, self)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise PortInUse(f"cannot serve {self.what} on {where}: the port is in use; pass port=0 to take a "
                                f"free one", self._requested_port) from exc
            raise LabError(f"cannot serve {self.what} on {where}: {exc.strerror or exc}; is that an address of "
                           f"this machine?") from exc
        self._thread = serve_in_background(server, f"{self.thread_name}-{server.server_address[1]}")
        self._server = server
        return self

    def stop(self) -> None:
        """Stop serving and drop open connections, so clients fail fast instead of hanging."""
        server, thread = self._server, self._thread
        if server is None:
            return
        self._server = self._thread = None
        shutdown(server, thread)

    def __enter__(self) -> Any:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def serving(self) -> bool:
        return self._server is not None

    @property
    def port(self) -> int:
        """The bound port (the real one when port=0 was asked for)."""
        if self._server is None:
            raise LabError(f"{self.what} is not running; call .start() first")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """Its base URL, e.g. http://127.0.0.1:PORT (for ANTHROPIC_BASE_URL, the SDK's base_url)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"
