"""Sampling a lab's containers over time in a background thread; a run's resource summary from it."""
from __future__ import annotations

import threading
import time
from collections import deque
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any


from ..errors import LabError
from ..engine.types import ContainerBrief
from .collector import COLUMNS, Collector, frame
from .readers import Reading
from ..util.lazy import lazy

pd = lazy("pandas")  # loaded when a DataFrame is made (the CLI starts without it)

if TYPE_CHECKING:
    from ..engine.face import EngineFace

# -- over time ---------------------------------------------------------------------------------
_ACTIVE: dict[tuple[str, str], list["StatsSampler"]] = {}
_ACTIVE_LOCK = threading.Lock()


class StatsSampler:
    """Samples a lab's containers every `interval` seconds in a background thread.

    `frame()` is everything so far in long format (one row per container per sample; the columns of
    `lab.stats()`), `latest()` the most recent sample (one row per container). `stop()` ends the
    thread; as a context manager it stops on leaving the block. While it runs, a `lab.claude()` or
    `lab.shell()` run's `RunResult.resources` gets that agent's peak memory and CPU seconds.

    The first rows come one interval after the start (CPU % needs two readings). At most
    `max_rows` rows are kept (the oldest go first).
    """

    def __init__(self, engine: "EngineFace", lab_name: str, interval: float = 1.0, source: str = "auto",
                 max_rows: int | None = 1_000_000):
        if interval <= 0:
            raise LabError(f"interval={interval!r}: give a positive number of seconds, for example 1.0")
        self.interval = float(interval)
        self.lab_name = lab_name
        self._collector = Collector(engine, lab_name, source)
        self.source = self._collector.source
        self.error: Exception | None = None  # the last failed sample's error (sampling goes on)
        self.samples = 0
        self._rows: deque[tuple] = deque(maxlen=max_rows)
        self._latest: list[tuple] = []
        # container name -> (epoch seconds, cpu seconds, mem bytes): the run summaries' material
        self._history: dict[str, deque[tuple[float, float, int]]] = {}
        self._briefs: dict[str, ContainerBrief] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._key = (engine.base_url, lab_name)
        self._thread = threading.Thread(target=self._run, name=f"claude-lab-stats[{lab_name}]", daemon=True)
        if self.source == "cgroup":  # a millisecond: done before returning, so a run started next is covered
            self._prime()
        with _ACTIVE_LOCK:
            _ACTIVE.setdefault(self._key, []).append(self)
        self._thread.start()

    # -- the thread ---------------------------------------------------------------------------
    def _prime(self) -> None:
        """The first readings: for the first CPU delta, and as the starting point of run summaries."""
        try:
            containers = self._collector.containers()
            self._remember(containers, self._collector.read(containers), time.time())
        except Exception as exc:  # noqa: BLE001 - kept for the caller; the next ticks retry
            self.error = exc

    def _run(self) -> None:
        try:
            if self.source != "cgroup":
                self._prime()
            next_at = time.monotonic() + self.interval
            while not self._stopping.wait(max(0.0, next_at - time.monotonic())):
                self._sample()
                next_at += self.interval
                now = time.monotonic()
                if next_at < now:  # a slow sample (the API path): skip ticks instead of bunching them
                    next_at = now + self.interval - (now - next_at) % self.interval
        finally:
            self._collector.close()

    def _sample(self) -> None:
        try:
            containers = self._collector.containers()
            readings = self._collector.read(containers)
        except Exception as exc:  # noqa: BLE001 - an engine hiccup must not end the sampling
            self.error = exc
            return
        now = time.time()
        ts = pd.Timestamp(now, unit="s", tz="UTC")
        rows = [tuple(r[c] for c in COLUMNS) for r in self._collector.rows(containers, readings, ts)]
        with self._lock:
            self._rows.extend(rows)
            self._latest = rows
            self.samples += 1
        self._remember(containers, readings, now)

    def _remember(self, containers: list[ContainerBrief], readings: dict[str, tuple[Reading | None, Reading]],
                  now: float) -> None:
        with self._lock:
            self._briefs = {c.name: c for c in containers}
            for c in containers:
                got = readings.get(c.id)
                if got is not None:
                    hist = self._history.setdefault(c.name, deque(maxlen=self._rows.maxlen))
                    hist.append((now, got[1].cpu_ns / 1e9, got[1].mem_bytes))

    # -- results ------------------------------------------------------------------------------
    def frame(self) -> pd.DataFrame:
        """Every sample so far, long format (timestamp, name, ... one row per container per sample)."""
        with self._lock:
            rows = list(self._rows)
        return frame(rows)

    def latest(self) -> pd.DataFrame:
        """The most recent sample: one row per container (empty before the first interval has passed)."""
        with self._lock:
            rows = list(self._latest)
        return frame(rows)

    def summary(self, container: str, since: float, until: float | None = None) -> dict[str, Any] | None:
        """Peak memory and CPU seconds of one container between two epoch times, or None without samples.

        CPU seconds are the difference of the container's CPU counter between the last reading before
        `since` and, at the end, a fresh reading (cgroup source) or the last sample. Peak memory is the
        highest figure read in the window, so a peak shorter than the interval can be missed. `since`
        and `until` in the result say what was covered (a sampler started after the run covers less).
        """
        with self._lock:
            points = list(self._history.get(container, ()))
            brief = self._briefs.get(container)
        if brief is not None and self.running:
            reading = self._collector.read_one(brief)
            if reading is not None:
                points.append((time.time(), reading.cpu_ns / 1e9, reading.mem_bytes))
        until = time.time() if until is None else until
        inside = [p for p in points if since <= p[0] <= until]
        if not inside:
            return None
        before = [p for p in points if p[0] < since]
        # From the last reading before the run: an agent is idle between runs, so this counts the whole
        # run and next to nothing else (interpolating would cut off the run's own first moments).
        start = before[-1] if before else inside[0]  # no reading before: the sampler started later
        start_cpu, start_at = start[1], start[0]
        end = inside[-1]
        return {
            "peak_mem_bytes": int(max(p[2] for p in inside)),
            "cpu_seconds": round(max(0.0, end[1] - start_cpu), 6),
            "samples": len(inside),
            "interval": self.interval,
            "source": self.source,
            "since": datetime.fromtimestamp(start_at, timezone.utc).isoformat(),
            "until": datetime.fromtimestamp(end[0], timezone.utc).isoformat(),
        }

    # -- control ------------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._thread.is_alive() and not self._stopping.is_set()

    def stop(self, timeout: float | None = 10.0) -> None:
        """End the sampling thread (idempotent); the samples stay readable."""
        self._stopping.set()
        with _ACTIVE_LOCK:
            samplers = _ACTIVE.get(self._key, [])
            if self in samplers:
                samplers.remove(self)
            if not samplers:
                _ACTIVE.pop(self._key, None)
        if self._thread is not threading.current_thread():
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise LabError(f"the stats sampler of lab {self.lab_name} did not stop within {timeout}s "
                               f"(a stats request to the engine is hanging)")

    def __enter__(self) -> "StatsSampler":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return (f"<StatsSampler lab={self.lab_name!r} every {self.interval:g}s via {self.source}: {state}, "
                f"{self.samples} samples>")


def active_samplers(engine: "EngineFace", lab_name: str) -> list[StatsSampler]:
    with _ACTIVE_LOCK:
        return list(_ACTIVE.get((engine.base_url, lab_name), ()))


def run_resources(engine: "EngineFace", lab_name: str, container: str, since: datetime) -> dict[str, Any] | None:
    """A run's resource summary from the lab's most recent running sampler that saw the container."""
    start = since.timestamp()
    for sampler in reversed(active_samplers(engine, lab_name)):
        got = sampler.summary(container, start)
        if got is not None:
            return got
    return None

