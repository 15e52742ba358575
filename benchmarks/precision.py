"""The draft's weights precision: evidence recall and scoring time, float32 against bfloat16, same questions.

    python -m benchmarks precision [--drafts smollm2-135m gemma3-270m] [--datasets hotpotqa squad_paraphrase]
                                   [--n 30] [--lengths 2000] [--dtypes float32 bfloat16]

On the held-out draw (seed 0), each draft in each dtype scores every context once (timed) and
the same selection reads it at keep 0.25 and 0.5 (cl100k budgets). Reported per draft, dtype,
dataset and length: supporting-sentence recall, the low-overlap part of it, the answer string
kept, scoring ms per 1k context tokens, and how often the selection equals the float32 one.
Goal: bfloat16 recall within 1 point of float32. Results: ``benchmarks/results/precision.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from crossprefill_agents import PromptCompressor
from crossprefill_agents.draft import load_draft

from .data import load_examples
from .metrics import answer_kept, evidence_recall
from .quality import LOW_OVERLAP, TARGET

RESULTS = Path(__file__).parent / "results"
RATES = (0.25, 0.5)


def run(
    drafts: Iterable[str], dtypes: Iterable[str], datasets: Iterable[str], lengths: Iterable[int], n: int
) -> list[dict[str, Any]]:
    """One record per (draft, dtype, example, rate)."""
    from tqdm import tqdm

    examples = [ex for length in lengths for ds in datasets for ex in load_examples(ds, n=n, context_tokens=length)]
    records = []
    for name in drafts:
        for dtype in dtypes:
            pc = PromptCompressor(load_draft(name, dtype=dtype), target=TARGET)
            for ex in tqdm(examples, desc=f"{name} {dtype}", unit="ctx"):
                t0 = time.perf_counter()
                scored = pc.draft.score([ex.context], ex.question, config=pc.config)
                seconds = time.perf_counter() - t0
                for rate in RATES:
                    (r,) = pc.compress_scored([ex.context], scored, keep_rate=rate)
                    kept = evidence_recall(r.kept_spans, ex.context, [(e.start, e.end) for e in ex.evidence])
                    records.append(
                        {
                            "draft": name,
                            "dtype": dtype,
                            "example": ex.id,
                            "dataset": ex.dataset,
                            "length": int(ex.id.rsplit("/", 1)[1]),
                            "rate": rate,
                            "evidence": [(k, e.overlap_words) for k, e in zip(kept, ex.evidence, strict=True)],
                            "answer_kept": answer_kept(r.text, ex.answers),
                            "spans": [list(s) for s in r.kept_spans],
                            "seconds": seconds,
                            "context_tokens": ex.context_tokens,
                        }
                    )
    return records


def summarize(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (draft, dtype, dataset, length, rate): recall, low-overlap recall, answer kept, ms per 1k tokens,
    and the share of examples whose selection equals the float32 one of the same draft."""
    groups: dict[tuple[str, str, str, int, float], list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        groups[(r["draft"], r["dtype"], r["dataset"], r["length"], r["rate"])].append(r)
    fp32 = {(r["draft"], r["example"], r["rate"]): r["spans"] for r in records if r["dtype"] == "float32"}
    out = []
    for (draft, dtype, ds, length, rate), rs in sorted(groups.items()):
        ev = [k for r in rs for k, _ in r["evidence"]]
        low = [k for r in rs for k, w in r["evidence"] if w <= LOW_OVERLAP]
        same = [r["spans"] == fp32[(draft, r["example"], rate)] for r in rs if (draft, r["example"], rate) in fp32]
        out.append(
            {
                "draft": draft,
                "dtype": dtype,
                "dataset": ds,
                "length": length,
                "rate": rate,
                "n": len(rs),
                "recall": 100 * sum(ev) / len(ev) if ev else float("nan"),
                "low_overlap_recall": 100 * sum(low) / len(low) if low else float("nan"),
                "answer_kept": 100 * sum(r["answer_kept"] for r in rs) / len(rs),
                "ms_per_1k": 1000 * sum(r["seconds"] for r in rs) / (sum(r["context_tokens"] for r in rs) / 1000),
                "same_selection": 100 * sum(same) / len(same) if same else float("nan"),
            }
        )
    return out


def to_markdown(summary: list[dict[str, Any]], machine: str) -> str:
    lines = [
        "### Draft precision: float32 against bfloat16 (same questions, same selection)",
        "",
        "Recall / low-overlap recall / answer kept, %; selection equal to float32's, % of examples.",
        "",
        "| draft | dtype | dataset | tokens | keep | n | recall | low overlap | answer kept | same selection "
        "| scoring ms / 1k tokens |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in summary:
        lines.append(
            f"| {s['draft']} | {s['dtype']} | {s['dataset']} | {s['length']} | {s['rate']} | {s['n']} | "
            f"{s['recall']:.1f} | {s['low_overlap_recall']:.1f} | {s['answer_kept']:.1f} | "
            f"{s['same_selection']:.0f} | {s['ms_per_1k']:.0f} |"
        )
    lines += ["", f"Machine: {machine}. Goal: bfloat16 recall within 1 point of float32."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks precision", description=__doc__.split("\n\n")[0])
    ap.add_argument("--drafts", nargs="+", default=["smollm2-135m", "gemma3-270m"])
    ap.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"], choices=["float32", "bfloat16"])
    ap.add_argument("--datasets", nargs="+", default=["hotpotqa", "squad_paraphrase"])
    ap.add_argument("--lengths", nargs="+", type=int, default=[2000])
    ap.add_argument("--n", type=int, default=30, help="examples per dataset and length")
    ap.add_argument("--report-only", action="store_true", help="rebuild the markdown from the JSON")
    args = ap.parse_args(argv)
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / "precision.json"
    if args.report_only:
        result = json.loads(path.read_text(encoding="utf-8"))
    else:
        records = run(args.drafts, args.dtypes, args.datasets, args.lengths, args.n)
        machine = f"{platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}"
        result = {"machine": machine, "records": records}
        path.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    md = to_markdown(summarize(result["records"]), result["machine"])
    (RESULTS / "precision.md").write_text(md, encoding="utf-8")
    print(md)


if __name__ == "__main__":
    main()
