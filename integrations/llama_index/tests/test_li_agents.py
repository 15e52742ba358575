"""CompressingLLM driving real LlamaIndex agents (FunctionAgent, AgentWorkflow, ReActAgent) through several tool steps
with a scripted LLM: what the model saw, byte-stable history, one session per run, sync/async agreement."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from typing import Any

import pytest
from crossprefill_agents import PromptCompressor
from crossprefill_agents.testing import filler_text
from llama_index.core.agent.workflow import AgentWorkflow, FunctionAgent, ReActAgent
from llama_index.core.base.llms.types import ChatMessage, MessageRole, ToolCallBlock
from llama_index.core.instrumentation.dispatcher import instrument_tags
from llama_index.core.llms.mock import MockFunctionCallingLLM
from llama_index.core.tools import FunctionTool

from llama_index.postprocessor.crossprefill import SESSION_TAG, CompressingLLM, MessageCompressionEndEvent

STEPS = 3
QUESTION = "Which city is on the river, and what is its secret number?"


def tool_output(part: str) -> str:
    """The long result of search(part): deterministic filler, different per part."""
    return filler_text(200, seed=sum(map(ord, part)))


def search(part: str) -> str:
    """Search the archive for one part of the question."""
    return tool_output(part)


def tool_calls_then_answer() -> list[ChatMessage]:
    """A function-calling script: STEPS tool calls, one per step, then the answer."""
    calls = [
        ChatMessage(
            role="assistant",
            blocks=[ToolCallBlock(tool_call_id=f"call-{k}", tool_name="search", tool_kwargs={"part": f"part {k}"})],
        )
        for k in range(STEPS)
    ]
    return [*calls, ChatMessage(role="assistant", content="Rome, 4821.")]


def react_script() -> list[str]:
    """A ReAct script: STEPS Thought/Action/Action Input steps, then an answer."""
    steps = [f'Thought: I need part {k}.\nAction: search\nAction Input: {{"part": "part {k}"}}' for k in range(STEPS)]
    return [*steps, "Thought: I can answer without more tools.\nAnswer: Rome, 4821."]


def dumps(messages: list[ChatMessage]) -> list[dict[str, Any]]:
    return [m.model_dump() for m in messages]


def assert_prefix_stable(calls: list[list[ChatMessage]]) -> None:
    """Every call's messages start with the previous call's messages, byte for byte."""
    for before, after in itertools.pairwise(calls):
        assert len(after) > len(before)
        assert dumps(after[: len(before)]) == dumps(before)


def pieces_of(short: str, original: str) -> bool:
    at = 0
    for piece in short.split(" [...] "):
        found = original.find(piece, at)
        if found < 0:
            return False
        at = found + len(piece)
    return True


def run_function_agent(llm: CompressingLLM, *, streaming: bool, workflow: bool = False) -> str:
    agent = FunctionAgent(
        tools=[FunctionTool.from_defaults(search)],
        llm=llm,
        system_prompt="Answer from the archive.",
        streaming=streaming,
    )

    async def go() -> str:
        runner: Any = AgentWorkflow(agents=[agent]) if workflow else agent
        return str(await runner.run(QUESTION))

    return asyncio.run(go())


@pytest.mark.parametrize("streaming", [False, True])
def test_function_agent_sees_compressed_tool_results_and_a_stable_prefix(
    compressor: PromptCompressor, recorder: Any, events: Any, streaming: bool
) -> None:
    """A FunctionAgent through three tool steps: each call's tool messages are pieces of the real tool outputs (their
    tool_call_ids kept), earlier messages are byte-identical at every later step, and the one session of the run
    replays frozen results and reuses the draft's cache."""
    rec = recorder(tool_calls_then_answer())
    llm = CompressingLLM(MockFunctionCallingLLM(response_generator=rec), compressor=compressor, keep_rate=0.25)
    assert "Rome, 4821." in run_function_agent(llm, streaming=streaming)
    assert len(rec.seen) == STEPS + 1
    assert_prefix_stable(rec.seen)
    last = rec.seen[-1]
    tools = [m for m in last if m.role == MessageRole.TOOL]
    assert [m.additional_kwargs["tool_call_id"] for m in tools] == [f"call-{k}" for k in range(STEPS)]
    for k, m in enumerate(tools):
        full = tool_output(f"part {k}")
        text = m.content or ""
        assert 0 < len(text) <= round(0.25 * len(full)) and pieces_of(text, full)
    assert [m.content for m in last if m.role == MessageRole.USER] == [QUESTION]
    ends = events.of(MessageCompressionEndEvent)
    assert len({e.session_id for e in ends}) == 1 and ends[0].session_id.startswith("llamaindex-run-")
    for step, end in enumerate(ends):
        assert end.stats["frozen_hits"] == max(0, step - 1) and end.stats["compressed_now"] == (step > 0)
        if step >= 2:
            assert end.stats["draft_tokens_reused"] > 0


def test_agent_workflow_compresses_the_same_way(compressor: PromptCompressor, recorder: Any) -> None:
    """A FunctionAgent inside an AgentWorkflow: the model sees compressed tool results and a byte-stable prefix."""
    rec = recorder(tool_calls_then_answer())
    llm = CompressingLLM(MockFunctionCallingLLM(response_generator=rec), compressor=compressor)
    assert "Rome, 4821." in run_function_agent(llm, streaming=False, workflow=True)
    assert_prefix_stable(rec.seen)
    tools = [m for m in rec.seen[-1] if m.role == MessageRole.TOOL]
    assert len(tools) == STEPS and all(
        len(m.content or "") < len(tool_output(f"part {k}")) for k, m in enumerate(tools)
    )


def test_each_run_gets_its_own_session_unless_a_session_id_is_given(
    make_compressor: Callable[..., PromptCompressor], recorder: Any, events: Any
) -> None:
    """Two agent runs use two sessions (keyed by the workflow's run id); with session_id both use that one, and
    the crossprefill.session_id tag set around a run picks the session of all its calls."""
    for session_id, expect in ((None, 2), ("thread-1", 1)):
        events.seen.clear()
        rec = recorder(tool_calls_then_answer() * 2)
        llm = CompressingLLM(
            MockFunctionCallingLLM(response_generator=rec), compressor=make_compressor(), session_id=session_id
        )
        run_function_agent(llm, streaming=False)
        run_function_agent(llm, streaming=False)
        ids = [e.session_id for e in events.of(MessageCompressionEndEvent)]
        assert len(ids) == 2 * (STEPS + 1) and len(set(ids)) == expect
        if session_id is not None:
            assert set(ids) == {session_id}
    events.seen.clear()
    llm = CompressingLLM(
        MockFunctionCallingLLM(response_generator=recorder(tool_calls_then_answer())), compressor=make_compressor()
    )
    with instrument_tags({SESSION_TAG: "tagged-thread"}):
        run_function_agent(llm, streaming=False)
    assert {e.session_id for e in events.of(MessageCompressionEndEvent)} == {"tagged-thread"}


@pytest.mark.parametrize("streaming", [False, True])
def test_react_observations_keep_their_prefix_and_shrink(
    compressor: PromptCompressor, scripted_chat_llm: Any, events: Any, streaming: bool
) -> None:
    """A ReActAgent over a plain (non-function-calling) chat LLM: every 'Observation: ' message keeps that prefix
    byte-identical with the compressed tool output after it, the ReAct system header and the question are sent as
    they are, and earlier messages are byte-identical at every later step."""
    inner = scripted_chat_llm(replies=react_script())
    llm = CompressingLLM(inner, compressor=compressor, keep_rate=0.25)
    agent = ReActAgent(tools=[FunctionTool.from_defaults(search)], llm=llm, streaming=streaming)

    async def go() -> str:
        return str(await agent.run(QUESTION))

    assert "Rome, 4821." in asyncio.run(go())
    assert len(inner.seen) == STEPS + 1
    assert_prefix_stable(inner.seen)
    last = inner.seen[-1]
    observations = [m for m in last if (m.content or "").startswith("Observation:")]
    assert len(observations) == STEPS
    for k, m in enumerate(observations):
        full = tool_output(f"part {k}")
        text = m.content or ""
        assert m.role == MessageRole.USER and text.startswith("Observation: ")
        body = text[len("Observation: ") :]
        assert 0 < len(body) <= round(0.25 * len(full)) and pieces_of(body, full)
    assert last[0].role == MessageRole.SYSTEM and last[0].content == inner.seen[0][0].content
    assert "search" in (last[0].content or "")  # the ReAct header with the tool list, not compressed
    assert last[1].content == QUESTION
    ends = events.of(MessageCompressionEndEvent)
    assert [e.stats["segments"] for e in ends] == list(range(STEPS + 1))
    assert all(e.stats["fallback_reason"] is None for e in ends)


def raw_steps() -> list[list[ChatMessage]]:
    """The uncompressed message list a FunctionAgent builds at each step of the script."""
    raw = [ChatMessage(role="system", content="Answer from the archive."), ChatMessage(role="user", content=QUESTION)]
    steps = [list(raw)]
    for k, call in enumerate(tool_calls_then_answer()[:STEPS]):
        result = ChatMessage(
            role="tool", content=tool_output(f"part {k}"), additional_kwargs={"tool_call_id": f"call-{k}"}
        )
        raw = [*raw, call, result]
        steps.append(list(raw))
    return steps


def test_sync_and_async_calls_agree_across_agent_steps(
    make_compressor: Callable[..., PromptCompressor], recorder: Any
) -> None:
    """Feeding an agent's per-step message lists to chat() and to achat() (fresh compressors each) sends the same
    bytes to the model at every step, and the same bytes the real FunctionAgent run sent."""
    agent_rec = recorder(tool_calls_then_answer())
    llm = CompressingLLM(MockFunctionCallingLLM(response_generator=agent_rec), compressor=make_compressor())
    run_function_agent(llm, streaming=False)

    def drive(use_async: bool) -> list[list[dict[str, Any]]]:
        steps = raw_steps()
        rec = recorder([ChatMessage(role="assistant", content="x")] * len(steps))
        llm = CompressingLLM(MockFunctionCallingLLM(response_generator=rec), compressor=make_compressor())
        for msgs in steps:
            if use_async:
                asyncio.run(llm.achat(msgs))
            else:
                llm.chat(msgs)
        return [dumps(seen) for seen in rec.seen]

    sync, asyn = drive(False), drive(True)
    assert sync == asyn
    assert sync == [dumps(seen) for seen in agent_rec.seen]
