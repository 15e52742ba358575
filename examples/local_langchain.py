"""Offline LangChain pieces for the examples: a local target chat model with tools, and a BM25 retriever.

    from local_langchain import ChatLocalTarget, WikiRetriever

- :class:`ChatLocalTarget`: a LangChain ``BaseChatModel`` over
  :class:`crossprefill_agents.local_chat.LocalChatModel`, the embedded ``qwen2.5-coder-1.5b`` /
  ``qwen2.5-coder-0.5b`` targets (after ``crossprefill download NAME``; transformers, bf16, greedy).
  ``bind_tools`` hands the tools to the model's chat template as OpenAI function schemas. The
  replies are parsed leniently (``<tool_call>`` tags, fenced or bare JSON; see
  :func:`~crossprefill_agents.local_chat.parse_tool_calls`): calls to the bound tools become the
  ``AIMessage``'s ``tool_calls``; calls to unknown tools and unparsable ones become its
  ``invalid_tool_calls``, which an agent does not run. Every call is kept in
  :attr:`ChatLocalTarget.calls` (the messages the model rendered and its :class:`ChatReply`).
- :class:`WikiRetriever`: a LangChain ``BaseRetriever`` over :class:`wiki_corpus.WikiCorpus`
  (BM25 over HotpotQA's Wikipedia paragraphs), one ``Document`` per page, id = title.

Nothing here downloads anything.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.callbacks.manager import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.messages.ai import UsageMetadata
from langchain_core.messages.tool import invalid_tool_call
from langchain_core.messages.tool import tool_call as make_tool_call
from langchain_core.messages.utils import convert_to_openai_messages
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import Runnable
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import ConfigDict, Field, PrivateAttr

from crossprefill_agents.local_chat import ChatReply, LocalChatModel

sys.path.insert(0, str(Path(__file__).parent))
from wiki_corpus import WikiCorpus

__all__ = ["ChatLocalTarget", "TargetCall", "WikiRetriever", "to_openai_messages"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TargetCall:
    """One call of the local target: what it rendered and what it replied."""

    messages: list[dict[str, Any]]  # the OpenAI-style messages (after any compression upstream)
    tools: tuple[str, ...]  # names of the tools it was offered
    reply: ChatReply


def to_openai_messages(messages: Sequence[BaseMessage]) -> list[dict[str, Any]]:
    """LangChain messages as the OpenAI-style dicts LocalChatModel renders (text content only)."""
    out = convert_to_openai_messages(list(messages), text_format="string")
    for i, m in enumerate(out):
        if not isinstance(m.get("content", ""), str):
            raise ValueError(f"messages[{i}] has non-text content; the local target reads text only")
    return out


class ChatLocalTarget(BaseChatModel):
    """A local embedded target as a LangChain chat model: greedy, on CPU, tools through its chat template.

    ``tool_choice`` cannot be enforced (no constrained decoding): it is accepted and ignored, so a
    reply may come without a tool call. There is no token streaming: ``stream`` yields the whole
    reply as one chunk (LangChain's fallback); async calls run in a worker thread. The model keeps
    its KV cache between calls and prefills only the part of a prompt that changed
    (``usage_metadata["input_token_details"]["cache_read"]``).
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    model: str = Field(default="qwen2.5-coder-1.5b", description="Embedded target alias or converted model folder.")
    max_new_tokens: int = Field(default=128, ge=1, description="Most tokens generated per call.")

    _chat: LocalChatModel = PrivateAttr()
    _calls: list[TargetCall] = PrivateAttr(default_factory=list)

    def __init__(self, *, chat: LocalChatModel | None = None, **kwargs: Any) -> None:
        if chat is not None:
            kwargs.setdefault("model", chat.name)
        super().__init__(**kwargs)
        self._chat = chat if chat is not None else LocalChatModel.from_pretrained(self.model)

    @property
    def _llm_type(self) -> str:
        return "crossprefill-local"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model": self.model, "max_new_tokens": self.max_new_tokens, "backend": self._chat.backend}

    @property
    def calls(self) -> list[TargetCall]:
        """Every call so far, oldest first."""
        return self._calls

    @property
    def chat_model(self) -> LocalChatModel:
        return self._chat

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: str | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Bind tools (converted to OpenAI function schemas); ``tool_choice`` is accepted and not enforced."""
        formatted = [convert_to_openai_tool(t) for t in tools]
        if tool_choice is not None:
            kwargs["tool_choice"] = tool_choice
        return self.bind(tools=formatted, **kwargs)

    # ------------------------------------------------------------------ calls
    def _run(self, messages: list[BaseMessage], stop: list[str] | None, kwargs: dict[str, Any]) -> ChatResult:
        tools: list[dict[str, Any]] = list(kwargs.get("tools") or [])
        sent = to_openai_messages(messages)
        reply = self._chat.chat(sent, tools=tools or None, max_new_tokens=self.max_new_tokens, stop=stop)
        names = tuple(t["function"]["name"] for t in tools if isinstance(t.get("function"), dict))
        self._calls.append(TargetCall(messages=sent, tools=names, reply=reply))
        if reply.invalid_tool_calls:
            logger.info("the target's reply had calls that cannot run: %s", [c.error for c in reply.invalid_tool_calls])
        usage = UsageMetadata(
            input_tokens=reply.prompt_tokens,
            output_tokens=reply.completion_tokens,
            total_tokens=reply.prompt_tokens + reply.completion_tokens,
            input_token_details={"cache_read": reply.reused_prompt_tokens},
        )
        message = AIMessage(
            content=reply.text,
            tool_calls=[make_tool_call(name=c.name, args=c.arguments, id=c.id) for c in reply.tool_calls],
            invalid_tool_calls=[
                invalid_tool_call(name=c.name, args=c.arguments, id=c.id, error=c.error)
                for c in reply.invalid_tool_calls
            ],
            usage_metadata=usage,
            response_metadata={
                "model_name": self.model,
                "finish_reason": reply.finish_reason,
                "prompt_tokens": reply.prompt_tokens,
                "reused_prompt_tokens": reply.reused_prompt_tokens,
                "ttft_s": reply.ttft_s,
                "total_s": reply.total_s,
                "raw_text": reply.raw_text,  # everything generated, tool-call blocks included
            },
        )
        return ChatResult(generations=[ChatGeneration(message=message)])

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return self._run(messages, stop, kwargs)

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return await asyncio.to_thread(self._run, messages, stop, kwargs)


class WikiRetriever(BaseRetriever):
    """The ``k`` best pages of a :class:`WikiCorpus` for a query (BM25), as Documents (id and metadata = title)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    corpus: WikiCorpus = Field(description="The pages searched.")
    k: int = Field(default=8, ge=1, description="Pages returned per query.")

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun) -> list[Document]:
        return [
            Document(id=title, page_content=self.corpus.pages[title], metadata={"title": title, "bm25": round(s, 3)})
            for title, s in self.corpus.search(query, self.k)
        ]
