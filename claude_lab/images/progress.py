"""Build progress as plain lines: the core's default reporter (front ends draw bars of their own)."""
from __future__ import annotations

import sys
from typing import Callable, TextIO

from ..util import views
from .builder import BuildEvent

Progress = Callable[[BuildEvent], None]


class LineProgress:
    """One line per image started, step and result (`verbose`: the build's output too), to `stream`."""

    def __init__(self, verbose: bool = False, stream: TextIO | None = None):
        self.verbose = verbose
        self.stream = stream

    def __call__(self, event: BuildEvent) -> None:
        if event.kind == "step":
            text = f"step {event.step}/{event.total}: {event.text}"
        elif event.kind in ("skipped", "done") or (event.kind == "output" and self.verbose):
            text = event.text
        else:
            return
        print(f"[{event.image}] {text}", file=self.stream or sys.stdout, flush=True)


def reporter(progress: "Progress | bool | None") -> "Progress | None":
    """What a `progress=` keyword means: True the default drawing (tqdm bars, which the package root
    provides as the view "build_progress"; plain lines without it), False/None nothing, a callable itself."""
    if progress is True:
        factory = views.view("build_progress")
        return factory() if factory is not None else LineProgress()
    if progress is False or progress is None:
        return None
    return progress
