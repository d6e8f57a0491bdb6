#!/usr/bin/env python
"""How fast the CLI answers, against the docker CLI and docker-py in the same run.

    .venv/bin/python benchmarks/cli.py             # about a minute
    .venv/bin/python benchmarks/cli.py --runs 5

Whole processes, timed from spawn to exit, interleaved (baseline, claude-lab, ...); medians:

- CLI exec:  `claude-lab exec agent -- true` against `docker exec <container> true` (goal <= 3x);
- CLI start: `claude-lab --help` against `docker --help` (goal <= 3x);
- import:    `python -c "import claude_lab"` against `python -c "import docker"` (goal <= 1.5x);
- and, for the record, `python -c "import claude_lab.cli"` (pandas is not loaded by it), and the floors
  any Python CLI stands on: `python -c pass` against `docker --help` (the interpreter's own start-up),
  `python -c "import typer"` (the CLI library) and `python -c "import docker"` against `docker exec`.

Compiled modules are cached (in a temporary PYTHONPYCACHEPREFIX) as they are in any installed package:
with PYTHONDONTWRITEBYTECODE=1 (this machine's environment) an editable checkout would compile ~100
modules on every start, which no user's install does.

Everything lives in a lab `bench-cli-<uuid>` in a temporary project and is removed at the end, also on
Ctrl-C. Always exits 0: a missed goal prints a MISS line.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import scratch_lab  # noqa: E402


ROOT = Path(__file__).resolve().parent.parent


def timed(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    proc = subprocess.run(argv, env=env, cwd=ROOT, capture_output=True)
    took = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.decode()[-500:]}")
    return took


def row(name: str, base: list[float], ours: list[float], goal: float | None) -> None:
    b, o = statistics.median(base), statistics.median(ours)
    ratio = o / b
    verdict = "" if goal is None else ("PASS" if ratio <= goal else "MISS")
    print(f"{name:<34} baseline {b * 1000:8.1f} ms   claude-lab {o * 1000:8.1f} ms   ratio {ratio:6.2f}  "
          f"{('goal <= ' + str(goal)) if goal else '(information)'} {verdict}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=7, help="timed runs per side (default 7)")
    args = parser.parse_args()
    py = sys.executable
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    pyc = tempfile.TemporaryDirectory(prefix="bench-cli-pyc-")  # removed at exit
    env["PYTHONPYCACHEPREFIX"] = pyc.name
    print(f"claude-lab CLI benchmark: {args.runs} runs a side; load average {os.getloadavg()[0]:.1f} on "
          f"{os.cpu_count()} CPUs")
    with scratch_lab("bench-cli") as lab:
        container = lab.create_agent("bench", progress=False, source=None).name
        cli = [py, "-m", "claude_lab.cli", "-C", str(lab.config.project_dir), "-n", lab.name]
        pairs = {
            "CLI exec (exec agent -- true)": (["docker", "exec", container, "true"], cli + ["exec", "bench", "--", "true"], 3.0),
            "CLI start (--help)": (["docker", "--help"], cli + ["--help"], 3.0),
            "import claude_lab vs docker": ([py, "-c", "import docker"], [py, "-c", "import claude_lab"], 1.5),
            "import claude_lab.cli vs docker": ([py, "-c", "import docker"], [py, "-c", "import claude_lab.cli"], None),
            "floor: python -c pass vs --help": (["docker", "--help"], [py, "-c", "pass"], None),
            "floor: import typer vs --help": (["docker", "--help"], [py, "-c", "import typer"], None),
            "floor: import docker vs exec": (["docker", "exec", container, "true"], [py, "-c", "import docker"], None),
        }
        for name_, (base_argv, ours_argv, goal) in pairs.items():
            timed(base_argv, env), timed(ours_argv, env)  # warm the page cache
            base, ours = [], []
            for _ in range(args.runs):
                base.append(timed(base_argv, env))
                ours.append(timed(ours_argv, env))
            row(name_, base, ours, goal)
        loaded = subprocess.run([py, "-c", "import sys, claude_lab.cli; print(sorted(m for m in ('pandas', 'docker', "
                                 "'requests', 'rich', 'typer') if m in sys.modules))"], capture_output=True, text=True,
                                env=env).stdout.strip()
        print(f"`import claude_lab.cli` loads: {loaded}")


if __name__ == "__main__":
    main()
