"""The precision suite's summary: recall, low-overlap recall and agreement with the float32 selection."""

from __future__ import annotations

from typing import Any

from benchmarks.precision import summarize, to_markdown


def _rec(dtype: str, example: str, evidence: list[tuple[bool, int]], spans: list[list[int]]) -> dict[str, Any]:
    return {
        "draft": "d",
        "dtype": dtype,
        "example": example,
        "dataset": "hotpotqa",
        "length": 2000,
        "rate": 0.25,
        "evidence": evidence,
        "answer_kept": evidence[0][0],
        "spans": spans,
        "seconds": 1.0,
        "context_tokens": 2000,
    }


def test_summary_counts_recall_low_overlap_and_same_selection() -> None:
    records = [
        _rec("float32", "a", [(True, 3), (False, 0)], [[0, 5]]),
        _rec("float32", "b", [(True, 1)], [[2, 9]]),
        _rec("bfloat16", "a", [(True, 3), (True, 0)], [[0, 6]]),
        _rec("bfloat16", "b", [(True, 1)], [[2, 9]]),
    ]
    by = {s["dtype"]: s for s in summarize(records)}
    assert by["float32"]["recall"] == 200 / 3 and by["bfloat16"]["recall"] == 100.0
    assert by["float32"]["low_overlap_recall"] == 50.0 and by["bfloat16"]["low_overlap_recall"] == 100.0
    assert by["float32"]["same_selection"] == 100.0 and by["bfloat16"]["same_selection"] == 50.0
    assert by["bfloat16"]["ms_per_1k"] == 500.0
    md = to_markdown(summarize(records), "x86_64")
    assert "| d | bfloat16 | hotpotqa | 2000 | 0.25 | 2 | 100.0 | 100.0 | 100.0 | 50 | 500 |" in md
