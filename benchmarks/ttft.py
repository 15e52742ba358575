"""End-to-end time to first token: the full prompt against draft scoring plus the compressed prompt, one run.

    python -m benchmarks ttft [--lengths 2000 4000 8000 16000] [--prompts 3] [--keep-rate 0.25]
                              [--draft smollm2-135m] [--fresh] [--report-only]

For each length, ``--prompts`` HotpotQA contexts (gold paragraphs among distractors) of that many
target tokens, with their questions. Side by side, interleaved per prompt so that drift on a shared
machine hits both alike:

- **full**: the target (Qwen2.5-Coder-1.5B-Instruct, ``LocalChatModel``, transformers bf16, empty
  KV cache) prefills the whole chat prompt up to its first generated token;
- **compressed**: the draft scores the context and the budget is closed on the target's tokenizer
  (``PromptCompressor.compress``, every second counted, the draft already loaded), then the target
  prefills the compressed prompt up to its first token.

Reported: seconds of each side, the speed-up (full / compressed) per prompt and length, and a
labelled projection for larger targets: the measured draft cost per 1k context tokens against a
target that prefills at a stated rate. Results: ``benchmarks/results/ttft.{json,md}``, saved after every
prompt; a later run adds to the stored rows of the same draft (its precision too), target and keep rate
and skips their prompts, unless ``--fresh``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from crossprefill_agents import CompressionConfig, PromptCompressor

from .answers import INSTRUCTION, TARGET, _target_counter
from .data import load_examples

RESULTS = Path(__file__).parent / "results"
ASSUMED_TPS = (50, 200, 1000)  # prefill throughputs (tokens/s) assumed for larger targets in the projection


def _messages(context: str, question: str) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": INSTRUCTION},
        {"role": "user", "content": f"Context:\n{context}\n\nQuestion: {question}"},
    ]


def run(
    lengths: list[int],
    prompts: int,
    keep_rate: float,
    draft: str,
    earlier: dict[str, Any] | None = None,
    save: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Time every (length, prompt) pair, handing the result so far to ``save`` after each. ``earlier``'s rows of
    the same draft, target and keep rate are kept and their prompts skipped, so an interrupted run resumes and
    lengths can be run in parts (within a part, full and compressed are interleaved per prompt)."""
    from crossprefill_agents.local_chat import LocalChatModel

    count = _target_counter()
    pc = PromptCompressor.from_pretrained(draft, target=TARGET, config=CompressionConfig(keep_rate=keep_rate))
    target = LocalChatModel.from_pretrained(TARGET)
    head = {
        "draft": pc.draft.name,  # names the precision too: smollm2-135m+bf16
        "target": f"{TARGET} ({target.backend})",
        "keep_rate": keep_rate,
    }
    rows = kept_rows(earlier, head)
    done = {(r["length"], r["case"]) for r in rows}

    def result() -> dict[str, Any]:
        return {
            "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}",
            **head,
            "rows": sorted(rows, key=lambda r: r["length"]),
        }

    warm = load_examples("hotpotqa", n=1, context_tokens=1000, seed=3, count=count)[0]
    pc.compress(warm.context, warm.question)
    target.chat(_messages(warm.context, warm.question), max_new_tokens=1)
    for length in lengths:
        for ex in load_examples("hotpotqa", n=prompts, context_tokens=length, seed=0, count=count):
            if (length, ex.id) in done:
                continue
            target.reset_cache()
            full = target.chat(_messages(ex.context, ex.question), max_new_tokens=1)
            t0 = time.perf_counter()
            r = pc.compress(ex.context, ex.question)
            compress_s = time.perf_counter() - t0
            target.reset_cache()
            short = target.chat(_messages(r.text, ex.question), max_new_tokens=1)
            rows.append(
                {
                    "length": length,
                    "case": ex.id,
                    "context_tokens": r.original_tokens,
                    "compressed_tokens": r.compressed_tokens,
                    "full_prompt_tokens": full.prompt_tokens,
                    "short_prompt_tokens": short.prompt_tokens,
                    "full_ttft_s": full.ttft_s,
                    "compress_s": compress_s,
                    "draft_s": r.timings.draft_prefill_s + r.timings.query_s,
                    "short_ttft_s": short.ttft_s,
                    "fallback": r.fallback_reason,
                }
            )
            print(json.dumps(rows[-1]), flush=True)
            if save is not None:
                save(result())
    return result()


def kept_rows(earlier: dict[str, Any] | None, head: dict[str, Any]) -> list[dict[str, Any]]:
    """The rows of an earlier result that a run under ``head`` (draft, target, keep rate) adds to: all of
    them when every field of ``head`` matches, none otherwise (a float32 draft's rows never mix with bfloat16's)."""
    if earlier is None or any(earlier.get(k) != v for k, v in head.items()):
        return []
    return list(earlier["rows"])


def summarize(result: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for length in sorted({r["length"] for r in result["rows"]}):
        rows = [r for r in result["rows"] if r["length"] == length]
        full = sum(r["full_ttft_s"] for r in rows)
        ours = sum(r["compress_s"] + r["short_ttft_s"] for r in rows)
        out.append(
            {
                "length": length,
                "n": len(rows),
                "full_s": full / len(rows),
                "compress_s": sum(r["compress_s"] for r in rows) / len(rows),
                "short_s": sum(r["short_ttft_s"] for r in rows) / len(rows),
                "speedup": full / ours,
                "speedups": [r["full_ttft_s"] / (r["compress_s"] + r["short_ttft_s"]) for r in rows],
                "draft_ms_per_1k": 1e6 * sum(r["compress_s"] for r in rows) / sum(r["context_tokens"] for r in rows),
                "keep": sum(r["compressed_tokens"] for r in rows) / sum(r["context_tokens"] for r in rows),
            }
        )
    return out


def report(result: dict[str, Any]) -> str:
    summary = summarize(result)
    lines = [
        f"### End-to-end time to first token ({result['machine']}; draft {result['draft']}, "
        f"target {result['target']}, keep {result['keep_rate']})",
        "",
        "| context tokens | prompts | full prompt: TTFT s | ours: draft + selection s | ours: target TTFT s | "
        "speed-up (per prompt) | achieved keep |",
        "|---|---|---|---|---|---|---|",
    ]
    for s in summary:
        per = ", ".join(f"{x:.2f}" for x in s["speedups"])
        lines.append(
            f"| {s['length']:,} | {s['n']} | {s['full_s']:.1f} | {s['compress_s']:.1f} | {s['short_s']:.1f} | "
            f"**{s['speedup']:.2f}x** ({per}) | {s['keep']:.3f} |"
        )
    cost = statistics.median(s["draft_ms_per_1k"] for s in summary) if summary else 0.0
    rate = result["keep_rate"]
    lines += [
        "",
        f"Projection, not a measurement: the draft's cost as measured here ({cost:,.0f} ms per 1k context tokens, "
        f"median over lengths) in front of a target that prefills at an assumed throughput, at keep {rate}. "
        "Compression pays while the target is slower than the break-even throughput.",
        "",
        "| target tok/s (assumed) | 8k tokens: full s | 8k: draft + compressed s | speed-up | break-even tok/s |",
        "|---|---|---|---|---|",
    ]
    for tps in ASSUMED_TPS:
        full = 8000 / tps
        ours = 8 * cost / 1000 + rate * 8000 / tps
        breakeven = (1 - rate) * 1_000_000 / cost if cost else float("inf")  # cost is ms per 1k tokens
        lines.append(f"| {tps} | {full:.1f} | {ours:.1f} | {full / ours:.2f}x | {breakeven:,.0f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks ttft", description=__doc__.split("\n\n")[0])
    ap.add_argument("--lengths", nargs="+", type=int, default=[2000, 4000, 8000, 16000])
    ap.add_argument("--prompts", type=int, default=3)
    ap.add_argument("--keep-rate", type=float, default=0.25)
    ap.add_argument("--draft", default="smollm2-135m")
    ap.add_argument("--report-only", action="store_true")
    ap.add_argument("--fresh", action="store_true", help="drop the stored rows instead of adding to them")
    args = ap.parse_args(argv)
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / "ttft.json"
    earlier = json.loads(path.read_text()) if path.exists() else None
    if args.report_only:
        if earlier is None:
            ap.error(f"{path} does not exist yet")
        result = earlier
    else:

        def save(result: dict[str, Any]) -> None:
            path.write_text(json.dumps(result, indent=1) + "\n")

        result = run(args.lengths, args.prompts, args.keep_rate, args.draft, None if args.fresh else earlier, save)
        save(result)
    md = report(result)
    (RESULTS / "ttft.md").write_text(md)
    print(md)
