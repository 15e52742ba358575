"""The answer-quality and time-to-first-token benchmarks' metrics, store and reports (no model involved)."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.answers import (
    ANSWER_TOKENS,
    MAX_NEW_TOKENS,
    answer_contained,
    load_store,
    paired_bootstrap,
    report,
    summarize,
)
from benchmarks.data import load_examples
from benchmarks.ttft import kept_rows
from benchmarks.ttft import report as ttft_report
from benchmarks.ttft import summarize as ttft_summarize


def test_the_answer_cap_fits_every_needle_answer() -> None:
    """The needles' gold answers fit the target's answer cap: a byte-level BPE (Qwen's) never takes more tokens
    than bytes. 24 tokens cut the key-value needle's 36-character UUID short, so no answer could match."""
    for ds in ("niah_passkey", "niah_kv"):
        cap = ANSWER_TOKENS.get(ds, MAX_NEW_TOKENS)
        for ex in load_examples(ds, n=10, context_tokens=600, seed=0, count=lambda t: len(t.split())):
            assert max(len(a.encode()) for a in ex.answers) <= cap, (ds, ex.answers)


def test_answer_contained_is_normalised_whole_words() -> None:
    """A gold answer counts when it appears, normalised, as whole words in the prediction."""
    assert answer_contained("It was The Beatles, in 1962.", ["the beatles"])
    assert not answer_contained("Beatlemania", ["Beatles"])
    assert not answer_contained("anything", [""])


def test_store_resumes_and_skips_a_torn_line(tmp_path: Path) -> None:
    """Stored answers load by case|method|rate; a half-written last line from an interrupted run is skipped."""
    store = tmp_path / "answers.jsonl"
    row = {"case": "c1", "method": "full", "rate": 1.0}
    store.write_text(json.dumps(row) + "\n" + '{"case": "c2", "meth', encoding="utf-8")
    assert list(load_store(store)) == ["c1|full|1.0"]
    assert load_store(tmp_path / "missing.jsonl") == {}


def test_paired_bootstrap_brackets_the_ratio() -> None:
    """The interval holds the point ratio; identical scores give exactly 1; no signal gives NaN."""
    method, full = [0.5, 1.0, 0.0, 1.0], [1.0, 1.0, 0.5, 1.0]
    lo, hi = paired_bootstrap(method, full)
    assert lo <= sum(method) / sum(full) <= hi
    assert paired_bootstrap(full, full) == (1.0, 1.0)
    lo, hi = paired_bootstrap([0.0], [0.0])
    assert lo != lo and hi != hi  # NaN


def test_summary_compares_with_the_full_prompt_on_the_same_cases() -> None:
    """Retained F1 uses only cases answered from the full prompt too; the report has a row per method."""

    def row(case: str, method: str, rate: float, f: float) -> dict[str, object]:
        return {
            "case": case,
            "dataset": "d",
            "length": "2000",
            "method": method,
            "rate": rate,
            "em": f,
            "f1": f,
            "contained": f > 0,
            "context_tokens": 100,
        }

    rows = [
        row("a", "full", 1.0, 1.0),
        row("b", "full", 1.0, 0.5),
        row("a", "ours/smollm2-135m", 0.25, 1.0),
        row("b", "ours/smollm2-135m", 0.25, 0.0),
        row("z", "ours/smollm2-135m", 0.25, 1.0),
    ]
    summary = summarize(rows)
    ours = next(s for s in summary if s["method"] == "ours/smollm2-135m")
    assert ours["n"] == 2 and abs(ours["retained"] - 1.0 / 1.5) < 1e-9
    assert "ours/smollm2-135m" in report(summary)


def test_ttft_speedup_counts_the_draft() -> None:
    """The speed-up divides the full prompt's TTFT by draft + selection + the compressed prompt's TTFT."""
    result = {
        "machine": "m",
        "draft": "d",
        "target": "t",
        "keep_rate": 0.25,
        "rows": [
            {
                "length": 4000,
                "case": "c",
                "context_tokens": 4000,
                "compressed_tokens": 1000,
                "full_prompt_tokens": 4100,
                "short_prompt_tokens": 1100,
                "full_ttft_s": 40.0,
                "compress_s": 8.0,
                "draft_s": 7.5,
                "short_ttft_s": 8.0,
                "fallback": None,
            }
        ],
    }
    (s,) = ttft_summarize(result)
    assert s["speedup"] == 40.0 / 16.0 and s["draft_ms_per_1k"] == 2000.0
    md = ttft_report(result)
    assert "**2.50x**" in md and "375" in md  # break-even: 0.75 * 1e6 / 2000 ms per 1k


def test_summary_keeps_each_draft_precision_apart() -> None:
    """Rows of one method scored by a float32 and a bfloat16 draft are summarised apart, the draft named."""
    base = {"dataset": "d", "length": "4000", "em": 1.0, "contained": True, "context_tokens": 10}
    rows = [
        {**base, "case": "a", "method": "full", "rate": 1.0, "f1": 1.0, "draft": ""},
        {**base, "case": "a", "method": "ours/smollm2-135m", "rate": 0.25, "f1": 1.0, "draft": "smollm2-135m"},
        {**base, "case": "a", "method": "ours/smollm2-135m", "rate": 0.5, "f1": 0.5, "draft": "smollm2-135m+bf16"},
    ]
    summary = summarize(rows)
    assert [(s["draft"], s["rate"]) for s in summary if s["method"] != "full"] == [
        ("smollm2-135m", 0.25),
        ("smollm2-135m+bf16", 0.5),
    ]
    assert "| smollm2-135m+bf16 | 0.5 |" in report(summary)


def test_ttft_adds_to_rows_of_the_same_draft_target_and_keep_only() -> None:
    """A resumed or partial run keeps the stored rows only when draft (with its precision), target and keep match."""
    head = {"draft": "smollm2-135m+bf16", "target": "t", "keep_rate": 0.25}
    earlier = {**head, "machine": "m", "rows": [{"length": 2000, "case": "c"}]}
    assert kept_rows(earlier, head) == earlier["rows"]
    assert kept_rows({**earlier, "draft": "smollm2-135m"}, head) == []
    assert kept_rows({**earlier, "keep_rate": 0.5}, head) == []
    assert kept_rows(None, head) == []
