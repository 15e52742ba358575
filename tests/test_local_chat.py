"""LocalChatModel offline: the lenient tool-call parser on hand-written replies, message and tool normalisation,
rendering through a chat template, and KV prefix reuse on a tiny random model (reused output == from scratch)."""

from __future__ import annotations

import copy
import json
import threading
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crossprefill_agents import testing
from crossprefill_agents.local_chat import (
    ChatReply,
    LocalChatModel,
    ToolCall,
    common_prefix,
    normalize_messages,
    normalize_tools,
    parse_tool_calls,
)

TOOLS = ("search", "get_weather", "now")

# ------------------------------------------------------------------------------------------- the parser


def test_fenced_json_call_is_parsed_and_taken_out_of_the_text() -> None:
    """The Qwen-Coder habit: a ```json fenced {"name", "arguments"} block becomes a ToolCall, the prose stays."""
    reply = 'Let me look that up.\n```json\n{"name": "search", "arguments": {"query": "Oslo mayor"}}\n```'
    text, calls, invalid = parse_tool_calls(reply, TOOLS)
    assert [(c.name, c.arguments) for c in calls] == [("search", {"query": "Oslo mayor"})]
    assert invalid == () and text == "Let me look that up."


def test_tool_call_tags_with_several_calls() -> None:
    """The template's own format: each <tool_call> block is a call, in order."""
    reply = (
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>\n'
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Bergen"}}\n</tool_call>'
    )
    text, calls, invalid = parse_tool_calls(reply, TOOLS)
    assert [c.arguments["city"] for c in calls] == ["Oslo", "Bergen"]
    assert text == "" and invalid == ()


def test_bare_json_object_in_prose() -> None:
    """A call written as a bare JSON object inside a sentence is found; the sentence keeps its words."""
    reply = 'I will call {"name": "search", "arguments": {"query": "x"}} now.'
    text, calls, _ = parse_tool_calls(reply, TOOLS)
    assert calls[0].name == "search" and calls[0].arguments == {"query": "x"}
    assert text == "I will call  now."


def test_parameters_key_function_wrapper_and_string_arguments() -> None:
    """The "parameters" (or "args") key for "arguments", the OpenAI {"function": {...}} wrapper, and arguments
    given as a JSON string are all read as the same call."""
    forms = [
        '{"name": "search", "parameters": {"query": "q"}}',
        '{"name": "search", "args": {"query": "q"}}',
        '{"type": "function", "function": {"name": "search", "arguments": {"query": "q"}}}',
        '{"name": "search", "arguments": "{\\"query\\": \\"q\\"}"}',
    ]
    for form in forms:
        _, calls, invalid = parse_tool_calls(f"```json\n{form}\n```", TOOLS)
        assert [(c.name, c.arguments) for c in calls] == [("search", {"query": "q"})], form
        assert invalid == ()


def test_a_list_of_calls_in_one_fence() -> None:
    """A fenced JSON list of calls yields one ToolCall per item."""
    reply = '```json\n[{"name": "search", "arguments": {"query": "a"}}, {"name": "now", "arguments": {}}]\n```'
    _, calls, _ = parse_tool_calls(reply, TOOLS)
    assert [c.name for c in calls] == ["search", "now"]


def test_unknown_tool_names_are_invalid_calls() -> None:
    """An invented tool name is reported in invalid_tool_calls (with the known names) and taken out of the text."""
    reply = 'Sure.\n```json\n{"name": "web_browse", "arguments": {"url": "x"}}\n```'
    text, calls, invalid = parse_tool_calls(reply, TOOLS)
    assert calls == () and text == "Sure."
    assert invalid[0].name == "web_browse" and "unknown tool" in invalid[0].error and "search" in invalid[0].error
    assert json.loads(invalid[0].arguments) == {"url": "x"}


def test_malformed_calls_are_invalid() -> None:
    """Unparsable JSON in a tag or in a json fence that names a call, arguments that are not an object, and
    string arguments that are not JSON are invalid calls, each with a reason."""
    cases = {
        '<tool_call>{"name": "search", "arguments": {"query": }</tool_call>': "not valid JSON",
        '```json\n{"name": "search" "arguments": {}}\n```': "not valid JSON",
        '```json\n{"name": "search", "arguments": ["a", "b"]}\n```': "must be a JSON object",
        '```json\n{"name": "search", "arguments": "query=a"}\n```': "arguments are not valid JSON",
    }
    for reply, reason in cases.items():
        text, calls, invalid = parse_tool_calls(reply, TOOLS)
        assert calls == () and len(invalid) == 1 and reason in invalid[0].error, reply
        assert text == ""


def test_json_that_is_not_a_call_stays_in_the_text() -> None:
    """An answer that happens to be JSON, and code fences in other languages, are content, not calls."""
    for reply in (
        '```json\n{"answer": 42, "unit": "km"}\n```',
        'The config is {"name": "prod", "replicas": 3}.',
        '```python\nprint({"name": "search", "arguments": {}})\n```',
    ):
        text, calls, invalid = parse_tool_calls(reply, TOOLS)
        assert calls == () and invalid == () and text == reply.strip(), reply


def test_repairs_trailing_commas_and_python_quotes() -> None:
    """Trailing commas and single-quoted (Python literal) dicts, common in small models' JSON, are repaired."""
    for body in (
        '{"name": "search", "arguments": {"query": "a",},}',
        "{'name': 'search', 'arguments': {'query': 'a'}}",
    ):
        _, calls, invalid = parse_tool_calls(f"```json\n{body}\n```", TOOLS)
        assert [(c.name, c.arguments) for c in calls] == [("search", {"query": "a"})], body
        assert invalid == ()


def test_unclosed_fence_cut_by_the_token_limit() -> None:
    """A fence never closed (max_new_tokens reached): a complete call inside is still read; a cut one is invalid."""
    _, calls, _ = parse_tool_calls('```json\n{"name": "now", "arguments": {}}', TOOLS)
    assert [c.name for c in calls] == ["now"]
    _, calls, invalid = parse_tool_calls('```json\n{"name": "search", "arguments": {"query": "lo', TOOLS)
    assert calls == () and invalid and invalid[0].error == "not valid JSON"


def test_name_only_object_counts_for_a_known_tool_without_parameters() -> None:
    """{"name": "now"} is a call of the known tool with no arguments; {"name": "prod"} is just data."""
    _, calls, _ = parse_tool_calls('```json\n{"name": "now"}\n```', TOOLS)
    assert [(c.name, c.arguments) for c in calls] == [("now", {})]
    text, calls, invalid = parse_tool_calls('{"name": "prod"}', TOOLS)
    assert calls == () and invalid == () and text == '{"name": "prod"}'


def test_call_ids_are_unique() -> None:
    """Every call gets its own id, so tool messages can answer each one."""
    reply = "\n".join('<tool_call>{"name": "now", "arguments": {}}</tool_call>' for _ in range(20))
    _, calls, _ = parse_tool_calls(reply, TOOLS)
    ids = [c.id for c in calls]
    assert len(ids) == 20 and len(set(ids)) == 20 and all(i.startswith("call_") for i in ids)


PIECES = [
    *"{}[]\"':,` \nabq<>/_",
    '"name"',
    '"arguments"',
    '"search"',
    "```json\n",
    "```",
    "<tool_call>",
    "</tool_call>",
]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(PIECES), max_size=60).map("".join))
def test_parser_never_raises_and_only_returns_known_tools(reply: str) -> None:
    """On any text the parser returns (never raises); valid calls name only given tools with dict arguments."""
    text, calls, invalid = parse_tool_calls(reply, TOOLS)
    assert isinstance(text, str)
    assert all(c.name in TOOLS and isinstance(c.arguments, dict) for c in calls)
    assert all(i.error for i in invalid)


# ------------------------------------------------------------------------------------------- messages and tools


def test_normalize_tools_wraps_bare_schemas_and_rejects_bad_ones() -> None:
    """Bare {"name", "parameters"} schemas are wrapped in the OpenAI form; nameless or duplicate tools are errors."""
    tools = normalize_tools([{"name": "search", "parameters": {"type": "object", "properties": {"q": {}}}}])
    assert tools == [
        {
            "type": "function",
            "function": {
                "name": "search",
                "description": "",
                "parameters": {"type": "object", "properties": {"q": {}}},
            },
        }
    ]
    assert normalize_tools([{"type": "function", "function": {"name": "now"}}])[0]["function"]["parameters"] == {
        "type": "object",
        "properties": {},
    }
    with pytest.raises(ValueError, match="no name"):
        normalize_tools([{"description": "x"}])
    with pytest.raises(ValueError, match="two tools"):
        normalize_tools([{"name": "a"}, {"name": "a"}])


def test_normalize_messages_copies_and_converts() -> None:
    """Content becomes a string (parts joined, None -> ""); string tool-call arguments are decoded to dicts;
    tool messages keep tool_call_id and name; the caller's dicts are not modified; unknown roles are errors."""
    messages: list[dict[str, Any]] = [
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "now", "arguments": '{"tz": "UTC"}'}}],
        },
        {"role": "tool", "tool_call_id": "c1", "name": "now", "content": "12:00", "extra": 1},
    ]
    before = copy.deepcopy(messages)
    out = normalize_messages(messages)
    assert messages == before
    assert out[0] == {"role": "user", "content": "ab"}
    assert out[1]["content"] == "" and out[1]["tool_calls"][0]["function"] == {
        "name": "now",
        "arguments": {"tz": "UTC"},
    }
    assert out[2] == {"role": "tool", "content": "12:00", "tool_call_id": "c1", "name": "now"}
    with pytest.raises(ValueError, match="role"):
        normalize_messages([{"role": "developer", "content": "x"}])
    with pytest.raises(ValueError, match="not JSON"):
        normalize_messages([{"role": "assistant", "content": "", "tool_calls": [{"name": "x", "arguments": "{"}]}])


def test_reply_to_message_round_trips_through_normalisation() -> None:
    """ChatReply.to_message() gives an OpenAI assistant message whose tool calls normalise back to the same call."""
    call = ToolCall(name="search", arguments={"query": "q"}, id="call_1")
    reply = ChatReply("ok", (call,), (), 1, 1, 0, 0.0, 0.0)
    message = reply.to_message()
    assert message["tool_calls"][0]["function"]["arguments"] == '{"query": "q"}'
    assert normalize_messages([message])[0]["tool_calls"][0]["function"] == {
        "name": "search",
        "arguments": {"query": "q"},
    }


# ------------------------------------------------------------------------------------------- the tiny model

TEMPLATE = (
    "{% if tools %}<bos>tools: {{ tools | tojson }}\n{% endif %}"
    "{% for m in messages %}<bos>{{ m.role }}: {{ m.content }}"
    "{% for c in m.tool_calls or [] %} call {{ c.function.name }} {{ c.function.arguments | tojson }}{% endfor %}\n"
    "{% endfor %}{% if add_generation_prompt %}<bos>assistant:{% endif %}"
)

SEARCH = {
    "type": "function",
    "function": {"name": "search", "description": "find", "parameters": {"type": "object", "properties": {}}},
}


def tiny_chat(seed: int = 0) -> LocalChatModel:
    tokenizer = copy.deepcopy(testing.tiny_tokenizer())  # the shared one must not get a template
    tokenizer.chat_template = TEMPLATE
    return LocalChatModel.from_model(testing.tiny_model("llama", seed=seed), tokenizer, name="tiny", prefill_chunk=16)


def conversation(n_tool_turns: int) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": testing.filler_text(30, seed=1)},
        {"role": "user", "content": testing.filler_text(20, seed=2)},
    ]
    for t in range(n_tool_turns):
        messages.append(
            {"role": "assistant", "content": "", "tool_calls": [{"id": f"c{t}", "name": "search", "arguments": {}}]}
        )
        messages.append({"role": "tool", "tool_call_id": f"c{t}", "content": testing.filler_text(40, seed=10 + t)})
    return messages


def test_render_uses_the_template_with_tools_and_calls() -> None:
    """The prompt is the chat template over the normalised messages: tools as JSON, calls with dict arguments."""
    chat = tiny_chat()
    text = chat.render(conversation(1), tools=[SEARCH])
    assert text.startswith('<bos>tools: [{"type": "function", "function": {"name": "search"')
    assert "call search {}" in text and text.endswith("<bos>assistant:")
    ids = chat.prompt_ids(conversation(1), tools=[SEARCH])
    assert ids.count(chat.tokenizer.convert_tokens_to_ids("<bos>")) == text.count("<bos>")


def test_from_model_needs_a_chat_template() -> None:
    """A tokenizer without a chat template is refused with a message saying what to set."""
    with pytest.raises(ValueError, match="chat template"):
        LocalChatModel.from_model(testing.tiny_model("llama"), copy.deepcopy(testing.tiny_tokenizer()))


def test_prefix_reuse_gives_the_same_reply_as_from_scratch() -> None:
    """An agent loop's growing prompt: each call reuses the KV prefix it shares with the previous call (prompt and
    generated tokens), and every reply equals the reply of a model with an empty cache."""
    chat, fresh = tiny_chat(), tiny_chat()
    previous: list[int] = []
    for turn in range(4):
        messages = conversation(turn)
        ids = chat.prompt_ids(messages, tools=[SEARCH])
        reply = chat.chat(messages, tools=[SEARCH], max_new_tokens=8)
        fresh.reset_cache()
        expected = fresh.chat(messages, tools=[SEARCH], max_new_tokens=8)
        assert reply.raw_text == expected.raw_text and reply.completion_tokens == expected.completion_tokens
        assert expected.reused_prompt_tokens == 0
        assert reply.prompt_tokens == len(ids)
        if turn:
            assert reply.reused_prompt_tokens == min(common_prefix(previous, ids), len(ids) - 1)
            assert reply.reused_prompt_tokens >= len(chat.prompt_ids(conversation(turn - 1), tools=[SEARCH])) - 1
        previous = ids + chat.tokenizer(reply.raw_text, add_special_tokens=False)["input_ids"]


def test_the_same_prompt_twice_reuses_all_but_one_token() -> None:
    """Sending an identical prompt again prefills only its last token and answers the same."""
    chat = tiny_chat()
    messages = conversation(1)
    first = chat.chat(messages, max_new_tokens=6)
    second = chat.chat(messages, max_new_tokens=6)
    assert second.reused_prompt_tokens == first.prompt_tokens - 1
    assert second.raw_text == first.raw_text


def test_a_diverging_prompt_reuses_only_the_shared_prefix() -> None:
    """When an early message changes, only the tokens before the change are reused, and the reply is still exact."""
    chat, fresh = tiny_chat(), tiny_chat()
    chat.chat(conversation(2), max_new_tokens=4)
    changed = conversation(2)
    changed[1]["content"] = "a different question entirely"
    reply = chat.chat(changed, max_new_tokens=8)
    expected = fresh.chat(changed, max_new_tokens=8)
    old, new = chat.prompt_ids(conversation(2)), chat.prompt_ids(changed)
    assert reply.reused_prompt_tokens == common_prefix(old, new) < len(new) // 2
    assert reply.raw_text == expected.raw_text


def test_token_limit_and_stop_strings() -> None:
    """max_new_tokens bounds the reply (finish "length"); a stop string cuts the text before it (finish "stop")."""
    chat = tiny_chat()
    long = chat.chat(conversation(0), max_new_tokens=10)
    assert long.completion_tokens == 10 and long.finish_reason == "length"
    assert long.ttft_s > 0 and long.total_s >= long.ttft_s
    word = long.raw_text.strip().split()[-1]
    cut = chat.chat(conversation(0), max_new_tokens=10, stop=[word])
    assert cut.finish_reason == "stop" and word not in cut.raw_text
    assert long.raw_text.startswith(cut.raw_text)
    with pytest.raises(ValueError, match="max_new_tokens"):
        chat.chat(conversation(0), max_new_tokens=0)


def test_threads_share_one_model_safely() -> None:
    """Concurrent chat calls on one model (one at a time behind its lock) answer as sequential calls do."""
    prompts = [conversation(i % 3) for i in range(6)]
    sequential = tiny_chat()
    expected = [sequential.chat(p, max_new_tokens=5).raw_text for p in prompts]
    shared = tiny_chat()
    got: dict[int, str] = {}

    def run(i: int) -> None:
        got[i] = shared.chat(prompts[i], max_new_tokens=5).raw_text

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(prompts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [got[i] for i in range(len(prompts))] == expected


def test_without_tools_nothing_is_parsed() -> None:
    """Without tools the reply is plain text: no tool calls, even if it looks like one."""
    chat = tiny_chat()
    reply = chat.chat(conversation(0), max_new_tokens=3)
    assert reply.tool_calls == () and reply.invalid_tool_calls == () and reply.text == reply.raw_text.strip()
