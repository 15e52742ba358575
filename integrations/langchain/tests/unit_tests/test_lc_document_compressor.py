"""SpeculativePrefillDocumentCompressor: one draft pass, one budget, documents mapped back by position."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from crossprefill_agents import PromptCompressor
from crossprefill_agents.testing import filler_text
from langchain_core.documents import Document
from lc_fakes import broken_compressor

from langchain_crossprefill import SpeculativePrefillDocumentCompressor
from langchain_crossprefill._options import METADATA_KEY

DELIM = " [...] "


def documents() -> list[Document]:
    return [
        Document(filler_text(120, seed=s), id=f"doc-{s}", metadata={"source": f"page-{s}.html", "rank": s})
        for s in range(4)
    ]


def test_documents_keep_order_ids_and_metadata_and_map_back_by_spans(compressor: PromptCompressor) -> None:
    """Each output is the input document, in order, with its id and metadata, its text the kept spans of the
    original (recorded in metadata["crossprefill"]), all under one budget of keep_rate x the total."""
    docs = documents()
    out = SpeculativePrefillDocumentCompressor(compressor=compressor, keep_rate=0.3).compress_documents(docs, "river?")
    assert [d.id for d in out] == [d.id for d in docs]
    total = sum(len(d.page_content) for d in docs)
    kept = shares = 0
    for before, after in zip(docs, out, strict=True):
        record = after.metadata.pop(METADATA_KEY)
        assert after.metadata == before.metadata
        assert after.page_content == DELIM.join(before.page_content[s:e] for s, e in record["kept_spans"])
        assert record["original_tokens"] == len(before.page_content)
        shares += record["budget_tokens"]  # each document's share of the one budget
        kept += record["compressed_tokens"]
    assert abs(shares - round(0.3 * total)) <= len(docs)
    assert kept <= round(0.3 * total)
    assert docs[0].page_content == filler_text(120, seed=0) and METADATA_KEY not in docs[0].metadata  # inputs intact


def test_one_draft_pass_scores_all_documents(compressor: PromptCompressor, monkeypatch: pytest.MonkeyPatch) -> None:
    """The draft reads the documents together: one scoring call for the batch."""
    calls: list[int] = []
    real = compressor.draft.score

    def counting(docs: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(len(docs))
        return real(docs, *args, **kwargs)

    monkeypatch.setattr(compressor.draft, "score", counting)
    SpeculativePrefillDocumentCompressor(compressor=compressor).compress_documents(documents(), "river?")
    assert calls == [4]


def test_dropped_documents_stay_empty_unless_asked_to_go(compressor: PromptCompressor) -> None:
    """Under a tight budget whole documents can be dropped: they come back empty (with their record) by default,
    and are removed with drop_empty=True, the others unchanged."""
    docs = documents()
    keep = SpeculativePrefillDocumentCompressor(compressor=compressor, max_tokens=120).compress_documents(docs, "q")
    empty = [d.id for d in keep if not d.page_content]
    assert empty and len(keep) == len(docs)
    assert all(d.metadata[METADATA_KEY]["kept_spans"] == [] for d in keep if not d.page_content)
    dropped = SpeculativePrefillDocumentCompressor(compressor=compressor, max_tokens=120, drop_empty=True)
    out = dropped.compress_documents(docs, "q")
    assert [d.id for d in out] == [d.id for d in keep if d.page_content]
    assert [d.page_content for d in out] == [d.page_content for d in keep if d.page_content]


def test_async_agrees_with_sync(compressor: PromptCompressor) -> None:
    """acompress_documents (the core's native async) gives what compress_documents gives."""
    dc = SpeculativePrefillDocumentCompressor(compressor=compressor)
    sync = dc.compress_documents(documents(), "river?")
    async_ = asyncio.run(dc.acompress_documents(documents(), "river?"))
    assert [(d.id, d.page_content) for d in async_] == [(d.id, d.page_content) for d in sync]


def test_a_failing_draft_returns_the_documents_whole_with_the_reason() -> None:
    """A raising draft: the documents come back unchanged, each record naming the error."""
    out = SpeculativePrefillDocumentCompressor(compressor=broken_compressor()).compress_documents(documents(), "q")
    assert [d.page_content for d in out] == [d.page_content for d in documents()]
    assert all("draft exploded" in d.metadata[METADATA_KEY]["fallback_reason"] for d in out)


def test_bad_input_is_refused(compressor: PromptCompressor) -> None:
    """A str or a list holding non-Documents, or a non-str query, fails with a message naming the type; an
    empty list is fine."""
    dc = SpeculativePrefillDocumentCompressor(compressor=compressor)
    with pytest.raises(TypeError, match="sequence of langchain_core Documents"):
        dc.compress_documents("text", "q")  # type: ignore[,arg-type]
    with pytest.raises(TypeError, match=r"documents\[1\]"):
        dc.compress_documents([Document("a"), "b"], "q")  # type: ignore[,list-item]
    with pytest.raises(TypeError, match="query must be a str"):
        dc.compress_documents(documents(), None)  # type: ignore[,arg-type]
    assert dc.compress_documents([], "q") == []
