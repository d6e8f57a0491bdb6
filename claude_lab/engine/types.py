"""The engine's records: what the core reads and writes instead of Docker's JSON.

`ContainerSpec` is what to create; `ContainerInfo`, `ContainerBrief`, `NetworkInfo`, `VolumeInfo`,
`VersionInfo` and `NodeInfo` are what the engine reports; `CgroupLayout` and `StatsReading` feed the
stats readers. All are plain dataclasses: no Docker type ever leaves `engine/`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Mapping

from ..errors import LabError


@dataclass(frozen=True)
class ContainerInfo:
    id: str
    name: str
    state: str  # created | running | paused | restarting | exited | dead
    health: str | None  # healthy | unhealthy | starting | None (no healthcheck)
    image: str
    image_id: str
    labels: dict[str, str]
    ports: dict[str, str]  # "5432/tcp" -> "127.0.0.1:5433"
    created: datetime | None
    exit_code: int | None = None
    oom_killed: bool = False
    networks: tuple[str, ...] = ()
    ip_addresses: dict[str, str] = field(default_factory=dict)  # network -> IPv4 address
    pid: int | None = None
    memory: int | None = None  # limits from HostConfig (None: unlimited); the run store records them
    nano_cpus: int | None = None
    pids_limit: int | None = None
    started_at: datetime | None = None
    network_mode: str = ""  # "container:<id>" when it shares another container's network namespace

    @property
    def running(self) -> bool:
        return self.state == "running"


@dataclass
class ContainerSpec:
    """What to create; the core fills it, the engine turns it into API calls."""

    name: str
    image: str
    labels: dict[str, str]
    network: str
    aliases: list[str] = field(default_factory=list)
    extra_networks: dict[str, list[str]] = field(default_factory=dict)  # network -> aliases
    command: list[str] | None = None
    user: str | None = None
    hostname: str | None = None
    working_dir: str | None = None
    environment: dict[str, str] = field(default_factory=dict)
    volumes: dict[str, dict[str, str]] = field(default_factory=dict)  # source -> {bind, mode}
    ports: dict[str, tuple[str, int]] = field(default_factory=dict)  # "5432/tcp" -> (ip, port)
    mem_limit: str | None = None
    nano_cpus: int | None = None
    pids_limit: int | None = None
    cap_drop: list[str] | None = None
    cap_add: list[str] | None = None
    security_opt: list[str] | None = None
    restart_policy: str | None = "unless-stopped"
    read_only: bool = False
    tmpfs: dict[str, str] | None = None
    runtime: str | None = None  # an OCI runtime the engine knows (docker info: Runtimes), e.g. runsc
    init: bool = False
    healthcheck: dict[str, Any] | None = None


def memory_bytes(value: str | int | None) -> int | None:
    """A size as Docker takes it ("2g", "512m", bytes) in bytes; a clear error for anything else."""
    if value is None or isinstance(value, int):
        return value
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    v = value.strip().lower().rstrip("b")
    try:
        return int(float(v[:-1]) * units[v[-1]]) if v and v[-1] in units else int(v)
    except (ValueError, KeyError):
        raise LabError(f"memory limit {value!r} is not a size; use bytes or a number with k, m or g ('2g')") from None


@dataclass(frozen=True)
class ContainerBrief:
    """A container as the list call gives it: no inspect per container, so listing stays one request."""

    id: str
    name: str
    state: str
    labels: dict[str, str]


@dataclass(frozen=True)
class CgroupLayout:
    """Where the engine puts containers' cgroups, as `docker info` tells (CgroupVersion, CgroupDriver)."""

    version: int  # 1 or 2
    driver: str  # cgroupfs | systemd
    mem_total: int  # the engine's memory: docker stats' limit for a container without one
    ncpu: int
    root: str = "/sys/fs/cgroup"

    def dirs(self, container_id: str) -> dict[str, str]:
        """Controller -> directory of a container's cgroup, by Docker's naming convention."""
        rel = f"system.slice/docker-{container_id}.scope" if self.driver == "systemd" else f"docker/{container_id}"
        if self.version >= 2:
            return {c: f"{self.root}/{rel}" for c in ("cpu", "memory", "io", "pids")}
        return {c: f"{self.root}/{c}/{rel}" for c in ("cpuacct", "memory", "blkio", "pids")}


@dataclass(frozen=True)
class StatsReading:
    """One reading of the engine's stats API, with the engine's CPU reading from about 1 s before."""

    cpu_ns: int  # the container's total CPU time
    system_ns: int  # the host's total CPU time (all CPUs), as docker stats uses it
    pre_cpu_ns: int
    pre_system_ns: int
    online_cpus: int
    mem_usage: int
    mem_inactive_file: int  # what docker stats subtracts: total_inactive_file (v1) / inactive_file (v2)
    mem_limit: int
    net_rx: int
    net_tx: int
    blk_read: int
    blk_write: int
    pids: int



@dataclass(frozen=True)
class NetworkInfo:
    """A network as the engine lists it."""

    id: str
    name: str
    labels: dict[str, str] = field(default_factory=dict)
    created: str = ""  # the engine's own timestamp text (sortable: racing creators keep the oldest)
    driver: str = ""
    scope: str = ""


@dataclass(frozen=True)
class VolumeInfo:
    """A volume as the engine lists it; on a swarm, `node` is the id of the node that holds it."""

    name: str
    labels: dict[str, str] = field(default_factory=dict)
    node: str | None = None


@dataclass(frozen=True)
class VersionInfo:
    """The engine's version answer. `raw` keeps Docker's JSON, so `version()["Version"]` still reads."""

    version: str
    api_version: str
    os: str = ""
    arch: str = ""
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False)

    @property
    def api(self) -> tuple[int, int]:
        """The API version as numbers, for comparisons: (1, 41)."""
        try:
            major, minor = self.api_version.split(".")[:2]
            return int(major), int(minor)
        except ValueError:
            return (0, 0)

    def __getitem__(self, key: str) -> Any:
        return self.raw[key]


@dataclass(frozen=True)
class NodeInfo:
    """One machine of the backend: the engine itself (local), or a swarm node."""

    id: str
    hostname: str
    role: str  # engine | manager | worker
    state: str  # ready | down | unknown ...
    availability: str = "active"
    address: str = ""
    engine: str = ""  # the node's engine endpoint, where known
    labels: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "hostname": self.hostname, "role": self.role, "state": self.state,
                "availability": self.availability, "address": self.address, "engine": self.engine,
                "labels": dict(self.labels)}
