"""Fixtures: tiny random-init drafts, a draft that always fails, scripted LLMs, and an event recorder."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable, Generator, Iterator, Sequence
from typing import Any

import pytest
import torch
from crossprefill_agents import CompressionConfig, PromptCompressor, testing
from crossprefill_agents.draft import DraftModel
from crossprefill_agents.targets import resolve_target
from llama_index.core.base.llms.types import ChatMessage, ChatResponse, ChatResponseAsyncGen, ChatResponseGen
from llama_index.core.bridge.pydantic import Field
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.instrumentation.events import BaseEvent
from llama_index.core.llms.mock import MockLLM

TEST_CONFIG = CompressionConfig(min_tokens=0)  # the tests' texts are short


@pytest.fixture(scope="session", autouse=True)
def _tiktoken_offline() -> None:
    """LlamaIndex's sentence splitter counts cl100k_base tokens: resolving it once places the BPE file offline."""
    resolve_target("cl100k_base")


@pytest.fixture(scope="session")
def tiny() -> DraftModel:
    return testing.tiny_draft("llama")


@pytest.fixture
def make_compressor(tiny: DraftModel) -> Callable[..., PromptCompressor]:
    """A fresh compressor (own memo store) over the shared tiny draft; budgets counted in characters by default."""

    def make(target: object = len, **config: Any) -> PromptCompressor:
        cfg = CompressionConfig(**{"min_tokens": 0, **config})
        return PromptCompressor(tiny, target=target, config=cfg)

    return make


@pytest.fixture
def compressor(make_compressor: Callable[..., PromptCompressor]) -> PromptCompressor:
    return make_compressor()


class _Broken(torch.nn.Module):
    """A model whose forward always fails, like a corrupt checkpoint or an out-of-memory error."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.config = inner.config

    def forward(self, input_ids: Any = None, cache: Any = None, **kw: Any) -> Any:
        raise RuntimeError("CUDA out of memory (simulated)")


@pytest.fixture
def broken_compressor(tiny: DraftModel) -> PromptCompressor:
    draft = DraftModel(_Broken(tiny.model), tiny.tokenizer, name="broken")
    return PromptCompressor(draft, target=len, config=TEST_CONFIG)


class Events(BaseEventHandler):
    """Records the events the dispatcher sends while a test runs."""

    seen: list[BaseEvent] = Field(default_factory=list)

    @classmethod
    def class_name(cls) -> str:
        return "Events"

    def handle(self, event: BaseEvent, **kwargs: Any) -> None:
        self.seen.append(event)

    def of(self, kind: type[Any]) -> list[Any]:
        return [e for e in self.seen if isinstance(e, kind)]


@pytest.fixture
def events() -> Iterator[Events]:
    root = get_dispatcher()
    handler = Events()
    root.add_event_handler(handler)
    yield handler
    root.event_handlers = [h for h in root.event_handlers if h is not handler]


class ScriptedChatLLM(MockLLM):
    """A plain chat LLM (no function calling) that replies from a script and records every message list it is sent."""

    replies: list[str] = Field(default_factory=list)
    seen: list[list[ChatMessage]] = Field(default_factory=list)

    def __init__(self, replies: Sequence[str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.replies = list(replies)

    @classmethod
    def class_name(cls) -> str:
        return "ScriptedChatLLM"

    def _reply(self, messages: Sequence[ChatMessage]) -> ChatMessage:
        self.seen.append([m.model_copy(deep=True) for m in messages])
        return ChatMessage(role="assistant", content=self.replies[len(self.seen) - 1])

    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        return ChatResponse(message=self._reply(messages))

    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        message = self._reply(messages)

        def gen() -> Generator[ChatResponse, None, None]:
            yield ChatResponse(message=message, delta=message.content)

        return gen()

    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        return self.chat(messages, **kwargs)

    async def astream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseAsyncGen:
        message = self._reply(messages)

        async def gen() -> AsyncGenerator[ChatResponse, None]:
            yield ChatResponse(message=message, delta=message.content)

        return gen()


@pytest.fixture
def scripted_chat_llm() -> type[ScriptedChatLLM]:
    return ScriptedChatLLM


class Recorder:
    """A MockFunctionCallingLLM response_generator: records each call's messages and replies from a script."""

    def __init__(self, replies: Sequence[ChatMessage]) -> None:
        self.replies = list(replies)
        self.seen: list[list[ChatMessage]] = []
        self.kwargs: list[dict[str, Any]] = []

    def __call__(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatMessage:
        self.seen.append([m.model_copy(deep=True) for m in messages])
        self.kwargs.append(kwargs)
        return self.replies[len(self.seen) - 1]


@pytest.fixture
def recorder() -> type[Recorder]:
    return Recorder
