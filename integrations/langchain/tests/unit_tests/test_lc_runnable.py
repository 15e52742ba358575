"""SpeculativePrefillCompressor: `compressor | model` with every input shape, binding and calling style."""

from __future__ import annotations

import asyncio
from typing import Any
from uuid import UUID

import pytest
from crossprefill_agents import PromptCompressor
from crossprefill_agents.testing import filler_text
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.prompt_values import ChatPromptValue
from langchain_core.runnables import RunnableConfig
from lc_fakes import ScriptedChatModel, broken_compressor, search
from pydantic import BaseModel, ValidationError

from langchain_crossprefill import SpeculativePrefillCompressor
from langchain_crossprefill._options import METADATA_KEY

TOOL_TEXT = filler_text(160, seed=3)


def conversation() -> list[BaseMessage]:
    return [
        SystemMessage("Answer from the search results."),
        HumanMessage("Which river runs through the city?"),
        AIMessage("", tool_calls=[{"name": "search", "args": {"query": "river"}, "id": "c1"}]),
        ToolMessage(TOOL_TEXT, tool_call_id="c1", id="tool-1"),
    ]


def reply(_: list[BaseMessage]) -> AIMessage:
    return AIMessage("the river")


def test_compressor_pipe_model_sends_compressed_tool_output(compressor: PromptCompressor) -> None:
    """`compressor | model`: the model is sent the tool output cut down (recorded in the message's metadata with
    spans that rebuild it) and everything else as given."""
    model = ScriptedChatModel(script=reply)
    chain = SpeculativePrefillCompressor(compressor=compressor) | model
    out = chain.invoke(conversation())
    assert isinstance(out, AIMessage) and out.content == "the river"
    (sent,) = model.recorder.calls
    assert [m.content for m in sent[:3]] == [m.content for m in conversation()[:3]]
    tool = sent[3]
    assert isinstance(tool, ToolMessage) and tool.tool_call_id == "c1" and tool.id == "tool-1"
    record = tool.response_metadata[METADATA_KEY]
    assert tool.content == " [...] ".join(TOOL_TEXT[s:e] for s, e in record["kept_spans"])
    assert record["compressed_tokens"] < record["original_tokens"] == len(TOOL_TEXT)


def test_bound_tools_and_structured_output_sit_behind_the_compressor(compressor: PromptCompressor) -> None:
    """`compressor | model.bind_tools(...)` passes the tools on; `compressor | model.with_structured_output(...)`
    parses the reply; in both the model is sent the compressed tool output."""

    class Answer(BaseModel):
        river: str

    def structured(_: list[BaseMessage]) -> AIMessage:
        return AIMessage("", tool_calls=[{"name": "Answer", "args": {"river": "Tagus"}, "id": "a1"}])

    model = ScriptedChatModel(script=reply)
    (SpeculativePrefillCompressor(compressor=compressor) | model.bind_tools([search])).invoke(conversation())
    assert [t["function"]["name"] for t in model.recorder.kwargs[0]["tools"]] == ["search"]
    assert len(model.recorder.calls[0][3].content) < len(TOOL_TEXT)

    model = ScriptedChatModel(script=structured)
    answer = (SpeculativePrefillCompressor(compressor=compressor) | model.with_structured_output(Answer)).invoke(
        conversation()
    )
    assert answer == Answer(river="Tagus")
    assert len(model.recorder.calls[0][3].content) < len(TOOL_TEXT)


@pytest.mark.parametrize(
    "shape",
    ["messages", "tuples", "dicts", "prompt_value"],
)
def test_every_chat_model_input_shape_is_accepted(compressor: PromptCompressor, shape: str) -> None:
    """Messages, (role, content) tuples (mixed with messages), role/content dicts and a ChatPromptValue
    compress alike."""
    msgs = [SystemMessage("s"), HumanMessage("Which river?"), ToolMessage(TOOL_TEXT, tool_call_id="c1")]
    forms: dict[str, Any] = {
        "messages": msgs,
        "tuples": [("system", "s"), ("human", "Which river?"), msgs[2]],  # a tuple cannot carry a tool_call_id
        "dicts": [
            {"role": "system", "content": "s"},
            {"role": "user", "content": "Which river?"},
            {"role": "tool", "content": TOOL_TEXT, "tool_call_id": "c1"},
        ],
        "prompt_value": ChatPromptValue(messages=msgs),
    }
    step = SpeculativePrefillCompressor(compressor=compressor)
    reference = step.invoke(msgs)
    out = step.invoke(forms[shape])
    assert [type(m) for m in out] == [SystemMessage, HumanMessage, ToolMessage]
    assert [m.content for m in out] == [m.content for m in reference]
    assert len(out[2].content) < len(TOOL_TEXT)


def test_a_string_is_one_human_message_and_bad_input_is_refused(compressor: PromptCompressor) -> None:
    """A str is the question itself (never compressed); an int is refused naming what is accepted."""
    step = SpeculativePrefillCompressor(compressor=compressor)
    long_question = filler_text(150)
    assert step.invoke(long_question) == [HumanMessage(long_question)]
    with pytest.raises(TypeError, match="a str, a PromptValue or a list of messages"):
        step.invoke(42)  # type: ignore[,arg-type]


def test_batch_stream_and_ainvoke_agree_with_invoke(compressor: PromptCompressor) -> None:
    """batch, stream and ainvoke give what invoke gives."""
    step = SpeculativePrefillCompressor(compressor=compressor)
    expected = [m.content for m in step.invoke(conversation())]
    assert [[m.content for m in out] for out in step.batch([conversation(), conversation()])] == [expected, expected]
    (streamed,) = list(step.stream(conversation()))
    assert [m.content for m in streamed] == expected
    assert [m.content for m in asyncio.run(step.ainvoke(conversation()))] == expected


class _Runs(BaseCallbackHandler):
    def __init__(self) -> None:
        self.chains: list[tuple[str, UUID | None]] = []
        self.models: list[UUID | None] = []

    def on_chain_start(
        self,
        serialized: dict[str, Any] | None,
        inputs: Any,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        **kwargs: Any,
    ) -> None:
        self.chains.append((str(kwargs.get("name")), parent_run_id))

    def on_chat_model_start(
        self,
        serialized: dict[str, Any],
        messages: Any,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        **kwargs: Any,
    ) -> None:
        self.models.append(parent_run_id)


def test_the_compressor_is_its_own_traced_step(compressor: PromptCompressor) -> None:
    """Callbacks see a run named after the step (or its name=) inside the chain, beside the model's run."""
    runs = _Runs()
    chain = SpeculativePrefillCompressor(compressor=compressor, name="compress") | ScriptedChatModel(script=reply)
    chain.invoke(conversation(), {"callbacks": [runs]})
    names = [n for n, _ in runs.chains]
    assert names[0] == "RunnableSequence" and "compress" in names
    parent = dict(runs.chains)["compress"]
    assert parent is not None and runs.models == [parent]


def test_a_thread_id_keeps_one_session_and_earlier_messages_keep_their_bytes(compressor: PromptCompressor) -> None:
    """With config thread_id, calls on a growing conversation share one session (frozen segments, same bytes);
    without one no session is kept."""
    step = SpeculativePrefillCompressor(compressor=compressor)
    config: RunnableConfig = {"configurable": {"thread_id": "t-7"}}
    first = step.invoke(conversation(), config)
    grown = [*conversation(), AIMessage("", tool_calls=[{"name": "search", "args": {}, "id": "c2"}])]
    grown.append(ToolMessage(filler_text(160, seed=9), tool_call_id="c2"))
    second = step.invoke(grown, config)
    assert [m.content for m in second[: len(first)]] == [m.content for m in first]
    assert len(second[5].content) < len(grown[5].content)
    assert step._sessions.keys() == ["thread=t-7|ns="]
    SpeculativePrefillCompressor(compressor=compressor).invoke(conversation())
    other = SpeculativePrefillCompressor(compressor=compressor)
    other.invoke(conversation())
    assert len(other._sessions) == 0


def test_a_failing_draft_passes_messages_through_with_the_reason() -> None:
    """A raising draft: the messages come back unchanged and the tool message's record says why."""
    out = SpeculativePrefillCompressor(compressor=broken_compressor()).invoke(conversation())
    assert [m.content for m in out] == [m.content for m in conversation()]
    assert "draft exploded" in out[3].response_metadata[METADATA_KEY]["fallback_reason"]


def test_unknown_options_are_refused(compressor: PromptCompressor) -> None:
    """A misspelt option fails instead of being silently ignored."""
    with pytest.raises(ValidationError, match="keeprate"):
        SpeculativePrefillCompressor(compressor=compressor, keeprate=0.1)  # type: ignore[,call-arg]
