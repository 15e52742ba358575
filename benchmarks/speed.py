"""Scoring overhead against the draft's own plain prefill, and peak memory on a 32k-token context.

    python -m benchmarks speed [--drafts smollm2-135m gemma3-270m] [--lengths 1024 4096 8192] [--repeats 2]
                               [--dtypes float32 bfloat16]

For each draft, length and weights dtype, on the same essay text in one run, interleaved: (a)
one plain forward of the whole prompt with the float32 model's fused (sdpa) attention and
``logits_to_keep=1``, the cheapest way the draft can read it at full precision (and the same
read in each other dtype); (b) the full scoring pass (block prefill + the eager query steps)
in each dtype. The ratio b/a is the method's cost over reading the prompt at all in float32
(goals: <= 1.3x; bfloat16 <= 0.5x). Peak RSS is measured in a fresh subprocess that loads
SmolLM2 with the default dtype and compresses a 32k-token context (goal: <= 3 GB). Results
go to ``benchmarks/results/speed.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

from crossprefill_agents import CompressionConfig
from crossprefill_agents.draft import DraftModel, load_draft

from .data import data_dir

RESULTS = Path(__file__).parent / "results"


def essays_text() -> str:
    """Paul Graham's essays as shipped (one long string), the benchmark's natural prose."""
    return str(json.loads((data_dir() / "PaulGrahamEssays.json").read_text(encoding="utf-8"))["text"])


def _ids_of_length(draft: DraftModel, text: str, n: int) -> str:
    """A prefix of ``text`` that is about ``n`` draft tokens long (context; the query adds a few more)."""
    tok = draft.tokenize(text[: n * 8])
    end = int(tok.offsets[min(n, len(tok.ids)) - 1, 1])
    return text[:end]


def plain_prefill_s(draft: DraftModel, ids: list[int]) -> float:
    """The draft's cheapest read of a prompt: one forward with its own attention, last-token logits only."""
    x = torch.tensor([ids])
    with torch.inference_mode():
        t = time.perf_counter()
        draft.model(input_ids=x, use_cache=False, logits_to_keep=1)
        return time.perf_counter() - t


def bench_overhead(draft_name: str, lengths: list[int], repeats: int, dtypes: list[str]) -> list[dict[str, Any]]:
    """Per length and dtype: plain prefill (float32 and this dtype) and scoring, the best of ``repeats``."""
    drafts = {d: load_draft(draft_name, dtype=d) for d in dict.fromkeys(["float32", *dtypes])}
    reference = drafts["float32"]
    text = essays_text()
    query = "What did the author learn from his first startup?"
    config = CompressionConfig()
    rows = []
    for draft in drafts.values():
        draft.score([text[:2000]], query, config=config)  # warm-up
    for n in lengths:
        context = _ids_of_length(reference, text, n)
        ids = reference.prompt_ids([context], query, config=config)
        plain: dict[str, list[float]] = {d: [] for d in drafts}
        timed: dict[str, list[tuple[float, float, float]]] = {d: [] for d in dtypes}
        for _ in range(repeats):  # interleaved, so drift on a shared machine hits every column alike
            for d, draft in drafts.items():
                plain[d].append(plain_prefill_s(draft, ids))
                if d in timed:
                    t = time.perf_counter()
                    s = draft.score([context], query, config=config)
                    timed[d].append((time.perf_counter() - t, s.prefill_s, s.query_s))
        for d in dtypes:
            best = min(timed[d])
            row = {
                "draft": draft_name,
                "dtype": d,
                "context_tokens": n,
                "prompt_tokens": len(ids),
                "plain_prefill_fp32_s": min(plain["float32"]),
                "plain_prefill_s": min(plain[d]),
                "scoring_s": best[0],
                "scoring_prefill_s": best[1],
                "scoring_query_s": best[2],
                "ratio": best[0] / min(plain["float32"]),
                "ratio_same_dtype": best[0] / min(plain[d]),
                "ms_per_1k_tokens": 1000 * best[0] / (len(ids) / 1000),
            }
            print(
                f"  {draft_name:>14} {d:>8} {n:>6} tokens: plain prefill fp32 {row['plain_prefill_fp32_s']:.2f} s, "
                f"{d} {row['plain_prefill_s']:.2f} s; scoring {row['scoring_s']:.2f} s -> {row['ratio']:.2f}x",
                flush=True,
            )
            rows.append(row)
    return rows


# The child reads its own high-water mark, VmHWM (Linux): ru_maxrss survives exec, so in a child of this process
# it starts at this process's RSS at fork (the drafts loaded above) and overstated the peak before 2026-12-02.
_RSS_CHILD = """
import json, sys, time
from crossprefill_agents import PromptCompressor
from benchmarks.speed import peak_rss_mb, essays_text
n = int(sys.argv[1])
pc = PromptCompressor.from_pretrained("smollm2-135m", target="cl100k_base")
after_load = peak_rss_mb()
text = essays_text()
enc = pc.target
ctx = text[: n * 5]
while enc.count(ctx) > n:
    ctx = ctx[: int(len(ctx) * 0.97)]
t = time.perf_counter()
r = pc.compress(ctx, "What did the author learn from his first startup?", keep_rate=0.25)
print(json.dumps({"dtype": str(pc.draft.model.dtype).removeprefix("torch."),
                  "context_tokens": r.original_tokens, "draft_tokens": r.draft_tokens,
                  "compressed_tokens": r.compressed_tokens, "seconds": time.perf_counter() - t,
                  "rss_after_load_mb": after_load, "peak_rss_mb": peak_rss_mb()}))
"""


def peak_rss_mb() -> float:
    """This process's peak resident memory in MB: VmHWM where /proc has it (its own, reset at exec), else
    ru_maxrss (which a child inherits from its parent's RSS at fork)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench_peak_rss(n_tokens: int) -> dict[str, Any]:
    root = Path(__file__).resolve().parent.parent
    out = subprocess.run(
        [sys.executable, "-c", _RSS_CHILD, str(n_tokens)], cwd=root, capture_output=True, text=True, check=True
    )
    row: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    print(
        f"  smollm2-135m {row['context_tokens']} target tokens: peak RSS {row['peak_rss_mb']:.0f} MB "
        f"({row['rss_after_load_mb']:.0f} MB after loading), {row['seconds']:.1f} s",
        flush=True,
    )
    return row


def to_markdown(result: dict[str, Any]) -> str:
    lines = [
        "### Scoring cost over the draft's plain float32 sdpa prefill (same input, same run)",
        "",
        "| draft | dtype | context tokens | plain prefill fp32 s | plain prefill, this dtype s | "
        "scoring s (prefill + query passes) | scoring / plain fp32 | ms / 1k tokens |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in result["overhead"]:
        lines.append(
            f"| {r['draft']} | {r.get('dtype', 'float32')} | {r['context_tokens']:,} | "
            f"{r.get('plain_prefill_fp32_s', r['plain_prefill_s']):.2f} | {r['plain_prefill_s']:.2f} | "
            f"{r['scoring_s']:.2f} ({r['scoring_prefill_s']:.2f} + {r['scoring_query_s']:.2f}) | "
            f"{r['ratio']:.2f}x | {r['ms_per_1k_tokens']:.0f} |"
        )
    m = result["memory"]
    lines += [
        "",
        f"### Peak memory compressing a long context (fresh process, SmolLM2-135M, {m.get('dtype', 'float32')})",
        "",
        "| context (cl100k tokens) | draft tokens | peak RSS MB | RSS after loading MB | seconds |",
        "|---|---|---|---|---|",
        f"| {m['context_tokens']:,} | {m['draft_tokens']:,} | {m['peak_rss_mb']:.0f} | "
        f"{m['rss_after_load_mb']:.0f} | {m['seconds']:.1f} |",
        "",
        f"Machine: {result['machine']}. Goals: ratio <= 1.3x (bfloat16: <= 0.5x), peak RSS <= 3,000 MB.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks speed", description=__doc__.split("\n\n")[0])
    ap.add_argument("--drafts", nargs="+", default=["smollm2-135m", "gemma3-270m"])
    ap.add_argument("--lengths", nargs="+", type=int, default=[1024, 4096, 8192])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--rss-tokens", type=int, default=32_000)
    ap.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"], choices=["float32", "bfloat16"])
    args = ap.parse_args(argv)
    print("scoring overhead:", flush=True)
    overhead = [row for d in args.drafts for row in bench_overhead(d, args.lengths, args.repeats, args.dtypes)]
    print("peak memory:", flush=True)
    memory = bench_peak_rss(args.rss_tokens)
    result = {
        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}",
        "overhead": overhead,
        "memory": memory,
        "self_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "speed.json").write_text(json.dumps(result, indent=2) + "\n")
    md = to_markdown(result)
    (RESULTS / "speed.md").write_text(md)
    print()
    print(md)


if __name__ == "__main__":
    main()
