"""CompressingLLM: any LlamaIndex LLM, with tool results compressed before every call."""

from __future__ import annotations

import threading
import uuid
from collections import OrderedDict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from crossprefill_agents import (
    CompressionConfig,
    CompressionSession,
    PromptCompressor,
    SessionConfig,
    SessionTurn,
)
from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    ChatResponseAsyncGen,
    ChatResponseGen,
    CompletionResponse,
    CompletionResponseAsyncGen,
    CompletionResponseGen,
    LLMMetadata,
)
from llama_index.core.bridge.pydantic import Field, PrivateAttr
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.dispatcher import active_instrument_tags
from llama_index.core.llms.function_calling import FunctionCallingLLM
from llama_index.core.llms.llm import LLM, ToolSelection

from ._shared import check_budget, resolve_compressor, with_budget
from .events import MessageCompressionEndEvent, MessageCompressionStartEvent
from .messages import Part, from_session_turn, to_session_messages

if TYPE_CHECKING:
    from llama_index.core.tools.types import BaseTool

__all__ = ["RUN_ID_TAG", "SESSION_TAG", "CompressingLLM"]

dispatcher = get_dispatcher(__name__)

RUN_ID_TAG = "llamaindex.run_id"  # instrument tag llama-index-workflows sets on every step of a workflow run
SESSION_TAG = "crossprefill.session_id"  # instrument tag a caller may set to pick the session of the calls inside


class CompressingLLM(FunctionCallingLLM):
    """Wraps a LlamaIndex ``LLM`` so that tool results are compressed before each call.

    What is compressed: tool-role messages (``FunctionAgent``, ``AgentWorkflow``, any
    tool-calling loop) and the ``Observation:`` messages of ``ReActAgent`` (the prefix is
    kept byte-identical, only the tool output after it shrinks). System messages, the
    latest user message and, by default, the rest of the history are sent as they are;
    see ``session_config``. Scoring is conditioned on the latest user message.

    Sessions: the calls of one agent run share one
    :class:`~crossprefill_agents.CompressionSession`, which reuses the draft's work from
    step to step and replays a compressed tool result byte-identical at every later step
    (the target's prompt cache keeps hitting). The session of a call is chosen by, in
    order: the ``crossprefill.session_id`` instrument tag active around the call
    (``with instrument_tags({"crossprefill.session_id": "thread-1"}): ...``), the
    ``session_id`` field, the ``llamaindex.run_id`` tag llama-index-workflows sets on every
    step of a workflow run (so one session per agent run), and last one default session
    for calls made outside any workflow run. The newest ``max_sessions`` are kept.

    Everything else is the wrapped model's: ``metadata``, tool preparation
    (``_prepare_chat_with_tools``, ``tool_required`` included) and
    ``get_tool_calls_from_response`` are delegated, and ``chat`` / ``stream_chat`` /
    ``achat`` / ``astream_chat`` send the compressed messages to the wrapped model's own
    method. ``complete`` and its variants pass the prompt through unchanged (a flat
    prompt has no tool results to find). If the draft fails, messages pass through
    unchanged and :class:`MessageCompressionEndEvent` says why (``stats["fallback_reason"]``).
    """

    llm: LLM = Field(description="The wrapped LLM; it receives the compressed messages.")
    draft: str | None = Field(
        default=None,
        description="Draft model name loaded through PromptCompressor.from_pretrained; 'smollm2-135m' when neither "
        "this nor compressor= is given.",
    )
    target: str | None = Field(
        default=None,
        description="Whose tokens budgets count (a tiktoken encoding, an OpenAI model name, a tokenizer id); None "
        "counts the draft's tokens. Used with draft=.",
    )
    config: CompressionConfig | None = Field(
        default=None,
        exclude=True,
        description="The CompressionConfig of a compressor loaded from draft= (default CompressionConfig()).",
    )
    keep_rate: float | None = Field(
        default=None,
        gt=0.0,
        le=1.0,
        description="Fraction of each tool result's target tokens to keep, in (0, 1]; None uses the compressor's "
        "config (0.25 by default).",
    )
    max_tokens: int | None = Field(
        default=None,
        ge=0,
        description="Budget in target tokens for each tool result (not the generation length: the wrapped LLM's own "
        "settings are unchanged); wins over keep_rate when set.",
    )
    session_config: SessionConfig | None = Field(
        default=None,
        exclude=True,
        description="Which messages sessions compress and the prompt-level budget (SessionConfig: compress_roles, "
        "compress_history, max_tokens, recompress, pressure_headroom); None = SessionConfig().",
    )
    session_id: str | None = Field(
        default=None,
        description="One session for every call (a conversation thread); None = one session per agent run.",
    )
    react_observations: bool = Field(
        default=True,
        description="Also compress ReAct 'Observation:' messages (user messages answering an 'Action:' step).",
    )
    max_sessions: int = Field(default=64, ge=1, description="Sessions kept; the least recently used is dropped.")

    _compressor: PromptCompressor = PrivateAttr()
    _sessions: OrderedDict[str, CompressionSession] = PrivateAttr(default_factory=OrderedDict)
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)
    _uid: str = PrivateAttr(default_factory=lambda: uuid.uuid4().hex[:8])

    def __init__(
        self,
        llm: LLM,
        *,
        compressor: PromptCompressor | None = None,
        draft: str | None = None,
        target: str | None = None,
        config: CompressionConfig | None = None,
        keep_rate: float | None = None,
        max_tokens: int | None = None,
        session_config: SessionConfig | None = None,
        session_id: str | None = None,
        react_observations: bool = True,
        max_sessions: int = 64,
        **kwargs: Any,
    ) -> None:
        if not isinstance(llm, LLM):
            raise TypeError(f"llm must be a llama_index LLM (e.g. OpenAI(...), Ollama(...)), got {type(llm).__name__}")
        if session_config is not None and not isinstance(session_config, SessionConfig):
            raise TypeError(f"session_config must be a crossprefill_agents.SessionConfig, got {type(session_config)}")
        if session_id is not None and (not isinstance(session_id, str) or not session_id):
            raise TypeError(f"session_id must be a non-empty str or None, got {session_id!r}")
        check_budget(keep_rate, max_tokens)  # before loading anything: the errors name the options
        pc = with_budget(resolve_compressor(compressor, draft, target, config), keep_rate, max_tokens)
        # The wrapper formats prompts the way the wrapped model does (predict(), structured_predict(), ...).
        for name in (
            "callback_manager",
            "system_prompt",
            "messages_to_prompt",
            "completion_to_prompt",
            "output_parser",
            "pydantic_program_mode",
            "query_wrapper_prompt",
        ):
            kwargs.setdefault(name, getattr(llm, name))
        super().__init__(
            llm=llm,
            draft=draft,
            target=target,
            config=config,
            keep_rate=keep_rate,
            max_tokens=max_tokens,
            session_config=session_config,
            session_id=session_id,
            react_observations=react_observations,
            max_sessions=max_sessions,
            **kwargs,
        )
        self._compressor = pc

    @classmethod
    def class_name(cls) -> str:
        return "CompressingLLM"

    @property
    def metadata(self) -> LLMMetadata:
        return self.llm.metadata

    @property
    def compressor(self) -> PromptCompressor:
        """The :class:`PromptCompressor` the sessions use (its config carries ``keep_rate`` / ``max_tokens``)."""
        return self._compressor

    # -------------------------------------------------------------- sessions
    def current_session(self) -> CompressionSession:
        """The session a call made here and now would use (see the class docstring for how it is chosen)."""
        tags = active_instrument_tags.get()
        if tags.get(SESSION_TAG) is not None:
            key = session_id = str(tags[SESSION_TAG])
        elif self.session_id is not None:
            key = session_id = self.session_id
        elif tags.get(RUN_ID_TAG) is not None:
            key = f"run:{tags[RUN_ID_TAG]}"
            session_id = f"llamaindex-run-{tags[RUN_ID_TAG]}-{self._uid}"
        else:
            key = "default"
            session_id = f"llamaindex-default-{self._uid}"
        with self._lock:
            session = self._sessions.get(key)
            if session is not None:
                self._sessions.move_to_end(key)
                return session
            session = self._compressor.session(self.session_config, session_id=session_id)
            self._sessions[key] = session
            evicted = [self._sessions.popitem(last=False)[1] for _ in range(len(self._sessions) - self.max_sessions)]
        for old in evicted:
            old.reset()  # frees its draft cache in the compressor's store
        return session

    def compress_messages(self, messages: Sequence[ChatMessage]) -> list[ChatMessage]:
        """The messages the wrapped model would receive for ``messages`` (in the current session)."""
        dicts, parts, session = self._begin(messages)
        return self._end(messages, parts, session, session.compress_messages(dicts))

    async def acompress_messages(self, messages: Sequence[ChatMessage]) -> list[ChatMessage]:
        """:meth:`compress_messages` with the draft in a worker thread."""
        dicts, parts, session = self._begin(messages)
        return self._end(messages, parts, session, await session.acompress_messages(dicts))

    def _begin(self, messages: Sequence[ChatMessage]) -> tuple[list[dict[str, Any]], list[Part], CompressionSession]:
        dicts, parts = to_session_messages(messages, react_observations=self.react_observations)
        session = self.current_session()
        dispatcher.event(MessageCompressionStartEvent(session_id=session.session_id, messages=len(messages)))
        return dicts, parts, session

    def _end(
        self, messages: Sequence[ChatMessage], parts: list[Part], session: CompressionSession, turn: SessionTurn
    ) -> list[ChatMessage]:
        out = from_session_turn(messages, parts, turn)
        dispatcher.event(
            MessageCompressionEndEvent(
                session_id=session.session_id,
                messages=len(out),
                compressed_messages=sum(a is not b for a, b in zip(out, messages, strict=True)),
                stats=turn.stats.to_dict(),
            )
        )
        return out

    # ------------------------------------------------------------------ chat
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        return self.llm.chat(self.compress_messages(messages), **kwargs)

    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        return self.llm.stream_chat(self.compress_messages(messages), **kwargs)

    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        return await self.llm.achat(await self.acompress_messages(messages), **kwargs)

    async def astream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseAsyncGen:
        return await self.llm.astream_chat(await self.acompress_messages(messages), **kwargs)

    # ------------------------------------------------------------ completion
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        return self.llm.complete(prompt, formatted=formatted, **kwargs)

    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        return self.llm.stream_complete(prompt, formatted=formatted, **kwargs)

    async def acomplete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        return await self.llm.acomplete(prompt, formatted=formatted, **kwargs)

    async def astream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseAsyncGen:
        return await self.llm.astream_complete(prompt, formatted=formatted, **kwargs)

    # ----------------------------------------------------------------- tools
    def _prepare_chat_with_tools(
        self,
        tools: Sequence[BaseTool],
        user_msg: str | ChatMessage | None = None,
        chat_history: list[ChatMessage] | None = None,
        verbose: bool = False,
        allow_parallel_tool_calls: bool = False,
        tool_required: bool = False,
        **kwargs: Any,
    ) -> dict[str, Any]:
        return self._tool_llm()._prepare_chat_with_tools_compat(
            tools,
            user_msg=user_msg,
            chat_history=chat_history,
            verbose=verbose,
            allow_parallel_tool_calls=allow_parallel_tool_calls,
            tool_required=tool_required,
            **kwargs,
        )

    def _validate_chat_with_tools_response(
        self,
        response: ChatResponse,
        tools: Sequence[BaseTool],
        allow_parallel_tool_calls: bool = False,
        **kwargs: Any,
    ) -> ChatResponse:
        return self._tool_llm()._validate_chat_with_tools_response(
            response, tools, allow_parallel_tool_calls=allow_parallel_tool_calls, **kwargs
        )

    def get_tool_calls_from_response(
        self, response: ChatResponse, error_on_no_tool_call: bool = True, **kwargs: Any
    ) -> list[ToolSelection]:
        return self._tool_llm().get_tool_calls_from_response(
            response, error_on_no_tool_call=error_on_no_tool_call, **kwargs
        )

    def _tool_llm(self) -> FunctionCallingLLM:
        if not isinstance(self.llm, FunctionCallingLLM):
            raise TypeError(
                f"the wrapped {type(self.llm).__name__} is not a FunctionCallingLLM, so it cannot call tools; "
                "use it with ReActAgent, or wrap a function-calling model"
            )
        return self.llm
