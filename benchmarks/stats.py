#!/usr/bin/env python
"""`lab.stats()` against `docker stats --no-stream`, and what a running sampler costs.

    .venv/bin/python benchmarks/stats.py                  # 20 containers, about 2 minutes
    .venv/bin/python benchmarks/stats.py --containers 10 --runs 5 --cost-seconds 20

(a) one snapshot of 20 running containers: `lab.stats()` (cgroup files, CPU over its default 0.2 s)
    against `docker stats --no-stream <the same 20 names>` (the docker CLI, run as a subprocess as a
    user would). Interleaved, so drift on the machine hits both sides alike. Goal: ratio <= 0.15.
(b) the sampler's own CPU cost: this process's CPU time (all threads) over --cost-seconds with
    `lab.watch_stats(interval=1.0)` running, less the same window with nothing running (the raw
    baseline, measured in the same run). Goal: under 2 % of one core. dockerd's CPU over both windows
    is printed too (the sampler's one list request per second lands there).
Informational: `lab.stats(source="api")` (what a remote engine gets), the cgroup read of all
containers alone, serially and with a thread pool, and the one list request.

The containers are agents of a lab `bench-stats-<uuid>` in a temporary folder, removed at the end,
also on Ctrl-C or SIGTERM. The script always exits 0: it is a measurement; a missed goal prints MISS.
"""
from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import free_port  # noqa: E402

from claude_lab.lab import Lab  # noqa: E402
from claude_lab.stats import Collector  # noqa: E402

GOAL_RATIO = 0.15
GOAL_COST = 2.0  # % of one core


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def summary(values: list[float], scale: float = 1000.0, unit: str = "ms") -> str:
    v = sorted(x * scale for x in values)
    return f"median {statistics.median(v):8.2f} {unit}   (min {v[0]:.2f}, max {v[-1]:.2f}, n={len(v)})"


def dockerd() -> psutil.Process | None:
    try:
        pid = int(Path("/var/run/docker.pid").read_text().strip())
        return psutil.Process(pid)
    except (OSError, ValueError, psutil.Error):
        return None


def cpu_of(proc: psutil.Process | None) -> float:
    if proc is None:
        return float("nan")
    t = proc.cpu_times()
    return t.user + t.system


def idle_window(seconds: float, daemon: psutil.Process | None) -> tuple[float, float]:
    """This process's and dockerd's CPU seconds over `seconds` of the main thread waiting."""
    me = psutil.Process()
    own0, d0 = sum(me.cpu_times()[:2]), cpu_of(daemon)
    threading.Event().wait(seconds)
    return sum(me.cpu_times()[:2]) - own0, cpu_of(daemon) - d0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--containers", type=int, default=20, help="running containers in the lab (default 20)")
    p.add_argument("--runs", type=int, default=7, help="timed snapshots per side (default 7)")
    p.add_argument("--cost-seconds", type=float, default=30.0, help="each CPU-cost window (default 30)")
    args = p.parse_args(argv)

    def on_signal(signum, frame):
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    project = Path(tempfile.mkdtemp(prefix="claude-lab-bench-stats-"))
    lab = Lab(project, name=f"bench-stats-{uuid.uuid4().hex[:10]}", postgres_port=free_port(),
              redis_port=free_port())
    try:
        engine = lab.engine
        layout = engine.cgroup_layout()
        version = engine.version()
        print(f"lab {lab.name}: Docker {version.version}, cgroup v{layout.version} ({layout.driver}), "
              f"{layout.ncpu} CPUs, load average {os.getloadavg()[0]:.2f}")
        lab.build(["agent"], progress=False)
        t0 = time.perf_counter()
        agents = 0
        while len(lab.containers()) < args.containers:  # an agent may bring a sidecar (its netguard)
            lab.create_agent(f"agent-{agents:03d}", progress=False, cpus=0.5, memory="256m")
            agents += 1
        names = [c.name for c in lab.containers()]
        print(f"{len(names)} running containers ({agents} agents and their sidecars) created in "
              f"{time.perf_counter() - t0:.1f} s")

        # (a) one snapshot, interleaved.
        lab.stats()
        subprocess.run(["docker", "stats", "--no-stream", *names], capture_output=True, check=True)  # warm-up
        lab_times, docker_times = [], []
        for _ in range(args.runs):
            lab_times.append(timed(lab.stats))
            docker_times.append(timed(lambda: subprocess.run(["docker", "stats", "--no-stream", *names],
                                                             capture_output=True, check=True)))
        ratio = statistics.median(lab_times) / statistics.median(docker_times)
        print(f"\n(a) one snapshot of {len(names)} containers, {args.runs} runs per side, interleaved")
        print(f"  lab.stats() (cgroup, CPU over 0.2 s)   {summary(lab_times)}")
        print(f"  docker stats --no-stream (baseline)    {summary(docker_times)}")
        print(f"  ratio {ratio:.3f}   goal <= {GOAL_RATIO}   {'OK' if ratio <= GOAL_RATIO else 'MISS'}")

        api_times = [timed(lambda: lab.stats(source="api")) for _ in range(3)]
        collector = Collector(engine, lab.name, "cgroup")
        briefs = collector.containers()
        serial: list[float] = []
        pooled: dict[int, list[float]] = {2: [], 4: []}
        pools = {k: ThreadPoolExecutor(k) for k in pooled}
        try:
            for _ in range(200):  # interleaved, so the machine's load hits all alike
                serial.append(timed(lambda: [collector.cgroup.read(b) for b in briefs]))
                for k, pool in pools.items():
                    pooled[k].append(timed(lambda: list(pool.map(collector.cgroup.read, briefs))))
        finally:
            for pool in pools.values():
                pool.shutdown()
        daemon = dockerd()
        d0, t0 = cpu_of(daemon), time.perf_counter()
        listing = [timed(collector.containers) for _ in range(50)]
        list_daemon, list_wall = cpu_of(daemon) - d0, time.perf_counter() - t0
        print("  informational:")
        print(f"    lab.stats(source='api')               {summary(api_times)}")
        print(f"    cgroup read of {len(briefs)}, serial            {summary(serial, 1e6, 'us')}")
        for k, values in pooled.items():
            print(f"    cgroup read of {len(briefs)}, {k} threads         {summary(values, 1e6, 'us')}")
        print(f"    listing the lab (one request)         {summary(listing)}")

        # (b) the sampler's CPU cost against an idle window of the same length, both in this run.
        base_own, base_daemon = idle_window(args.cost_seconds, daemon)
        with lab.watch_stats(interval=1.0) as sampler:
            own, daemon_cpu = idle_window(args.cost_seconds, daemon)
        cost = (own - base_own) / args.cost_seconds * 100
        print(f"\n(b) sampler at a 1 s interval over {args.cost_seconds:.0f} s ({sampler.samples} samples, "
              f"{len(sampler.frame())} rows)")
        print(f"  this process: {own:.3f} CPU-s sampling, {base_own:.3f} CPU-s idle (baseline) "
              f"-> {cost:.2f} % of one core   goal < {GOAL_COST} %   {'OK' if cost < GOAL_COST else 'MISS'}")
        if daemon is not None:
            print(f"  dockerd: {daemon_cpu:.3f} CPU-s while sampling, {base_daemon:.3f} CPU-s idle "
                  f"-> {(daemon_cpu - base_daemon) / args.cost_seconds * 100:.2f} % of one core "
                  f"(other work on the engine counts here too)")
            per_request = (list_daemon - base_daemon / args.cost_seconds * list_wall) / len(listing)
            print(f"  dockerd CPU per list request (the sampler makes one per sample): {per_request * 1000:.2f} ms "
                  f"(50 back-to-back, less the idle window's background rate) -> "
                  f"{per_request * 100:.2f} % of one core at a 1 s interval")
    except KeyboardInterrupt:
        print("\ninterrupted; cleaning up", file=sys.stderr)
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        lab.destroy(volumes=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
