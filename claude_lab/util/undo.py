"""Undo what one call created when it fails half-way: a stack of removals, run newest first."""
from __future__ import annotations

from typing import Callable

from ..errors import LabError


class Undo:
    """Note each object *before* the call that creates it (so Ctrl-C between the two is undone too),
    then `rollback()` on failure. Used as a context manager it rolls back on any exception.

    >>> with Undo() as undo:
    ...     undo.push("network n1", lambda: engine.remove_network("n1"))
    ...     engine.create_network("n1", labels)
    """

    def __init__(self, quiet: tuple[type[BaseException], ...] = (LabError,)):
        self._steps: list[tuple[str, Callable[[], object]]] = []
        self._quiet = quiet

    def push(self, what: str, remove: Callable[[], object]) -> None:
        self._steps.append((what, remove))

    def drop(self, what: str) -> None:
        """Forget a noted object: it turned out to be someone else's (a racing creator's)."""
        self._steps = [s for s in self._steps if s[0] != what]

    def keep_only(self, *prefixes: str) -> None:
        """Forget everything but the objects whose description starts with one of `prefixes`."""
        self._steps = [s for s in self._steps if s[0].startswith(prefixes)]

    @property
    def noted(self) -> list[str]:
        return [what for what, _ in self._steps]

    def rollback(self) -> None:
        while self._steps:
            _, remove = self._steps.pop()
            try:
                remove()
            except self._quiet:
                pass

    def __enter__(self) -> "Undo":
        return self

    def __exit__(self, kind: object, exc: object, tb: object) -> None:
        if kind is not None:
            self.rollback()
