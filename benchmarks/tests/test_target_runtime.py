"""The target-runtime benchmark without a model: its report, its agent trace, and its registration."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from benchmarks import target_runtime as tr
from crossprefill_agents import testing


def _row(config: str, step1: float, step2: float, prefill_4k: dict[str, Any] | None) -> dict[str, Any]:
    step = {"prompt_tokens": 1500, "reused_prompt_tokens": 0, "completion_tokens": 20, "ttft_s": 1.0}
    return {
        "config": config,
        "load_s": 2.0,
        "load_avg_1m": 1.5,
        "peak_rss_gb": 3.0,
        "prefill": {"1024": {"tokens_per_s": 100.0}, "4096": prefill_4k},
        "decode": {"tokens_per_s": 5.0},
        "agent_steps": [
            {**step, "total_s": step1, "tool_calls": [{"name": "search", "arguments": {}}], "raw_text": "{}"},
            {**step, "reused_prompt_tokens": 1499, "total_s": step2, "tool_calls": [], "raw_text": ""},
        ],
    }


def test_report_marks_skipped_lengths_failures_and_the_fastest_agent_steps() -> None:
    """The table has one row per configuration: skipped lengths and failed configurations say so, the GGUF load
    row has only its load time, the modelled 40-token steps use the step's own decode rate, and the fastest
    configs are named."""
    result = {
        "model": "m",
        "machine": "x",
        "lengths": [1024, 4096],
        "rows": [
            _row("a", 10.0, 10.0, {"tokens_per_s": 90.0}),
            _row("b", 5.0, 12.0, None),
            {"config": "c", "error": "ImportError: no xllamacpp", "load_avg_1m": 1.0},
            {"config": tr.GGUF_LOAD, "load_s": 60.0, "peak_rss_gb": 7.0, "load_avg_1m": 1.0},
        ],
    }
    md = tr.to_markdown(result)
    rows = {line.split(" | ")[0][2:]: line for line in md.splitlines() if line.startswith("| ")}
    assert "| 90 |" in rows["a"] and "| skipped |" in rows["b"]
    assert "failed: ImportError" in rows["c"]
    assert "| 60.0 |" in rows[tr.GGUF_LOAD]
    assert "prefill 1k tok/s" in md and "prefill 4k tok/s" in md
    assert "Fastest cold agent step at 40 tokens out: **b**; fastest next step (KV prefix reused): **b**" in md
    # modelled: ttft + 40 tokens at the cold step's decode time per token ((total - ttft) / tokens out)
    assert "| **19.0** | **19.0** |" in rows["a"] and "| **9.0** | **9.0** |" in rows["b"]


def test_agent_trace_grows_by_appending() -> None:
    """Step 2's messages start with step 1's, byte for byte, so the next step can reuse the KV prefix; the first
    search result has the asked size, later ones ~300 tokens."""
    tok = testing.tiny_tokenizer()
    text = testing.filler_text(20_000)
    one = tr.agent_messages(tok, text, result_tokens=200, step=1)
    two = tr.agent_messages(tok, text, result_tokens=200, step=2)
    assert two[: len(one)] == one and len(two) == len(one) + 2
    sizes = [len(tok(m["content"], add_special_tokens=False)["input_ids"]) for m in two if m["role"] == "tool"]
    assert abs(sizes[0] - 200) <= 5 and abs(sizes[1] - 300) <= 5  # decoded and re-encoded: close to the cut


def test_suite_is_registered() -> None:
    """`python -m benchmarks target-runtime --help` runs (the suite is registered) and lists its options."""
    env = {**os.environ, "PYTHONPATH": str(Path(tr.__file__).resolve().parent.parent)}
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks", "target-runtime", "--help"], capture_output=True, text=True, env=env
    )
    assert out.returncode == 0 and "--configs" in out.stdout and "--lengths" in out.stdout
