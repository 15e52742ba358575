"""Test doubles: scripted chat models that call tools, and the agents and compressors the tests share.

LangChain's fake chat models cannot bind tools; these can (tools are formatted the OpenAI way,
as real providers do) and record every call, so a test can look at what the model was sent.
"""

from __future__ import annotations

import json
import threading
import zlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from crossprefill_agents import CompressionConfig, PromptCompressor
from crossprefill_agents.testing import filler_text, tiny_draft
from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, HumanMessage, ToolMessage
from langchain_core.messages.tool import tool_call_chunk
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable
from langchain_core.tools import BaseTool, tool
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import Field, PrivateAttr

Script = Callable[[list[BaseMessage]], AIMessage]


class Recorder:
    """Every call a scripted model got: its messages and keyword arguments (thread-safe)."""

    def __init__(self) -> None:
        self.calls: list[list[BaseMessage]] = []
        self.kwargs: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def add(self, messages: Sequence[BaseMessage], kwargs: dict[str, Any]) -> None:
        with self._lock:
            self.calls.append(list(messages))
            self.kwargs.append(dict(kwargs))

    def by_question(self) -> dict[str, list[list[BaseMessage]]]:
        """The calls grouped by the conversation's first human message."""
        out: dict[str, list[list[BaseMessage]]] = {}
        for call in self.calls:
            first = next(m for m in call if isinstance(m, HumanMessage))
            out.setdefault(str(first.content), []).append(call)
        return out


class ScriptedChatModel(BaseChatModel):
    """Replies by ``script(messages)``; records calls in ``recorder``; binds tools; cannot stream."""

    script: Script
    model_name: str = "scripted-1"
    recorder: Recorder = Field(default_factory=Recorder, exclude=True)

    @property
    def _llm_type(self) -> str:
        return "scripted"

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: str | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        formatted = [convert_to_openai_tool(t) for t in tools]
        if tool_choice is not None:
            kwargs["tool_choice"] = tool_choice
        return self.bind(tools=formatted, **kwargs)

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        self.recorder.add(messages, kwargs)
        return ChatResult(generations=[ChatGeneration(message=self.script(list(messages)))])


class StreamingScriptedChatModel(ScriptedChatModel):
    """A :class:`ScriptedChatModel` that streams its reply word by word, tool calls in the last chunk."""

    _streamed: int = PrivateAttr(default=0)

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        self.recorder.add(messages, kwargs)
        self._streamed += 1
        reply = self.script(list(messages))
        words = str(reply.content).split(" ")
        for i, w in enumerate(words):
            last = i == len(words) - 1
            yield ChatGenerationChunk(
                message=AIMessageChunk(
                    content=w if i == 0 else " " + w,
                    tool_call_chunks=[
                        tool_call_chunk(name=tc["name"], args=json.dumps(tc["args"]), id=tc["id"], index=k)
                        for k, tc in enumerate(reply.tool_calls)
                    ]
                    if last
                    else [],
                )
            )


# ----------------------------------------------------------------- agent scripts and tools
def tool_output(query: str, n_words: int = 160) -> str:
    """The long, deterministic text the search tool returns for ``query``."""
    return filler_text(n_words, seed=zlib.crc32(query.encode()))


@tool
def search(query: str) -> str:
    """Search the web for a query and return the page text."""
    return tool_output(query)


def research_script(n_searches: int) -> Script:
    """A model that, after each human message, searches ``n_searches`` times then answers."""

    def script(messages: list[BaseMessage]) -> AIMessage:
        last_human = max(i for i, m in enumerate(messages) if isinstance(m, HumanMessage))
        done = sum(isinstance(m, ToolMessage) for m in messages[last_human:])
        question = str(messages[last_human].content)
        if done < n_searches:
            call_id = f"call-{zlib.crc32(question.encode())}-{done}"
            return AIMessage(
                content="", tool_calls=[{"name": "search", "args": {"query": f"{question} #{done}"}, "id": call_id}]
            )
        return AIMessage(content=f"answer after {done} searches")

    return script


def tiny_compressor(**config: Any) -> PromptCompressor:
    """A compressor over the tiny random-init llama draft, budgets in characters, no minimum length unless given."""
    return PromptCompressor(tiny_draft(), target=len, config=CompressionConfig(**{"min_tokens": 0, **config}))


def broken_compressor() -> PromptCompressor:
    """A compressor whose draft's forward pass raises, as a crashed or out-of-memory draft would."""
    draft = tiny_draft()

    def fail(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("draft exploded")

    draft.model.base_model.forward = fail  # the decoder: every forward runs it, with or without the LM head
    return PromptCompressor(draft, target=len, config=CompressionConfig(min_tokens=0))
