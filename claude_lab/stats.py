"""Resource stats of a lab's containers as pandas DataFrames: `lab.stats()` and `lab.watch_stats()`.

The figures mean what `docker stats` means (Docker's CLI, `calculateCPUPercentUnix` and
`calculateMemUsageUnixNoCache`):

- `cpu_percent`: the container's CPU time over the sampling interval, as a share of one CPU
  (100 = one full core; a container using two cores shows 200). `cpu_seconds` is its total CPU time.
- `mem_bytes`: memory usage net of inactive page cache (`total_inactive_file` on cgroup v1,
  `inactive_file` on v2); `mem_limit` is the container's limit, or the engine's memory without one.
- `net_rx`/`net_tx`: bytes over the container's interfaces (not `lo`); `blk_read`/`blk_write`: bytes
  of block I/O; `pids`: processes and threads. All counters are totals since the container started.

Stopped containers are rows too, with their `state` and zeros in every figure (their cgroup is
gone, as `docker stats --all` shows them).

Two ways to read, chosen per lab (`source="auto"`):

- `"cgroup"`: where the engine runs on this machine, read each container's cgroup files directly
  (v1 or v2, as `docker info` says): about 0.1 ms per container (20 containers in 2-3 ms on a loaded
  2-core machine), read serially: a thread pool measured slower at this size (benchmarks/stats.py).
- `"api"`: the engine's stats API for a remote engine, one request per container in parallel; the
  engine waits about a second for its second CPU sample, so a sample of the lab takes 1-2 s.
"""
from __future__ import annotations

import os
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Iterable

import pandas as pd

from . import naming as n
from .engine import CgroupLayout, ContainerBrief, Engine
from .errors import LabError

if TYPE_CHECKING:
    from .lab import Lab

COLUMNS = ["timestamp", "name", "role", "agent", "group", "cpu_percent", "cpu_seconds", "mem_bytes", "mem_limit",
           "mem_percent", "net_rx", "net_tx", "blk_read", "blk_write", "pids", "state"]
_FLOATS = ("cpu_percent", "cpu_seconds", "mem_percent")
_INTS = ("mem_bytes", "mem_limit", "net_rx", "net_tx", "blk_read", "blk_write", "pids")
SOURCES = ("auto", "cgroup", "api")
_LIVE_STATES = ("running", "paused", "restarting")
_API_WORKERS = 10  # docker-py's connection pool holds 10; more threads only churn connections


@dataclass(frozen=True)
class Reading:
    """One container's counters at one moment, from either source."""

    at_ns: int  # time.monotonic_ns() of the read (cgroup), for CPU deltas over wall time
    cpu_ns: int
    mem_usage: int
    mem_inactive_file: int
    mem_limit: int
    net_rx: int = 0
    net_tx: int = 0
    blk_read: int = 0
    blk_write: int = 0
    pids: int = 0
    system_ns: int | None = None  # the host's CPU time (API only): docker's CPU % uses it
    online_cpus: int = 0

    @property
    def mem_bytes(self) -> int:
        """Usage net of inactive page cache, as docker stats shows it."""
        if self.mem_inactive_file < self.mem_usage:
            return self.mem_usage - self.mem_inactive_file
        return self.mem_usage


def cpu_percent(prev: Reading | None, cur: Reading) -> float:
    """CPU % between two readings: 100 is one full core (docker stats' figure)."""
    if prev is None:
        return 0.0
    cpu_delta = cur.cpu_ns - prev.cpu_ns
    if cpu_delta <= 0:
        return 0.0
    if cur.system_ns is not None and prev.system_ns is not None:  # the API's host-time base, as docker does
        system_delta = cur.system_ns - prev.system_ns
        return cpu_delta / system_delta * cur.online_cpus * 100.0 if system_delta > 0 else 0.0
    wall = cur.at_ns - prev.at_ns  # the same ratio: host CPU time / online CPUs is wall time
    return cpu_delta / wall * 100.0 if wall > 0 else 0.0


# -- cgroup files ------------------------------------------------------------------------------
def _read(path: str) -> bytes:
    """A whole small kernel file (os.read: a third of the cost of open().read() for these)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        data = os.read(fd, 65536)
        if len(data) < 65536:
            return data
        chunks = [data]
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _value(path: str, key: bytes) -> int:
    """One `key value` line of memory.stat / cpu.stat, without parsing the other forty."""
    text = b"\n" + _read(path)
    at = text.find(b"\n" + key + b" ")
    if at < 0:
        return 0
    start = at + len(key) + 2
    end = text.find(b"\n", start)
    return int(text[start:] if end < 0 else text[start:end])


_BLKIO_FILES = ("blkio.bfq.io_service_bytes_recursive", "blkio.io_service_bytes_recursive",
                "blkio.throttle.io_service_bytes_recursive", "blkio.throttle.io_service_bytes")
_blkio_present: list[tuple[str, ...]] = []  # which of those the kernel has (the same in every cgroup)


def _blkio_v1(directory: str) -> tuple[int, int]:
    """Bytes read/written, from the first blkio file with entries, in the order runc reads them."""
    if not _blkio_present:
        _blkio_present.append(tuple(n for n in _BLKIO_FILES if os.path.exists(f"{directory}/{n}")))
    for name in _blkio_present[0]:
        try:
            text = _read(f"{directory}/{name}")
        except OSError:
            continue
        read = write = 0
        entries = False
        for line in text.splitlines():
            parts = line.split()
            if len(parts) != 3:  # "Total N"
                continue
            entries = True
            op = parts[1][:1].lower()
            if op == b"r":
                read += int(parts[2])
            elif op == b"w":
                write += int(parts[2])
        if entries:
            return read, write
    return 0, 0


def _io_v2(path: str) -> tuple[int, int]:
    read = write = 0
    for line in _read(path).splitlines():
        for field in line.split()[1:]:
            key, _, value = field.partition(b"=")
            if key == b"rbytes":
                read += int(value)
            elif key == b"wbytes":
                write += int(value)
    return read, write


def _net(procs_path: str) -> tuple[int, int]:
    """Bytes in/out of the container's network namespace (one of its processes'), without `lo`."""
    first = _read(procs_path).split(b"\n", 1)[0].strip()
    if not first:
        return 0, 0
    try:
        text = _read(f"/proc/{int(first)}/net/dev")
    except OSError:  # the process just ended, or /proc is not ours to read
        return 0, 0
    rx = tx = 0
    for line in text.splitlines()[2:]:
        iface, _, data = line.partition(b":")
        if iface.strip() == b"lo":
            continue
        fields = data.split()
        if len(fields) >= 9:
            rx += int(fields[0])
            tx += int(fields[8])
    return rx, tx


def read_cgroup_v1(dirs: dict[str, str], mem_total: int = 0) -> Reading:
    """A container's counters from its cgroup v1 directories (controller -> directory)."""
    cpu_ns = int(_read(f"{dirs['cpuacct']}/cpuacct.usage"))
    at = time.monotonic_ns()
    mem = dirs["memory"]
    usage = int(_read(f"{mem}/memory.usage_in_bytes"))
    inactive = _value(f"{mem}/memory.stat", b"total_inactive_file")
    limit = int(_read(f"{mem}/memory.limit_in_bytes"))
    if mem_total and limit > mem_total:  # "no limit" is a huge number: docker shows the host's memory
        limit = mem_total
    blk_read, blk_write = _blkio_v1(dirs["blkio"])
    pids = int(_read(f"{dirs['pids']}/pids.current"))
    rx, tx = _net(f"{mem}/cgroup.procs")
    return Reading(at_ns=at, cpu_ns=cpu_ns, mem_usage=usage, mem_inactive_file=inactive, mem_limit=limit,
                   net_rx=rx, net_tx=tx, blk_read=blk_read, blk_write=blk_write, pids=pids)


def read_cgroup_v2(directory: str, mem_total: int = 0) -> Reading:
    """A container's counters from its cgroup v2 directory (the unified hierarchy)."""
    cpu_ns = _value(f"{directory}/cpu.stat", b"usage_usec") * 1000
    at = time.monotonic_ns()
    usage = int(_read(f"{directory}/memory.current"))
    inactive = _value(f"{directory}/memory.stat", b"inactive_file")
    raw_limit = _read(f"{directory}/memory.max").strip()
    limit = mem_total if raw_limit == b"max" else int(raw_limit)
    if mem_total and limit > mem_total:
        limit = mem_total
    try:
        blk_read, blk_write = _io_v2(f"{directory}/io.stat")
    except OSError:  # the io controller is not enabled for this group
        blk_read = blk_write = 0
    try:
        pids = int(_read(f"{directory}/pids.current"))
    except OSError:
        pids = 0
    rx, tx = _net(f"{directory}/cgroup.procs")
    return Reading(at_ns=at, cpu_ns=cpu_ns, mem_usage=usage, mem_inactive_file=inactive, mem_limit=limit,
                   net_rx=rx, net_tx=tx, blk_read=blk_read, blk_write=blk_write, pids=pids)


class CgroupReader:
    """Reads containers' cgroup files on this machine, where the engine keeps them."""

    def __init__(self, engine: Engine, layout: CgroupLayout | None = None):
        self.engine = engine
        self.layout = layout or engine.cgroup_layout()
        self._dirs: dict[str, dict[str, str]] = {}

    @staticmethod
    def available(engine: Engine) -> bool:
        """The engine is local and its cgroup hierarchy is the one mounted here."""
        if not engine.is_local:
            return False
        layout = engine.cgroup_layout()
        if layout.version >= 2:
            return os.path.exists(f"{layout.root}/cgroup.controllers")
        return os.path.isdir(f"{layout.root}/cpuacct") and os.path.isdir(f"{layout.root}/memory")

    def dirs(self, container: ContainerBrief) -> dict[str, str] | None:
        """The container's cgroup directories: Docker's convention, else where its process says it is."""
        found = self._dirs.get(container.id)
        if found is not None:
            return found
        found = self.layout.dirs(container.id)
        if not all(os.path.isdir(d) for d in found.values()):
            found = self._from_proc(container)
        if found is not None:
            self._dirs[container.id] = found
        return found

    def _from_proc(self, container: ContainerBrief) -> dict[str, str] | None:
        """A custom cgroup parent: ask /proc/<pid>/cgroup, trusting it only if it names the container."""
        info = self.engine.container(container.id)
        if info is None or not info.pid:
            return None
        try:
            lines = _read(f"/proc/{info.pid}/cgroup").decode().splitlines()
        except OSError:
            return None
        paths: dict[str, str] = {}
        for line in lines:
            _, controllers, path = line.split(":", 2)
            if container.id not in path:  # another pid namespace's process, or not this container
                continue
            for c in controllers.split(","):
                paths[c] = path
        root = self.layout.root
        if self.layout.version >= 2:
            if "" not in paths:
                return None
            d = f"{root}{paths['']}"
            out = {c: d for c in ("cpu", "memory", "io", "pids")}
        else:
            if not all(c in paths for c in ("cpuacct", "memory", "blkio", "pids")):
                return None
            out = {c: f"{root}/{c}{paths[c]}" for c in ("cpuacct", "memory", "blkio", "pids")}
        return out if all(os.path.isdir(d) for d in out.values()) else None

    def read(self, container: ContainerBrief) -> Reading | None:
        """The container's counters, or None when it has no cgroup (stopped, or not found here)."""
        dirs = self.dirs(container)
        if dirs is None:
            return None
        try:
            if self.layout.version >= 2:
                return read_cgroup_v2(dirs["memory"], self.layout.mem_total)
            return read_cgroup_v1(dirs, self.layout.mem_total)
        except (OSError, ValueError):  # the container stopped between listing and reading
            self._dirs.pop(container.id, None)
            return None


def _api_readings(engine: Engine, container: ContainerBrief) -> tuple[Reading | None, Reading] | None:
    """(the engine's previous reading, its current one) from one stats API call."""
    try:
        r = engine.container_stats(container.id)
    except LabError:
        return None  # removed or stopped meanwhile
    if r.system_ns == 0:  # a stopped container: the engine reports nothing
        return None
    cur = Reading(at_ns=time.monotonic_ns(), cpu_ns=r.cpu_ns, mem_usage=r.mem_usage,
                  mem_inactive_file=r.mem_inactive_file, mem_limit=r.mem_limit, net_rx=r.net_rx, net_tx=r.net_tx,
                  blk_read=r.blk_read, blk_write=r.blk_write, pids=r.pids, system_ns=r.system_ns,
                  online_cpus=r.online_cpus)
    pre = replace(cur, cpu_ns=r.pre_cpu_ns, system_ns=r.pre_system_ns) if r.pre_system_ns else None
    return pre, cur


# -- one lab's containers ----------------------------------------------------------------------
class Collector:
    """Lists a lab's containers and reads them from the chosen source, keeping the previous reading
    of each for the CPU delta."""

    def __init__(self, engine: Engine, lab_name: str, source: str = "auto"):
        if source not in SOURCES:
            raise LabError(f"source={source!r}: use one of {', '.join(SOURCES)}")
        self.engine, self.lab_name = engine, lab_name
        if source == "auto":
            source = "cgroup" if CgroupReader.available(engine) else "api"
        elif source == "cgroup" and not CgroupReader.available(engine):
            raise LabError(f"the cgroup files of the engine at {engine.base_url} are not readable here (the engine "
                           f"is remote, or runs in a VM): use source='api' or source='auto'")
        self.source = source
        self.cgroup = CgroupReader(engine) if source == "cgroup" else None
        self._prev: dict[str, Reading] = {}
        self._pool: ThreadPoolExecutor | None = None

    def containers(self) -> list[ContainerBrief]:
        found = self.engine.container_briefs({n.LAB: self.lab_name, n.KIND: "container"})
        return sorted(found, key=lambda c: c.name)

    def read(self, containers: Iterable[ContainerBrief]) -> dict[str, tuple[Reading | None, Reading]]:
        """Container id -> (reading to take the CPU delta from, current reading), for live containers."""
        live = [c for c in containers if c.state in _LIVE_STATES]
        out: dict[str, tuple[Reading | None, Reading]] = {}
        api: list[ContainerBrief] = []
        for c in live:
            if self.cgroup is None:
                api.append(c)
                continue
            cur = self.cgroup.read(c)
            if cur is not None:
                out[c.id] = (self._prev.get(c.id), cur)
            elif self.cgroup.dirs(c) is None and c.state == "running":
                api.append(c)  # its cgroup is somewhere we cannot see: the engine still knows
        if api:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(_API_WORKERS, thread_name_prefix="claude-lab-stats-api")
            for c, got in zip(api, self._pool.map(lambda c: _api_readings(self.engine, c), api)):
                if got is not None:
                    out[c.id] = got
        self._prev = {cid: cur for cid, (_, cur) in out.items()}
        return out

    def rows(self, containers: list[ContainerBrief], readings: dict[str, tuple[Reading | None, Reading]],
             timestamp: pd.Timestamp) -> list[dict[str, Any]]:
        rows = []
        for c in containers:
            row: dict[str, Any] = {
                "timestamp": timestamp, "name": c.name, "role": c.labels.get(n.ROLE),
                "agent": c.labels.get(n.AGENT), "group": c.labels.get(n.GROUP), "state": c.state,
            }
            got = readings.get(c.id)
            if got is None:
                row.update({k: 0.0 for k in _FLOATS})
                row.update({k: 0 for k in _INTS})
            else:
                prev, cur = got
                mem = cur.mem_bytes
                row.update(
                    cpu_percent=cpu_percent(prev, cur), cpu_seconds=cur.cpu_ns / 1e9, mem_bytes=mem,
                    mem_limit=cur.mem_limit, mem_percent=mem / cur.mem_limit * 100.0 if cur.mem_limit else 0.0,
                    net_rx=cur.net_rx, net_tx=cur.net_tx, blk_read=cur.blk_read, blk_write=cur.blk_write,
                    pids=cur.pids,
                )
            rows.append(row)
        return rows

    def read_one(self, container: ContainerBrief) -> Reading | None:
        """A fresh reading of one container without touching the delta state (cgroup source only)."""
        return self.cgroup.read(container) if self.cgroup is not None else None

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None


def frame(rows: Iterable[dict[str, Any]] | Iterable[tuple]) -> pd.DataFrame:
    """Rows (dicts, or tuples in COLUMNS order) as a DataFrame with stable dtypes, even when empty."""
    df = pd.DataFrame(list(rows), columns=COLUMNS)
    df["timestamp"] = pd.to_datetime(df["timestamp"], utc=True)
    for col in _FLOATS:
        df[col] = df[col].astype("float64")
    for col in _INTS:
        df[col] = df[col].astype("int64")
    return df


def snapshot(lab: "Lab", interval: float = 0.2, source: str = "auto") -> pd.DataFrame:
    """One row per container of the lab now; CPU % over `interval` seconds (the API's own 1 s remotely)."""
    if interval <= 0:
        raise LabError(f"interval={interval!r}: give a positive number of seconds, for example 0.2")
    collector = Collector(lab.engine, lab.name, source)
    try:
        containers = collector.containers()
        if collector.source == "cgroup" and any(c.state in _LIVE_STATES for c in containers):
            collector.read(containers)
            time.sleep(interval)  # the CPU delta needs two readings
        readings = collector.read(containers)
        return frame(collector.rows(containers, readings, pd.Timestamp.now(tz="UTC")))
    finally:
        collector.close()


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

    def __init__(self, engine: Engine, lab_name: str, interval: float = 1.0, source: str = "auto",
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


def active_samplers(engine: Engine, lab_name: str) -> list[StatsSampler]:
    with _ACTIVE_LOCK:
        return list(_ACTIVE.get((engine.base_url, lab_name), ()))


def run_resources(engine: Engine, lab_name: str, container: str, since: datetime) -> dict[str, Any] | None:
    """A run's resource summary from the lab's most recent running sampler that saw the container."""
    start = since.timestamp()
    for sampler in reversed(active_samplers(engine, lab_name)):
        got = sampler.summary(container, start)
        if got is not None:
            return got
    return None
