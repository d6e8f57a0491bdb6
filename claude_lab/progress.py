"""Build progress as tqdm bars (notebook widgets where ipywidgets is there, text bars elsewhere): the
default drawing of `lab.build()` / `lab.up()` progress, provided to the core through `util.views`."""
from __future__ import annotations

from .images import BuildEvent


class TqdmProgress:
    """Default build progress: a tqdm bar per image (steps), with step lines, optionally all output."""

    def __init__(self, verbose: bool = False):
        from tqdm.auto import tqdm

        self._tqdm = tqdm
        self.verbose = verbose
        self._bars: dict[str, object] = {}

    def __call__(self, event: BuildEvent) -> None:
        tqdm = self._tqdm
        if event.kind == "skipped":
            tqdm.write(f"[{event.image}] {event.text}")
        elif event.kind == "step":
            bar = self._bars.get(event.image)
            if bar is None:
                bar = self._bars[event.image] = tqdm(total=event.total, desc=event.image, unit="step", leave=True)
            bar.n = event.step  # type: ignore[attr-defined]
            bar.set_postfix_str(event.text[:60])  # type: ignore[attr-defined]
            bar.refresh()  # type: ignore[attr-defined]
            tqdm.write(f"[{event.image}] step {event.step}/{event.total}: {event.text}")
        elif event.kind == "output" and self.verbose:
            tqdm.write(f"[{event.image}] {event.text}")
        elif event.kind == "done":
            bar = self._bars.pop(event.image, None)
            if bar is not None:
                bar.close()  # type: ignore[attr-defined]
            tqdm.write(f"[{event.image}] {event.text}")
