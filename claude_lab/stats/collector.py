"""One lab's containers, read from the chosen source, as DataFrame rows in `docker stats`' terms."""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Iterable


from .. import naming as n
from ..engine.types import ContainerBrief
from ..errors import LabError
from .readers import CgroupReader, Reading, api_readings, cpu_percent
from ..util.lazy import lazy

pd = lazy("pandas")  # loaded when a DataFrame is made (the CLI starts without it)

if TYPE_CHECKING:
    from ..engine.face import EngineFace

COLUMNS = ["timestamp", "name", "role", "agent", "group", "cpu_percent", "cpu_seconds", "mem_bytes", "mem_limit",
           "mem_percent", "net_rx", "net_tx", "blk_read", "blk_write", "pids", "state"]
_FLOATS = ("cpu_percent", "cpu_seconds", "mem_percent")
_INTS = ("mem_bytes", "mem_limit", "net_rx", "net_tx", "blk_read", "blk_write", "pids")
SOURCES = ("auto", "cgroup", "api")
_LIVE_STATES = ("running", "paused", "restarting")
_API_WORKERS = 10  # docker-py's connection pool holds 10; more threads only churn connections

# -- one lab's containers ----------------------------------------------------------------------
class Collector:
    """Lists a lab's containers and reads them from the chosen source, keeping the previous reading
    of each for the CPU delta."""

    def __init__(self, engine: "EngineFace", lab_name: str, source: str = "auto"):
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
            for c, got in zip(api, self._pool.map(lambda c: api_readings(self.engine, c), api)):
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


def snapshot(engine: "EngineFace", lab_name: str, interval: float = 0.2, source: str = "auto") -> pd.DataFrame:
    """One row per container of the lab now; CPU % over `interval` seconds (the API's own 1 s remotely)."""
    if interval <= 0:
        raise LabError(f"interval={interval!r}: give a positive number of seconds, for example 0.2")
    collector = Collector(engine, lab_name, source)
    try:
        containers = collector.containers()
        if collector.source == "cgroup" and any(c.state in _LIVE_STATES for c in containers):
            collector.read(containers)
            time.sleep(interval)  # the CPU delta needs two readings
        readings = collector.read(containers)
        return frame(collector.rows(containers, readings, pd.Timestamp.now(tz="UTC")))
    finally:
        collector.close()


