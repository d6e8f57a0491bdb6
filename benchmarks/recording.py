#!/usr/bin/env python
"""What the model proxy and recording cost: per model request, a whole run through the proxy, a recorded run.

    .venv/bin/python benchmarks/recording.py                 # about two minutes
    .venv/bin/python benchmarks/recording.py --runs 5 --requests 100

(a) per request: a streaming `POST /v1/messages` (a 50 kB body, as the CLI sends) read to the end,
    straight to a ScriptedModel on loopback (the baseline) vs through the lab's `ModelProxy` (token
    checked, the real key written in, every exchange stored in a run store: SQLite, WAL) -- time to
    first byte and to the last byte, and the milliseconds added (goal: at most 5; the ratio is large
    only because a loopback ScriptedModel answers in about 2 ms, where a real model takes seconds).
(d) the credential boundary on a whole run: the bare CLI by `docker exec` with the key and a
    ScriptedModel on the gateway in its environment (the direct path runs took before the proxy;
    the baseline) vs the same CLI holding a run token, through the lab's proxy (goal: <= 1.05).
(b) whole run: `lab.claude(..., record=False)` (the baseline) vs `lab.claude(...)` (recorded: the
    proxy, the "running" record, the cassette, the transcript and the workspace bundle), the real
    CLI in one agent against a ScriptedModel with a four-turn script.
(c) replay (information): `lab.replay(run_id)` -- a fresh agent, workspace restored, the same run
    answered from the cassette, the agent removed -- against the recorded runs of (b).

Sides are interleaved (baseline, claude-lab, baseline, ...) so load on the machine hits both alike;
ratios are median(claude-lab) / median(baseline). Everything lives in a lab `bench-<uuid>` in a
temporary project folder and is removed at the end, also on Ctrl-C or SIGTERM. Always exits 0.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import scratch_lab  # noqa: E402

from claude_lab import Lab, ScriptedModel  # noqa: E402
from claude_lab.model import scripted as model_module  # noqa: E402
from claude_lab.containers.services import WORKSPACE  # noqa: E402
from claude_lab.model.endpoint import lab_gateway  # noqa: E402
from claude_lab.model.gateway import lab_proxy  # noqa: E402
from claude_lab.model.grants import HELLO_PATH, Credential  # noqa: E402
from claude_lab.model.proxy import ModelProxy  # noqa: E402
from claude_lab.netguard.sidecar import allow_endpoint  # noqa: E402
from claude_lab.runs.claude_cli import claude_argv  # noqa: E402
from claude_lab.runs.store import RunStore  # noqa: E402

GOAL_ADDED_MS = 5.0  # what the proxy may add to one request (a real model takes seconds to answer)
GOAL_RUN = 1.15  # a recorded run vs the same run unrecorded
GOAL_BOUNDARY = 1.05  # the CLI through the proxy with a run token vs the CLI with the key, straight to the model


def med(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def line(name: str, base: list[float], ours: list[float], goal: float | None, unit: str = "ms") -> None:
    ratio = med(ours) / med(base)
    verdict = "" if goal is None else ("PASS" if ratio <= goal else "MISS")
    print(f"{name:<38} baseline {med(base):9.1f} {unit}   claude-lab {med(ours):9.1f} {unit}   "
          f"ratio {ratio:5.2f}  {('goal <= ' + str(goal)) if goal else '(information)'} {verdict}")
    if unit == "s":
        print(f"{'':<38} samples: baseline {[round(v, 1) for v in base]}  claude-lab {[round(v, 1) for v in ours]}")
    if goal is not None and ratio > goal:
        print(f"MISS: {name}: ratio {ratio:.2f} > {goal}")


def bench_requests(count: int, store_dir: Path) -> None:
    # The baseline server without Nagle's algorithm, as the proxy runs: otherwise every streamed event
    # after the first waits for the client's delayed ACK (~40 ms a request), on both sides alike.
    model_module._Handler.disable_nagle_algorithm = True
    model = ScriptedModel([], host="127.0.0.1").start()
    store = RunStore(store_dir / "runs.sqlite")
    store.start_run({"run_id": "bench", "lab": "bench", "agent_id": "bench", "kind": "claude", "prompt": "p"})
    proxy = ModelProxy("127.0.0.1").start()
    grant = proxy.grant("bench", "bench", upstream=model.url, credential=Credential("sk-bench"),
                        on_exchange=lambda ex: store.add_exchange("bench", ex))
    body = json.dumps({"model": "m", "max_tokens": 100, "stream": True, "tools": [{"name": "Bash"}],
                       "messages": [{"role": "user", "content": "x" * 50_000}]}).encode()
    session = requests.Session()
    session.get(proxy.url + HELLO_PATH, headers={"x-api-key": grant.token}, timeout=10).raise_for_status()
    first: dict[str, list[float]] = {"direct": [], "proxy": []}
    total: dict[str, list[float]] = {"direct": [], "proxy": []}
    try:
        for i in range(count + 3):
            for side, url in (("direct", model.url), ("proxy", proxy.url)):
                start = time.perf_counter()
                key = grant.token if side == "proxy" else "sk-bench"
                with session.post(url + "/v1/messages", data=body, stream=True, timeout=30,
                                  headers={"content-type": "application/json", "x-api-key": key}) as resp:
                    chunks = resp.iter_content(chunk_size=None)
                    next(chunks)
                    ttfb = time.perf_counter() - start
                    for _ in chunks:
                        pass
                end = time.perf_counter() - start
                if i >= 3:  # warm-up rounds are not counted
                    first[side].append(ttfb * 1000)
                    total[side].append(end * 1000)
    finally:
        proxy.stop()
        model.stop()
        store.close()
    print(f"(a) {count} streaming requests of {len(body) // 1000} kB each side; "
          f"{len(store.exchanges('bench'))} exchanges stored")
    line("(a) per request, to the first byte", first["direct"], first["proxy"], None)
    line("(a) per request, to the last byte", total["direct"], total["proxy"], None)
    added = med(total["proxy"]) - med(total["direct"])
    print(f"{'(a) added per request':<38} {added:.1f} ms   goal <= {GOAL_ADDED_MS} ms "
          f"{'PASS' if added <= GOAL_ADDED_MS else 'MISS'}")
    if added > GOAL_ADDED_MS:
        print(f"MISS: (a) the proxy adds {added:.1f} ms a request > {GOAL_ADDED_MS} ms")


def script() -> list:
    def tool(name: str, **tool_input) -> list[dict]:
        return [{"type": "tool_use", "name": name, "input": tool_input}]

    return [tool("Write", file_path="/workspace/app.py", content="print('app')\n"),
            tool("Edit", file_path="/workspace/app.py", old_string="app", new_string="app 2"),
            tool("Bash", command="python3 app.py > out.txt"), "done"]


def bench_runs(lab: Lab, runs: int) -> None:
    lab.create_agent("bench-agent", progress=False)
    plain: list[float] = []
    recorded: list[float] = []
    replays: list[float] = []
    last = None
    for i in range(runs + 1):
        for record in (False, True):
            model = ScriptedModel(script())
            try:
                lab.exec("bench-agent", "rm -f app.py out.txt").check()
                start = time.perf_counter()
                res = lab.claude("bench-agent", "write, edit and run app.py", model=model, record=record,
                                 timeout=300)
                elapsed = time.perf_counter() - start
            finally:
                model.stop()
            if res.status != "success":
                print(f"  run failed ({res.status}): {res.error}")
                continue
            if i >= 1:  # the first round warms the CLI's caches in the container
                (recorded if record else plain).append(elapsed)
            if record:
                last = res
    line("(b) whole run (4 turns)", plain, recorded, GOAL_RUN, "s")
    if last is not None:
        for _ in range(max(1, runs // 2)):
            start = time.perf_counter()
            again = lab.replay(last.run_id)
            replays.append(time.perf_counter() - start)
            if not again.reproduced:
                print("  replay did not reproduce the diff")
        line("(c) replay (fresh agent, restore, run, remove) vs the recorded run", recorded, replays, None, "s")


def bench_boundary(lab: Lab, runs: int) -> None:
    agent = "bench-agent"
    gateway = lab_gateway(lab.engine, lab.name)
    proxy = lab_proxy(lab.engine, lab.name)
    allow_endpoint(lab.engine, lab.name, agent, proxy.url)
    argv = claude_argv("write, edit and run app.py")
    direct: list[float] = []
    through: list[float] = []
    for i in range(runs + 1):
        for side in ("direct", "proxy"):
            model = ScriptedModel(script(), host=gateway if side == "direct" else "127.0.0.1").start()
            grant = None
            try:
                lab.exec(agent, "rm -f app.py out.txt").check()
                if side == "direct":
                    allow_endpoint(lab.engine, lab.name, agent, model.url)
                    env = {"ANTHROPIC_API_KEY": "sk-bench-key", "ANTHROPIC_BASE_URL": model.url}
                else:  # the run's set-up step binds the token (in lab.claude: within the exec that probed before)
                    grant = proxy.grant(f"bench-{i}", agent, upstream=model.url, credential=Credential("sk-bench"))
                    hello = f"import urllib.request as u; u.urlopen(u.Request('{proxy.url}{HELLO_PATH}', " \
                            f"headers={{'x-api-key': '{grant.token}'}}), timeout=5)"
                    lab.exec(agent, ["python3", "-c", hello]).check()
                    env = grant.env()
                start = time.perf_counter()
                res = lab.exec(agent, argv, workdir=WORKSPACE, env=env, timeout=300)
                elapsed = time.perf_counter() - start
            finally:
                if grant is not None:
                    grant.revoke()
                model.stop()
            if res.exit_code != 0 or '"subtype":"success"' not in res.stdout.replace(" ", ""):
                print(f"  {side} run failed (exit {res.exit_code}): {res.stderr[-300:]}")
                continue
            if i >= 1:
                (direct if side == "direct" else through).append(elapsed)
    line("(d) whole run, CLI: key+direct vs token+proxy", direct, through, GOAL_BOUNDARY, "s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="timed runs per side for (b) (default 3)")
    parser.add_argument("--requests", type=int, default=60, help="timed requests per side for (a) (default 60)")
    parser.add_argument("--parts", default="abcd", help="which parts to run (default abcd)")
    args = parser.parse_args()
    print(f"claude-lab recording benchmark; load average {os.getloadavg()[0]:.1f} "
          f"on {os.cpu_count()} CPUs")
    with scratch_lab("bench") as lab:
        if "a" in args.parts:
            bench_requests(args.requests, lab.config.project_dir)
        if "b" in args.parts or "c" in args.parts:
            bench_runs(lab, args.runs)
        if "d" in args.parts:
            if "b" not in args.parts and "c" not in args.parts:
                lab.create_agent("bench-agent", progress=False)
            bench_boundary(lab, args.runs + 4)


if __name__ == "__main__":
    main()
