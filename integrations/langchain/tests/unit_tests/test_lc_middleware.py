"""SpeculativePrefillMiddleware in create_agent: what the model is sent, call after call, thread after thread."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from crossprefill_agents import PromptCompressor
from crossprefill_agents.testing import filler_text
from langchain.agents import create_agent
from langchain.agents.middleware import ModelRequest
from langchain_core.messages import AIMessage, AnyMessage, BaseMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.runtime import ExecutionInfo, Runtime
from lc_fakes import ScriptedChatModel, broken_compressor, research_script, search, tiny_compressor, tool_output

from langchain_crossprefill import SpeculativePrefillMiddleware
from langchain_crossprefill._options import METADATA_KEY

SYSTEM = "You are a careful researcher. Search before you answer."
DELIM = " [...] "


def make_agent(middleware: list[SpeculativePrefillMiddleware], n_searches: int, checkpointer: Any = None) -> Any:
    model = ScriptedChatModel(script=research_script(n_searches))
    agent = create_agent(
        model=model, tools=[search], system_prompt=SYSTEM, middleware=middleware, checkpointer=checkpointer
    )
    return agent, model


def wire(m: BaseMessage) -> tuple[Any, ...]:
    """What a provider would be sent for a message: its type, content and tool fields."""
    return (m.type, m.content, getattr(m, "tool_call_id", None), getattr(m, "tool_calls", None))


def assert_prefix_stable(calls: list[list[BaseMessage]]) -> None:
    """Every message of a model call is sent again, unchanged, at the next call."""
    for before, after in itertools.pairwise(calls):
        assert len(after) > len(before)
        assert [wire(m) for m in after[: len(before)]] == [wire(m) for m in before]


def assert_is_cut_from(compressed: str, original: str) -> None:
    """``compressed`` is pieces of ``original``, in order, joined by the delimiter, and shorter."""
    assert len(compressed) < len(original)
    pos = 0
    for piece in compressed.split(DELIM):
        found = original.find(piece, pos)
        assert found >= 0, piece
        pos = found + len(piece)


def stats_of(state: dict[str, Any], name: str = "SpeculativePrefillMiddleware") -> list[dict[str, Any]]:
    return [m.response_metadata[METADATA_KEY][name] for m in state["messages"] if isinstance(m, AIMessage)]


def test_the_model_sees_compressed_tool_outputs_and_the_state_keeps_the_originals(
    compressor: PromptCompressor,
) -> None:
    """Tool results reach the model cut down (pieces of the original in order); the graph state, and so the
    history a checkpointer saves, holds the tool results whole."""
    agent, model = make_agent([SpeculativePrefillMiddleware(compressor=compressor)], n_searches=2)
    state = agent.invoke({"messages": [HumanMessage("Which river runs through the city?")]})
    last_call = model.recorder.calls[-1]
    sent = [m for m in last_call if isinstance(m, ToolMessage)]
    kept = [m for m in state["messages"] if isinstance(m, ToolMessage)]
    assert len(sent) == len(kept) == 2
    for s, k in zip(sent, kept, strict=True):
        assert k.content == tool_output(_query_of(state, k.tool_call_id))
        assert_is_cut_from(str(s.content), str(k.content))
        assert s.tool_call_id == k.tool_call_id and s.id == k.id


def _query_of(state: dict[str, Any], call_id: str) -> str:
    for m in state["messages"]:
        for tc in getattr(m, "tool_calls", []) or []:
            if tc["id"] == call_id:
                return str(tc["args"]["query"])
    raise KeyError(call_id)


def test_five_model_calls_without_a_checkpointer_resend_earlier_messages_byte_identical(
    compressor: PromptCompressor,
) -> None:
    """One invocation, five model calls (four searches): each call's messages are re-sent unchanged at the next,
    the system and the human message as given, and the session (one per invocation) replays frozen segments."""
    mw = SpeculativePrefillMiddleware(compressor=compressor)
    agent, model = make_agent([mw], n_searches=4)
    question = "Who founded the company, and when?"
    state = agent.invoke({"messages": [HumanMessage(question)]})
    calls = model.recorder.calls
    assert len(calls) == 5
    assert_prefix_stable(calls)
    for call in calls:
        assert isinstance(call[0], SystemMessage) and call[0].content == SYSTEM
        assert [m.content for m in call if isinstance(m, HumanMessage)] == [question]
    stats = stats_of(state)
    assert [s["segments"] for s in stats] == [0, 1, 2, 3, 4]
    assert [s["compressed_now"] for s in stats] == [0, 1, 1, 1, 1]
    assert [s["frozen_hits"] for s in stats] == [0, 0, 1, 2, 3]
    assert all(s["memo_hits"] == 0 for s in stats)  # one session for the whole invocation
    assert all(s["draft_tokens_reused"] > 0 for s in stats[2:])  # the draft re-reads only what is new
    assert all(s["target_tokens_after"] < s["target_tokens_before"] for s in stats[1:])
    assert len(mw._sessions) == 1 and mw._sessions.keys()[0].startswith("conversation=")


def test_with_a_checkpointer_two_invokes_of_one_thread_keep_every_earlier_message_byte_identical(
    compressor: PromptCompressor,
) -> None:
    """A thread with an InMemorySaver, two invokes, six model calls: every earlier message (tool outputs, the
    first question, the first answer) is re-sent with the same bytes, and the second invoke continues the
    thread's session (frozen hits, no memo lookups) under a key naming the thread."""
    mw = SpeculativePrefillMiddleware(compressor=compressor)
    agent, model = make_agent([mw], n_searches=2, checkpointer=InMemorySaver())
    config: RunnableConfig = {"configurable": {"thread_id": "thread-1"}}
    agent.invoke({"messages": [HumanMessage("Where was the paper written?")]}, config)
    state = agent.invoke({"messages": [HumanMessage("And who reviewed it?")]}, config)
    calls = model.recorder.calls
    assert len(calls) == 6
    assert_prefix_stable(calls)
    stats = stats_of(state)
    assert [s["frozen_hits"] for s in stats] == [0, 0, 1, 2, 2, 3]
    assert all(s["memo_hits"] == 0 for s in stats)
    assert mw._sessions.keys() == ["thread=thread-1|ns=model"]
    # The checkpointed history is whole.
    tools = [m for m in state["messages"] if isinstance(m, ToolMessage)]
    assert [m.content for m in tools] == [tool_output(_query_of(state, m.tool_call_id)) for m in tools]


def test_system_and_latest_human_messages_are_never_compressed(compressor: PromptCompressor) -> None:
    """Even with compress_history on and a long system prompt and question, both are sent as given at every call;
    the older human message of the thread is the one compressed."""
    long_system = filler_text(60, seed=5)
    first, second = filler_text(40, seed=6), "And the second question?"
    mw = SpeculativePrefillMiddleware(compressor=compressor, compress_history=True)
    model = ScriptedChatModel(script=research_script(1))
    agent = create_agent(
        model=model, tools=[search], system_prompt=long_system, middleware=[mw], checkpointer=InMemorySaver()
    )
    config: RunnableConfig = {"configurable": {"thread_id": "t"}}
    agent.invoke({"messages": [HumanMessage(first)]}, config)
    agent.invoke({"messages": [HumanMessage(second)]}, config)
    for call in model.recorder.calls:
        assert call[0].content == long_system
        humans = [m for m in call if isinstance(m, HumanMessage)]
        assert humans[-1].content in (first, second)
    last = model.recorder.calls[-1]
    humans = [m for m in last if isinstance(m, HumanMessage)]
    assert humans[-1].content == second
    assert_is_cut_from(str(humans[0].content), first)  # history: the older question is compressed


def test_sync_and_async_agents_send_the_same_messages_and_report_the_same_counts() -> None:
    """invoke and ainvoke (awrap_model_call, the session's native async path) compress identically."""
    results = []
    for run in ("sync", "async"):
        mw = SpeculativePrefillMiddleware(compressor=tiny_compressor())
        agent, model = make_agent([mw], n_searches=3)
        inputs = {"messages": [HumanMessage("What is the pass key?")]}
        state = agent.invoke(inputs) if run == "sync" else asyncio.run(agent.ainvoke(inputs))
        counts = [
            {k: len(v) if k == "compressed_ids" else v for k, v in s.items() if not k.endswith("_s")}  # ids are random
            for s in stats_of(state)
        ]
        results.append(([[wire(m) for m in call] for call in model.recorder.calls], counts))
    assert results[0] == results[1]


def test_eight_concurrent_threads_get_the_results_of_serial_runs() -> None:
    """Eight threads of one agent (different thread ids) run at once through one middleware and compressor: each
    conversation is sent exactly what it is sent when the threads run one after another."""
    questions = [f"Question number {i}: what happened in year {1990 + i}?" for i in range(8)]

    def run(parallel: bool) -> dict[str, list[list[tuple[Any, ...]]]]:
        mw = SpeculativePrefillMiddleware(compressor=tiny_compressor())
        agent, model = make_agent([mw], n_searches=1, checkpointer=InMemorySaver())

        def one(i: int) -> None:
            agent.invoke({"messages": [HumanMessage(questions[i])]}, {"configurable": {"thread_id": f"t{i}"}})

        if parallel:
            with ThreadPoolExecutor(max_workers=8) as pool:
                list(pool.map(one, range(8)))
        else:
            for i in range(8):
                one(i)
        assert len(mw._sessions) == 8
        return {q: [[wire(m) for m in c] for c in calls] for q, calls in model.recorder.by_question().items()}

    serial, parallel = run(False), run(True)
    assert set(serial) == set(questions)
    assert parallel == serial


def test_a_failing_draft_sends_the_messages_unchanged_and_says_why() -> None:
    """When the draft raises, the tool outputs reach the model whole and the stats name the error."""
    mw = SpeculativePrefillMiddleware(compressor=broken_compressor())
    agent, model = make_agent([mw], n_searches=2)
    state = agent.invoke({"messages": [HumanMessage("Which river?")]})
    sent = [m for m in model.recorder.calls[-1] if isinstance(m, ToolMessage)]
    kept = [m for m in state["messages"] if isinstance(m, ToolMessage)]
    assert [m.content for m in sent] == [m.content for m in kept]
    stats = stats_of(state)
    assert "draft exploded" in stats[1]["fallback_reason"]
    assert stats[1]["target_tokens_after"] == stats[1]["target_tokens_before"]


def test_two_named_instances_work_in_one_agent_and_each_reports_its_stats(compressor: PromptCompressor) -> None:
    """Two instances need their own names (create_agent refuses duplicates); each one's stats sit under its name."""
    with pytest.raises(AssertionError, match="duplicate"):
        make_agent(
            [SpeculativePrefillMiddleware(compressor=compressor), SpeculativePrefillMiddleware(compressor=compressor)],
            1,
        )
    tools_mw = SpeculativePrefillMiddleware(compressor=compressor, name="compress-tools")
    history_mw = SpeculativePrefillMiddleware(
        compressor=compressor, name="compress-history", compress_roles=(), compress_history=True
    )
    agent, model = make_agent([tools_mw, history_mw], n_searches=1)
    state = agent.invoke({"messages": [HumanMessage("Which river?")]})
    sent = next(m for m in model.recorder.calls[-1] if isinstance(m, ToolMessage))
    kept = next(m for m in state["messages"] if isinstance(m, ToolMessage))
    assert_is_cut_from(str(sent.content), str(kept.content))
    final = [m for m in state["messages"] if isinstance(m, AIMessage)][-1]
    ours = final.response_metadata[METADATA_KEY]
    assert set(ours) == {"compress-tools", "compress-history"}
    assert ours["compress-tools"]["segments"] == 1 and ours["compress-history"]["segments"] == 0


def test_the_session_map_is_bounded_and_an_evicted_thread_still_gets_its_bytes(compressor: PromptCompressor) -> None:
    """With max_sessions=2, a third thread evicts the least recent one; when that thread comes back, its earlier
    tool outputs replay from the memo store with the same bytes."""
    mw = SpeculativePrefillMiddleware(compressor=compressor, max_sessions=2)
    agent, model = make_agent([mw], n_searches=1, checkpointer=InMemorySaver())
    for t in ("a", "b", "c"):
        agent.invoke({"messages": [HumanMessage(f"question {t}")]}, {"configurable": {"thread_id": t}})
    assert mw._sessions.keys() == ["thread=b|ns=model", "thread=c|ns=model"]
    before = len(model.recorder.calls)
    state = agent.invoke({"messages": [HumanMessage("follow-up a")]}, {"configurable": {"thread_id": "a"}})
    first_a = model.recorder.by_question()["question a"]
    assert_prefix_stable(first_a)
    assert len(model.recorder.calls) > before
    stats = stats_of(state)
    assert stats[-2]["memo_hits"] == 1  # the evicted session's segment, replayed
    assert len(mw._sessions) == 2


def test_non_string_tool_content_passes_through() -> None:
    """A tool that returns content blocks without text (an image) is sent as it is."""
    from langchain_core.tools import tool

    @tool
    def camera(query: str) -> list[dict[str, str]]:
        """Take a picture."""
        return [{"type": "image", "url": f"https://example.com/{query}.png"}]

    def script(messages: list[BaseMessage]) -> AIMessage:
        if not any(isinstance(m, ToolMessage) for m in messages):
            return AIMessage("", tool_calls=[{"name": "camera", "args": {"query": "x"}, "id": "c1"}])
        return AIMessage("seen")

    model = ScriptedChatModel(script=script)
    mw = SpeculativePrefillMiddleware(compressor=tiny_compressor())
    agent = create_agent(model=model, tools=[camera], middleware=[mw])
    state = agent.invoke({"messages": [HumanMessage("look")]})
    sent = next(m for m in model.recorder.calls[-1] if isinstance(m, ToolMessage))
    kept = next(m for m in state["messages"] if isinstance(m, ToolMessage))
    assert sent.content == kept.content and isinstance(sent.content, list)


def test_session_keys_come_from_the_runtime(compressor: PromptCompressor) -> None:
    """A request's conversation: the thread plus namespace without task ids; else the run id; else the
    conversation's first message id; else none (a one-call session)."""
    mw = SpeculativePrefillMiddleware(compressor=compressor)
    model = ScriptedChatModel(script=research_script(0))
    messages = [HumanMessage("q", id="m1")]

    def request(info: ExecutionInfo | None, msgs: Sequence[AnyMessage] = messages) -> ModelRequest[Any]:
        return ModelRequest(model=model, messages=list(msgs), runtime=Runtime(execution_info=info))

    threaded = ExecutionInfo(checkpoint_id="c", checkpoint_ns="sub:1|model:2", task_id="x", thread_id="T")
    assert mw.session_key(request(threaded)) == "thread=T|ns=sub|model"
    run = ExecutionInfo(checkpoint_id="c", checkpoint_ns="model:2", task_id="x", run_id="R")
    assert mw.session_key(request(run)) == "run=R|ns=model"
    assert mw.session_key(request(None)) == "conversation=m1|ns="
    assert mw.session_key(request(None, [HumanMessage("q")])) is None


def test_bad_options_fail_where_they_are_written(compressor: PromptCompressor) -> None:
    """Out-of-range values and conflicting ways in are refused with messages that say what to do."""
    with pytest.raises(ValueError, match="keep_rate"):
        SpeculativePrefillMiddleware(compressor=compressor, keep_rate=1.5)
    with pytest.raises(ValueError, match="system messages are never compressed"):
        SpeculativePrefillMiddleware(compressor=compressor, compress_roles=("tool", "system"))
    with pytest.raises(ValueError, match="either compressor= or draft="):
        SpeculativePrefillMiddleware(compressor=compressor, draft="smollm2-135m")
    with pytest.raises(TypeError):
        SpeculativePrefillMiddleware(compressor=compressor, keeprate=0.5)  # type: ignore[,call-arg]


def test_a_prompt_budget_recompresses_under_pressure(compressor: PromptCompressor) -> None:
    """prompt_max_tokens with recompress='on_budget_pressure': once the prompt outgrows the budget, the
    compressed tool outputs are shrunk together (the stats say so) and the prompt fits again."""
    mw = SpeculativePrefillMiddleware(
        compressor=compressor, prompt_max_tokens=600, recompress="on_budget_pressure", pressure_headroom=0.75
    )
    agent, model = make_agent([mw], n_searches=3)
    state = agent.invoke({"messages": [HumanMessage("Which river?")]})
    assert len(model.recorder.calls) == 4
    stats = stats_of(state)
    assert any(s["recompressed"] > 0 for s in stats)
    assert all(s["target_tokens_after"] <= 600 for s in stats) and not any(s["over_budget"] for s in stats)
