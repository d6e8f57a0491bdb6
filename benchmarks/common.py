"""What the benchmarks share: a free host port, git's identity for scratch repositories, SIGTERM as Ctrl-C, and a
scratch lab that is removed whatever happens."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

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


@contextmanager
def scratch_lab(prefix: str, git: bool = False, **settings: Any) -> Iterator[Any]:
    """A lab `<prefix>-<8 hex>` in a temporary project (a git repository with one commit when `git`), on free
    ports. Ctrl-C or SIGTERM inside the block print a line and end it; the lab (volumes too) and its folder are
    removed either way. The project folder is `lab.config.project_dir`."""
    from claude_lab import Lab

    stop_on_sigterm()
    folder = Path(tempfile.mkdtemp(prefix=f"claude-lab-{prefix}-"))
    if git:
        (folder / "README.md").write_text("# bench\n")
        for cmd in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "-m", "start"]):
            subprocess.run(["git", "-C", str(folder), *cmd], check=True, capture_output=True,
                           env={**os.environ, **GIT_ENV})
    lab = Lab(folder, name=f"{prefix}-{uuid.uuid4().hex[:8]}", postgres_port=free_port(), redis_port=free_port(),
              **settings)
    try:
        yield lab
    except KeyboardInterrupt:
        print("interrupted; cleaning up")
    finally:
        lab.destroy(volumes=True)
        shutil.rmtree(folder, ignore_errors=True)
