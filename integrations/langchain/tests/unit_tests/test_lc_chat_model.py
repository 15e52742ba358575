"""CompressingChatModel: the wrapped model is sent compressed messages on every path, and keeps its own face."""

from __future__ import annotations

import asyncio
import itertools
import logging
from typing import Any

import pytest
from crossprefill_agents import PromptCompressor
from crossprefill_agents.testing import filler_text
from langchain.agents import create_agent
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.runnables import RunnableBinding, RunnableConfig
from langgraph.checkpoint.memory import InMemorySaver
from lc_fakes import (
    ScriptedChatModel,
    StreamingScriptedChatModel,
    broken_compressor,
    research_script,
    search,
)
from pydantic import BaseModel, ValidationError

from langchain_crossprefill import CompressingChatModel
from langchain_crossprefill._options import METADATA_KEY

TOOL_TEXT = filler_text(160, seed=4)
NAME = "CompressingChatModel"


def conversation() -> list[BaseMessage]:
    return [
        SystemMessage("Answer from the results."),
        HumanMessage("Which river?"),
        AIMessage("", tool_calls=[{"name": "search", "args": {"query": "river"}, "id": "c1"}]),
        ToolMessage(TOOL_TEXT, tool_call_id="c1"),
    ]


def reply(_: list[BaseMessage]) -> AIMessage:
    return AIMessage(
        "The Tagus river runs through it", tool_calls=[{"name": "search", "args": {"query": "x"}, "id": "n"}]
    )


def test_invoke_sends_compressed_messages_and_reports_stats(compressor: PromptCompressor) -> None:
    """The wrapped model gets the tool output cut down, the rest as given; the reply carries the stats."""
    inner = ScriptedChatModel(script=reply)
    out = CompressingChatModel(model=inner, compressor=compressor).invoke(conversation())
    (sent,) = inner.recorder.calls
    assert [m.content for m in sent[:3]] == [m.content for m in conversation()[:3]]
    assert len(sent[3].content) < len(TOOL_TEXT)
    stats = out.response_metadata[METADATA_KEY][NAME]
    assert stats["segments"] == 1 and stats["target_tokens_after"] < stats["target_tokens_before"]
    assert out.tool_calls[0]["name"] == "search"


def test_bind_tools_returns_a_binding_of_the_wrapper(compressor: PromptCompressor) -> None:
    """bind_tools lets the wrapped model format the tools but binds them to the wrapper, so a call through the
    binding still compresses, and the wrapped model receives the formatted tools and tool_choice."""
    inner = ScriptedChatModel(script=reply)
    wrapper = CompressingChatModel(model=inner, compressor=compressor)
    bound = wrapper.bind_tools([search], tool_choice="any")
    assert isinstance(bound, RunnableBinding) and bound.bound is wrapper
    bound.invoke(conversation())
    assert [t["function"]["name"] for t in inner.recorder.kwargs[0]["tools"]] == ["search"]
    assert inner.recorder.kwargs[0]["tool_choice"] == "any"
    assert len(inner.recorder.calls[0][3].content) < len(TOOL_TEXT)


def test_with_structured_output_compresses_in_front_of_the_wrapped_models_own(compressor: PromptCompressor) -> None:
    """with_structured_output uses the wrapped model's implementation behind a compression step."""

    class Answer(BaseModel):
        river: str

    inner = ScriptedChatModel(
        script=lambda _: AIMessage("", tool_calls=[{"name": "Answer", "args": {"river": "Tagus"}, "id": "a"}])
    )
    structured = CompressingChatModel(model=inner, compressor=compressor).with_structured_output(Answer)
    assert structured.invoke(conversation()) == Answer(river="Tagus")
    assert len(inner.recorder.calls[0][3].content) < len(TOOL_TEXT)


def test_streaming_passes_the_wrapped_models_chunks_through(compressor: PromptCompressor) -> None:
    """stream yields the wrapped model's own chunks (word by word), with the stats on the merged message; the
    wrapped model streamed from compressed messages."""
    inner = StreamingScriptedChatModel(script=reply)
    chunks = list(CompressingChatModel(model=inner, compressor=compressor).stream(conversation()))
    assert len([c for c in chunks if c.content]) == len(str(reply([]).content).split())
    merged = chunks[0]
    for c in chunks[1:]:
        merged = merged + c
    assert merged.content == reply([]).content
    assert merged.tool_calls[0]["name"] == "search"
    assert merged.response_metadata[METADATA_KEY][NAME]["segments"] == 1
    assert inner._streamed == 1 and len(inner.recorder.calls[0][3].content) < len(TOOL_TEXT)


def test_a_wrapped_model_that_cannot_stream_gives_one_chunk(compressor: PromptCompressor) -> None:
    """Over a model that cannot stream, stream() gives the one reply (as LangChain does for any such model) and
    the wrapper's own _stream (the bridge LangChain's event streaming drives) yields it as one chunk whose tool
    calls survive."""
    inner = ScriptedChatModel(script=reply)
    wrapper = CompressingChatModel(model=inner, compressor=compressor)
    (only,) = list(wrapper.stream(conversation()))
    assert only.content == reply([]).content and only.tool_calls[0]["name"] == "search"
    (chunk,) = list(wrapper._stream(conversation()))
    assert isinstance(chunk.message, AIMessageChunk)
    assert chunk.message.tool_calls[0]["name"] == "search" and chunk.message.content == reply([]).content
    assert chunk.message.response_metadata[METADATA_KEY][NAME]["segments"] == 1
    assert len(inner.recorder.calls) == 2 and len(inner.recorder.calls[1][3].content) < len(TOOL_TEXT)


def test_async_paths_agree_with_sync(compressor: PromptCompressor) -> None:
    """ainvoke and astream send the wrapped model what invoke sends, and report the same counts."""

    def seen(call: Any) -> list[Any]:
        inner = StreamingScriptedChatModel(script=reply)
        out = call(CompressingChatModel(model=inner, compressor=compressor))
        return [[m.content for m in c] for c in inner.recorder.calls] + [str(out)]

    async def astream(model: CompressingChatModel) -> str:
        return "".join([str(c.content) async for c in model.astream(conversation())])

    sync = seen(lambda m: m.invoke(conversation()).content)
    assert seen(lambda m: asyncio.run(m.ainvoke(conversation())).content) == sync
    assert seen(lambda m: asyncio.run(astream(m))) == sync


def test_tracing_params_and_profile_are_the_wrapped_models(compressor: PromptCompressor) -> None:
    """_get_ls_params, _llm_type and profile come from the wrapped model."""
    inner = ScriptedChatModel(script=reply, profile={"tool_calling": True, "max_input_tokens": 1000})
    wrapper = CompressingChatModel(model=inner, compressor=compressor)
    assert wrapper._get_ls_params() == inner._get_ls_params()
    assert wrapper._get_ls_params(model="other")["ls_model_name"] == "other"
    assert wrapper._llm_type == "scripted"
    assert wrapper.profile == inner.profile
    assert wrapper._identifying_params["crossprefill"]["draft"] == "tiny-llama"


def test_create_agent_accepts_the_wrapper_and_each_thread_keeps_its_bytes(compressor: PromptCompressor) -> None:
    """As create_agent's model (tools bound through the wrapper), the wrapped model sees compressed tool
    outputs, every earlier message re-sent byte-identical across two invokes of a thread, one session per thread."""
    inner = ScriptedChatModel(script=research_script(2))
    wrapper = CompressingChatModel(model=inner, compressor=compressor)
    agent = create_agent(model=wrapper, tools=[search], system_prompt="Research.", checkpointer=InMemorySaver())
    config: RunnableConfig = {"configurable": {"thread_id": "T"}}
    agent.invoke({"messages": [HumanMessage("first question")]}, config)
    state = agent.invoke({"messages": [HumanMessage("second question")]}, config)
    calls = inner.recorder.calls
    assert len(calls) == 6
    for before, after in itertools.pairwise(calls):
        assert [m.content for m in after[: len(before)]] == [m.content for m in before]
    assert all("tools" in kw for kw in inner.recorder.kwargs)
    sent_tools = [m for m in calls[-1] if isinstance(m, ToolMessage)]
    kept_tools = [m for m in state["messages"] if isinstance(m, ToolMessage)]
    assert all(len(s.content) < len(k.content) for s, k in zip(sent_tools, kept_tools, strict=True))
    assert wrapper._sessions.keys() == ["thread=T|ns=model"]
    frozen = [
        m.response_metadata[METADATA_KEY][NAME]["frozen_hits"] for m in state["messages"] if isinstance(m, AIMessage)
    ]
    assert frozen == [0, 0, 1, 2, 2, 3]


def test_a_thread_id_in_the_config_keys_the_session(compressor: PromptCompressor) -> None:
    """Called directly, invoke and stream key the session by config thread_id; without one none is kept."""
    wrapper = CompressingChatModel(model=StreamingScriptedChatModel(script=reply), compressor=compressor)
    wrapper.invoke(conversation())
    list(wrapper.stream(conversation()))
    assert len(wrapper._sessions) == 0
    wrapper.invoke(conversation(), {"configurable": {"thread_id": "a"}})
    list(wrapper.stream(conversation(), {"configurable": {"thread_id": "b"}}))
    assert wrapper._sessions.keys() == ["thread=a|ns=", "thread=b|ns="]


def test_a_failing_draft_sends_messages_unchanged_and_says_why() -> None:
    """A raising draft: the wrapped model gets the original messages; the stats give the reason."""
    inner = ScriptedChatModel(script=reply)
    out = CompressingChatModel(model=inner, compressor=broken_compressor()).invoke(conversation())
    assert [m.content for m in inner.recorder.calls[0]] == [m.content for m in conversation()]
    assert "draft exploded" in out.response_metadata[METADATA_KEY][NAME]["fallback_reason"]


def test_standard_params_are_ignored_with_a_warning_and_unknown_ones_refused(
    compressor: PromptCompressor, caplog: pytest.LogCaptureFixture
) -> None:
    """temperature, max_tokens, ... belong on the wrapped model: accepted, ignored, and said so; a misspelt
    option is an error."""
    inner = ScriptedChatModel(script=reply)
    with caplog.at_level(logging.WARNING):
        wrapper = CompressingChatModel(model=inner, compressor=compressor, temperature=0, max_tokens=5)  # type: ignore[,call-arg]
    assert "ignores temperature, max_tokens" in caplog.text and "context_max_tokens" in caplog.text
    assert wrapper.prompt_compressor is compressor  # max_tokens did not become a compression budget
    with pytest.raises(ValidationError, match="keeprate"):
        CompressingChatModel(model=inner, compressor=compressor, keeprate=0.1)  # type: ignore[,call-arg]
    budgeted = CompressingChatModel(model=inner, compressor=compressor, context_max_tokens=50)
    budgeted.invoke(conversation())
    assert len(inner.recorder.calls[-1][3].content) <= 50


def test_an_agent_streamed_by_message_streams_the_wrapped_model(compressor: PromptCompressor) -> None:
    """agent.stream(stream_mode="messages") makes the wrapped model stream (its own chunks reach the caller),
    from compressed messages, in the thread's session."""
    inner = StreamingScriptedChatModel(script=research_script(2))
    wrapper = CompressingChatModel(model=inner, compressor=compressor)
    agent = create_agent(model=wrapper, tools=[search], checkpointer=InMemorySaver())
    config: RunnableConfig = {"configurable": {"thread_id": "s1"}}
    parts = list(agent.stream({"messages": [HumanMessage("q one")]}, config, stream_mode="messages"))
    assert inner._streamed == 3
    assert sum(isinstance(chunk, AIMessageChunk) and bool(chunk.content) for chunk, _ in parts) >= 4
    assert wrapper._sessions.keys() == ["thread=s1|ns=model"]
    sent = [m for m in inner.recorder.calls[-1] if isinstance(m, ToolMessage)]
    assert len(sent) == 2 and all(len(str(m.content)) < 0.5 * len(TOOL_TEXT) for m in sent)
