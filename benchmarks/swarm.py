#!/usr/bin/env python
"""The swarm backend on a simulated swarm (the host engine + Docker-in-Docker workers), against the
local backend in the same run.

    .venv/bin/python benchmarks/swarm.py                 # 20 agents; about 3 minutes after a first run
    .venv/bin/python benchmarks/swarm.py --agents 10 --execs 50

(a) 20 agents ready: `lab.create_agent` for N agents from a pool of threads (every agent with its
    netguard sidecar, rules applied and self-checked), until the last returns; the same on the
    local backend. Printed: seconds, agents per second, and swarm/local.
(b) exec latency: `lab.exec(agent, "true")` on an agent that runs on a *worker* (its engine reached
    over TCP), against the same call on a local-backend agent, interleaved; plus the raw docker-py
    `exec_create`+`exec_start` on that worker's engine (what the swarm backend adds on top of it).
(c) destroy: `lab.destroy(volumes=True)` of a lab with 6 agents (and their sidecars), each backend.
(d) a new group: `create_agent(group=NEW)` for its first agent (it joins the shared services network
    beside its group's) and for a second one, on a swarm lab that is up.

The sim is the one `claude-lab swarm-sim up` made (`--sim NAME`); if there is none the script starts
one and removes it at the end. Labs are `bench-<uuid>`, destroyed at the end (also on Ctrl-C).
The first run on a fresh sim also pulls the agent image (~2 GB) onto each worker: run it twice,
or look at the second number. Always exits 0: a measurement, not a test.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import free_port  # noqa: E402

from claude_lab import Lab  # noqa: E402
from claude_lab.swarmsim import sim_down, sim_status, sim_up  # noqa: E402


def make_lab(root: Path, tag: str, **settings) -> Lab:
    project = root / tag
    project.mkdir()
    return Lab(project, name=f"bench-{tag}-{uuid.uuid4().hex[:6]}", postgres_port=free_port(),
               redis_port=free_port(), **settings)


def start_agents(lab: Lab, count: int, threads: int) -> float:
    t0 = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda i: lab.create_agent(f"b{i:02d}", progress=False), range(count)))
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--agents", type=int, default=20)
    ap.add_argument("--threads", type=int, default=10, help="concurrent create_agent calls")
    ap.add_argument("--execs", type=int, default=30)
    ap.add_argument("--sim", default="claude-lab-sim")
    ap.add_argument("--destroy-agents", type=int, default=6, help="agents in the labs whose destroy is timed")
    args = ap.parse_args()

    sim = sim_status(args.sim)
    made_sim = sim is None or not sim.workers
    if made_sim:
        print(f"starting swarm sim {args.sim} (2 workers)...", flush=True)
        sim = sim_up(2, name=args.sim, registry_port=free_port())
    assert sim is not None
    labs: list[Lab] = []
    with tempfile.TemporaryDirectory() as tmp:
        try:
            local = make_lab(Path(tmp), "local")
            swarm = make_lab(Path(tmp), "swarm", backend="swarm", registry=sim.registry, model_host=sim.model_host,
                             swarm_constraints=sim.constraints)
            labs += [local, swarm]
            local.build(progress=False)
            swarm.build(progress=False)  # pushes to the sim's registry (a no-op push once it has them)

            t0 = time.perf_counter()  # the images onto every node the lab may use, all at once (as `up` does)
            pulled = swarm.engine.preload([swarm.config.image("agent"), swarm.config.image("netguard")])
            t_preload = time.perf_counter() - t0
            t_swarm = start_agents(swarm, args.agents, args.threads)
            t_local = start_agents(local, args.agents, args.threads)
            nodes = swarm.status().query("role == 'agent'")["node"].value_counts().to_dict()

            workers = {w.hostname for w in sim.workers}
            on_worker = next(a for a in swarm.agents() if a.info.labels.get("claude-lab.node") in workers)
            engine, cid = swarm.engine.locate(on_worker.name)  # type: ignore[union-attr]
            raw = engine.api
            local_agent = local.agents()[0]
            lab_w, lab_l, raw_w = [], [], []
            for i in range(args.execs + 3):
                t0 = time.perf_counter()
                swarm.exec(on_worker.id, "true").check()
                t1 = time.perf_counter()
                local.exec(local_agent.id, "true").check()
                t2 = time.perf_counter()
                ex = raw.exec_create(cid, ["sh", "-c", "true"])
                raw.exec_start(ex["Id"])
                t3 = time.perf_counter()
                if i >= 3:  # warm-up rounds not counted
                    lab_w.append(t1 - t0)
                    lab_l.append(t2 - t1)
                    raw_w.append(t3 - t2)
            mw, ml, mr = (statistics.median(x) * 1000 for x in (lab_w, lab_l, raw_w))

            # (c) destroy of a lab with N agents, each backend (the labs of (a) are destroyed here, timed)
            for lab in (swarm, local):  # down to `--destroy-agents` agents first, outside the timing
                for agent in lab.agents()[args.destroy_agents:]:
                    lab.remove_agent(agent.id, volumes=True)
            t0 = time.perf_counter()
            swarm.destroy(volumes=True)
            t_destroy_swarm = time.perf_counter() - t0
            t0 = time.perf_counter()
            local.destroy(volumes=True)
            t_destroy_local = time.perf_counter() - t0

            # (d) a new group's first agent against a later one of that group, services up (swarm)
            grouped = make_lab(Path(tmp), "group", backend="swarm", registry=sim.registry, model_host=sim.model_host,
                               swarm_constraints=sim.constraints)
            labs.append(grouped)
            grouped.up(progress=False)
            t0 = time.perf_counter()
            grouped.create_agent("first", group="fresh", progress=False)
            t_first = time.perf_counter() - t0
            t0 = time.perf_counter()
            grouped.create_agent("later", group="fresh", progress=False)
            t_later = time.perf_counter() - t0

            print(f"\n(a) {args.agents} agents ready ({args.threads} at a time), nodes used: {nodes}")
            print(f"    swarm  {t_swarm:7.1f} s  ({args.agents / t_swarm:.2f} agents/s)")
            print(f"    local  {t_local:7.1f} s  ({args.agents / t_local:.2f} agents/s)")
            print(f"    ratio swarm/local = {t_swarm / t_local:.2f}")
            print(f"    pre-pull before it {t_preload:7.1f} s (per node: "
                  f"{', '.join(f'{h} {s:.1f} s' for h, s in pulled.items())}); with it, swarm/local = "
                  f"{(t_swarm + t_preload) / t_local:.2f}")
            print(f"(b) exec latency, median of {args.execs} (`true`), agent {on_worker.id} on "
                  f"{on_worker.info.labels.get('claude-lab.node')}")
            print(f"    swarm lab.exec on the worker  {mw:6.1f} ms")
            print(f"    local lab.exec                {ml:6.1f} ms")
            print(f"    raw exec on the worker engine {mr:6.1f} ms")
            print(f"    ratio swarm/local = {mw / ml:.2f};  swarm lab.exec / raw on the same worker = {mw / mr:.2f}")
            print(f"(c) destroy of a lab with {args.destroy_agents} agents (services none, sidecars included)")
            print(f"    swarm  {t_destroy_swarm:7.1f} s")
            print(f"    local  {t_destroy_local:7.1f} s")
            print(f"    ratio swarm/local = {t_destroy_swarm / t_destroy_local:.2f}  (goal <= 1.5: "
                  f"{'PASS' if t_destroy_swarm / t_destroy_local <= 1.5 else 'MISS'})")
            print("(d) a new group's first agent (services on the shared services network: no service update) vs a later one, swarm, services up")
            print(f"    first  {t_first:7.1f} s")
            print(f"    later  {t_later:7.1f} s")
            print(f"    ratio first/later = {t_first / t_later:.2f}  (goal <= 1.5: "
                  f"{'PASS' if t_first / t_later <= 1.5 else 'MISS'})")
        finally:
            for lab in labs:
                lab.destroy(volumes=True)
            if made_sim:
                sim_down(args.sim, force=True)


if __name__ == "__main__":
    main()
