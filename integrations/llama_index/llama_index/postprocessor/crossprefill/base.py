"""SpeculativePrefillPostprocessor: retrieved nodes shortened by a small draft model's attention."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from crossprefill_agents import CompressionConfig, CompressionResult, PromptCompressor
from llama_index.core.bridge.pydantic import Field, PrivateAttr
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.schema import BaseNode, MediaResource, Node, NodeWithScore, QueryBundle, TextNode

from ._shared import check_budget, resolve_compressor
from .events import NodeCompressionEndEvent, NodeCompressionStartEvent

__all__ = ["DEFAULT_METADATA_KEY", "SpeculativePrefillPostprocessor"]

dispatcher = get_dispatcher(__name__)

DEFAULT_METADATA_KEY = "crossprefill"


@dataclass(frozen=True)
class _Plan:
    """Which of the given nodes carry text, and the texts and query the draft reads."""

    nodes: list[NodeWithScore]
    text_at: list[int]  # indices into ``nodes`` of the nodes whose text is compressed, in order
    texts: list[str]
    query: str


class SpeculativePrefillPostprocessor(BaseNodePostprocessor):
    """Shortens retrieved nodes for the LLM, keeping each node's identity.

    All text nodes are read by the draft together, in one pass, conditioned on the query
    (the query bundle's ``query_str``; without a query bundle the draft's look-ahead
    queries score the text, and the budget still holds). One budget in target tokens is
    shared across the nodes, so a node the query does not need may shrink to nothing
    while another is kept whole.

    Each returned node is a copy of the input node with its text shortened: the same
    ``node_id``, metadata, relationships, score, position, and ``start_char_idx`` /
    ``end_char_idx`` (the original's span in its document). The compression stats go to
    ``metadata[metadata_key]`` (the kept character spans into the original text, token
    counts, timings, ``fallback_reason``), and that key is added to the node's excluded
    LLM and embed metadata keys so neither the LLM nor an embedder sees it. Nodes
    without text (images, index nodes without text) pass through untouched.

    Build it from a ready compressor (``compressor=PromptCompressor(...)``) or from names
    (``draft=``, ``target=``, ``config=``; loaded once per process and shared).
    """

    draft: str | None = Field(
        default=None,
        description="Draft model name loaded through PromptCompressor.from_pretrained (an embedded alias such as "
        "'smollm2-135m', a .gguf file, a folder or a hub id); 'smollm2-135m' when neither this nor compressor= "
        "is given.",
    )
    target: str | None = Field(
        default=None,
        description="Whose tokens the budget counts: a tiktoken encoding ('cl100k_base'), an OpenAI model name "
        "('gpt-4o') or a tokenizer id/folder; None counts the draft's own tokens. Used with draft=.",
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
        description="Fraction of the nodes' target tokens to keep, in (0, 1]; None uses the compressor's config "
        "(0.25 by default).",
    )
    max_tokens: int | None = Field(
        default=None,
        ge=0,
        description="Budget in target tokens for all nodes together; wins over keep_rate when set.",
    )
    drop_empty_nodes: bool = Field(
        default=False,
        description="Remove nodes whose whole text was dropped by the shared budget (by default they are kept "
        "with empty text, so every input node comes back).",
    )
    metadata_key: str = Field(
        default=DEFAULT_METADATA_KEY,
        min_length=1,
        description="Metadata key of the per-node compression stats (excluded from the LLM's and embedder's view).",
    )

    _compressor: PromptCompressor = PrivateAttr()

    def __init__(
        self,
        *,
        compressor: PromptCompressor | None = None,
        draft: str | None = None,
        target: str | None = None,
        config: CompressionConfig | None = None,
        keep_rate: float | None = None,
        max_tokens: int | None = None,
        drop_empty_nodes: bool = False,
        metadata_key: str = DEFAULT_METADATA_KEY,
        **kwargs: Any,
    ) -> None:
        check_budget(keep_rate, max_tokens)  # before loading anything: the errors name the options
        pc = resolve_compressor(compressor, draft, target, config)
        super().__init__(
            draft=draft,
            target=target,
            config=config,
            keep_rate=keep_rate,
            max_tokens=max_tokens,
            drop_empty_nodes=drop_empty_nodes,
            metadata_key=metadata_key,
            **kwargs,
        )
        self._compressor = pc

    @classmethod
    def class_name(cls) -> str:
        return "SpeculativePrefillPostprocessor"

    @property
    def compressor(self) -> PromptCompressor:
        """The :class:`PromptCompressor` doing the work (shared with other components built from the same names)."""
        return self._compressor

    # ---------------------------------------------------------------- hooks
    def _postprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
    ) -> list[NodeWithScore]:
        plan = self._plan(nodes, query_bundle)
        self._start(plan)
        results = (
            self._compressor.compress_documents(
                plan.texts, plan.query, keep_rate=self.keep_rate, max_tokens=self.max_tokens
            )
            if plan.texts
            else []
        )
        return self._finish(plan, results)

    async def _apostprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
    ) -> list[NodeWithScore]:
        plan = self._plan(nodes, query_bundle)
        self._start(plan)
        results = (
            await self._compressor.acompress_documents(
                plan.texts, plan.query, keep_rate=self.keep_rate, max_tokens=self.max_tokens
            )
            if plan.texts
            else []
        )
        return self._finish(plan, results)

    # -------------------------------------------------------------- private
    def _plan(self, nodes: Sequence[NodeWithScore], query_bundle: QueryBundle | None) -> _Plan:
        if isinstance(nodes, (str, NodeWithScore)) or not isinstance(nodes, Sequence):
            raise TypeError(f"nodes must be a list of NodeWithScore, got {type(nodes).__name__}")
        for i, n in enumerate(nodes):
            if not isinstance(n, NodeWithScore):
                hint = " (wrap it: NodeWithScore(node=..., score=...))" if isinstance(n, BaseNode) else ""
                raise TypeError(f"nodes[{i}] must be a NodeWithScore, got {type(n).__name__}{hint}")
        if query_bundle is not None and not isinstance(query_bundle, QueryBundle):
            raise TypeError(f"query_bundle must be a QueryBundle or None, got {type(query_bundle).__name__}")
        query = query_bundle.query_str if query_bundle is not None else ""
        if not isinstance(query, str):
            raise TypeError(f"query_bundle.query_str must be a str, got {type(query).__name__}")
        text_at: list[int] = []
        texts: list[str] = []
        for i, n in enumerate(nodes):
            text = _node_text(n.node)
            if text is not None:
                text_at.append(i)
                texts.append(text)
        return _Plan(list(nodes), text_at, texts, query)

    def _start(self, plan: _Plan) -> None:
        dispatcher.event(
            NodeCompressionStartEvent(
                query=plan.query,
                nodes=len(plan.nodes),
                text_nodes=len(plan.texts),
                keep_rate=self.keep_rate,
                max_tokens=self.max_tokens,
            )
        )

    def _finish(self, plan: _Plan, results: list[CompressionResult]) -> list[NodeWithScore]:
        by_index = dict(zip(plan.text_at, zip(plan.texts, results, strict=True), strict=True))
        out: list[NodeWithScore] = []
        dropped = 0
        for i, n in enumerate(plan.nodes):
            if i not in by_index:
                out.append(n)  # no text to shorten: the caller's object, untouched
                continue
            original, res = by_index[i]
            if self.drop_empty_nodes and not res.text.strip() and original.strip():
                dropped += 1
                continue
            out.append(NodeWithScore(node=self._shortened(n.node, res), score=n.score))
        timings = results[0].timings if results else None
        reasons = [r.fallback_reason for r in results if r.fallback_reason is not None]
        dispatcher.event(
            NodeCompressionEndEvent(
                nodes_in=len(plan.nodes),
                nodes_out=len(out),
                nodes_dropped=dropped,
                original_tokens=sum(r.original_tokens for r in results),
                compressed_tokens=sum(r.compressed_tokens for r in results),
                draft_s=(timings.draft_prefill_s + timings.query_s) if timings else 0.0,
                total_s=timings.total_s if timings else 0.0,
                fallback_reason=reasons[0] if reasons else None,
            )
        )
        return out

    def _shortened(self, node: BaseNode, res: CompressionResult) -> BaseNode:
        """A copy of ``node`` with the compressed text and the stats; the caller's node is not modified."""
        key = self.metadata_key
        stats = res.to_dict()
        del stats["text"]  # the node's text is the compressed text
        stats["saved_tokens"] = res.saved_tokens
        update: dict[str, Any] = {
            "metadata": {**node.metadata, key: stats},
            "excluded_llm_metadata_keys": _with_key(node.excluded_llm_metadata_keys, key),
            "excluded_embed_metadata_keys": _with_key(node.excluded_embed_metadata_keys, key),
            "relationships": dict(node.relationships),
        }
        if isinstance(node, TextNode):
            update["text"] = res.text
        elif isinstance(node, Node) and node.text_resource is not None:
            update["text_resource"] = node.text_resource.model_copy(update={"text": res.text})
        return node.model_copy(update=update)


def _node_text(node: BaseNode) -> str | None:
    """The text a node carries (None for a node without text)."""
    if isinstance(node, TextNode):
        return node.text
    if isinstance(node, Node) and isinstance(node.text_resource, MediaResource) and node.text_resource.text is not None:
        return node.text_resource.text
    return None


def _with_key(keys: list[str], key: str) -> list[str]:
    return list(keys) if key in keys else [*keys, key]
