"""What the benchmarks share: a free host port, git's identity for scratch repositories, SIGTERM as Ctrl-C."""
from __future__ import annotations

import signal
import socket

GIT_ENV = {"GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "bench@localhost", "GIT_COMMITTER_NAME": "bench",
           "GIT_COMMITTER_EMAIL": "bench@localhost"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_on_sigterm() -> None:
    """SIGTERM (a CI timeout, `kill`) cleans up like Ctrl-C: the benchmark's `finally` removes its lab."""
    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
