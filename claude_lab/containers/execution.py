"""Commands in containers: results, live output streams, and stopping them for real.

Every exec carries a marker in its environment (`CLAUDE_LAB_EXEC=<id>`), inherited by all
its children. Cancelling (timeout, Ctrl-C, `cancel()`) signals every process in the container
that carries the marker, so nothing keeps running after the caller stops listening.
"""
from __future__ import annotations

import codecs
import html
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Iterable, Iterator

from ..errors import ExecError, LabError, LabTimeout
from ..util.waiting import wait_until

if TYPE_CHECKING:
    from ..engine.face import EngineFace

MARKER_ENV = "CLAUDE_LAB_EXEC"
DEFAULT_MAX_OUTPUT = 32 * 1024 * 1024  # characters kept per stream in a result

_KILL_SCRIPT = r"""
sig=$1; marker=$2; n=0
for d in /proc/[0-9]*; do
  if grep -qsxz "CLAUDE_LAB_EXEC=$marker" "$d/environ" 2>/dev/null; then
    kill -s "$sig" "${d#/proc/}" 2>/dev/null && n=$((n+1))
  fi
done
echo $n
"""


@dataclass(frozen=True)
class OutputChunk:
    stream: str  # "stdout" | "stderr"
    text: str


@dataclass
class ExecResult:
    """What a command did: exit code, output (bounded to `max_output` per stream), time taken."""

    target: str
    command: list[str]
    exit_code: int | None
    stdout: str
    stderr: str
    duration_s: float
    cut: dict[str, int] = field(default_factory=dict)  # stream -> characters left out
    timed_out: bool = False
    cancelled: bool = False
    oom_killed: bool = False  # exit 137 and the engine saw the kernel's OOM killer strike in the container

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    def check(self) -> "ExecResult":
        """Raise `ExecError` unless the command exited 0; returns self for chaining."""
        if not self.ok:
            raise ExecError(
                f"`{' '.join(self.command)}` in {self.target} exited {self.exit_code}"
                + (" (OOM-killed: it hit the container's memory limit)" if self.oom_killed else "")
                + (f": {self.stderr.strip()[-500:]}" if self.stderr.strip() else ""),
                self.exit_code, self.stdout, self.stderr,
            )
        return self

    def __repr__(self) -> str:
        return (f"ExecResult(target={self.target!r}, exit_code={self.exit_code}, "
                f"stdout={self.stdout[:80]!r}, stderr={self.stderr[:80]!r}, duration_s={self.duration_s:.3f})")

    def _repr_html_(self) -> str:
        colour = "#2e7d32" if self.ok else "#c62828"
        parts = [f"<div><b>{html.escape(self.target)}</b> $ <code>{html.escape(' '.join(self.command))}</code> "
                 f"&rarr; <span style='color:{colour}'>exit {self.exit_code}</span> in {self.duration_s:.2f}s</div>"]
        for name in ("stdout", "stderr"):
            text = getattr(self, name)
            if text:
                parts.append(f"<pre style='margin:2px 0'>{html.escape(text[-20000:])}</pre>")
        return "".join(parts)


class Bounded:
    """Text kept up to `limit` characters; what is left out is counted and said at the end."""

    def __init__(self, limit: int):
        self.limit, self.parts, self.size, self.cut = limit, [], 0, 0

    def add(self, text: str) -> None:
        room = self.limit - self.size
        if room > 0:
            self.parts.append(text[:room])
            self.size += min(len(text), room)
        self.cut += max(0, len(text) - max(room, 0))

    def value(self, stream: str) -> str:
        text = "".join(self.parts)
        if self.cut:
            text += (f"\n[claude-lab: {self.cut} more characters of {stream} were cut; "
                     f"use exec_stream() to see all output]\n")
        return text


def signal_marked(engine: "EngineFace", container: str, marker: str, sig: str = "TERM", user: str | None = None) -> int:
    """Send `sig` to every process in the container started by the exec with this marker."""
    try:
        _, out, _ = engine.exec_output(container, ["sh", "-c", _KILL_SCRIPT, "sh", sig, marker], user=user)
        return int(out.strip() or 0)
    except Exception:  # the container may be gone already: then so are its processes
        return 0


def stop_marked(engine: "EngineFace", container: str, marker: str, user: str | None = None, grace: float = 3.0) -> None:
    """TERM, wait up to `grace` seconds for the processes to go, then KILL what is left."""
    if signal_marked(engine, container, marker, "TERM", user) == 0:
        return
    try:
        wait_until(lambda: signal_marked(engine, container, marker, "0", user) == 0, grace,
                   "the processes did not end on TERM", interval=0.1)
    except LabTimeout:
        signal_marked(engine, container, marker, "KILL", user)


class ExecStream:
    """Iterate over a running command's output (`OutputChunk`s); `.result` is set at the end."""

    def __init__(self, engine: "EngineFace", container: str, target: str, command: list[str], *,
                 user: str | None = None, workdir: str | None = None, env: dict[str, str] | None = None,
                 timeout: float | None = None, max_output: int = DEFAULT_MAX_OUTPUT, shown: list[str] | None = None):
        # `shown`: the command as messages and the result name it, when `command` wraps it
        self.engine, self.container, self.target, self.command = engine, container, target, shown or command
        self.user = user
        self.marker = uuid.uuid4().hex
        self.timeout = timeout
        self.result: ExecResult | None = None
        self._buffers = {"stdout": Bounded(max_output), "stderr": Bounded(max_output)}
        self._timed_out = self._cancelled = False
        self._started = time.monotonic()
        self._wall_started = time.time()
        env = {**(env or {}), MARKER_ENV: self.marker}
        self.exec_id, self._raw = engine.exec_start(container, command, user=user, workdir=workdir, env=env)
        self._timer: threading.Timer | None = None
        if timeout is not None:
            self._timer = threading.Timer(timeout, self._on_timeout)
            self._timer.daemon = True
            self._timer.start()

    def _on_timeout(self) -> None:
        self._timed_out = True
        stop_marked(self.engine, self.container, self.marker, self.user)

    def cancel(self) -> None:
        """Stop the command inside the container (not only our reading of it)."""
        self._cancelled = True
        stop_marked(self.engine, self.container, self.marker, self.user)

    def __iter__(self) -> Iterator[OutputChunk]:
        decoders = {name: codecs.getincrementaldecoder("utf-8")("replace") for name in self._buffers}
        try:
            for out, err in self._raw:
                for name, data in (("stdout", out), ("stderr", err)):
                    if data:
                        text = decoders[name].decode(data)
                        if text:
                            self._buffers[name].add(text)
                            yield OutputChunk(name, text)
        except BaseException:  # KeyboardInterrupt, GeneratorExit, a lost connection
            if self._timer:
                self._timer.cancel()
            self.cancel()
            raise
        if self._timer:
            self._timer.cancel()
        for name, dec in decoders.items():
            tail = dec.decode(b"", final=True)
            if tail:
                self._buffers[name].add(tail)
                yield OutputChunk(name, tail)
        self.result = self._finish()
        if self._timed_out:
            raise LabTimeout(
                f"`{' '.join(self.command)}` in {self.target} did not finish within {self.timeout}s; "
                f"it was stopped inside the container (partial output in .result)",
                result=self.result,
            ) from None

    def _finish(self) -> ExecResult:
        exit_code = self.engine.exec_exit_code(self.exec_id)
        if exit_code is None:  # the stream can end a moment before the engine records the exit
            def recorded() -> tuple[int] | None:
                code = self.engine.exec_exit_code(self.exec_id)
                return None if code is None else (code,)
            try:
                exit_code = wait_until(recorded, 5, "no exit code", interval=0.01)[0]
            except LabTimeout:
                pass
        oom = exit_code == 137 and not (self._timed_out or self._cancelled) and self._oom_killed()
        return ExecResult(
            target=self.target, command=self.command, exit_code=exit_code,
            stdout=self._buffers["stdout"].value("stdout"), stderr=self._buffers["stderr"].value("stderr"),
            duration_s=time.monotonic() - self._started,
            cut={k: b.cut for k, b in self._buffers.items() if b.cut},
            timed_out=self._timed_out, cancelled=self._cancelled and not self._timed_out, oom_killed=oom,
        )

    def _oom_killed(self) -> bool:
        """SIGKILL (137) is the OOM killer's signature; the engine's "oom" event (a moment late) confirms it."""
        try:
            return bool(wait_until(lambda: self.engine.oom_events(self.container, self._wall_started, time.time()),
                                   2, "no oom event", interval=0.1))
        except LabTimeout:
            return False
        except Exception:  # the engine's event log is a best-effort witness
            return False

    def wait(self) -> ExecResult:
        """Drain the stream and return the result."""
        for _ in self:
            pass
        assert self.result is not None
        return self.result


def command_argv(command: str | Iterable[str]) -> list[str]:
    """A string runs through `sh -c` (pipes, globs); a list runs as it is."""
    if isinstance(command, str):
        if not command.strip():
            raise LabError("empty command: give a command to run, for example 'ls -la'")
        return ["sh", "-c", command]
    argv = [str(a) for a in command]
    if not argv:
        raise LabError("empty command: give a command to run, for example ['ls', '-la']")
    return argv


@dataclass
class Drained:
    """How a drained command ended: status success | error | timeout | cancelled, its exit code and result."""

    status: str
    exit_code: int | None
    result: ExecResult | None


def drain(stream: ExecStream, on_chunk: Callable[[OutputChunk], None] | None = None) -> Drained:
    """Read a command to its end, passing each chunk on; a timeout or Ctrl-C stops it inside the container
    (the stream does that) and reads as status "timeout" / "cancelled" instead of raising."""
    status: str | None = None
    try:
        for chunk in stream:
            if on_chunk is not None:
                on_chunk(chunk)
    except LabTimeout:
        status = "timeout"
    except KeyboardInterrupt:
        status = "cancelled"
    result = stream.result
    exit_code = result.exit_code if result is not None else stream.engine.exec_exit_code(stream.exec_id)
    if status is None:
        status = "cancelled" if result is not None and result.cancelled else ("success" if exit_code == 0 else "error")
    return Drained(status, exit_code, result)
