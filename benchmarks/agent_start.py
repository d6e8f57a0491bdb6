#!/usr/bin/env python
"""claude-lab against raw docker-py: how much does the lab layer cost per agent start and per exec?

    .venv/bin/python benchmarks/agent_start.py               # the table (about a minute)
    .venv/bin/python benchmarks/agent_start.py --profile     # plus where the time goes

(a) agent start:  `lab.create_agent(id, progress=False)` + the first `lab.exec(id, "true")`
    against       `client.containers.run(<same image>, ["sleep", "infinity"], detach=True,
                   <same user, memory, cpus, pids, cap_drop, security_opt>)` + `exec_run("true")`.
    Every lab start is in a lab whose network and the agent's volume do not exist yet (the lab's
    first agent); the informational row (a') is the same with the lab network already there
    (any later agent, or after `lab.up()`).
(b) exec latency: `lab.exec(agent, "true")` against `container.exec_run("true")`, same container.
(c) agent from the warm pool: `create_agent` + first exec claiming a pod of a filled pool (agent_pool=1,
    refilled outside the timing), against the raw start of (a).
(d) cold agent against raw docker-py making the same two containers (the sidecar, with NET_ADMIN, owning
    the network namespace; the agent joining it) + `exec_run`: the firewall's rules and self-check are
    what claude-lab adds.

Runs are interleaved (lab, raw, lab, raw, ...) so drift in the engine hits both sides alike;
containers, volumes and networks are removed after each timing, outside the timed section.
Everything lives in a lab `bench-<uuid>` in a temporary project folder and is removed at the end,
also on Ctrl-C or SIGTERM. The raw baseline goes through `lab.engine.raw`, the docker-py client
the lab itself uses (same connection pool, same API version).

The script always exits 0: it is a measurement. Missed goals are printed as MISS lines.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import signal
import statistics
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import free_port  # noqa: E402

from claude_lab import naming as n  # noqa: E402
from claude_lab.containers.services import service_env  # noqa: E402
from claude_lab.lab import Lab  # noqa: E402

GOAL_START = 1.3
GOAL_EXEC = 1.15
GOAL_POOL = 0.3
BENCH_LABEL = "claude-lab-bench"  # on the raw baseline containers, to find them again on cleanup


def ms(seconds: float) -> float:
    return seconds * 1000.0


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def spread(values: list[float]) -> str:
    if len(values) < 4:
        return ""
    q = statistics.quantiles(values, n=4)
    return f"min {min(values):.1f}  p25 {q[0]:.1f}  p75 {q[2]:.1f}  max {max(values):.1f}"


# -- the two sides ----------------------------------------------------------------------------------
class Bench:
    def __init__(self, lab: Lab):
        self.lab = lab
        self.client = lab.engine.raw  # docker.DockerClient
        cfg = lab.config
        self.image = cfg.image("agent")
        # The same user and limits create_agent() gives an agent (from the lab's own config).
        self.raw_kwargs: dict[str, Any] = dict(
            user=cfg.agent_user,
            mem_limit=str(cfg.agent_memory) if cfg.agent_memory is not None else None,
            nano_cpus=int(cfg.agent_cpus * 1e9) if cfg.agent_cpus else None,
            pids_limit=cfg.agent_pids,
            cap_drop=["ALL"],
            security_opt=["no-new-privileges:true"],
            labels={BENCH_LABEL: lab.name},
        )
        self.raw_ids: list[str] = []
        self.seq = 0

    def _next_id(self, prefix: str) -> str:
        self.seq += 1
        return f"{prefix}-{self.seq:03d}"

    # (a) agent start
    def lab_start(self, network_exists: bool) -> float:
        lab = self.lab
        agent_id = self._next_id("start")
        net = n.network_name(lab.name)
        if network_exists:
            lab.engine.ensure_network(net, n.labels(lab.name, "network"))
        t0 = time.perf_counter()
        lab.create_agent(agent_id, progress=False)
        result = lab.exec(agent_id, "true")
        elapsed = time.perf_counter() - t0
        if result.exit_code != 0:
            raise RuntimeError(f"lab exec `true` exited {result.exit_code}: {result.stderr}")
        lab.remove_agent(agent_id, volumes=True)
        lab.engine.remove_network(net)
        return ms(elapsed)

    def raw_start(self) -> float:
        t0 = time.perf_counter()
        container = self.client.containers.run(self.image, command=["sleep", "infinity"], detach=True,
                                               **self.raw_kwargs)
        self.raw_ids.append(container.id)
        result = container.exec_run("true")
        elapsed = time.perf_counter() - t0
        if result.exit_code != 0:
            raise RuntimeError(f"raw exec_run `true` exited {result.exit_code}: {result.output!r}")
        container.remove(force=True)
        self.raw_ids.remove(container.id)
        return ms(elapsed)

    # (c) an agent from the warm pool: the pool is filled outside the timing, then create_agent claims a pod
    def pool_start(self, pool_lab: Lab) -> float:
        pool_lab.fill_pool()
        agent_id = self._next_id("pooled")
        t0 = time.perf_counter()
        agent = pool_lab.create_agent(agent_id, progress=False)
        result = pool_lab.exec(agent_id, "true")
        elapsed = time.perf_counter() - t0
        if result.exit_code != 0 or n.POOL not in agent.info.labels:
            raise RuntimeError(f"the pooled agent was not claimed from the pool, or `true` failed: {result}")
        pool_lab.remove_agent(agent_id, volumes=True)
        return ms(elapsed)

    # (d)'s baseline: the same two containers as an agent's pod (a sidecar owning the network namespace, the
    # agent joining it), made by docker-py, then exec_run -- without any firewall rules or self-check
    def raw_pod_start(self) -> float:
        net = n.network_name(self.lab.name)
        self.lab.engine.ensure_network(net, n.labels(self.lab.name, "network"))
        t0 = time.perf_counter()
        sidecar = self.client.containers.run(self.lab.config.image("netguard"), command=["sleep", "infinity"],
                                             entrypoint=[], detach=True, network=net, cap_drop=["ALL"],
                                             cap_add=["NET_ADMIN", "NET_RAW"], labels={BENCH_LABEL: self.lab.name})
        self.raw_ids.append(sidecar.id)
        kwargs = {k: v for k, v in self.raw_kwargs.items()}
        agent = self.client.containers.run(self.image, command=["sleep", "infinity"], detach=True,
                                           network_mode=f"container:{sidecar.id}", **kwargs)
        self.raw_ids.append(agent.id)
        result = agent.exec_run("true")
        elapsed = time.perf_counter() - t0
        if result.exit_code != 0:
            raise RuntimeError(f"raw exec_run `true` exited {result.exit_code}: {result.output!r}")
        agent.remove(force=True)
        sidecar.remove(force=True)
        self.raw_ids.remove(agent.id)
        self.raw_ids.remove(sidecar.id)
        self.lab.engine.remove_network(net)
        return ms(elapsed)

    # (b) exec latency
    def exec_target(self) -> tuple[str, Any]:
        agent_id = self._next_id("exec")
        agent = self.lab.create_agent(agent_id, progress=False)
        return agent_id, self.client.containers.get(agent.name)

    def lab_exec(self, agent_id: str) -> float:
        t0 = time.perf_counter()
        result = self.lab.exec(agent_id, "true")
        elapsed = time.perf_counter() - t0
        if result.exit_code != 0:
            raise RuntimeError(f"lab exec `true` exited {result.exit_code}")
        return ms(elapsed)

    def raw_exec(self, container: Any) -> float:
        t0 = time.perf_counter()
        result = container.exec_run("true")
        elapsed = time.perf_counter() - t0
        if result.exit_code != 0:
            raise RuntimeError(f"raw exec_run `true` exited {result.exit_code}")
        return ms(elapsed)

    def cleanup_raw(self) -> None:
        api = self.client.api
        ids = set(self.raw_ids)
        with contextlib.suppress(Exception):
            ids |= {c["Id"] for c in api.containers(all=True, filters={"label": f"{BENCH_LABEL}={self.lab.name}"})}
        for cid in ids:
            with contextlib.suppress(Exception):
                api.remove_container(cid, force=True)


def interleave(runs: int, warmup: int, sides: list[tuple[str, Callable[[], float]]],
               progress: str, rotate: bool = False) -> dict[str, list[float]]:
    """Run the sides in turn (a, b, a, b, ...); the first `warmup` rounds are not kept.

    With `rotate`, round i starts at side i (a b c, b c a, c a b, ...), so no side always follows
    the same other side's clean-up."""
    out: dict[str, list[float]] = {name: [] for name, _ in sides}
    total = warmup + runs
    for i in range(total):
        shift = i % len(sides) if rotate else 0
        for name, fn in sides[shift:] + sides[:shift]:
            value = fn()
            if i >= warmup:
                out[name].append(value)
        print(f"\r  {progress}: {i + 1}/{total} rounds ({warmup} warm-up)", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    return out


# -- the table --------------------------------------------------------------------------------------
@dataclass
class Row:
    metric: str
    lab: list[float]
    raw: list[float]
    goal: float | None

    @property
    def ratio(self) -> float:
        return median(self.lab) / median(self.raw)

    @property
    def verdict(self) -> str:
        if self.goal is None:
            return "info"
        return "PASS" if self.ratio <= self.goal else "MISS"


def print_table(rows: list[Row], runs_note: str) -> None:
    head = f"{'metric':<40} {'claude-lab ms':>13} {'raw ms':>9} {'ratio':>7} {'goal':>7}  result"
    print()
    print(f"claude-lab vs raw docker-py: medians ({runs_note})")
    print(head)
    print("-" * len(head))
    for r in rows:
        goal = f"<={r.goal:.2f}" if r.goal is not None else "-"
        print(f"{r.metric:<40} {median(r.lab):>13.1f} {median(r.raw):>9.1f} {r.ratio:>7.2f} {goal:>7}  {r.verdict}")
    print()
    for r in rows:
        print(f"  {r.metric}")
        print(f"    claude-lab: {spread(r.lab)}")
        print(f"    raw       : {spread(r.raw)}")
    misses = [r for r in rows if r.verdict == "MISS"]
    print()
    for r in misses:
        print(f"MISS: {r.metric}: ratio {r.ratio:.2f} > goal {r.goal:.2f} "
              f"(claude-lab {median(r.lab):.1f} ms vs raw {median(r.raw):.1f} ms, "
              f"+{median(r.lab) - median(r.raw):.1f} ms)")
    if not misses:
        print("all goals met")
    by_metric = {r.metric[:4]: r for r in rows}
    if "(a) " in by_metric and "(a')" in by_metric and by_metric["(a) "].verdict == "MISS":
        a, kept = by_metric["(a) "], by_metric["(a')"]
        print(f"  note: about {median(a.lab) - median(kept.lab):.0f} ms of (a) is creating the lab's network, once per lab "
              f"(row (a'), ratio {kept.ratio:.2f}, is every later agent); --profile splits the rest")


# -- --profile: which Docker API requests each operation makes, and how long each takes -----------
_HEX_ID = re.compile(r"/[0-9a-f]{64}(?=/|$)")


@dataclass
class Trace:
    events: list[tuple[str, float, float]] = field(default_factory=list)  # (what, start ms, duration ms)
    t0: float = 0.0
    total: float = 0.0


class Tracer:
    """Wrap the APIClient's `request` (every HTTP call docker-py makes) and `time.sleep`."""

    def __init__(self, bench: Bench):
        self.bench = bench
        self.api = bench.lab.engine.api
        self.current: Trace | None = None
        self._orig_request = self.api.request
        self._orig_sleep = time.sleep
        self.names = {bench.lab.name: "{lab}"}

    def _what(self, method: str, url: str) -> str:
        path = url.split("://", 1)[-1]
        path = path[path.find("/"):] if "/" in path else path
        path = re.sub(r"^/v[0-9.]+", "", path)
        path, _, query = path.partition("?")
        path = _HEX_ID.sub("/{id}", path)
        for real, alias in self.names.items():
            path = path.replace(real, alias)
        path = re.sub(r"\{lab\}_[a-z0-9_-]+", "{name}", path)
        keys = ",".join(sorted({kv.split("=", 1)[0] for kv in query.split("&") if kv}))
        return f"{method.upper()} {path}" + (f"?{keys}" if keys else "")

    def install(self) -> None:
        tracer = self

        def request(method, url, *args, **kwargs):
            start = time.perf_counter()
            try:
                return tracer._orig_request(method, url, *args, **kwargs)
            finally:
                if tracer.current is not None:
                    end = time.perf_counter()
                    tracer.current.events.append((tracer._what(method, url), ms(start - tracer.current.t0),
                                                  ms(end - start)))

        def sleep(seconds):
            start = time.perf_counter()
            tracer._orig_sleep(seconds)
            if tracer.current is not None:
                tracer.current.events.append((f"time.sleep({seconds:g})", ms(start - tracer.current.t0),
                                              ms(time.perf_counter() - start)))

        self.api.request = request  # instance attribute: shadows requests.Session.request
        time.sleep = sleep

    def uninstall(self) -> None:
        with contextlib.suppress(AttributeError):
            del self.api.request
        time.sleep = self._orig_sleep

    @contextlib.contextmanager
    def trace(self, sink: list[Trace]):
        tr = Trace(t0=time.perf_counter())
        self.current = tr
        try:
            yield tr
        finally:
            tr.total = ms(time.perf_counter() - tr.t0)
            self.current = None
            sink.append(tr)


def summarize(title: str, traces: list[Trace]) -> None:
    """Median time per request kind and per operation; 'client' = time outside any request."""
    counts = [len(t.events) for t in traces]
    totals = [t.total for t in traces]
    per_kind: dict[str, list[float]] = defaultdict(list)
    kinds_order: list[str] = []
    for t in traces:
        seen: dict[str, float] = defaultdict(float)
        for what, _, dur in t.events:
            seen[what] += dur
            if what not in kinds_order:
                kinds_order.append(what)
        for what in kinds_order:
            per_kind[what].append(seen.get(what, 0.0))
    n_calls = defaultdict(list)
    for t in traces:
        c: dict[str, int] = defaultdict(int)
        for what, _, _ in t.events:
            c[what] += 1
        for what in kinds_order:
            n_calls[what].append(c.get(what, 0))
    outside = [t.total - sum(d for _, _, d in t.events) for t in traces]
    print(f"\n  {title}: median {median(totals):.1f} ms, {median(counts):g} traced calls "
          f"(min {min(counts)}, max {max(counts)}), {median(outside):.1f} ms outside them")
    for what in kinds_order:
        print(f"    {median(n_calls[what]):>4g} x {what:<58} {median(per_kind[what]):>7.1f} ms")


def profile(bench: Bench, runs: int) -> None:
    """Trace each operation; and split (a) into daemon work the lab asks for vs. client overhead."""
    lab, client = bench.lab, bench.client
    api = client.api
    tracer = Tracer(bench)
    tracer.install()
    print("\n== --profile: Docker API requests per operation "
          "(request time = until the response headers; exec output is read after) ==")
    try:
        traces: dict[str, list[Trace]] = defaultdict(list)

        # (a) start, both sides, traced.
        for i in range(runs):
            agent_id = bench._next_id("prof")
            with tracer.trace(traces["lab create_agent()"]):
                lab.create_agent(agent_id, progress=False)
            with tracer.trace(traces["lab first exec()"]):
                lab.exec(agent_id, "true")
            lab.remove_agent(agent_id, volumes=True)
            lab.engine.remove_network(n.network_name(lab.name))
            with tracer.trace(traces["raw containers.run()"]):
                c = client.containers.run(bench.image, command=["sleep", "infinity"], detach=True,
                                          **bench.raw_kwargs)
            bench.raw_ids.append(c.id)
            with tracer.trace(traces["raw first exec_run()"]):
                c.exec_run("true")
            c.remove(force=True)
            bench.raw_ids.remove(c.id)
        # (b) exec, both sides, same container.
        agent_id, container = bench.exec_target()
        for i in range(max(runs, 10)):
            with tracer.trace(traces["lab exec() (warm)"]):
                lab.exec(agent_id, "true")
            with tracer.trace(traces["raw exec_run() (warm)"]):
                container.exec_run("true")
        lab.remove_agent(agent_id, volumes=True)
        lab.engine.remove_network(n.network_name(lab.name))
        for title, trs in traces.items():
            summarize(title, trs)
        one = traces["lab create_agent()"][len(traces["lab create_agent()"]) // 2]
        print("\n  one lab create_agent(), in order (start ms, duration ms):")
        for what, start, dur in one.events:
            print(f"    {start:>7.1f} {dur:>7.1f}  {what}")
        one = traces["lab exec() (warm)"][len(traces["lab exec() (warm)"]) // 2]
        print("  one warm lab exec(), in order (start ms, duration ms):")
        for what, start, dur in one.events:
            print(f"    {start:>7.1f} {dur:>7.1f}  {what}")
    finally:
        tracer.uninstall()

    # Decomposition of (a): the raw API doing what create_agent asks the daemon to do, step by step.
    print("\n== --profile: agent start, raw API with the lab's container spec added piece by piece ==")
    cfg = lab.config
    net, env = n.network_name(lab.name), {**service_env(cfg), **cfg.agent_env}

    def raw_variant(network: str | None, volume: bool, full: bool) -> Callable[[], float]:
        """network: None (default bridge), 'exists' (made before the timing) or 'create' (in it)."""
        def run() -> float:
            vol = f"{lab.name}_profvol"
            if network == "exists":
                api.create_network(net, driver="bridge", labels=n.labels(lab.name, "network"), check_duplicate=True)
            t0 = time.perf_counter()
            if network == "create":
                api.create_network(net, driver="bridge", labels=n.labels(lab.name, "network"), check_duplicate=True)
            if volume:
                api.create_volume(vol, labels=n.labels(lab.name, "volume"))
            kwargs = dict(bench.raw_kwargs)
            if network:
                kwargs["network"] = net
            if volume:
                kwargs["volumes"] = {vol: {"bind": "/workspace", "mode": "rw"}}
            if full:
                kwargs.update(hostname="prof", working_dir="/workspace", environment=env,
                              restart_policy={"Name": "unless-stopped"},
                              networking_config={net: api.create_endpoint_config(aliases=["prof"])})
            c = client.containers.run(bench.image, command=["sleep", "infinity"], detach=True, **kwargs)
            bench.raw_ids.append(c.id)
            r = c.exec_run("true")
            elapsed = time.perf_counter() - t0
            assert r.exit_code == 0, r
            c.remove(force=True)
            bench.raw_ids.remove(c.id)
            if volume:
                api.remove_volume(vol)
            if network:
                api.remove_network(net)
            return ms(elapsed)
        return run

    # (name, function, the row it is compared with)
    steps: list[tuple[str, Callable[[], float], str | None]] = [
        ("R0 raw run + exec_run (the baseline)", raw_variant(None, False, False), None),
        ("R1 R0 on an existing user-defined net", raw_variant("exists", False, False), "R0"),
        ("R2 R1 + create and mount a volume", raw_variant("exists", True, False), "R1"),
        ("R3 R2 + env/hostname/alias/restart", raw_variant("exists", True, True), "R2"),
        ("L1 claude-lab, lab network exists", lambda: bench.lab_start(network_exists=True), "R3"),
        ("R4 R3 + create the network in timing", raw_variant("create", True, True), "R3"),
        ("L0 claude-lab, fresh lab (row (a))", lambda: bench.lab_start(network_exists=False), "R4"),
    ]
    res = interleave(runs, 1, [(name, fn) for name, fn, _ in steps], "decomposition", rotate=True)
    key = {name[:2]: name for name, _, _ in steps}
    base = median(res[key["R0"]])
    print(f"    {'variant':<40} {'median':>9} {'/R0':>6}  difference (median of the per-round differences)")
    for name, _, against in steps:
        m = median(res[name])
        diff = ""
        if against:
            # Paired within each round: slow drift on the engine cancels out.
            d = median([a - b for a, b in zip(res[name], res[key[against]])])
            diff = f"{d:+7.1f} ms vs {against}"
        print(f"    {name:<40} {m:>6.1f} ms {m / base:>6.2f}  {diff}")
    print("    L1 - R3 and L0 - R4 are claude-lab's own cost; the other steps are the daemon's work for the lab's\n"
          "    spec. On a busy machine these differences are noisy (tens of ms): trust the request table above\n"
          "    for claude-lab's own cost, and raise --profile-runs for this one.")


# -- main -------------------------------------------------------------------------------------------
def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a positive number")
    return value


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=positive, default=15, help="timed agent starts per side (default 15)")
    p.add_argument("--warmup", type=int, default=2, help="untimed rounds before each benchmark (default 2)")
    p.add_argument("--exec-runs", type=positive, default=50, help="timed execs per side (default 50)")
    p.add_argument("--no-kept-network", action="store_true",
                   help="skip the informational row (a') (agent start with the lab network already there)")
    p.add_argument("--profile", action="store_true",
                   help="also trace the Docker API requests of each operation and decompose the start time")
    p.add_argument("--profile-runs", type=positive, default=15, help="traced runs per operation with --profile")
    args = p.parse_args(argv)

    def on_signal(signum, frame):
        # Ignore any further Ctrl-C / SIGTERM from here on: nothing may cut the cleanup short.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    interrupted = False
    project = Path(tempfile.mkdtemp(prefix="claude-lab-bench-"))
    name = f"bench-{uuid.uuid4().hex[:12]}"
    lab = Lab(project, name=name, postgres_port=free_port(), redis_port=free_port())
    bench: Bench | None = None
    try:
        bench = Bench(lab)
        engine = lab.engine
        version = engine.version()
        print(f"lab {name}, image {bench.image}, Docker {version.version} (API {version.api_version}), "
              f"docker-py {sys.modules['docker'].__version__}, load average {os.getloadavg()[0]:.2f}")
        t0 = time.perf_counter()
        lab.build(["agent"], progress=False)  # the once-per-Lab image check, outside the timings
        print(f"image check (once per Lab object, not in the timings): {ms(time.perf_counter() - t0):.1f} ms")

        sides: list[tuple[str, Callable[[], float]]] = [
            ("lab", lambda: bench.lab_start(network_exists=False)),
            ("raw", bench.raw_start),
        ]
        if not args.no_kept_network:
            sides.append(("lab-kept", lambda: bench.lab_start(network_exists=True)))
        start = interleave(args.runs, args.warmup, sides, "agent start")

        pool_lab = Lab(project, name=name, postgres_port=lab.config.postgres_port,
                       redis_port=lab.config.redis_port, agent_pool=1, engine=lab.engine)
        lab.build(["netguard"], progress=False)
        pooled = interleave(args.runs, args.warmup, [("pool", lambda: bench.pool_start(pool_lab)),
                                                     ("raw", bench.raw_start), ("lab", lambda: bench.lab_start(True)),
                                                     ("raw-pod", bench.raw_pod_start)], "pool and pods")
        pool_lab.drain_pool()

        agent_id, container = bench.exec_target()
        execs = interleave(args.exec_runs, args.warmup,
                           [("lab", lambda: bench.lab_exec(agent_id)), ("raw", lambda: bench.raw_exec(container))],
                           "exec")
        lab.remove_agent(agent_id, volumes=True)
        lab.engine.remove_network(n.network_name(lab.name))

        rows = [Row("(a) agent start: create_agent + 1st exec", start["lab"], start["raw"], GOAL_START)]
        if "lab-kept" in start:
            rows.append(Row("(a') same, lab network already exists", start["lab-kept"], start["raw"], None))
        rows.append(Row("(b) exec latency: exec('true')", execs["lab"], execs["raw"], GOAL_EXEC))
        rows.append(Row("(c) agent from the warm pool (+ 1st exec)", pooled["pool"], pooled["raw"], GOAL_POOL))
        rows.append(Row("(d) cold agent vs raw two-container pod", pooled["lab"], pooled["raw-pod"], GOAL_START))
        print_table(rows, f"{args.runs} starts and {args.exec_runs} execs per side, interleaved, "
                          f"after {args.warmup} warm-up rounds")

        if args.profile:
            profile(bench, args.profile_runs)
    except KeyboardInterrupt:
        interrupted = True
        print("\ninterrupted; cleaning up", file=sys.stderr)
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        # A request cut short by Ctrl-C may still complete on the daemon a moment later (a network
        # or container appears after we looked), so after an interruption look again twice.
        for attempt in range(3 if interrupted else 1):
            if attempt:
                time.sleep(1.0)
            try:
                if bench is not None:
                    bench.cleanup_raw()
                removed = lab.destroy(volumes=True)
                left = {k: v for k, v in removed.items() if v}
                if left:
                    print(f"cleanup removed {left}", file=sys.stderr)
            except Exception as exc:  # report, but still remove the folder and exit 0
                print(f"cleanup failed: {exc}; check `docker ps -a --filter label={n.LAB}={name}`, "
                      f"`docker network ls` and `docker volume ls` for {name}", file=sys.stderr)
        shutil.rmtree(project, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
