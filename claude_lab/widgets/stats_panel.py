"""The stats panel: CPU and memory per container over the last minutes, as a small chart.

The samples come from the lab's stats sampler (`lab.watch_stats()`: `.frame()` is a long
DataFrame with timestamp, name, cpu_percent, mem_bytes, ...); the chart is `plot_stats`'s
matplotlib figure (no pyplot: the kernel's own plotting state is left alone) as a PNG in an
Image widget. Without a sampler the panel says "stats unavailable" and why.
"""
from __future__ import annotations

import html
import io
import time
from typing import TYPE_CHECKING, Any

import ipywidgets as widgets
import pandas as pd

from .refresher import Refresher

if TYPE_CHECKING:
    from ..lab import Lab

UNAVAILABLE = "stats unavailable"


def start_sampler(lab: "Lab", interval: float = 2.0, window: float = 300.0) -> tuple[Any, str | None]:
    """Start `lab.watch_stats(interval)`; returns (sampler, None) or (None, why there is none)."""
    try:  # keep about `window` seconds of samples (for up to 50 containers), not a day's worth
        return lab.watch_stats(interval=interval, max_rows=int(window / interval + 1) * 50), None
    except Exception as exc:  # no engine, or one whose stats cannot be read
        return None, f"{UNAVAILABLE}: {exc}"


def draw_chart(frame: pd.DataFrame, window_s: float = 300.0) -> bytes:
    """A PNG of CPU % and memory per container over the last `window_s` seconds of `frame`."""
    from matplotlib.dates import DateFormatter

    from ..stats.plotting import plot_stats

    stamps = pd.to_datetime(frame["timestamp"], utc=True)
    end = stamps.max().floor("us")  # matplotlib's dates are datetimes: microseconds at most
    start = end - pd.Timedelta(seconds=window_s)
    recent = frame[stamps >= start]
    fig = plot_stats(recent, figsize=(9, 4.2))
    for ax in fig.axes:  # always the whole window (a first sample alone would get an axis of years)
        ax.set_xlim(start.to_pydatetime(), (end + pd.Timedelta(seconds=1)).to_pydatetime())
        ax.xaxis.set_major_formatter(DateFormatter("%H:%M:%S"))
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=72)
    return buf.getvalue()


class StatsPanel(widgets.VBox):
    """Live CPU and memory per container. Pass a running sampler, or it starts (and owns) its own."""

    def __init__(self, lab: "Lab", sampler: Any = None, problem: str | None = None, window: float = 300.0,
                 refresh: float = 2.0, interval: float = 2.0):
        note = widgets.HTML()
        note.add_class("claude-lab-stats-note")
        image = widgets.Image(format="png", layout=widgets.Layout(max_width="100%", display="none"))  # until drawn
        super().__init__([note, image])
        self.add_class("claude-lab-stats")
        self.lab, self.window = lab, window
        self.note, self.image = note, image
        self.errors: list[str] = []
        self.last_drawn: float | None = None
        self._stopped = False
        self._owns_sampler = False
        if sampler is None and problem is None:
            sampler, problem = start_sampler(lab, interval, window)
            self._owns_sampler = sampler is not None
        self.sampler = sampler
        self.problem = problem
        self.refresher: Refresher | None = None
        if sampler is None:
            self.note.value = f"<i>{html.escape(problem or UNAVAILABLE)}</i>"
        else:
            self.note.value = "<i>collecting samples…</i>"
            self.refresher = Refresher("stats", refresh, self.redraw, self._error).start()

    def redraw(self) -> None:
        """Draw the chart from the sampler's samples so far."""
        if self._stopped or self.sampler is None:
            return
        frame = self.sampler.frame()
        if frame is None or len(frame) == 0:
            problem = getattr(self.sampler, "error", None)
            if problem is not None:
                self._error(problem)
            return
        png = draw_chart(frame, self.window)
        if self._stopped:
            return
        self.image.value = png
        self.image.layout.display = None
        self.last_drawn = time.time()
        self.note.value = (f"CPU and memory per container, last {self.window / 60:g} min "
                           f"<small>(updated {time.strftime('%H:%M:%S')})</small>")

    def _error(self, exc: BaseException) -> None:
        text = (f"{UNAVAILABLE}: this version of claude-lab cannot draw them ({exc})"
                if isinstance(exc, ImportError) else f"stats: {exc}")
        self.errors.append(text)
        if not self._stopped:
            self.note.value = f"<span style='color:#c62828'>{html.escape(text)}</span>"

    def stop(self) -> None:
        """Stop redrawing (and the sampler, when this panel started it)."""
        if self._stopped:
            return
        self._stopped = True
        if self.refresher is not None:
            self.refresher.stop()
        if self._owns_sampler:
            try:
                self.sampler.stop()
            except Exception:
                pass

    def close(self) -> None:
        self.stop()
        self.note.close()
        self.image.close()
        super().close()
