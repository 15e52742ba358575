"""CompressingLLM called directly: delegation to the wrapped model, pass-through of every entry point, sessions,
fail-open, and errors. MockLLM / MockFunctionCallingLLM wrapped, the tiny draft compressing."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from crossprefill_agents import PromptCompressor, SessionConfig
from crossprefill_agents.testing import filler_text
from llama_index.core.base.llms.types import ChatMessage, ChatResponse, MessageRole, TextBlock, ToolCallBlock
from llama_index.core.bridge.pydantic import Field
from llama_index.core.instrumentation.dispatcher import instrument_tags
from llama_index.core.llms.mock import MockFunctionCallingLLM, MockLLM
from llama_index.core.tools import BaseTool, FunctionTool

from llama_index.postprocessor.crossprefill import (
    SESSION_TAG,
    CompressingLLM,
    MessageCompressionEndEvent,
    MessageCompressionStartEvent,
)

TOOL_OUTPUT = filler_text(220, seed=11)


def conversation(tool_output: str = TOOL_OUTPUT) -> list[ChatMessage]:
    """A tool-calling exchange: system, user, the assistant's tool call, the tool's long result."""
    return [
        ChatMessage(role="system", content="You answer from tool results."),
        ChatMessage(role="user", content="Which city is on the river?"),
        ChatMessage(
            role="assistant",
            blocks=[ToolCallBlock(tool_call_id="call-1", tool_name="search", tool_kwargs={"q": "river city"})],
        ),
        ChatMessage(role="tool", content=tool_output, additional_kwargs={"tool_call_id": "call-1"}),
    ]


def search(q: str) -> str:
    """Search the archive."""
    return TOOL_OUTPUT


def test_the_wrapped_llm_sees_the_tool_result_compressed(compressor: PromptCompressor, recorder: Any) -> None:
    """chat() sends system, user and assistant messages as they are and the tool result as pieces of itself, with
    its tool_call_id kept."""
    rec = recorder([ChatMessage(role="assistant", content="Rome")])
    llm = CompressingLLM(MockFunctionCallingLLM(response_generator=rec), compressor=compressor, keep_rate=0.25)
    msgs = conversation()
    reply = llm.chat(msgs)
    assert reply.message.content == "Rome"
    (sent,) = rec.seen
    assert [m.model_dump() for m in sent[:3]] == [m.model_dump() for m in msgs[:3]]
    tool = sent[3]
    assert tool.role == MessageRole.TOOL and tool.additional_kwargs == {"tool_call_id": "call-1"}
    text = tool.content or ""
    assert 0 < len(text) <= round(0.25 * len(TOOL_OUTPUT))  # target=len: the budget is in characters
    assert all(piece in TOOL_OUTPUT for piece in text.split(" [...] "))
    assert msgs[3].content == TOOL_OUTPUT  # the caller's message list is unchanged


def test_entry_points_agree_and_pass_through(make_compressor: Callable[..., PromptCompressor], recorder: Any) -> None:
    """chat, stream_chat, achat and astream_chat each send the same compressed messages to the wrapped model's own
    method (fresh compressors, so nothing is replayed from a memo)."""
    seen: dict[str, list[ChatMessage]] = {}

    def run(name: str) -> None:
        rec = recorder([ChatMessage(role="assistant", content="ok")])
        llm = CompressingLLM(MockFunctionCallingLLM(response_generator=rec), compressor=make_compressor())
        if name == "chat":
            assert llm.chat(conversation()).message.content == "ok"
        elif name == "stream_chat":
            assert [r.delta for r in llm.stream_chat(conversation())] == ["ok"]
        elif name == "achat":
            assert asyncio.run(llm.achat(conversation())).message.content == "ok"
        else:

            async def collect() -> list[str | None]:
                return [r.delta async for r in await llm.astream_chat(conversation())]

            assert asyncio.run(collect()) == ["ok"]
        (seen[name],) = rec.seen

    for name in ("chat", "stream_chat", "achat", "astream_chat"):
        run(name)
    dumps = {name: [m.model_dump() for m in msgs] for name, msgs in seen.items()}
    assert dumps["chat"] == dumps["stream_chat"] == dumps["achat"] == dumps["astream_chat"]
    assert seen["chat"][3].content != TOOL_OUTPUT


def test_completion_entry_points_pass_the_prompt_through(compressor: PromptCompressor) -> None:
    """complete / stream_complete / acomplete / astream_complete hand the prompt to the wrapped model unchanged."""
    llm = CompressingLLM(MockLLM(), compressor=compressor)
    prompt = filler_text(200, seed=2)
    assert llm.complete(prompt).text == prompt
    assert "".join(r.delta or "" for r in llm.stream_complete(prompt)) == prompt
    assert asyncio.run(llm.acomplete(prompt)).text == prompt

    async def collect() -> str:
        return "".join([r.delta or "" async for r in await llm.astream_complete(prompt)])

    assert asyncio.run(collect()) == prompt


def test_a_plain_llm_is_wrapped_too(compressor: PromptCompressor) -> None:
    """A non-function-calling LLM (MockLLM turns messages into one prompt and echoes it) gets compressed messages."""
    llm = CompressingLLM(MockLLM(), compressor=compressor, keep_rate=0.2)
    echoed = llm.chat(conversation()).message.content or ""
    assert "Which city is on the river?" in echoed and TOOL_OUTPUT not in echoed
    assert llm.metadata == MockLLM().metadata and not llm.metadata.is_function_calling_model


def test_metadata_tools_and_tool_calls_are_the_wrapped_models(compressor: PromptCompressor) -> None:
    """metadata, _prepare_chat_with_tools (tool_required included) and get_tool_calls_from_response are delegated;
    an older integration whose _prepare_chat_with_tools has no tool_required still works (LlamaIndex's compat path)."""

    class Inner(MockFunctionCallingLLM):
        prepared: list[dict[str, Any]] = Field(default_factory=list)

        def _prepare_chat_with_tools(
            self,
            tools: Sequence[BaseTool],
            user_msg: str | ChatMessage | None = None,
            chat_history: list[ChatMessage] | None = None,
            verbose: bool = False,
            allow_parallel_tool_calls: bool = False,
            tool_required: bool = False,
            **kwargs: Any,
        ) -> dict[str, Any]:
            self.prepared.append({"user_msg": user_msg, "tool_required": tool_required})
            return super()._prepare_chat_with_tools(tools, user_msg=user_msg, chat_history=chat_history, **kwargs)

    class Old(MockFunctionCallingLLM):
        """An integration written before tool_required existed."""

        prepared: list[dict[str, Any]] = Field(default_factory=list)

        def _prepare_chat_with_tools(  # type: ignore[override]
            self, tools: Sequence[BaseTool], user_msg: str | ChatMessage | None = None, **kwargs: Any
        ) -> dict[str, Any]:
            self.prepared.append(dict(kwargs))
            return super()._prepare_chat_with_tools(tools, user_msg=user_msg, **kwargs)

    inner = Inner()
    llm = CompressingLLM(inner, compressor=compressor)
    assert llm.metadata == inner.metadata and llm.metadata.is_function_calling_model
    tool = FunctionTool.from_defaults(search)
    response = llm.chat_with_tools([tool], user_msg="find the river city", tool_required=True)
    assert inner.prepared == [{"user_msg": "find the river city", "tool_required": True}]
    calls = llm.get_tool_calls_from_response(response, error_on_no_tool_call=False)
    assert [c.tool_name for c in calls] == ["search"]
    assert [c.tool_name for c in inner.get_tool_calls_from_response(response)] == ["search"]
    old = Old()
    response = CompressingLLM(old, compressor=compressor).chat_with_tools([tool], user_msg="q", tool_required=True)
    assert "tool_required" not in old.prepared[0] and [c.tool_name for c in old.get_tool_calls_from_response(response)]


def test_tool_calling_through_a_plain_llm_says_why_not(compressor: PromptCompressor) -> None:
    """Asking a wrapped non-function-calling model for tool calls raises a TypeError that names the way out."""
    llm = CompressingLLM(MockLLM(), compressor=compressor)
    with pytest.raises(TypeError, match="not a FunctionCallingLLM"):
        llm.get_tool_calls_from_response(ChatResponse(message=ChatMessage(role="assistant", content="x")))
    with pytest.raises(TypeError, match="not a FunctionCallingLLM"):
        llm.chat_with_tools([FunctionTool.from_defaults(search)], user_msg="q")


def test_prompt_formatting_follows_the_wrapped_model(compressor: PromptCompressor) -> None:
    """system_prompt and the prompt formatters are copied from the wrapped model, so predict() formats as it would."""

    def to_prompt(messages: Any) -> str:
        return "|".join(m.content or "" for m in messages)

    inner = MockLLM(system_prompt="Be terse.", messages_to_prompt=to_prompt)
    llm = CompressingLLM(inner, compressor=compressor)
    assert llm.system_prompt == "Be terse." and llm.messages_to_prompt is inner.messages_to_prompt
    assert llm.callback_manager is inner.callback_manager and llm.llm is inner  # wrapped, not copied


def test_events_carry_the_session_and_the_turn_stats(compressor: PromptCompressor, recorder: Any, events: Any) -> None:
    """Each call sends a start and an end event naming its session; the end event carries the turn's stats."""
    rec = recorder([ChatMessage(role="assistant", content="ok")])
    llm = CompressingLLM(MockFunctionCallingLLM(response_generator=rec), compressor=compressor, session_id="t-1")
    llm.chat(conversation())
    (start,) = events.of(MessageCompressionStartEvent)
    (end,) = events.of(MessageCompressionEndEvent)
    assert start.session_id == end.session_id == "t-1" and start.messages == end.messages == 4
    assert end.compressed_messages == 1
    assert end.stats["segments"] == 1 and end.stats["compressed_now"] == 1 and end.stats["fallback_reason"] is None
    assert end.stats["target_tokens_after"] < end.stats["target_tokens_before"]


def test_sessions_are_chosen_by_tag_then_id_then_default(compressor: PromptCompressor) -> None:
    """Outside a workflow run every call shares one default session; session_id names one; the
    crossprefill.session_id instrument tag picks a session per call and wins over the field."""
    plain = CompressingLLM(MockLLM(), compressor=compressor)
    first = plain.current_session()
    assert plain.current_session() is first and first.session_id.startswith("llamaindex-default-")
    with instrument_tags({SESSION_TAG: "thread-9"}):
        tagged = plain.current_session()
    assert tagged is not first and tagged.session_id == "thread-9"
    named = CompressingLLM(MockLLM(), compressor=compressor, session_id="thread-1")
    assert named.current_session().session_id == "thread-1"
    with instrument_tags({SESSION_TAG: "thread-2"}):
        assert named.current_session().session_id == "thread-2"
    other = CompressingLLM(MockLLM(), compressor=compressor)
    assert other.current_session() is not first  # each wrapper has its own sessions


def test_the_default_session_reuses_draft_work_across_calls(
    compressor: PromptCompressor, recorder: Any, events: Any
) -> None:
    """Two calls where the second extends the first: the tool result is replayed byte-identical (a frozen hit) and
    the draft reuses the keys of the conversation it has read."""
    rec = recorder([ChatMessage(role="assistant", content="a"), ChatMessage(role="assistant", content="b")])
    llm = CompressingLLM(MockFunctionCallingLLM(response_generator=rec), compressor=compressor)
    msgs = conversation()
    llm.chat(msgs)
    more = [
        *msgs,
        ChatMessage(role="assistant", content="a"),
        ChatMessage(role="user", content="And the other river?"),
        ChatMessage(role="tool", content=filler_text(220, seed=12), additional_kwargs={"tool_call_id": "call-2"}),
    ]
    llm.chat(more)
    first, second = rec.seen
    assert [m.model_dump() for m in second[: len(first)]] == [m.model_dump() for m in first]
    stats = events.of(MessageCompressionEndEvent)[1].stats
    assert stats["frozen_hits"] == 1 and stats["compressed_now"] == 1 and stats["draft_tokens_reused"] > 0


def test_max_sessions_drops_the_least_recently_used(compressor: PromptCompressor) -> None:
    """With max_sessions=1 a second session evicts the first: asking for the first again gives a fresh one."""
    llm = CompressingLLM(MockLLM(), compressor=compressor, max_sessions=1)
    with instrument_tags({SESSION_TAG: "a"}):
        a = llm.current_session()
    with instrument_tags({SESSION_TAG: "b"}):
        llm.current_session()
    with instrument_tags({SESSION_TAG: "a"}):
        assert llm.current_session() is not a


def test_session_config_and_budget_reach_the_session(compressor: PromptCompressor) -> None:
    """session_config is the SessionConfig of new sessions; keep_rate / max_tokens become the compressor's budget
    over the same draft and memo store, leaving the given compressor as it was."""
    cfg = SessionConfig(compress_roles=("tool", "function"), compress_history=True)
    llm = CompressingLLM(MockLLM(), compressor=compressor, session_config=cfg, max_tokens=100)
    assert llm.current_session().config is cfg
    assert llm.compressor.config.max_tokens == 100 and compressor.config.max_tokens is None
    assert llm.compressor.draft is compressor.draft and llm.compressor.memo is compressor.memo
    assert CompressingLLM(MockLLM(), compressor=compressor).compressor is compressor


def test_keep_history_multi_block_user_messages_intact(compressor: PromptCompressor, recorder: Any) -> None:
    """With compress_history on, an older user message of several text blocks is still sent as it was."""
    rec = recorder([ChatMessage(role="assistant", content="ok")])
    llm = CompressingLLM(
        MockFunctionCallingLLM(response_generator=rec),
        compressor=compressor,
        session_config=SessionConfig(compress_history=True),
    )
    old = ChatMessage(role="user", blocks=[TextBlock(text=filler_text(80, seed=1)), TextBlock(text="and this")])
    llm.chat([old, ChatMessage(role="assistant", content=filler_text(80, seed=4)), *conversation()[1:]])
    sent = rec.seen[0]
    assert sent[0].model_dump() == old.model_dump()
    assert len(sent[1].content or "") < len(filler_text(80, seed=4))  # the plain old assistant message shrank


def test_a_failing_draft_sends_the_messages_unchanged(
    broken_compressor: PromptCompressor, recorder: Any, events: Any
) -> None:
    """When the draft fails the wrapped model gets the original messages and the end event's stats say why."""
    rec = recorder([ChatMessage(role="assistant", content="ok")])
    llm = CompressingLLM(MockFunctionCallingLLM(response_generator=rec), compressor=broken_compressor)
    msgs = conversation()
    assert llm.chat(msgs).message.content == "ok"
    assert [m.model_dump() for m in rec.seen[0]] == [m.model_dump() for m in msgs]
    (end,) = events.of(MessageCompressionEndEvent)
    assert end.compressed_messages == 0
    assert end.stats["fallback_reason"] is not None and "out of memory" in end.stats["fallback_reason"]


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"keep_rate": 0.0}, ValueError, "keep_rate"),
        ({"max_tokens": -5}, ValueError, "max_tokens"),
        ({"session_config": {"compress_history": True}}, TypeError, "SessionConfig"),
        ({"session_id": ""}, TypeError, "session_id"),
        ({"draft": "smollm2-135m"}, TypeError, "either compressor="),
    ],
)
def test_bad_options_raise_clear_errors(
    compressor: PromptCompressor, kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    """Bad budgets, a session config of the wrong type, an empty session id, or a compressor with names fail early."""
    with pytest.raises(error, match=match):
        CompressingLLM(MockLLM(), compressor=compressor, **kwargs)


def test_bad_llm_and_messages_raise_clear_errors(compressor: PromptCompressor) -> None:
    """Wrapping something that is not an LLM, or chatting with dicts, raises a TypeError saying what is expected."""
    with pytest.raises(TypeError, match="llm must be a llama_index LLM"):
        CompressingLLM("gpt-4o", compressor=compressor)  # type: ignore[arg-type]
    llm = CompressingLLM(MockLLM(), compressor=compressor)
    with pytest.raises(TypeError, match="ChatMessage"):
        llm.chat([{"role": "user", "content": "hi"}])  # type: ignore[list-item]


def test_serialises_and_names_itself(compressor: PromptCompressor) -> None:
    """to_dict() carries the options and the wrapped LLM; class_name is CompressingLLM."""
    d = CompressingLLM(MockLLM(), compressor=compressor, keep_rate=0.3, session_id="s").to_dict()
    assert d["class_name"] == "CompressingLLM" and d["keep_rate"] == 0.3 and d["session_id"] == "s"
    assert d["llm"]["class_name"] == "MockLLM"
