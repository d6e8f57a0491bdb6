#!/usr/bin/env python
"""1 agent against 10 in parallel: does running agents side by side cost more than one at a time?

    .venv/bin/python benchmarks/parallel_agents.py                 # 2 to 5 minutes
    .venv/bin/python benchmarks/parallel_agents.py --latency 2     # a model that takes 2 s per answer
    .venv/bin/python benchmarks/parallel_agents.py --agents 4 --rounds 5

Every run is the same 3-turn scripted task on the real Claude Code CLI: Write a file, run it with
Bash, answer. Each agent talks to its own ScriptedModel on the lab network's gateway (fresh for
every run, started before the timing). By default the model answers at once, so a run is nothing
but CPU work (the hardest case for parallelism on a small machine); `--latency S` makes it take S
seconds per request, as a real model does, and parallel runs then overlap their waiting.

Sides (interleaved within each round: lab-1, raw-1, git-1, lab-N, raw-N, git-N, so drift hits all alike):

  claude-lab  `await service.execute_for_agent(agent, prompt, model=...)` through
              `ClaudeCodeDockerService`; N agents with `asyncio.gather` from one event loop.
              Each run includes claude-lab's steps: the service's agent check and thread hops,
              the run's set-up (endpoint, run record, the agent's egress rule for the model), the
              endpoint probe and git commit before, the git diff and commit after.
  raw CLI     the baseline: the same `claude -p ... --output-format stream-json` with the same
              script, as a bare `docker exec` (docker-py `exec_run` through `lab.engine.raw`, the
              client the lab uses), N of them from N threads. No probe, no git, no service.
  raw in git  the same in a folder that is a git repository, as an agent's workspace always is: the
              CLI itself looks at the repository (branch, status, log) when it starts, which costs
              CPU that is the project's, not claude-lab's.

The headline is wall(N agents) / wall(1 agent), median over the rounds (goal <= 2.5). To say
where the time goes, it also prints each run's phases (from the runs' own event times), the CPU
seconds one run costs inside its container (cgroup cpuacct) and in the Docker daemons, how busy
the machine's CPUs were during the parallel runs, and the ratio the CPU alone forces:
N x CPU-per-run / CPUs, over the 1-agent wall time.

Agent creation (and the first, warm-up round) is outside the timings. Everything lives in a lab
`bench-<uuid>` in a temporary folder and is destroyed in a `finally`, also on Ctrl-C / SIGTERM.
The script always exits 0: it is a measurement; a missed goal is printed as a MISS line.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import free_port  # noqa: E402

from claude_lab import naming as n  # noqa: E402
from claude_lab.runs import runner as claude_runner  # noqa: E402
from claude_lab.runs import workspace  # noqa: E402
from claude_lab.runs.envelope import Envelope  # noqa: E402
from claude_lab.lab import Lab  # noqa: E402
from claude_lab.model.scripted import ScriptedModel  # noqa: E402
from claude_lab.service import ClaudeCodeDockerService  # noqa: E402

from claude_lab.netguard.sidecar import allow_endpoint  # noqa: E402 - the raw side's model, let through

GOAL = 2.5
OVERHEAD_GOAL = 1.10  # claude-lab's run against the bare CLI's, one and ten at once
RUN_TIMEOUT = 300  # seconds; a run that hangs (say, a model it cannot reach) is stopped and reported
RAW_DIR = "/tmp/raw-cli"  # the raw side's working folder, away from the git-tracked /workspace
RAW_GIT_DIR = "/tmp/raw-cli-git"  # the same as a git repository, as an agent's workspace always is
DAEMONS = ("dockerd", "containerd")  # containerd-shim* included


def positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError("give a positive number")
    return number


def script(folder: str, tag: str) -> list[Any]:
    """The 3-turn task: Write a file, run it with Bash, answer."""
    path = f"{folder}/task_{tag}.py"
    return [
        [{"type": "text", "text": "Writing it."},
         {"type": "tool_use", "name": "Write", "input": {"file_path": path, "content": f"print('ran {tag}')\n"}}],
        [{"type": "tool_use", "name": "Bash", "input": {"command": f"python3 {path}"}}],
        f"Done: task_{tag}.py prints ran {tag}.",
    ]


class SlowModel(ScriptedModel):
    """A ScriptedModel that takes `latency` seconds to answer each request, as a real model does.

    With no latency every run is pure CPU (the CLI's own work); a real API spends seconds per turn,
    during which parallel runs overlap. Each request has its own server thread, so one slow answer
    never holds up another agent's.
    """

    def __init__(self, turns: list[Any], latency: float, **kwargs: Any):
        super().__init__(turns, **kwargs)
        self.latency = latency

    def _handle(self, handler: Any, method: str) -> None:
        if self.latency > 0 and method == "POST":
            time.sleep(self.latency)  # the model "thinking"; not a wait for a condition
        super()._handle(handler, method)


def daemon_cpu() -> dict[int, float]:
    """CPU seconds used so far by each Docker daemon process (shared with anything else on the machine)."""
    found = {}
    for proc in psutil.process_iter(["name", "cpu_times"]):
        name = proc.info.get("name") or ""
        times = proc.info.get("cpu_times")
        if times is not None and name.startswith(DAEMONS):
            found[proc.pid] = times.user + times.system
    return found


def daemon_delta(before: dict[int, float], after: dict[int, float]) -> float:
    """What the daemons alive at the end used in between (a shim that exited meanwhile is not counted)."""
    return sum(max(0.0, cpu - before.get(pid, 0.0)) for pid, cpu in after.items())


def machine_busy() -> tuple[float, float]:
    t = psutil.cpu_times()
    return t.idle + getattr(t, "iowait", 0.0), sum(t)


@dataclass
class Sample:
    wall: float
    runs: int
    container_cpu: float  # seconds, summed over the agents that ran
    daemon_cpu: float
    self_cpu: float  # this Python process (service, threads, scripted models)
    busy: float  # fraction of all CPUs busy during the timing
    phases: list[dict[str, float]] = field(default_factory=list)


class Bench:
    def __init__(self, lab: Lab, agents: int, latency: float = 0.0):
        self.lab = lab
        self.latency = latency
        self.ids = [f"agent-{i:03d}" for i in range(agents)]
        self.service = ClaudeCodeDockerService(lab, max_concurrency=agents)
        self.gateway = ""
        self.steps: dict[str, dict[str, float]] = {}  # run_id -> the envelope's moments (time.time())
        self._lock = threading.Lock()
        self.failures: list[str] = []
        self.models: list[ScriptedModel] = []

    # -- set-up ------------------------------------------------------------------------------
    def setup(self) -> float:
        t0 = time.perf_counter()

        async def create() -> None:
            await asyncio.gather(*(self.service.ensure_agent(a) for a in self.ids))

        asyncio.run(create())
        for a in self.ids:
            self.lab.exec(a, ["mkdir", "-p", RAW_DIR]).check()
            self.lab.exec(a, f"mkdir -p {RAW_GIT_DIR} && cd {RAW_GIT_DIR} && git init -q && "
                             f"git commit -q --allow-empty -m start").check()
        self.gateway = self.lab.engine.network_gateway(n.network_name(self.lab.name)) or ""
        self._trace_workspace_steps()
        return time.perf_counter() - t0

    def _trace_workspace_steps(self) -> None:
        """Time each run's envelope (one exec: the "before" step, the CLI, the "after" step) by wrapping it."""
        init, begin, iterate = Envelope.__init__, Envelope.begin, Envelope.__iter__
        steps, lock = self.steps, self._lock

        def mark(run_id: str, key: str, value: Any = None) -> None:
            with lock:
                steps.setdefault(run_id, {})[key] = value if value is not None else (time.time(), time.time())

        def traced_init(envelope, *args, **kwargs):
            mark(args[4]["run_id"], "exec")
            init(envelope, *args, **kwargs)

        def traced_begin(env):
            report = begin(env)
            mark(env.run_id, "before", (time.time(), report.get("took", 0.0)))
            return report

        def traced_iter(env):
            yield from iterate(env)
            mark(env.run_id, "ended", (time.time(), (env.after or {}).get("took", 0.0)))

        Envelope.__init__, Envelope.begin, Envelope.__iter__ = traced_init, traced_begin, traced_iter

        stream = Lab.claude_stream

        def traced_stream(*args, **kwargs):
            start = time.time()
            run = stream(*args, **kwargs)
            with self._lock:
                self.steps.setdefault(run.run_id, {})["claude_stream"] = (start, start)
            return run

        Lab.claude_stream = traced_stream  # type: ignore[method-assign]
        wait = claude_runner.Run.wait

        def traced_wait(run):
            result = wait(run)
            with self._lock:
                self.steps.setdefault(run.run_id, {})["returned"] = (time.time(), time.time())
            return result

        claude_runner.Run.wait = traced_wait  # type: ignore[method-assign]

    def model(self, turns: list[Any]) -> ScriptedModel:
        m = SlowModel(turns, self.latency, host=self.gateway).start()
        self.models.append(m)
        return m

    def stop_models(self) -> None:
        for m in self.models:
            m.stop()
        self.models.clear()

    def container_cpu(self, agents: list[str]) -> float:
        return sum(int(self.lab.exec(a, "cat /sys/fs/cgroup/cpuacct/cpuacct.usage").stdout) / 1e9 for a in agents)

    # -- the sides -----------------------------------------------------------------------------
    def lab_side(self, agents: list[str], tag: str) -> Sample:
        models = {a: self.model(script("/workspace", f"{tag}_{a}")) for a in agents}

        async def go():
            return await asyncio.gather(*(self.service.execute_for_agent(a, "write the task file and run it",
                                                                         model=models[a], timeout=RUN_TIMEOUT)
                                          for a in agents))

        def timed():
            start = time.perf_counter()
            results = asyncio.run(go())
            return time.perf_counter() - start, results

        sample, results = self._measure(agents, timed)
        for a, res in zip(agents, results):
            ok = res.success and res.run is not None and f"ran {tag}_{a}" in str(res.run.tool_calls[1].result)
            if not ok:
                self.failures.append(f"claude-lab {a} round {tag}: {res.status}: {res.error}")
                continue
            sample.phases.append(self._phases(res))
        self.stop_models()
        return sample

    def raw_side(self, agents: list[str], tag: str, folder: str = RAW_DIR) -> Sample:
        client = self.lab.engine.raw
        containers = {a: client.containers.get(self.lab.container_name(a)) for a in agents}
        models = {a: self.model(script(folder, f"{tag}_{a}")) for a in agents}
        for a in agents:  # the agent's egress guard must let it reach its model, as a lab run arranges itself
            allow_endpoint(self.lab.engine, self.lab.name, a, models[a].url)
        argv = ["timeout", str(RUN_TIMEOUT),  # so a run that hangs cannot hold the benchmark
                "claude", "-p", "--output-format", "stream-json", "--verbose", "--permission-mode",
                "bypassPermissions", "--", "write the task file and run it"]

        def one(a: str):
            env = {"ANTHROPIC_BASE_URL": models[a].url, "ANTHROPIC_API_KEY": "sk-ant-bench-no-key"}
            return containers[a].exec_run(argv, environment=env, workdir=folder,
                                          user=self.lab.config.agent_user, demux=True)

        def timed():
            pool = ThreadPoolExecutor(max_workers=len(agents))
            try:
                start = time.perf_counter()
                outs = list(pool.map(one, agents))
                return time.perf_counter() - start, outs
            finally:
                pool.shutdown(wait=False)  # on Ctrl-C do not wait for the execs: the cleanup ends them

        sample, outs = self._measure(agents, timed)
        for a, out in zip(agents, outs):
            stdout = (out.output[0] or b"").decode("utf-8", "replace")
            if out.exit_code != 0 or '"subtype":"success"' not in stdout or f"ran {tag}_{a}" not in stdout:
                self.failures.append(f"raw {a} round {tag}: exit {out.exit_code}: {stdout[-300:]}")
        self.stop_models()
        return sample

    def _measure(self, agents: list[str], timed) -> tuple[Sample, Any]:
        cpu0, daemons0, self0, (idle0, total0) = self.container_cpu(agents), daemon_cpu(), time.process_time(), \
            machine_busy()
        wall, out = timed()
        idle1, total1 = machine_busy()
        self1, daemons1 = time.process_time(), daemon_cpu()
        cpu1 = self.container_cpu(agents)
        busy = 1.0 - (idle1 - idle0) / max(total1 - total0, 1e-9)
        return Sample(wall, len(agents), cpu1 - cpu0, daemon_delta(daemons0, daemons1), self1 - self0, busy), out

    def _phases(self, res) -> dict[str, float]:
        run = res.run
        start = run.started_at.timestamp()
        steps = self.steps.get(run.run_id, {})
        exec_start = steps.get("exec", (start, start))[0]
        before_at, before_took = steps.get("before", (start, 0.0))
        ended_at, after_took = steps.get("ended", (start + run.duration_s, 0.0))
        init = run.events[0].received_at or before_at
        result = run.events[-1].received_at or ended_at
        begun = steps.get("claude_stream", (start, start))[0]
        returned = steps.get("returned", (ended_at, ended_at))[0]
        return {
            "service (agent check, worker threads)": res.duration_s - (returned - begun),
            "run set-up (endpoint, run record)": start - begun,
            "run start (egress rule, to the exec)": exec_start - start,
            "exec to the before report": before_at - exec_start,
            "  of it: probe + git commit in the agent": before_took,
            "CLI start-up (before report to init event)": init - before_at,
            "3 turns (init to result event)": result - init,
            "CLI exit + after step (result to exec end)": ended_at - result,
            "  of it: git diff + commit + bundle in the agent": after_took,
            "result (RunResult, run record)": returned - ended_at,
            "whole call": res.duration_s,
        }

    # -- what the git steps and the probe cost on their own ------------------------------------------
    def step_costs(self, repeats: int) -> dict[str, tuple[float, float]]:
        """Median wall and container-CPU seconds of the "after" step alone (a stopped run's fallback)."""
        a = self.ids[0]
        container = self.lab.container_name(a)
        found: list[tuple[float, float]] = []
        for _ in range(repeats):
            cpu0 = self.container_cpu([a])
            t0 = time.perf_counter()
            workspace.finish(self.lab.engine, container, "/workspace", f"bench-{uuid.uuid4().hex[:6]}", None)
            found.append((time.perf_counter() - t0, self.container_cpu([a]) - cpu0))
        return {"after step alone (finish)": (statistics.median(w for w, _ in found),
                                              statistics.median(c for _, c in found))}


def median(samples: list[Sample], attr: str) -> float:
    return statistics.median(getattr(s, attr) for s in samples)


def per_run(samples: list[Sample], attr: str) -> float:
    return statistics.median(getattr(s, attr) / s.runs for s in samples)


def report(bench: Bench, sides: dict[str, list[Sample]], agents: int, rounds: int,
           steps: dict[str, tuple[float, float]]) -> None:
    cores = psutil.cpu_count() or 1
    print()
    print(f"{agents} agents vs 1, same 3-turn scripted task (Write, Bash, answer), model latency "
          f"{bench.latency:g}s per request; median of {rounds} rounds")
    print(f"{'side':<34}{'1 agent':>10}{f'{agents} agents':>12}{'ratio':>8}{'goal':>7}  verdict")
    lab_ratio = median(sides["lab-N"], "wall") / median(sides["lab-1"], "wall")
    raw_ratio = median(sides["raw-N"], "wall") / median(sides["raw-1"], "wall")
    verdict = "PASS" if lab_ratio <= GOAL else "MISS"
    print(f"{'claude-lab (execute_for_agent)':<34}{median(sides['lab-1'], 'wall'):>9.2f}s"
          f"{median(sides['lab-N'], 'wall'):>11.2f}s{lab_ratio:>8.2f}{GOAL:>7.1f}  {verdict}")
    print(f"{'raw CLI (bare docker exec)':<34}{median(sides['raw-1'], 'wall'):>9.2f}s"
          f"{median(sides['raw-N'], 'wall'):>11.2f}s{raw_ratio:>8.2f}{'':>7}  baseline")
    print(f"{'raw CLI in a git repository':<34}{median(sides['git-1'], 'wall'):>9.2f}s"
          f"{median(sides['git-N'], 'wall'):>11.2f}s"
          f"{median(sides['git-N'], 'wall') / median(sides['git-1'], 'wall'):>8.2f}{'':>7}  baseline")
    print()
    print(f"run overhead (goal <= {OVERHEAD_GOAL}x)   {'1 agent':>10}{f'{agents} agents':>12}  verdict")
    for label, raw in (("claude-lab / raw CLI", "raw"), ("claude-lab / raw CLI in a git repo", "git")):
        one = median(sides['lab-1'], 'wall') / median(sides[f'{raw}-1'], 'wall')
        many = median(sides['lab-N'], 'wall') / median(sides[f'{raw}-N'], 'wall')
        print(f"  {label:<34}{one:>8.2f}{many:>12.2f}  {'PASS' if max(one, many) <= OVERHEAD_GOAL else 'MISS'}")
    spread = ", ".join(f"{k} " + "/".join(f"{s.wall:.2f}" for s in v) for k, v in sides.items())
    print(f"every round's wall time (s): {spread}")

    print()
    keys = ("lab-1", "lab-N", "raw-1", "raw-N", "git-1", "git-N")
    print("CPU seconds per run (median)          " + "".join(f"{k:>8}" for k in keys))
    for label, attr in (("inside the agent's container", "container_cpu"),
                        ("Docker daemons (dockerd, containerd)", "daemon_cpu"),
                        ("this process (service, models)", "self_cpu")):
        print(f"  {label:<36}" + "".join(f"{per_run(sides[k], attr):>8.2f}" for k in keys))
    print(f"  {'machine CPUs busy during the timing':<36}"
          + "".join(f"{median(sides[k], 'busy') * 100:>7.0f}%" for k in keys))
    floors: dict[str, float] = {}
    for side, one in (("lab", "lab-1"), ("raw", "raw-1")):
        # The daemons' figure is left out: they serve everything else on the machine too.
        cpu = per_run(sides[one], "container_cpu") + per_run(sides[one], "self_cpu")
        floor = floors[side] = max(1.0, agents * cpu / cores / median(sides[one], "wall"))
        print(f"  CPU floor ({side}): {agents} runs x {cpu:.2f} CPU-s (container + this process) / {cores} CPUs "
              f"= {agents * cpu / cores:.2f}s -> ratio at least {floor:.2f}")

    phases_1 = [p for s in sides["lab-1"] for p in s.phases]
    phases_n = [p for s in sides["lab-N"] for p in s.phases]
    if phases_1 and phases_n:
        print()
        print(f"where a claude-lab run's time goes (median s)         {'1 agent':>9}{f'{agents} agents':>11}")
        for key in phases_1[0]:
            print(f"  {key:<50}{statistics.median(p[key] for p in phases_1):>9.3f}"
                  f"{statistics.median(p[key] for p in phases_n):>11.3f}")
    print()
    print("claude-lab's steps alone, one agent, nothing else running (median wall / container CPU, s)")
    for key, (wall, cpu) in steps.items():
        print(f"  {key:<50}{wall:>9.3f}{cpu:>9.3f}")
    if verdict == "MISS":
        why = (f"the CPU the runs need allows no better than {floors['lab']:.2f}x: they are CPU-bound "
               f"(see `CPU floor` above)" if floors["lab"] > GOAL else
               "see the phases above for where the time goes")
        print(f"\nMISS: {agents} agents in parallel took {lab_ratio:.2f}x one agent (goal <= {GOAL}); "
              f"the bare CLI alone scales {raw_ratio:.2f}x on this machine ({cores} CPUs); {why}.")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--agents", type=positive, default=10, help="agents in the parallel side (default 10)")
    p.add_argument("--rounds", type=positive, default=3, help="timed rounds (default 3)")
    p.add_argument("--warmup", type=int, default=1, help="untimed rounds first (default 1)")
    p.add_argument("--latency", type=float, default=0.0,
                   help="seconds the scripted model takes per request, as a real model would (default 0: "
                        "every run is pure CPU, the hardest case)")
    p.add_argument("--step-repeats", type=positive, default=5, help="repeats of the git-step timing (default 5)")
    args = p.parse_args(argv)

    def on_signal(signum, frame):
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # nothing may cut the cleanup short
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    project = Path(tempfile.mkdtemp(prefix="claude-lab-bench-"))
    name = f"bench-{uuid.uuid4().hex[:12]}"
    lab = Lab(project, name=name, postgres_port=free_port(), redis_port=free_port())
    bench: Bench | None = None
    try:
        lab.build(["agent"], progress=False)
        bench = Bench(lab, args.agents, args.latency)
        print(f"lab {name}, {psutil.cpu_count()} CPUs, agent_cpus={lab.config.agent_cpus}, "
              f"model latency {args.latency:g}s per request, "
              f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        print(f"created {args.agents} agents in {bench.setup():.1f}s (not timed)")
        sides: dict[str, list[Sample]] = {k: [] for k in ("lab-1", "raw-1", "git-1", "lab-N", "raw-N", "git-N")}
        one, every = bench.ids[:1], bench.ids
        for r in range(args.warmup + args.rounds):
            tag = f"r{r}"
            got = {"lab-1": bench.lab_side(one, tag), "raw-1": bench.raw_side(one, tag),
                   "git-1": bench.raw_side(one, tag, RAW_GIT_DIR),
                   "lab-N": bench.lab_side(every, tag), "raw-N": bench.raw_side(every, tag),
                   "git-N": bench.raw_side(every, tag, RAW_GIT_DIR)}
            counted = r >= args.warmup
            print(f"round {r + 1}/{args.warmup + args.rounds}{'' if counted else ' (warm-up)'}: "
                  + ", ".join(f"{k} {s.wall:.2f}s" for k, s in got.items()))
            if counted:
                for k, s in got.items():
                    sides[k].append(s)
        steps = bench.step_costs(args.step_repeats)
        report(bench, sides, args.agents, args.rounds, steps)
        if bench.failures:
            print(f"\nWARNING: {len(bench.failures)} runs did not do the task, so their times mean little:")
            for f in bench.failures[:10]:
                print(f"  {f}")
    except KeyboardInterrupt:
        print("\ninterrupted; cleaning up", file=sys.stderr)
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if bench is not None:
            bench.stop_models()
            bench.service.close()
        try:
            lab.destroy(volumes=True)
        except Exception as exc:  # report, but still remove the folder and exit 0
            print(f"cleanup failed: {exc}; check `docker ps -a --filter label={n.LAB}={name}`", file=sys.stderr)
        shutil.rmtree(project, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
