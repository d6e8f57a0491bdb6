"""Reading one container's counters: its cgroup files (v1 or v2) where the engine is local, else the
engine's stats API. A `Reading` is the same whichever source gave it (see the package's docstring)."""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from ..engine.types import CgroupLayout, ContainerBrief
from ..errors import LabError

if TYPE_CHECKING:
    from ..engine.face import EngineFace

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

    def __init__(self, engine: "EngineFace", layout: CgroupLayout | None = None):
        self.engine = engine
        self.layout = layout or engine.cgroup_layout()
        self._dirs: dict[str, dict[str, str]] = {}

    @staticmethod
    def available(engine: "EngineFace") -> bool:
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


def api_readings(engine: "EngineFace", container: ContainerBrief) -> tuple[Reading | None, Reading] | None:
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


