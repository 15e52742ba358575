"""LangChain messages map to the core's dicts by type and come back as copies with only their content changed."""

from __future__ import annotations

import pytest
from crossprefill_agents import PromptCompressor, SessionConfig
from crossprefill_agents.testing import filler_text
from langchain_core.messages import (
    AIMessage,
    ChatMessage,
    FunctionMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from lc_fakes import tiny_compressor

from langchain_crossprefill._messages import compress_messages, from_core, role_of, to_core
from langchain_crossprefill._options import DEFAULT_ROLES
from langchain_crossprefill._sessions import SessionMap, stable_namespace, thread_key


def _sessions(pc: PromptCompressor) -> SessionMap:
    return SessionMap(pc, SessionConfig(compress_roles=DEFAULT_ROLES), max_sessions=4)


def test_roles_come_from_message_types() -> None:
    """Each message class maps to its core role; ChatMessage keeps its own role (human/ai normalised)."""
    assert role_of(SystemMessage("s")) == "system"
    assert role_of(HumanMessage("h")) == "user"
    assert role_of(AIMessage("a")) == "assistant"
    assert role_of(ToolMessage("t", tool_call_id="1")) == "tool"
    assert role_of(FunctionMessage(content="f", name="fn")) == "function"
    assert role_of(ChatMessage(content="c", role="context")) == "context"
    assert role_of(ChatMessage(content="c", role="human")) == "user"
    assert role_of(ChatMessage(content="c", role="ai")) == "assistant"
    with pytest.raises(TypeError, match="BaseMessage"):
        role_of({"role": "user", "content": "x"})  # type: ignore[,arg-type]


def test_compressed_copies_keep_every_field_and_untouched_messages_are_the_same_objects(
    compressor: PromptCompressor,
) -> None:
    """Only the compressed message is replaced, by a copy whose id, tool_call_id, name, artifact,
    additional_kwargs and response_metadata are the original's; the others are returned as is."""
    system = SystemMessage("You research.", id="s")
    human = HumanMessage("Which river?", id="h")
    ai = AIMessage("", id="a", tool_calls=[{"name": "search", "args": {"q": "river"}, "id": "c1"}])
    tool = ToolMessage(
        filler_text(200),
        tool_call_id="c1",
        name="search",
        id="t",
        artifact={"raw": 1},
        additional_kwargs={"x": 1},
        response_metadata={"y": 2},
    )
    messages = [system, human, ai, tool]
    done = compress_messages(_sessions(compressor), "k", messages)
    out = done.messages
    assert done.changed == [3]
    assert out[0] is system and out[1] is human and out[2] is ai
    new = out[3]
    assert isinstance(new, ToolMessage) and new is not tool
    assert len(new.content) < len(tool.content)
    assert (new.id, new.tool_call_id, new.name, new.artifact) == ("t", "c1", "search", {"raw": 1})
    assert new.additional_kwargs == {"x": 1} and new.response_metadata == {"y": 2}
    assert tool.content == filler_text(200)  # the input is not modified
    assert done.stats["compressed_ids"] == ["t"]


def test_text_blocks_of_a_tool_result_are_compressed_in_place() -> None:
    """A tool result made of content blocks: each long text block is compressed where it stands, keeping
    its other keys; the image block and the text block under min_tokens are left exactly as they were."""
    compressor = tiny_compressor(min_tokens=100)  # characters here
    image = {"type": "image", "url": "https://example.com/a.png"}
    long_block = {"type": "text", "text": filler_text(200), "id": "b1"}
    tool = ToolMessage([long_block, image, "ok"], tool_call_id="c1")
    messages = [HumanMessage("q?"), AIMessage("", tool_calls=[{"name": "s", "args": {}, "id": "c1"}]), tool]
    out = compress_messages(_sessions(compressor), None, messages).messages
    content = out[2].content
    assert isinstance(content, list) and len(content) == 3
    assert content[1] is image or content[1] == image
    assert content[2] == "ok"
    assert isinstance(content[0], dict) and content[0]["id"] == "b1" and content[0]["type"] == "text"
    assert len(content[0]["text"]) < len(long_block["text"])
    assert long_block["text"] == filler_text(200)  # the caller's block is not modified


def test_non_text_content_passes_through_unchanged(compressor: PromptCompressor) -> None:
    """A tool result with no text block (an image only) is not touched: the same message object comes back."""
    tool = ToolMessage([{"type": "image", "url": "https://example.com/a.png"}], tool_call_id="c1")
    messages = [HumanMessage("q?"), tool]
    out = compress_messages(_sessions(compressor), None, messages).messages
    assert out[1] is tool


def test_block_content_of_human_and_system_messages_is_read_but_never_compressed() -> None:
    """A human message with content blocks becomes one dict holding its text, marked never to be compressed,
    so it still conditions scoring as the question."""
    human = HumanMessage([{"type": "text", "text": "What is"}, {"type": "image", "url": "u"}, "the key?"])
    core, slots = to_core([human], SystemMessage([{"type": "text", "text": "Be brief."}]))
    assert core == [
        {"role": "system", "content": "Be brief.", "compress": False},
        {"role": "user", "content": "What is\nthe key?", "compress": False},
    ]
    assert [s.message for s in slots] == [-1, 0]


def test_history_is_compressed_only_when_asked(compressor: PromptCompressor) -> None:
    """An older human message is left alone by default and compressed with compress_history; the latest human
    message never is."""
    old = HumanMessage(filler_text(120, seed=1))
    latest = HumanMessage(filler_text(30, seed=2))
    messages = [old, AIMessage("ok"), latest]
    plain = SessionMap(compressor, SessionConfig(), 4)
    history = SessionMap(compressor, SessionConfig(compress_history=True), 4)
    assert compress_messages(plain, None, messages).changed == []
    done = compress_messages(history, None, messages)
    assert 0 in done.changed and 2 not in done.changed
    assert done.messages[2] is latest


def test_from_core_leaves_results_equal_to_the_input_alone(compressor: PromptCompressor) -> None:
    """A segment whose 'compression' kept everything (budget above its size) does not produce a copy."""
    tool = ToolMessage(filler_text(200), tool_call_id="c")
    messages = [HumanMessage("q"), tool]
    core, slots = to_core(messages)
    turn = compressor.session().compress_messages(core)
    out, changed = from_core(messages, core, slots, turn)
    assert changed == [1]  # keep_rate 0.25 compresses it
    keep_all = PromptCompressor(compressor.draft, target=len, config=compressor.config.with_overrides(keep_rate=1.0))
    turn = keep_all.session().compress_messages(core)
    assert 1 in turn.results
    out, changed = from_core(messages, core, slots, turn)
    assert changed == [] and out[1] is tool


def test_namespaces_lose_their_task_ids() -> None:
    """Checkpoint namespaces keep the node path and drop task ids, so a thread's key is stable across steps."""
    assert stable_namespace("model:1f2e-33") == "model"
    assert stable_namespace("researcher:ab12|model:9a8b") == "researcher|model"
    assert stable_namespace("") == "" and stable_namespace(None) == ""
    assert thread_key("t1", "model:abc") == thread_key("t1", "model:def")
    assert thread_key("t1", "a:1|model:2") != thread_key("t1", "b:1|model:2")
    assert thread_key(None, "model:1") is None and thread_key("", None) is None
