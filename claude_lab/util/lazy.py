"""A module imported on first use: `pd = lazy("pandas")` costs nothing until `pd.DataFrame` is touched.

The CLI answers in a fraction of a second because nothing heavy loads until a command needs it:
pandas only to build a table, for one. Unlike `importlib.util.LazyLoader`, nothing is put in
`sys.modules` before the first use, so "is pandas imported?" keeps its plain meaning.
"""
from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

__all__ = ["lazy"]


class _Lazy(ModuleType):
    def __init__(self, name: str):
        super().__init__(name)
        self.__dict__["_target"] = None

    def _load(self) -> ModuleType:
        target = self.__dict__["_target"]
        if target is None:
            target = self.__dict__["_target"] = importlib.import_module(self.__name__)
        return target

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._load(), attr)

    def __dir__(self) -> list[str]:
        return dir(self._load())


def lazy(name: str) -> Any:
    """`name`, imported when an attribute of it is first read."""
    return _Lazy(name)
