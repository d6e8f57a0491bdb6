"""Doors from the core to the front ends above it: `lab.panel()` is drawn by widgets/, build progress by
`progress.py` (tqdm bars).

The core may not import a front end (the layer contract), so the package root (`claude_lab/__init__`,
above every layer) provides the factories here and the core asks for them: dependency inversion
through a registry of stdlib-only names.
"""
from __future__ import annotations

from typing import Any, Callable

_VIEWS: dict[str, Callable[..., Any]] = {}


def provide(name: str, factory: Callable[..., Any]) -> None:
    _VIEWS[name] = factory


def view(name: str) -> Callable[..., Any] | None:
    return _VIEWS.get(name)
