#!/usr/bin/env python
"""What seeding an agent from the project costs, and what bringing its work back costs.

    .venv/bin/python benchmarks/workspace.py             # about two minutes
    .venv/bin/python benchmarks/workspace.py --runs 3    # fewer rounds

The seed of a commit is kept in the user's cache (~/.cache/claude-lab/seeds), so the first agent started
from a commit makes it (printed apart) and the timed ones reuse it, as an experiment's trials do.

On a generated repository of about 3,000 files and 60 MB with some history (made once, in a temporary
folder, outside the timings):

(a) seeding:  `lab.create_agent(id, source="project")` against `lab.create_agent(id, source=None)` in the
    same run, interleaved; the difference of the medians is what seeding adds (goal: at most 2 s).
(b) the round trip: an agent changes 50 files, then `lab.fetch(id)` + `lab.merge(id)` (goal: at most 1 s).

Everything lives in a lab `bench-ws-<uuid>` and is removed at the end, also on Ctrl-C. The script always
exits 0: it is a measurement; a missed goal prints a MISS line.
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import GIT_ENV, free_port  # noqa: E402

from claude_lab.lab import Lab  # noqa: E402

GOAL_SEED_S = 2.0
GOAL_BACK_S = 1.0


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, env={**os.environ, **GIT_ENV})


def generate(repo: Path, files: int, size: int, commits: int) -> tuple[int, int]:
    """A repository of `files` text files of about `size` bytes each, over `commits` commits."""
    repo.mkdir(parents=True)
    git(repo, "init", "-q", "-b", "main")
    per_commit = files // commits
    for c in range(commits):
        for i in range(c * per_commit, (c + 1) * per_commit):
            folder = repo / f"pkg{i % 40:02d}"
            folder.mkdir(exist_ok=True)
            # Hex of random bytes: text that git cannot compress away, as real source history is not empty.
            (folder / f"mod{i:04d}.py").write_text(f"# module {i}\n" + os.urandom(size // 2).hex() + "\n")
        git(repo, "add", "-A")
        git(repo, "commit", "-q", "-m", f"history {c}")
    total = sum(f.stat().st_size for f in repo.rglob("*") if f.is_file() and ".git" not in f.parts)
    return sum(1 for f in repo.rglob("*.py")), total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="timed creates per side (default 5)")
    parser.add_argument("--files", type=int, default=3000)
    parser.add_argument("--file-size", type=int, default=20_000, help="bytes per file (default 20000: 60 MB)")
    parser.add_argument("--commits", type=int, default=5)
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="claude-lab-bench-ws-"))
    project = tmp / "project"
    started = time.perf_counter()
    count, size = generate(project, args.files, args.file_size, args.commits)
    pack = sum(f.stat().st_size for f in (project / ".git").rglob("*") if f.is_file())
    print(f"repository: {count} files, {size / 1e6:.0f} MB in the work tree, {pack / 1e6:.0f} MB of .git, "
          f"{args.commits} commits (made in {time.perf_counter() - started:.0f} s)")
    lab = Lab(project, name=f"bench-ws-{uuid.uuid4().hex[:6]}", postgres_port=free_port(), redis_port=free_port())
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        lab.build(["agent", "netguard"], progress=False)
        seeded, empty, cold = [], [], []
        for i in range(args.runs + 1):  # the first round warms up and is not counted
            for kind, times in (("seeded", seeded), ("empty", empty)):
                agent = f"{kind}-{i}"
                t0 = time.perf_counter()
                lab.create_agent(agent, source="project" if kind == "seeded" else None, progress=False)
                took = time.perf_counter() - t0
                lab.remove_agent(agent, volumes=True)
                if i:
                    times.append(took)
                elif kind == "seeded":
                    cold.append(took)  # the commit's first agent: its seed is made (then kept for the others)
        added = statistics.median(seeded) - statistics.median(empty)
        print(f"(a) create_agent: seeded {statistics.median(seeded):.2f} s, empty {statistics.median(empty):.2f} s "
              f"(medians of {args.runs}); seeding adds {added:.2f} s = {statistics.median(seeded) / statistics.median(empty):.2f}x "
              f"(goal: adds <= {GOAL_SEED_S:.1f} s)")
        print(f"    the commit's first seeded agent (its seed made, not yet kept): {cold[0]:.2f} s")
        if added > GOAL_SEED_S:
            print(f"MISS: seeding adds {added:.2f} s > {GOAL_SEED_S:.1f} s")

        back = []
        for i in range(args.runs):
            agent = f"worker-{i}"
            lab.create_agent(agent, progress=False)
            lab.exec(agent, f"cd /workspace && for f in $(ls pkg*/mod*.py | head -50); do echo '# round {i}' >> $f; "
                            f"done && git commit -qam 'round {i}' && echo new > new-{i}.txt").check()
            t0 = time.perf_counter()
            lab.fetch(agent)
            result = lab.merge(agent)
            back.append(time.perf_counter() - t0)
            assert len(result.files) == 51, result
            lab.remove_agent(agent, volumes=True)
        took = statistics.median(back)
        print(f"(b) fetch + merge of a 50-file change: {took:.2f} s (median of {args.runs}; goal <= {GOAL_BACK_S:.1f} s)")
        if took > GOAL_BACK_S:
            print(f"MISS: fetch + merge takes {took:.2f} s > {GOAL_BACK_S:.1f} s")
    except KeyboardInterrupt:
        print("interrupted: cleaning up")
    finally:
        lab.destroy(volumes=True)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
