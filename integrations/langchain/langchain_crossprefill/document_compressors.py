"""SpeculativePrefillDocumentCompressor: retrieved documents cut to one shared budget by one draft pass."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from crossprefill_agents import CompressionResult
from langchain_core.callbacks import Callbacks
from langchain_core.documents import BaseDocumentCompressor, Document
from pydantic import ConfigDict, Field

from ._options import METADATA_KEY, DraftOptions

__all__ = ["SpeculativePrefillDocumentCompressor"]


class SpeculativePrefillDocumentCompressor(DraftOptions, BaseDocumentCompressor):
    """Compresses retrieved documents for a query: one draft pass over all of them, one shared budget.

    The draft reads the documents together, so their scores compare, and the best sentences of
    all of them are kept until the budget (``keep_rate`` of their total target tokens, or
    ``max_tokens``) is met. Documents come back in their order, each a copy of the input
    (``id`` and metadata kept) with its text replaced and its compression in
    ``metadata["crossprefill"]``: target tokens before and after, the budget, and ``kept_spans``,
    the ``(start, end)`` character offsets of the kept text in the original ``page_content``.
    Results map back to documents by position, never by markers in the text. A document the
    budget dropped entirely stays, empty, unless ``drop_empty=True``.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")

    max_tokens: int | None = Field(
        default=None,
        ge=0,
        description="Target tokens for all the documents together; wins over keep_rate.",
    )
    drop_empty: bool = Field(
        default=False,
        description="Remove the documents whose text the budget dropped entirely (kept, empty, by default).",
    )

    def compress_documents(
        self, documents: Sequence[Document], query: str, callbacks: Callbacks | None = None
    ) -> Sequence[Document]:
        """Compress ``documents`` for ``query`` under one budget; a copy of each, in order."""
        docs = _check(documents, query)
        if not docs:
            return []
        results = self.prompt_compressor.compress_documents([d.page_content for d in docs], query)
        return self._rebuild(docs, results)

    async def acompress_documents(
        self, documents: Sequence[Document], query: str, callbacks: Callbacks | None = None
    ) -> Sequence[Document]:
        """:meth:`compress_documents` through the compressor's native async method."""
        docs = _check(documents, query)
        if not docs:
            return []
        results = await self.prompt_compressor.acompress_documents([d.page_content for d in docs], query)
        return self._rebuild(docs, results)

    def _rebuild(self, docs: list[Document], results: list[CompressionResult]) -> list[Document]:
        out = []
        for doc, res in zip(docs, results, strict=True):
            if self.drop_empty and not res.kept_spans and doc.page_content:
                continue
            record = res.to_dict()
            record.pop("text")
            update: dict[str, Any] = {"metadata": {**doc.metadata, METADATA_KEY: record}}
            if res.text != doc.page_content:
                update["page_content"] = res.text
            out.append(doc.model_copy(update=update))
        return out


def _check(documents: object, query: object) -> list[Document]:
    if isinstance(documents, (str, Document)) or not isinstance(documents, Sequence):
        raise TypeError(f"documents must be a sequence of langchain_core Documents, got {type(documents).__name__}")
    docs = list(documents)
    for i, d in enumerate(docs):
        if not isinstance(d, Document):
            raise TypeError(f"documents[{i}] must be a langchain_core Document, got {type(d).__name__}")
    if not isinstance(query, str):
        raise TypeError(f"query must be a str, got {type(query).__name__}")
    return docs
