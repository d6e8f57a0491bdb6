"""Run one call over many items at once, for engine calls that each wait on the daemon (removing a lab's
containers, networks, volumes): the whole takes as long as the slowest, not the sum."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Iterable, TypeVar

T = TypeVar("T")

MAX_THREADS = 8


def parallel(fn: Callable[..., T], items: Iterable[Any], *args: Any, threads: int = MAX_THREADS) -> list[T]:
    """`[fn(item, *args) for item in items]`, concurrently. Every item is tried; then the first error (in the
    items' order) is raised, so one failure never leaves the others undone."""
    work = list(items)
    if len(work) <= 1:
        return [fn(item, *args) for item in work]
    with ThreadPoolExecutor(min(threads, len(work)), thread_name_prefix="claude-lab-parallel") as pool:
        futures = [pool.submit(fn, item, *args) for item in work]
    errors = [f.exception() for f in futures if f.exception() is not None]
    if errors:
        raise errors[0]  # type: ignore[misc]
    return [f.result() for f in futures]


def together(*jobs: Callable[[], Any]) -> None:
    """Call different things at once (`parallel` over calls); every one runs, then the first error is raised."""
    parallel(lambda job: job(), jobs)
