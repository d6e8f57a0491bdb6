#!/usr/bin/env python
"""What the experiment machinery costs: an experiment against the same runs driven by hand.

    .venv/bin/python benchmarks/experiment.py             # about two minutes
    .venv/bin/python benchmarks/experiment.py --rounds 1

12 trials (2 tasks x 2 variants x 3 trials) of a scripted three-turn task on a small git project, at
concurrency 4, two ways, interleaved round by round:

- baseline: 12 plain `lab.claude` calls through the async service (`execute_for_agent`, max_concurrency 4),
  each on a fresh agent the service creates (seeded from the project, as `create_agent` does by default)
  and that is removed afterwards;
- claude-lab: `lab.experiment(...).run()` -- the same agents and runs, plus the base commit, the scorer in
  each container, the trial's work kept for `merge`, the trials table, the agents removed.

The ratio is median(experiment) / median(baseline); goal: at most 1.15. Everything lives in a lab
`bench-exp-<uuid>` in a temporary project and is removed at the end, also on Ctrl-C. Always exits 0.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import scratch_lab  # noqa: E402

from claude_lab import Lab, ScriptedModel, Task  # noqa: E402
from claude_lab.service import ClaudeCodeDockerService  # noqa: E402

GOAL = 1.15


def turns(task: str) -> list:
    def tool(name: str, **tool_input) -> list[dict]:
        return [{"type": "tool_use", "name": name, "input": tool_input}]

    return [tool("Write", file_path=f"/workspace/{task}.txt", content="ok\n"),
            tool("Bash", command=f"cat {task}.txt"), "done"]


TASKS = [Task("alpha", prompt="write alpha.txt", score="test -s alpha.txt"),
         Task("beta", prompt="write beta.txt", score="test -s beta.txt")]
VARIANTS = {"plain": {}, "careful": {"prompt_suffix": " Check it."}}
TRIALS = 3


def baseline(lab: Lab, concurrency: int, tag: str) -> float:
    service = ClaudeCodeDockerService(lab, max_concurrency=concurrency)
    jobs = [(f"b{tag}-{t.name}-{v}-{i}", t.prompt + VARIANTS[v].get("prompt_suffix", ""), t.name)
            for t in TASKS for v in VARIANTS for i in range(TRIALS)]

    async def one(agent: str, prompt: str, task: str) -> bool:
        res = await service.execute_for_agent(agent, prompt, model=ScriptedModel(turns(task)))
        await asyncio.get_running_loop().run_in_executor(None, lambda: lab.remove_agent(agent, volumes=True))
        return res.success

    async def go() -> list[bool]:
        return await asyncio.gather(*(one(*job) for job in jobs))

    start = time.perf_counter()
    ok = asyncio.run(go())
    took = time.perf_counter() - start
    service.close()
    if not all(ok):
        print(f"  baseline: {ok.count(False)} runs failed")
    return took


def experiment(lab: Lab, concurrency: int, tag: str) -> float:
    exp = lab.experiment(f"bench-{tag}", TASKS, trials=TRIALS, variants=VARIANTS, concurrency=concurrency,
                         model=lambda task, trial: ScriptedModel(turns(task)))
    start = time.perf_counter()
    rows = exp.run()
    took = time.perf_counter() - start
    if not rows["passed"].all():
        print(f"  experiment: {(~rows['passed'].fillna(False)).sum()} trials did not pass: "
              f"{sorted(set(rows['status']))}")
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=2, help="timed rounds per side (default 2)")
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()
    print(f"claude-lab experiment benchmark: {len(TASKS)} tasks x {len(VARIANTS)} variants x {TRIALS} trials at "
          f"concurrency {args.concurrency}; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    base: list[float] = []
    ours: list[float] = []
    with scratch_lab("bench-exp", git=True) as lab:
        lab.build(progress=False)
        baseline(lab, args.concurrency, "warm")  # the first agents warm the seed cache and the lab network
        for r in range(args.rounds):
            base.append(baseline(lab, args.concurrency, str(r)))
            ours.append(experiment(lab, args.concurrency, str(r)))
            print(f"  round {r + 1}: baseline {base[-1]:.1f} s, experiment {ours[-1]:.1f} s")
        ratio = statistics.median(ours) / statistics.median(base)
        print(f"12 trials: baseline {statistics.median(base):.1f} s   experiment {statistics.median(ours):.1f} s   "
              f"ratio {ratio:.2f}  goal <= {GOAL} {'PASS' if ratio <= GOAL else 'MISS'}")


if __name__ == "__main__":
    main()
