"""The real embedded target Qwen2.5-Coder-0.5B through LocalChatModel: it answers from a passage, its tool calls
parse into the given tools, and target="qwen2.5-coder-0.5b" counts exactly as the GGUF's own tokenizer does."""

from __future__ import annotations

import os
import re

import pytest

from crossprefill_agents import ModelNotAvailableError
from crossprefill_agents.embedded_targets import GGUF_NAME, embedded_target_dir
from crossprefill_agents.local_chat import LocalChatModel
from crossprefill_agents.targets import resolve_target

pytestmark = pytest.mark.integration

ALIAS = "qwen2.5-coder-0.5b"

PASSAGE = (
    "The town of Brellick sits on the northern shore of Lake Osmere. It was founded in 1612 by a salt merchant "
    "named Hadrin Voss. Brellick is known for its copper bell tower, which was rebuilt in 1903 after a fire. "
    "Today the town's main industry is boat building, and its mayor is Tamsin Oakridge."
)

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "description": "the city name"}},
            "required": ["city"],
        },
    },
}
SEARCH = {
    "type": "function",
    "function": {
        "name": "search_flights",
        "description": "Find flights between two airports.",
        "parameters": {
            "type": "object",
            "properties": {"origin": {"type": "string"}, "destination": {"type": "string"}},
            "required": ["origin", "destination"],
        },
    },
}

SAMPLES = [
    PASSAGE,
    "def f(x):\n    return {'a': [1, 2, 3]}  # 漢字 かな 😀\n\t\tindent",
    "  leading spaces, trailing\n\n\nnewlines\r\n and <|im_start|> special-looking text <tool_call>",
]


@pytest.fixture(scope="module")
def folder():  # type: ignore[no-untyped-def]
    try:
        return embedded_target_dir(ALIAS)
    except ModelNotAvailableError as e:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the local-target tests: {e}")
        pytest.skip(str(e))


@pytest.fixture(scope="module")
def chat(folder) -> LocalChatModel:  # type: ignore[no-untyped-def]
    return LocalChatModel.from_pretrained(ALIAS, backend="transformers", threads=1)


def test_answers_from_a_made_up_passage(chat: LocalChatModel) -> None:
    """Facts that exist only in the passage come back in short answers (greedy, a few words)."""
    for question, answer in (
        ("Who founded Brellick?", "Hadrin Voss"),
        ("Who is the mayor of Brellick?", "Tamsin Oakridge"),
        ("In which year was the bell tower rebuilt?", "1903"),
    ):
        messages = [
            {"role": "system", "content": "Answer from the passage in a few words."},
            {"role": "user", "content": f"Passage: {PASSAGE}\n\nQuestion: {question}"},
        ]
        reply = chat.chat(messages, max_new_tokens=24)
        assert answer.lower() in reply.text.lower(), (question, reply.text)
        assert reply.finish_reason == "stop" and reply.tool_calls == ()


def test_a_tool_call_reply_is_parsed_into_a_known_tool(chat: LocalChatModel) -> None:
    """Asked something only a tool can answer, the model calls it, and the reply parses into that tool with the
    argument from the question; the next turn, with the tool's result appended, reuses the KV prefix."""
    messages = [{"role": "user", "content": "What is the weather like in Oslo right now?"}]
    reply = chat.chat(messages, tools=[WEATHER, SEARCH], max_new_tokens=60)
    assert [c.name for c in reply.tool_calls] == ["get_weather"], reply.raw_text
    assert "oslo" in str(reply.tool_calls[0].arguments.get("city", "")).lower()
    follow = [
        *messages,
        reply.to_message(),
        {"role": "tool", "tool_call_id": reply.tool_calls[0].id, "name": "get_weather", "content": "7 C, rain"},
    ]
    second = chat.chat(follow, tools=[WEATHER, SEARCH], max_new_tokens=40)
    assert second.reused_prompt_tokens >= reply.prompt_tokens - 1
    assert second.prompt_tokens > reply.prompt_tokens


def test_real_template_renders_tools_calls_and_results(chat: LocalChatModel) -> None:
    """Qwen's template gets the tools in <tools>, an earlier call in <tool_call> with its arguments as JSON, and
    the result in <tool_response>, then the assistant prompt."""
    text = chat.render(
        [
            {"role": "user", "content": "weather?"},
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [{"id": "c1", "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "7 C"},
        ],
        tools=[WEATHER],
    )
    assert re.search(r"<tools>\n\{\"type\": \"function\", \"function\": \{\"name\": \"get_weather\"", text)
    assert '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>' in text
    assert "<tool_response>\n7 C\n</tool_response>" in text
    assert text.endswith("<|im_start|>assistant\n")


def test_target_tokenizer_counts_like_the_gguf_tokenizer(folder) -> None:  # type: ignore[no-untyped-def]
    """target="qwen2.5-coder-0.5b" counts what the tokenizer read from the GGUF itself counts, on prose, code
    with CJK and emoji, and whitespace-heavy text with special-token strings."""
    from transformers import AutoTokenizer

    counter = resolve_target(ALIAS)
    gguf_tok = AutoTokenizer.from_pretrained(str(folder), gguf_file=GGUF_NAME)
    for text in SAMPLES:
        expected = len(gguf_tok(text, add_special_tokens=False)["input_ids"])
        assert counter.count(text) == expected, text


def test_llama_cpp_tokenizes_prompts_as_we_do(folder, chat: LocalChatModel) -> None:  # type: ignore[no-untyped-def]
    """llama.cpp's own GGUF tokenizer, given a rendered prompt as text, counts the prompt tokens we send as ids
    (skipped without the optional xllamacpp wheel)."""
    pytest.importorskip("xllamacpp")
    local = LocalChatModel.from_pretrained(ALIAS, backend="xllamacpp", threads=1, n_ctx=2048)
    engine = local.engine
    for text in SAMPLES[:2]:
        prompt = chat.render([{"role": "user", "content": text}])
        result = engine._server.handle_completions({"prompt": prompt, "n_predict": 1, "temperature": 0.0})  # type: ignore[attr-defined]
        assert result["usage"]["prompt_tokens"] == len(chat.tokenizer(prompt, add_special_tokens=False)["input_ids"])
    reply = local.chat([{"role": "user", "content": "What is the weather like in Oslo right now?"}], tools=[WEATHER])
    assert [c.name for c in reply.tool_calls] == ["get_weather"], reply.raw_text
