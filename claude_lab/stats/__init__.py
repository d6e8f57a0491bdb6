"""Resource stats of a lab's containers as pandas DataFrames: `lab.stats()` and `lab.watch_stats()`.

Modules: `readers` (one container, either source), `collector` (a lab's containers as rows), `sampler`
(over time), `plotting` (CPU and memory charts).

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
from .collector import COLUMNS, SOURCES, Collector, frame, snapshot
from .readers import CgroupReader, Reading, cpu_percent, read_cgroup_v1, read_cgroup_v2
from .sampler import StatsSampler, active_samplers, run_resources

__all__ = ["COLUMNS", "SOURCES", "CgroupReader", "Collector", "Reading", "StatsSampler", "active_samplers",
           "cpu_percent", "frame", "read_cgroup_v1", "read_cgroup_v2", "run_resources", "snapshot"]
