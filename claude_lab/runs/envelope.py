"""A run's command in one exec, between its workspace steps: "before", the command, "after".

A run used to be four round trips to the container (the "before" step, the command, the "after" step,
the start snapshot), each an exec with its own Python start-up. The envelope is one: a small Python
program in the container runs the "before" step (see `workspace`), reports it on stderr, runs the
command as its child (stdout and stderr pass straight through) while it takes the start snapshot the
run store needs (a bundle of the start commit: a spare core's work while the command starts up), runs
the "after" step and reports it with the snapshot, then exits with the command's exit code. Its reports
are single lines on stderr that begin with an
ASCII record separator and a tag made for the run (`\\x1eclaude-lab:<random>:before {json}`);
`MarkerScan` takes them out of the stream, so neither a Claude run's stderr nor a shell run's output
ever shows them.

When the "before" step does not give a start commit (the model proxy unreachable, the token refused,
git failing), the program stops there and the command never starts. When the run is stopped (timeout,
`cancel()`), the envelope is stopped with it and no "after" report comes: the runner then runs that
step alone (`workspace.finish`), as it always did.
"""
from __future__ import annotations

import json
import secrets
from typing import TYPE_CHECKING, Iterator

from ..containers.execution import ExecStream, OutputChunk
from ..errors import LabError
from .workspace import PYTHON, STEPS

if TYPE_CHECKING:
    from ..engine.face import EngineFace

RS = "\x1e"

_ENVELOPE = STEPS + r'''
a = json.loads(sys.argv[1])
tag = "\x1e" + a["tag"]


def report(kind, out):
    sys.stderr.write(tag + kind + " " + json.dumps(out) + "\n")
    sys.stderr.flush()


import time
t0 = time.monotonic()
out = Steps(a).before()
out["took"] = round(time.monotonic() - t0, 4)  # seconds the step took in here: benchmarks read it
report("before", out)
if not out.get("start_commit") or out.get("git_error"):
    sys.exit(0)
a["start_commit"] = out["start_commit"]
snap = {}
try:
    child = subprocess.Popen(sys.argv[2:])
except OSError as e:
    sys.stderr.write(f"claude-lab: cannot run {sys.argv[2]}: {e.strerror or e}\n")
    child, code = None, 127
if child is not None:
    if a.get("snapshot") is not None:  # the start snapshot while the command starts up: off the run's path
        snap = Steps(a).snapshot()  # {} if it could not be made: the recorder makes it alone
        a["snapshot"] = None  # taken: the "after" step makes none
    code = child.wait()
if code < 0:  # killed by a signal: what a shell reports
    code = 128 - code
t0 = time.monotonic()
out = Steps(a).after()
out.update(snap)
out["took"] = round(time.monotonic() - t0, 4)
report("after", out)
sys.exit(code)
'''


class MarkerScan:
    """Takes the envelope's report lines out of a text stream that arrives in arbitrary pieces."""

    def __init__(self, tag: str):
        self.start = RS + tag
        self._pending = ""  # a tail that may be the start of a report
        self._inside: list[str] | None = None  # the pieces of a report line being read
        self.reports: dict[str, dict] = {}

    def feed(self, text: str) -> str:
        """The text without reports; the reports found go into `.reports` by kind."""
        out: list[str] = []
        while text:
            if self._inside is not None:
                end = text.find("\n")
                if end < 0:
                    self._inside.append(text)
                    break
                self._inside.append(text[:end])
                line, self._inside, text = "".join(self._inside), None, text[end + 1:]
                kind, _, payload = line.partition(" ")
                try:
                    self.reports[kind] = json.loads(payload)
                except ValueError:  # not one of ours after all
                    out.append(self.start + line + "\n")
                continue
            buf, self._pending = self._pending + text, ""
            at = buf.find(self.start)
            if at < 0:
                cut = buf.rfind(RS, max(0, len(buf) - len(self.start) + 1))
                if cut >= 0 and self.start.startswith(buf[cut:]):
                    buf, self._pending = buf[:cut], buf[cut:]
                out.append(buf)
                break
            out.append(buf[:at])
            self._inside, text = [], buf[at + len(self.start):]
        return "".join(out)

    def flush(self) -> str:
        """What is left at the end of the stream (an unfinished report is text after all)."""
        tail = self._pending + (self.start + "".join(self._inside) if self._inside is not None else "")
        self._pending, self._inside = "", None
        return tail


class Envelope:
    """Start `argv` in `container` inside the workspace steps; `begin()` waits for the "before" report,
    iterating gives the command's output, `.after` is the "after" report (None if it never came)."""

    def __init__(self, engine: "EngineFace", container: str, target: str, argv: list[str], args: dict, *,
                 workdir: str, env: dict[str, str] | None, timeout: float | None, max_output: int):
        tag = f"claude-lab:{secrets.token_hex(8)}:"
        self.container, self.run_id = container, args["run_id"]
        self.scan = MarkerScan(tag)
        command = [*PYTHON, _ENVELOPE, json.dumps({**args, "tag": tag}), *argv]
        self.stream = ExecStream(engine, container, target, command, shown=argv, workdir=workdir, env=env,
                                 timeout=timeout, max_output=max_output)
        self._chunks = iter(self.stream)
        self._early: list[OutputChunk] = []

    @property
    def after(self) -> dict | None:
        return self.scan.reports.get("after")

    def _clean(self, chunk: OutputChunk) -> OutputChunk | None:
        if chunk.stream != "stderr":
            return chunk
        text = self.scan.feed(chunk.text)
        return OutputChunk("stderr", text) if text else None

    def begin(self) -> dict:
        """The "before" step's report. Raises LabError when the program ended without one."""
        for chunk in self._chunks:
            kept = self._clean(chunk)
            if kept is not None:
                self._early.append(kept)
            if "before" in self.scan.reports:
                return self.scan.reports["before"]
        said = "".join(c.text for c in self._early) + self.scan.flush()
        code = self.stream.result.exit_code if self.stream.result else None
        raise LabError(f"the workspace step before the run failed in {self.container} (exit {code}): "
                       f"{said.strip()[-800:] or 'no output'}")

    def drain(self) -> None:
        """Read to the end: after a "before" report without a start commit the program is ending anyway."""
        for _ in self._chunks:
            pass

    def __iter__(self) -> Iterator[OutputChunk]:
        early, self._early = self._early, []
        yield from early
        for chunk in self._chunks:
            kept = self._clean(chunk)
            if kept is not None:
                yield kept
        tail = self.scan.flush()
        if tail:
            yield OutputChunk("stderr", tail)
