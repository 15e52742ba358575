"""SpeculativePrefillMiddleware: compression for ``langchain.agents.create_agent`` (needs ``langchain``)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Literal, cast

from crossprefill_agents import CompressionConfig, PromptCompressor
from langchain_core.messages import AIMessage, AnyMessage, BaseMessage
from langchain_core.runnables.config import ensure_config
from pydantic import ConfigDict, Field

from ._messages import Compressed, acompress_messages, compress_messages
from ._options import DEFAULT_ROLES, METADATA_KEY, DraftOptions, SessionOptions
from ._sessions import SessionMap, stable_namespace, thread_key

try:
    from langchain.agents.middleware.types import (
        AgentMiddleware,
        AgentState,
        ContextT,
        ExtendedModelResponse,
        ModelRequest,
        ModelResponse,
        ResponseT,
    )
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "SpeculativePrefillMiddleware needs langchain>=1.5: pip install 'langchain-crossprefill[agents]'"
    ) from e

__all__ = ["MiddlewareOptions", "SpeculativePrefillMiddleware"]

logger = logging.getLogger(__name__)


class MiddlewareOptions(DraftOptions, SessionOptions):
    """Every option of :class:`SpeculativePrefillMiddleware`, validated."""

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")

    max_tokens: int | None = Field(
        default=None,
        ge=0,
        description="Target tokens each compressed message is cut to; wins over keep_rate.",
    )
    name: str | None = Field(
        default=None,
        min_length=1,
        description=(
            "The middleware's name in the agent graph and the key of its stats; default the class name. "
            "Give each instance its own name to use two in one agent."
        ),
    )


class SpeculativePrefillMiddleware(AgentMiddleware[AgentState[ResponseT], ContextT, ResponseT]):
    """Compresses tool results and retrieved context in each model request of an agent.

    ``wrap_model_call`` / ``awrap_model_call`` send the model a copy of ``request.messages`` with
    long tool outputs (and other messages whose role is in ``compress_roles``) cut down by the
    draft; the graph state, and so the checkpointed history, keeps the originals. The system
    message and the latest human message are never changed.

    One :class:`~crossprefill_agents.CompressionSession` per conversation: keyed by the LangGraph
    thread and checkpoint namespace (``request.runtime.execution_info``); without a thread, by the
    run id when the caller set one, else by the id of the conversation's first message, which
    LangGraph assigns once per invocation. A message compressed at one model call is sent with the
    same bytes at every later call, so the provider's prompt cache keeps hitting.

    Each call's stats go into the response AIMessage's
    ``response_metadata["crossprefill"][<middleware name>]``.
    """

    def __init__(
        self,
        *,
        compressor: PromptCompressor | None = None,
        draft: str | None = None,
        target: Any = None,
        compression_config: CompressionConfig | None = None,
        keep_rate: float | None = None,
        max_tokens: int | None = None,
        min_tokens: int | None = None,
        compress_roles: Sequence[str] = DEFAULT_ROLES,
        compress_history: bool = False,
        prompt_max_tokens: int | None = None,
        recompress: Literal["never", "on_budget_pressure"] = "never",
        pressure_headroom: float = 0.75,
        max_sessions: int = 512,
        local_files_only: bool = False,
        name: str | None = None,
    ) -> None:
        """See :class:`MiddlewareOptions` for what each option does."""
        super().__init__()
        self.options = MiddlewareOptions(
            compressor=compressor,
            draft=draft,
            target=target,
            compression_config=compression_config,
            keep_rate=keep_rate,
            max_tokens=max_tokens,
            min_tokens=min_tokens,
            compress_roles=tuple(compress_roles),
            compress_history=compress_history,
            prompt_max_tokens=prompt_max_tokens,
            recompress=recompress,
            pressure_headroom=pressure_headroom,
            max_sessions=max_sessions,
            local_files_only=local_files_only,
            name=name,
        )
        self._sessions = SessionMap(
            self.options.prompt_compressor, self.options.session_config, self.options.max_sessions
        )

    @property
    def name(self) -> str:
        """The name in the agent graph (``<name>.wrap_model_call``) and the key of this instance's stats."""
        return self.options.name or type(self).__name__

    @property
    def prompt_compressor(self) -> PromptCompressor:
        """The compressor this middleware runs."""
        return self.options.prompt_compressor

    # ------------------------------------------------------------------ hooks
    def wrap_model_call(
        self,
        request: ModelRequest[ContextT],
        handler: Callable[[ModelRequest[ContextT]], ModelResponse[ResponseT]],
    ) -> ModelResponse[ResponseT] | AIMessage | ExtendedModelResponse[ResponseT]:
        """Compress the request's messages in this conversation's session, then call the model."""
        done = compress_messages(self._sessions, self.session_key(request), request.messages, request.system_message)
        response = handler(
            request.override(messages=cast("list[AnyMessage]", done.messages)) if done.changed else request
        )
        return self._annotate(response, done)

    async def awrap_model_call(
        self,
        request: ModelRequest[ContextT],
        handler: Callable[[ModelRequest[ContextT]], Awaitable[ModelResponse[ResponseT]]],
    ) -> ModelResponse[ResponseT] | AIMessage | ExtendedModelResponse[ResponseT]:
        """:meth:`wrap_model_call` with the session's native async compression."""
        done = await acompress_messages(
            self._sessions, self.session_key(request), request.messages, request.system_message
        )
        response = await handler(
            request.override(messages=cast("list[AnyMessage]", done.messages)) if done.changed else request
        )
        return self._annotate(response, done)

    # ---------------------------------------------------------------- helpers
    def session_key(self, request: ModelRequest[Any]) -> str | None:
        """The conversation a request belongs to (None: a one-call session)."""
        info = getattr(request.runtime, "execution_info", None) if request.runtime is not None else None
        ns = info.checkpoint_ns if info is not None else None
        thread = info.thread_id if info is not None else None
        if thread is None:  # a ModelRequest built outside a graph run: the enclosing runnable's config, if any
            configurable = ensure_config().get("configurable", {})
            thread, ns = configurable.get("thread_id"), ns or configurable.get("checkpoint_ns")
        key = thread_key(thread, ns)
        if key is not None:
            return key
        where = stable_namespace(ns)
        run_id = info.run_id if info is not None else None
        if run_id:
            return f"run={run_id}|ns={where}"
        first = next((m.id for m in request.messages if m.id), None)
        return f"conversation={first}|ns={where}" if first else None

    def _annotate(self, response: ModelResponse[Any] | AIMessage | ExtendedModelResponse[Any], done: Compressed) -> Any:
        if isinstance(response, ExtendedModelResponse):
            return ExtendedModelResponse(
                model_response=self._annotate(response.model_response, done), command=response.command
            )
        if isinstance(response, AIMessage):
            return self._with_stats(response, done)
        if isinstance(response, ModelResponse):
            result: list[BaseMessage] = [
                self._with_stats(m, done) if isinstance(m, AIMessage) else m for m in response.result
            ]
            return ModelResponse(result=result, structured_response=response.structured_response)
        return response

    def _with_stats(self, message: AIMessage, done: Compressed) -> AIMessage:
        ours = dict(message.response_metadata.get(METADATA_KEY) or {})
        ours[self.name] = done.stats
        return message.model_copy(update={"response_metadata": {**message.response_metadata, METADATA_KEY: ours}})
