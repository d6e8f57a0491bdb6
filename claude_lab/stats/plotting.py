"""`plot_stats`: CPU and memory per container over time, from `lab.stats()` / `sampler.frame()` frames.

matplotlib is an optional extra (`pip install 'claude-lab[plot]'`): it and its dependencies weigh
tens of megabytes that a lab without plots does not need. The figure is a bare
`matplotlib.figure.Figure` (no pyplot): no global state, no second copy shown in Jupyter, and it
works without a display.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import pandas as pd

from ..errors import LabError

if TYPE_CHECKING:
    from matplotlib.figure import Figure

_LABELS = {
    "cpu_percent": ("CPU %", 1.0),
    "cpu_seconds": ("CPU seconds", 1.0),
    "mem_bytes": ("memory (MiB)", 1 / (1 << 20)),
    "mem_percent": ("memory % of limit", 1.0),
    "net_rx": ("network in (MiB)", 1 / (1 << 20)),
    "net_tx": ("network out (MiB)", 1 / (1 << 20)),
    "blk_read": ("block read (MiB)", 1 / (1 << 20)),
    "blk_write": ("block write (MiB)", 1 / (1 << 20)),
    "pids": ("processes", 1.0),
}


def _short(name: str) -> str:
    """'mylab_agent-001' -> 'agent-001': lab names and agent ids never contain '_'."""
    return name.split("_", 1)[1] if "_" in name else name


def plot_stats(df: pd.DataFrame, metrics: Sequence[str] = ("cpu_percent", "mem_bytes"),
               figsize: tuple[float, float] | None = None) -> "Figure":
    """One panel per metric (CPU % and memory by default), one line per container, over `timestamp`."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise LabError("plot_stats needs matplotlib: pip install 'claude-lab[plot]' (or pip install matplotlib)"
                       ) from None
    missing = [c for c in ("timestamp", "name", *metrics) if c not in df.columns]
    if missing:
        raise LabError(f"plot_stats needs a frame from lab.stats() or sampler.frame(); this one lacks "
                       f"{', '.join(missing)}")
    unknown = [m for m in metrics if m not in _LABELS]
    if unknown:
        raise LabError(f"cannot plot {', '.join(unknown)}: choose from {', '.join(_LABELS)}")
    fig = Figure(figsize=figsize or (10, 2.6 * len(metrics)), layout="constrained")
    axes = fig.subplots(len(metrics), 1, sharex=True, squeeze=False)[:, 0]
    data = df.sort_values("timestamp")
    for ax, metric in zip(axes, metrics):
        label, scale = _LABELS[metric]
        for name, part in data.groupby("name", sort=True):
            ax.plot(part["timestamp"], part[metric] * scale, marker="o" if len(part) == 1 else None,
                    markersize=4, label=_short(str(name)))
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
    axes[0].legend(loc="upper left", fontsize="small", ncol=max(1, min(4, data["name"].nunique() // 6 + 1)))
    axes[-1].set_xlabel("time (UTC)")
    return fig
