"""Hostile output from an exec: huge, invalid UTF-8, binary. The caller stays bounded and alive."""
from __future__ import annotations

import time
import tracemalloc

from claude_lab import Lab

MB = 1_000_000


def test_100_mb_of_output_is_cut_with_a_note_and_memory_stays_bounded(lab: Lab, probes):
    lab.create_agent("chatty", progress=False)
    tracemalloc.start()
    started = time.monotonic()
    try:
        res = lab.exec("chatty", "head -c 100000000 /dev/zero | tr '\\0' x", max_output=MB, timeout=300)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    took = time.monotonic() - started
    assert res.exit_code == 0
    assert res.stdout.startswith("x" * MB) and res.cut == {"stdout": 99 * MB}
    assert "99000000 more characters of stdout were cut" in res.stdout
    assert peak < 48 * MB, peak  # the 100 MB never sat in memory at once
    assert probes.record("100 MB on stdout (keep 1 MB)", "bounded, cut noted",
                         "bounded, cut noted" if peak < 48 * MB else f"peak {peak / MB:.0f} MB",
                         area="output", where="caller", note=f"peak {peak / MB:.1f} MB traced, {took:.1f} s")


def test_invalid_utf8_and_binary_output_are_handled(lab: Lab, probes):
    lab.create_agent("binary", progress=False)
    noise = lab.exec("binary", "head -c 3000000 /dev/urandom; head -c 1000 /dev/urandom >&2")
    assert noise.exit_code == 0 and "\ufffd" in noise.stdout and isinstance(noise.stderr, str)
    assert probes.record("3 MB of random bytes (invalid UTF-8, NULs)", "text with U+FFFD, no error",
                         "text with U+FFFD, no error", area="output", where="caller")
    # Multi-byte characters split across chunk boundaries are decoded whole.
    accents = lab.exec("binary", ["python3", "-c", "import sys; sys.stdout.write('é' * 2_000_000)"])
    ok = accents.stdout == "é" * 2_000_000
    assert probes.record("2 M two-byte characters across chunk boundaries", "decoded exactly",
                         "decoded exactly" if ok else "mangled", area="output", where="caller")
