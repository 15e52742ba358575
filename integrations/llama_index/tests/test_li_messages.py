"""ChatMessage <-> session dicts: roles, blocks, ReAct observations and prefixes, write-back by position."""

from __future__ import annotations

import pytest
from crossprefill_agents import CompressionSession, PromptCompressor, SessionConfig
from crossprefill_agents.testing import filler_text
from llama_index.core.base.llms.types import ChatMessage, ImageBlock, MessageRole, TextBlock

from llama_index.postprocessor.crossprefill.messages import (
    from_session_turn,
    is_react_observation,
    to_session_messages,
)

ACTION = 'Thought: I should look it up.\nAction: search\nAction Input: {"q": "river"}'


def test_roles_and_text_map_one_dict_per_message() -> None:
    """System, user and assistant messages become one dict each with their role and text; a tool message with
    one text block becomes one tool dict."""
    msgs = [
        ChatMessage(role="system", content="be brief"),
        ChatMessage(role="user", content="hi"),
        ChatMessage(role="assistant", content=""),
        ChatMessage(role="tool", content="out", additional_kwargs={"tool_call_id": "c1"}),
    ]
    dicts, parts = to_session_messages(msgs)
    assert dicts == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": ""},
        {"role": "tool", "content": "out"},
    ]
    assert [(p.message, p.block, p.prefix) for p in parts] == [(0, 0, ""), (1, 0, ""), (2, 0, ""), (3, 0, "")]


def test_tool_message_blocks_map_one_dict_per_text_block_and_others_pass_through() -> None:
    """A tool result with [text, image, text] gives two tool dicts; the image block and additional_kwargs come back
    untouched, and each text goes back into its own block."""
    image = ImageBlock(url="https://example.com/a.png")
    tool = ChatMessage(
        role="tool",
        blocks=[TextBlock(text="first " * 50), image, TextBlock(text="second " * 50)],
        additional_kwargs={"tool_call_id": "call-7", "name": "search"},
    )
    msgs = [ChatMessage(role="user", content="q"), tool]
    dicts, parts = to_session_messages(msgs)
    assert dicts[1:] == [{"role": "tool", "content": "first " * 50}, {"role": "tool", "content": "second " * 50}]
    assert [(p.message, p.block) for p in parts[1:]] == [(1, 0), (1, 2)]


def test_several_text_blocks_outside_tool_results_are_never_rewritten() -> None:
    """A user message with two text blocks is one dict of its joined text, marked compress=False."""
    msgs = [ChatMessage(role="user", blocks=[TextBlock(text="a"), TextBlock(text="b")])]
    dicts, parts = to_session_messages(msgs)
    assert dicts == [{"role": "user", "content": "a\nb", "compress": False}]
    assert parts[0].block is None


@pytest.mark.parametrize(
    ("prev", "role", "text", "expected"),
    [
        (ACTION, "user", "Observation: 42 results", True),
        (ACTION, "tool", "Observation: 42 results", True),  # ReActChatFormatter(observation_role=TOOL)
        ("Thought: done.\nAnswer: 42", "user", "Observation: 42", False),  # answers no Action
        (ACTION, "user", "What next?", False),
        (ACTION, "assistant", "Observation: 42", False),
    ],
)
def test_react_observations_answer_an_action_step(prev: str, role: str, text: str, expected: bool) -> None:
    """An observation is a user/tool message starting 'Observation:' right after an assistant 'Action:' step."""
    msgs = [ChatMessage(role="user", content="q"), ChatMessage(role="assistant", content=prev)]
    msgs.append(ChatMessage(role=role, content=text))
    assert is_react_observation(msgs, 2) is expected
    assert is_react_observation(msgs, 0) is False


@pytest.mark.parametrize("text", ["Observation: body", "Observation:body", "Observation:  \n body", "Observation: "])
def test_observation_prefix_and_spaces_are_kept_out_of_the_compressed_text(text: str) -> None:
    """The session sees only the text after 'Observation:' and its spaces; the prefix is remembered verbatim."""
    msgs = [
        ChatMessage(role="user", content="q"),
        ChatMessage(role="assistant", content=ACTION),
        ChatMessage(role="user", content=text),
    ]
    dicts, parts = to_session_messages(msgs)
    assert dicts[2]["role"] == "tool"
    assert parts[2].prefix + dicts[2]["content"] == text
    assert parts[2].prefix.startswith("Observation:") and not dicts[2]["content"][:1].isspace()
    off, _ = to_session_messages(msgs, react_observations=False)
    assert off[2] == {"role": "user", "content": text}


def test_write_back_keeps_untouched_messages_as_the_same_objects(compressor: PromptCompressor) -> None:
    """After a session turn, changed messages are copies (blocks, additional_kwargs copied), the others the very same
    objects; a ReAct observation keeps its prefix byte-identical and an image block is not touched."""
    image = ImageBlock(url="https://example.com/a.png")
    long_text = filler_text(200, seed=3)
    msgs = [
        ChatMessage(role="system", content="You are an agent."),
        ChatMessage(role="user", content="which river?"),
        ChatMessage(role="assistant", content=ACTION),
        ChatMessage(role="user", content="Observation: " + long_text),
        ChatMessage(role="assistant", content=ACTION),
        ChatMessage(
            role=MessageRole.TOOL, blocks=[TextBlock(text=long_text), image], additional_kwargs={"tool_call_id": "c"}
        ),
    ]
    dicts, parts = to_session_messages(msgs)
    session: CompressionSession = compressor.session(SessionConfig())
    turn = session.compress_messages(dicts)
    out = from_session_turn(msgs, parts, turn)
    assert [a is b for a, b in zip(out, msgs, strict=True)] == [True, True, True, False, True, False]
    obs = out[3].content or ""
    assert obs.startswith("Observation: ") and len(obs) < len(msgs[3].content or "")
    assert obs[len("Observation: ") :] == turn.results[3].text
    assert out[5].blocks[1] is image and out[5].additional_kwargs == {"tool_call_id": "c"}
    assert out[5].additional_kwargs is not msgs[5].additional_kwargs
    assert msgs[3].content == "Observation: " + long_text  # the caller's message is unchanged


def test_bad_messages_raise_clear_errors() -> None:
    """Dicts or a bare message are not ChatMessages: the error says what is expected."""
    with pytest.raises(TypeError, match=r"messages\[0\] must be a llama_index ChatMessage"):
        to_session_messages([{"role": "user", "content": "x"}])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="list of ChatMessage"):
        to_session_messages(ChatMessage(role="user", content="x"))  # type: ignore[arg-type]
