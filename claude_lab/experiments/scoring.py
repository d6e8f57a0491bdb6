"""Scoring arithmetic: the unbiased pass@k estimator, a scorer's output read as a score, a diff's line counts."""
from __future__ import annotations

from math import comb

__all__ = ["diff_lines", "pass_at_k", "score_from_output"]


def pass_at_k(n: int, c: int, k: int) -> float:
    """The unbiased estimator of pass@k from `n` trials with `c` passes (Chen et al., 2021): 1 - C(n-c, k) / C(n, k)."""
    if not 0 <= c <= n or k < 1:
        raise ValueError(f"pass_at_k needs 0 <= c <= n and k >= 1 (n={n}, c={c}, k={k})")
    if k > n:
        return float("nan")
    if n - c < k:
        return 1.0
    return 1.0 - comb(n - c, k) / comb(n, k)


def score_from_output(output: str, exit_code: int) -> float:
    """A shell scorer's score: its last output line when that is a number, else 1.0 for exit 0 and 0.0 otherwise."""
    lines = [line.strip() for line in output.strip().splitlines() if line.strip()]
    if lines:
        try:
            return float(lines[-1])
        except ValueError:
            pass
    return 1.0 if exit_code == 0 else 0.0


def diff_lines(diff: str) -> tuple[int, int]:
    """Lines added and deleted in a unified diff."""
    added = deleted = 0
    for line in diff.splitlines():
        if line.startswith("+") and not line.startswith("+++"):
            added += 1
        elif line.startswith("-") and not line.startswith("---"):
            deleted += 1
    return added, deleted
