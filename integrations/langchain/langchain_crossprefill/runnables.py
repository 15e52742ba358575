"""SpeculativePrefillCompressor: a runnable step that compresses a prompt before the model sees it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForChainRun, CallbackManagerForChainRun
from langchain_core.language_models import LanguageModelInput
from langchain_core.messages import BaseMessage, HumanMessage, convert_to_messages
from langchain_core.prompt_values import PromptValue
from langchain_core.runnables import RunnableConfig, RunnableSerializable
from pydantic import ConfigDict, Field, PrivateAttr, model_validator

from ._messages import acompress_messages, compress_messages
from ._options import DraftOptions, SessionOptions
from ._sessions import SessionMap, thread_key

__all__ = ["SpeculativePrefillCompressor", "to_messages"]


def to_messages(value: object) -> list[BaseMessage]:
    """A chat model's input as messages: a str, a PromptValue, or a sequence of message-likes.

    Message-likes are what ``langchain_core.messages.convert_to_messages`` accepts: messages,
    ``(role, content)`` tuples, ``{"role": ..., "content": ...}`` dicts and strings.
    """
    if isinstance(value, PromptValue):
        return value.to_messages()
    if isinstance(value, str):
        return [HumanMessage(content=value)]
    if isinstance(value, (BaseMessage, dict)):
        return convert_to_messages([value])
    if isinstance(value, Sequence):
        return convert_to_messages(value)
    raise TypeError(
        f"expected a str, a PromptValue or a list of messages (BaseMessage, (role, content) tuples, "
        f"role/content dicts), got {type(value).__name__}"
    )


class SpeculativePrefillCompressor(
    DraftOptions, SessionOptions, RunnableSerializable[LanguageModelInput, list[BaseMessage]]
):
    """``compressor | chat_model``: the prompt's tool outputs and context compressed, as a list of messages.

    Takes what a chat model takes (a str, a PromptValue, a list of messages, tuples or dicts)
    and returns the messages with compressible ones cut down by the draft (the system
    message and the latest human message never are). Each compressed message is a copy with
    its compression in ``response_metadata["crossprefill"]`` (target tokens before/after, kept
    character spans into the original content). The step shows in tracing and callbacks as its
    own run. The session is keyed by ``config["configurable"]["thread_id"]`` (plus
    ``checkpoint_ns`` inside a graph) when given, so a conversation's earlier messages keep their
    bytes and the draft re-reads only what is new; without a thread id every call is on its own.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")

    max_tokens: int | None = Field(
        default=None,
        ge=0,
        description="Target tokens each compressed message is cut to; wins over keep_rate.",
    )

    _sessions: SessionMap = PrivateAttr()

    @model_validator(mode="after")
    def _make_sessions(self) -> Any:
        self._sessions = SessionMap(self.prompt_compressor, self.session_config, self.max_sessions)
        return self

    def _key(self, config: RunnableConfig) -> str | None:
        configurable = config.get("configurable") or {}
        return thread_key(configurable.get("thread_id"), configurable.get("checkpoint_ns"))

    def _run(
        self, value: LanguageModelInput, run_manager: CallbackManagerForChainRun, config: RunnableConfig
    ) -> list[BaseMessage]:
        return compress_messages(self._sessions, self._key(config), to_messages(value), annotate=True).messages

    async def _arun(
        self, value: LanguageModelInput, run_manager: AsyncCallbackManagerForChainRun, config: RunnableConfig
    ) -> list[BaseMessage]:
        done = await acompress_messages(self._sessions, self._key(config), to_messages(value), annotate=True)
        return done.messages

    def invoke(
        self, input: LanguageModelInput, config: RunnableConfig | None = None, **kwargs: Any
    ) -> list[BaseMessage]:
        """Compress one prompt (a traced step of its own)."""
        return self._call_with_config(self._run, input, config, **kwargs)

    async def ainvoke(
        self, input: LanguageModelInput, config: RunnableConfig | None = None, **kwargs: Any
    ) -> list[BaseMessage]:
        """Compress one prompt with the session's native async method."""
        return await self._acall_with_config(self._arun, input, config, **kwargs)
