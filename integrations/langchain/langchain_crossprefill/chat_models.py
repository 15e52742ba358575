"""CompressingChatModel: any chat model, seeing compressed messages on every call."""

from __future__ import annotations

import contextvars
import inspect
import json
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Generator, Iterator, Sequence
from typing import Any, TypeVar, cast

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.language_models.base import LangSmithParams
from langchain_core.language_models.model_profile import ModelProfile
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.messages.tool import tool_call_chunk
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable, RunnableBinding, RunnableConfig
from langchain_core.runnables.config import ensure_config
from langchain_core.tools import BaseTool
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_validator

from ._messages import Compressed, acompress_messages, compress_messages
from ._options import METADATA_KEY, DraftOptions, SessionOptions
from ._sessions import SessionMap, thread_key
from .runnables import SpeculativePrefillCompressor

__all__ = ["CompressingChatModel"]

logger = logging.getLogger(__name__)

# LangChain's standard chat-model parameters. They belong to the wrapped model; the wrapper accepts
# them (so code and tests that pass them to any chat model keep working) and says they are ignored.
STANDARD_PARAMS = ("temperature", "max_tokens", "timeout", "stop", "max_retries", "api_key", "streaming")

M = TypeVar("M", bound=BaseMessage)

_UNSET = object()
# The conversation key of the call in progress, set by invoke/ainvoke/stream/astream from their config
# (BaseChatModel does not hand _stream a run manager, so its metadata cannot carry it).
_CALL_KEY: contextvars.ContextVar[object] = contextvars.ContextVar("crossprefill_call_key", default=_UNSET)


class CompressingChatModel(DraftOptions, SessionOptions, BaseChatModel):
    """Wraps a chat model so that every call sends it compressed messages.

    ``CompressingChatModel(model=ChatOpenAI(...), draft="smollm2-135m", target="gpt-4o")``
    compresses tool outputs (and other messages whose role is in ``compress_roles``) before
    each call and delegates to the wrapped model: invoke, batch, stream and their async forms,
    ``bind_tools`` (the binding still calls through this wrapper), ``with_structured_output``
    (a compression step in front of the wrapped model's own structured output), tracing
    parameters and the model profile. The response's ``response_metadata["crossprefill"][name]``
    holds the call's stats. Sessions are keyed by the LangGraph thread (or
    ``config["configurable"]["thread_id"]``), so it works as the model of ``create_agent``.

    On a chat model ``max_tokens`` means output tokens, so the compression budget per message is
    ``context_max_tokens`` here; LangChain's standard parameters (temperature, max_tokens, stop,
    ...) belong on the wrapped model and are ignored, with a warning, when given to the wrapper.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")

    model: BaseChatModel = Field(description="The chat model that receives the compressed messages.")
    context_max_tokens: int | None = Field(
        default=None,
        ge=0,
        description="Target tokens each compressed message is cut to; wins over keep_rate.",
    )

    _sessions: SessionMap = PrivateAttr()

    @model_validator(mode="before")
    @classmethod
    def _drop_standard_params(cls, data: Any) -> Any:
        if isinstance(data, dict):
            given = [k for k in STANDARD_PARAMS if k in data]
            if given:
                logger.warning(
                    "CompressingChatModel ignores %s: set them on the wrapped model (the compression budget "
                    "per message is context_max_tokens)",
                    ", ".join(given),
                )
                data = {k: v for k, v in data.items() if k not in given}
        return data

    @model_validator(mode="after")
    def _make_sessions(self) -> Any:
        self._sessions = SessionMap(self.prompt_compressor, self.session_config, self.max_sessions)
        return self

    def _context_max_tokens(self) -> int | None:
        return self.context_max_tokens

    # ------------------------------------------------------------ delegation
    @property
    def _llm_type(self) -> str:
        return self.model._llm_type

    @property
    def _identifying_params(self) -> dict[str, Any]:
        cfg = self.prompt_compressor.config
        return {
            **self.model._identifying_params,
            "crossprefill": {
                "draft": self.prompt_compressor.draft.name,
                "target": self.prompt_compressor.target.name,
                "keep_rate": cfg.keep_rate,
                "max_tokens": cfg.max_tokens,
            },
        }

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        return self.model._get_ls_params(stop=stop, **kwargs)

    def _resolve_model_profile(self) -> ModelProfile | None:
        return self.model.profile

    def get_num_tokens(self, text: str) -> int:
        """The wrapped model's count."""
        return self.model.get_num_tokens(text)

    def get_token_ids(self, text: str) -> list[int]:
        """The wrapped model's token ids."""
        return self.model.get_token_ids(text)

    def get_num_tokens_from_messages(self, messages: list[BaseMessage], tools: Sequence[Any] | None = None) -> int:
        """The wrapped model's count (of the messages as given, before compression)."""
        return self.model.get_num_tokens_from_messages(messages, tools)

    def _should_stream(
        self,
        *,
        async_api: bool,
        run_manager: CallbackManagerForLLMRun | AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> bool:
        if self._streaming_disabled(**kwargs):
            return False
        return self.model._should_stream(async_api=async_api, run_manager=run_manager, **kwargs)

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: str | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """The wrapped model's tool binding, bound to this wrapper so calls still compress.

        The wrapped model formats the tools (``model.bind_tools(...)``); its bound kwargs are then
        bound to the wrapper, which passes them on at call time.
        """
        if tool_choice is not None:
            kwargs["tool_choice"] = tool_choice
        bound = self.model.bind_tools(tools, **kwargs)
        if isinstance(bound, RunnableBinding) and bound.bound is self.model:
            rebound = self.bind(**bound.kwargs)
            return rebound.with_config(bound.config) if bound.config else rebound
        # A model whose tool binding is not a plain binding of itself: compress as a step in front.
        return cast("Runnable[LanguageModelInput, AIMessage]", self._compression_step() | bound)

    def with_structured_output(
        self,
        schema: dict[str, Any] | type,
        *,
        include_raw: bool = False,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, dict[str, Any] | BaseModel]:
        """A compression step (sharing this wrapper's sessions) in front of the wrapped model's structured output.

        The wrapped model's own implementation is used, whatever its method (tool calling, JSON
        schema, JSON mode); ``kwargs`` go to it unchanged.
        """
        structured = self.model.with_structured_output(schema, include_raw=include_raw, **kwargs)
        return self._compression_step() | structured

    def _compression_step(self) -> SpeculativePrefillCompressor:
        step = SpeculativePrefillCompressor(
            compressor=self.prompt_compressor,
            compress_roles=self.compress_roles,
            compress_history=self.compress_history,
            prompt_max_tokens=self.prompt_max_tokens,
            recompress=self.recompress,
            pressure_headroom=self.pressure_headroom,
            max_sessions=self.max_sessions,
            name=f"{self._stats_name}.compress",
        )
        step._sessions = self._sessions  # one conversation, one session, whichever path it takes
        return step

    # ------------------------------------------------ conversation key per call
    def invoke(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        stop: list[str] | None = None,
        **kwargs: Any,
    ) -> AIMessage:
        """Compress, then call the wrapped model (the session keyed by the config's thread_id)."""
        token = _CALL_KEY.set(_config_key(config))
        try:
            return super().invoke(input, config, stop=stop, **kwargs)
        finally:
            _CALL_KEY.reset(token)

    async def ainvoke(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        stop: list[str] | None = None,
        **kwargs: Any,
    ) -> AIMessage:
        """Async :meth:`invoke`."""
        token = _CALL_KEY.set(_config_key(config))
        try:
            return await super().ainvoke(input, config, stop=stop, **kwargs)
        finally:
            _CALL_KEY.reset(token)

    def stream(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        stop: list[str] | None = None,
        **kwargs: Any,
    ) -> Iterator[AIMessageChunk]:
        """Compress, then stream the wrapped model's chunks."""
        key = _config_key(config)
        inner = cast("Generator[AIMessageChunk, None, None]", super().stream(input, config, stop=stop, **kwargs))
        try:
            while True:  # each step runs with this call's key set, and only that step
                token = _CALL_KEY.set(key)
                try:
                    chunk = next(inner)
                except StopIteration:
                    return
                finally:
                    _CALL_KEY.reset(token)
                yield chunk
        finally:
            inner.close()  # a consumer that stops early closes the model's stream too

    async def astream(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        stop: list[str] | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[AIMessageChunk]:
        """Async :meth:`stream`."""
        key = _config_key(config)
        inner = cast("AsyncGenerator[AIMessageChunk, None]", super().astream(input, config, stop=stop, **kwargs))
        try:
            while True:
                token = _CALL_KEY.set(key)
                try:
                    chunk = await inner.__anext__()
                except StopAsyncIteration:
                    return
                finally:
                    _CALL_KEY.reset(token)
                yield chunk
        finally:
            await inner.aclose()

    def _session_key(self, run_manager: CallbackManagerForLLMRun | AsyncCallbackManagerForLLMRun | None) -> str | None:
        hint = _CALL_KEY.get()
        if hint is not _UNSET:
            return cast("str | None", hint)
        if run_manager is not None and run_manager.metadata.get("thread_id"):
            meta = run_manager.metadata
            return thread_key(meta.get("thread_id"), meta.get("checkpoint_ns"))
        return _config_key(None)  # called through generate(): the enclosing runnable's config, if any

    # ------------------------------------------------------------ generation
    @property
    def _stats_name(self) -> str:
        return self.name or type(self).__name__

    def _with_stats(self, message: M, done: Compressed) -> M:
        ours = dict(message.response_metadata.get(METADATA_KEY) or {})
        ours[self._stats_name] = done.stats
        return message.model_copy(update={"response_metadata": {**message.response_metadata, METADATA_KEY: ours}})

    def _annotate(self, result: ChatResult, done: Compressed) -> ChatResult:
        generations = [
            ChatGeneration(message=self._with_stats(g.message, done), generation_info=g.generation_info)
            for g in result.generations
        ]
        return ChatResult(generations=generations, llm_output=result.llm_output)

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        done = compress_messages(self._sessions, self._session_key(run_manager), messages)
        if self.model.rate_limiter is not None:
            self.model.rate_limiter.acquire(blocking=True)
        result = self.model._generate(
            done.messages, stop=stop, **_with_run_manager(self.model._generate, run_manager), **kwargs
        )
        return self._annotate(result, done)

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        done = await acompress_messages(self._sessions, self._session_key(run_manager), messages)
        if self.model.rate_limiter is not None:
            await self.model.rate_limiter.aacquire(blocking=True)
        result = await self.model._agenerate(
            done.messages, stop=stop, **_with_run_manager(self.model._agenerate, run_manager), **kwargs
        )
        return self._annotate(result, done)

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        done = compress_messages(self._sessions, self._session_key(run_manager), messages)
        if self.model.rate_limiter is not None:
            self.model.rate_limiter.acquire(blocking=True)
        if type(self.model)._stream is BaseChatModel._stream:  # the wrapped model cannot stream: one chunk
            result = self.model._generate(
                done.messages, stop=stop, **_with_run_manager(self.model._generate, run_manager), **kwargs
            )
            for g in self._annotate(result, done).generations:
                yield ChatGenerationChunk(message=_as_chunk(g.message), generation_info=g.generation_info)
            return
        first = True
        for chunk in self.model._stream(done.messages, stop=stop, run_manager=run_manager, **kwargs):
            if first:
                chunk = ChatGenerationChunk(
                    message=self._with_stats(chunk.message, done), generation_info=chunk.generation_info
                )
                first = False
            yield chunk

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        done = await acompress_messages(self._sessions, self._session_key(run_manager), messages)
        if self.model.rate_limiter is not None:
            await self.model.rate_limiter.aacquire(blocking=True)
        cls = type(self.model)
        if cls._astream is BaseChatModel._astream and cls._stream is BaseChatModel._stream:
            result = await self.model._agenerate(
                done.messages, stop=stop, **_with_run_manager(self.model._agenerate, run_manager), **kwargs
            )
            for g in self._annotate(result, done).generations:
                yield ChatGenerationChunk(message=_as_chunk(g.message), generation_info=g.generation_info)
            return
        first = True
        async for chunk in self.model._astream(done.messages, stop=stop, run_manager=run_manager, **kwargs):
            if first:
                chunk = ChatGenerationChunk(
                    message=self._with_stats(chunk.message, done), generation_info=chunk.generation_info
                )
                first = False
            yield chunk


def _config_key(config: RunnableConfig | None) -> str | None:
    configurable = ensure_config(config).get("configurable") or {}
    return thread_key(configurable.get("thread_id"), configurable.get("checkpoint_ns"))


def _with_run_manager(method: Callable[..., Any], run_manager: Any) -> dict[str, Any]:
    """``{"run_manager": run_manager}`` when ``method`` takes one (as BaseChatModel checks too)."""
    return {"run_manager": run_manager} if "run_manager" in inspect.signature(method).parameters else {}


def _as_chunk(message: BaseMessage) -> AIMessageChunk:
    """A whole AIMessage as one streaming chunk (for a wrapped model that cannot stream)."""
    if isinstance(message, AIMessageChunk):
        return message
    ai = message if isinstance(message, AIMessage) else AIMessage(content=message.content, id=message.id)
    return AIMessageChunk(
        content=ai.content,
        id=ai.id,
        name=ai.name,
        additional_kwargs=ai.additional_kwargs,
        response_metadata=ai.response_metadata,
        usage_metadata=ai.usage_metadata,
        tool_call_chunks=[
            tool_call_chunk(name=tc["name"], args=json.dumps(tc["args"]), id=tc.get("id"), index=i)
            for i, tc in enumerate(ai.tool_calls)
        ],
        chunk_position="last",
    )
