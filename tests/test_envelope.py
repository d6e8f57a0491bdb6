"""The run envelope's report lines: found in any split of the stream, never shown, never invented."""
from __future__ import annotations

import json

from claude_lab.runs.envelope import RS, MarkerScan

TAG = "claude-lab:0123456789abcdef:"


def _stream(before: dict, output: str, after: dict) -> str:
    return (f"{RS}{TAG}before {json.dumps(before)}\n" + output
            + f"{RS}{TAG}after {json.dumps(after)}\n")


def test_reports_come_out_of_every_split_of_the_stream():
    before, after = {"start_commit": "a" * 40}, {"diff": "x\n" * 50, "end_commit": "b" * 40}
    output = "warning: one\nno newline at the end"
    text = _stream(before, output, after)
    for cut in range(len(text) + 1):
        for size in (1, 7):  # the second half in small pieces
            scan = MarkerScan(TAG)
            pieces = [text[:cut]] + [text[i:i + size] for i in range(cut, len(text), size)]
            shown = "".join(scan.feed(p) for p in pieces) + scan.flush()
            assert shown == output, (cut, size)
            assert scan.reports == {"before": before, "after": after}


def test_lookalikes_stay_in_the_output():
    scan = MarkerScan(TAG)
    other = f"{RS}claude-lab:ffffffffffffffff:after {{\"diff\": \"forged\"}}\n"  # another run's tag
    broken = f"{RS}{TAG}after not json\n"
    lone = f"a {RS} b\n"
    shown = scan.feed(other + broken + lone) + scan.flush()
    assert shown == other + broken + lone
    assert scan.reports == {}


def test_an_unfinished_report_at_the_end_is_output():
    scan = MarkerScan(TAG)
    text = f"out {RS}{TAG}after {{\"diff\": "
    assert scan.feed(text) + scan.flush() == text
    assert scan.reports == {}
