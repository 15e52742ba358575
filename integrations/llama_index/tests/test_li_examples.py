"""The LlamaIndex examples end to end on the embedded models: examples/llamaindex_rag.py (VectorStoreIndex over SQuAD's
Wikipedia articles, MiniLM embeddings, the postprocessor, the local target) and examples/llamaindex_agent.py
(FunctionAgent over CompressingLLM, fixed tool plan), with the 0.5B target and few questions. They assert on the
structured results main() returns, never on what the model wrote."""

from __future__ import annotations

import io
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from crossprefill_agents import ModelNotAvailableError
from crossprefill_agents.embedded_targets import embedded_target_dir
from crossprefill_agents.targets import resolve_target
from rich.console import Console

pytestmark = pytest.mark.integration

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
TARGET = "qwen2.5-coder-0.5b"
DRAFT = "smollm2-135m"


@pytest.fixture(scope="module")
def examples() -> Iterator[dict[str, ModuleType]]:
    """The example modules, imported from examples/ (skipped without the 0.5B target, except in CI)."""
    try:
        embedded_target_dir(TARGET)
    except ModelNotAvailableError as e:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the example tests: {e}")
        pytest.skip(str(e))
    sys.path.insert(0, str(EXAMPLES))
    try:
        import llamaindex_agent
        import llamaindex_rag
        import local_llamaindex

        yield {"rag": llamaindex_rag, "agent": llamaindex_agent, "local": local_llamaindex}
    finally:
        sys.path.remove(str(EXAMPLES))


def quiet() -> Console:
    return Console(file=io.StringIO(), width=150)


def test_rag_example_compresses_retrieved_nodes_and_keeps_their_identity(examples: dict[str, ModuleType]) -> None:
    """Two SQuAD questions through the query engine: all 8 retrieved paragraphs were compressed in one draft pass to
    the shared budget in the target's tokens; the target read less than the retrieved text; the nodes the LLM got are
    retrieved nodes in retrieval order, each with its own title/paragraph metadata and stats whose kept spans are
    pieces of that paragraph, found in order in the compressed text."""
    result = examples["rag"].main(
        ["--target", TARGET, "--draft", DRAFT, "--n", "2", "--keep-rate", "0.25"], console=quiet()
    )
    paragraphs = {
        a.title.replace("_", " "): a.paragraphs for a in examples["local"].squad_articles(examples["local"].ARTICLES)
    }
    assert result.index_nodes == sum(len(p) for p in paragraphs.values())
    assert len(result.rows) == 2 and len({r.question.id for r in result.rows}) == 2
    count = resolve_target(TARGET).count
    for row in result.rows:
        assert row.fallback_reason is None
        assert len(row.retrieved) == 8
        assert 1000 < row.tokens_before < 3000
        assert row.budget == round(0.25 * row.tokens_before)
        assert 0 < row.tokens_after <= row.budget
        assert row.target_prompt_tokens < row.tokens_before
        assert row.draft_s > 0
        # kept nodes: a non-empty subsequence of the retrieved ones, in retrieval order
        assert row.kept and list(row.kept) == [i for i in row.retrieved if i in row.kept]
        assert sum(m["crossprefill"]["compressed_tokens"] for m in row.kept_metadata) == row.tokens_after
        for node_id, meta, text in zip(row.kept, row.kept_metadata, row.kept_texts, strict=True):
            title, k = meta["title"], meta["paragraph"]
            assert node_id == f"{title.replace(' ', '_')}/{k}/0"
            original = paragraphs[title][k]
            stats = meta["crossprefill"]
            assert stats["original_tokens"] == count(original)
            assert stats["compressed_tokens"] == count(text) <= stats["original_tokens"]
            at = 0
            for start, end in stats["kept_spans"]:
                piece = original[start:end].strip()
                at = text.index(piece, at) + len(piece)


def test_agent_example_fixed_plan_compresses_tool_results_once_and_keeps_the_prefix(
    examples: dict[str, ModuleType], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The FunctionAgent with a fixed plan (search, read_article, answer) on the local target, even with an API key
    set (--local): three model calls, the two tool results each cut to about a quarter of their target tokens, the
    draft reusing its cache at the last call, the target's KV cache reused, and the first tool result sent
    byte-identical at both later calls (every earlier message unchanged)."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-not-used")
    result = examples["agent"].main(
        ["--target", TARGET, "--draft", DRAFT, "--plan", "fixed", "--local", "--n", "1"], console=quiet()
    )
    assert result.target == TARGET
    (run,) = result.runs
    assert run.plan == "fixed"
    s1, s2, s3 = run.steps
    assert (s1.planned, s2.planned, s3.planned) == (True, True, False)
    assert s1.tool_calls[0].startswith("search(") and s2.tool_calls[0].startswith("read_article(")
    assert s3.tool_calls == [] and s3.target["prompt_tokens"] > 0
    for st in (s.stats for s in run.steps):
        assert st["fallback_reason"] is None and not st["over_budget"]
    assert s1.stats["compressed_now"] == 0
    assert s2.stats["compressed_now"] == 1 and s3.stats["compressed_now"] == 1 and s3.stats["frozen_hits"] == 1
    search_tokens = s2.stats["target_tokens_before"] - s1.stats["target_tokens_before"]
    assert search_tokens > 500
    assert s2.stats["target_tokens_after"] - s1.stats["target_tokens_after"] <= round(0.25 * search_tokens) + 1
    assert s3.stats["target_tokens_after"] < 0.4 * s3.stats["target_tokens_before"]
    assert s3.stats["draft_tokens_reused"] > 0
    assert s2.earlier_unchanged and s3.earlier_unchanged

    def tools(step: Any) -> list[dict[str, Any]]:
        return [m for m in step.messages if m["role"] == "tool"]

    assert len(tools(s2)) == 1 and len(tools(s3)) == 2
    assert tools(s3)[0] == tools(s2)[0]
    first_result = examples["agent"]._text(tools(s2)[0])
    assert resolve_target(TARGET).count(first_result) <= round(0.25 * search_tokens) + 1
