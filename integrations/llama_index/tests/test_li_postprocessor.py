"""SpeculativePrefillPostprocessor on real LlamaIndex node objects, with the tiny random-init draft.

LlamaIndex's own LongLLMLinguaPostprocessor joins all nodes into one text, re-splits the
compressed text on blank lines and returns new TextNodes: new ids, no relationships, no
scores, and every node's metadata merged into each. Each of those is pinned as kept here.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from crossprefill_agents import CompressionConfig, PromptCompressor
from crossprefill_agents.draft import DraftModel
from crossprefill_agents.testing import filler_text
from llama_index.core.schema import (
    MediaResource,
    MetadataMode,
    Node,
    NodeRelationship,
    NodeWithScore,
    QueryBundle,
    RelatedNodeInfo,
    TextNode,
)

from llama_index.postprocessor.crossprefill import (
    DEFAULT_METADATA_KEY,
    NodeCompressionEndEvent,
    NodeCompressionStartEvent,
    SpeculativePrefillPostprocessor,
)

KEY = DEFAULT_METADATA_KEY


def retrieved(n: int = 4, words: int = 120) -> list[NodeWithScore]:
    """``n`` text nodes as a retriever returns them: ids, per-node metadata, source/prev/next links, scores
    deliberately not in descending order."""
    nodes = [
        TextNode(
            id_=f"node-{i}",
            text=filler_text(words, seed=100 + i),
            metadata={"title": f"doc {i}", "page": i + 1},
            excluded_llm_metadata_keys=["page"],
            start_char_idx=1000 * i,
            end_char_idx=1000 * i + 900,
        )
        for i in range(n)
    ]
    for i, node in enumerate(nodes):
        node.relationships[NodeRelationship.SOURCE] = RelatedNodeInfo(node_id=f"doc-{i // 2}")
        if i > 0:
            node.relationships[NodeRelationship.PREVIOUS] = RelatedNodeInfo(node_id=nodes[i - 1].node_id)
        if i + 1 < n:
            node.relationships[NodeRelationship.NEXT] = RelatedNodeInfo(node_id=f"node-{i + 1}")
    scores = [0.42, 0.91, 0.17, 0.66, 0.5, 0.3][:n]
    return [NodeWithScore(node=node, score=s) for node, s in zip(nodes, scores, strict=True)]


def pieces_of(short: str, original: str, delimiter: str = " [...] ") -> bool:
    """Whether ``short`` is pieces of ``original``, in order, joined by the delimiter."""
    at = 0
    for piece in short.split(delimiter):
        found = original.find(piece, at)
        if found < 0:
            return False
        at = found + len(piece)
    return True


def test_ids_scores_order_and_relationships_are_kept(compressor: PromptCompressor) -> None:
    """Each output node is its input node, shortened: same id, score, position, relationships and char span."""
    nodes = retrieved()
    out = SpeculativePrefillPostprocessor(compressor=compressor, keep_rate=0.3).postprocess_nodes(
        nodes, query_str="which city is the river in?"
    )
    assert [n.node.node_id for n in out] == [n.node.node_id for n in nodes]
    assert [n.score for n in out] == [n.score for n in nodes]  # not re-sorted, not reset
    for before, after in zip(nodes, out, strict=True):
        assert after.node.relationships == before.node.relationships
        assert after.node.source_node is not None and before.node.source_node is not None
        assert after.node.source_node.node_id == before.node.source_node.node_id
        assert isinstance(after.node, TextNode) and isinstance(before.node, TextNode)
        assert (after.node.start_char_idx, after.node.end_char_idx) == (
            before.node.start_char_idx,
            before.node.end_char_idx,
        )
        assert type(after.node) is type(before.node)


def test_text_is_shortened_under_one_shared_budget(compressor: PromptCompressor) -> None:
    """The nodes together keep at most keep_rate of their tokens; each text is pieces of its original."""
    nodes = retrieved()
    out = SpeculativePrefillPostprocessor(compressor=compressor, keep_rate=0.25).postprocess_nodes(
        nodes, query_str="what is the secret number?"
    )
    total = sum(len(n.node.get_content()) for n in nodes)  # target=len: tokens are characters
    kept = sum(n.node.metadata[KEY]["compressed_tokens"] for n in out)
    assert 0 < kept <= round(0.25 * total)
    for before, after in zip(nodes, out, strict=True):
        text = after.node.get_content()
        stats = after.node.metadata[KEY]
        assert stats["original_tokens"] == len(before.node.get_content())
        assert stats["compressed_tokens"] == len(text) and stats["fallback_reason"] is None
        assert pieces_of(text, before.node.get_content()) if text else True
        spans = stats["kept_spans"]
        assert " [...] ".join(before.node.get_content()[s:e] for s, e in spans) == text


def test_metadata_is_per_node_and_stats_are_hidden_from_llm_and_embedder(compressor: PromptCompressor) -> None:
    """Each node keeps only its own metadata (nothing merged in), plus the stats under one key that neither
    MetadataMode.LLM nor MetadataMode.EMBED shows; the node's own exclusions still hold."""
    nodes = retrieved()
    out = SpeculativePrefillPostprocessor(compressor=compressor, keep_rate=0.5).postprocess_nodes(nodes, query_str="q")
    for i, (before, after) in enumerate(zip(nodes, out, strict=True)):
        meta = dict(after.node.metadata)
        stats = meta.pop(KEY)
        assert meta == before.node.metadata == {"title": f"doc {i}", "page": i + 1}
        assert {"original_tokens", "compressed_tokens", "kept_spans", "budget_tokens", "timings"} <= set(stats)
        assert after.node.excluded_llm_metadata_keys == ["page", KEY]
        assert after.node.excluded_embed_metadata_keys == [KEY]
        llm_view = after.node.get_content(metadata_mode=MetadataMode.LLM)
        embed_view = after.node.get_content(metadata_mode=MetadataMode.EMBED)
        assert f"title: doc {i}" in llm_view and "page:" not in llm_view
        assert KEY not in llm_view and "kept_spans" not in llm_view
        assert KEY not in embed_view and "kept_spans" not in embed_view and f"page: {i + 1}" in embed_view


def test_the_callers_nodes_are_not_modified(compressor: PromptCompressor) -> None:
    """Output nodes are copies: the input nodes' text, metadata, exclusions and relationships are unchanged."""
    nodes = retrieved()
    snapshot = [n.model_dump() for n in nodes]
    out = SpeculativePrefillPostprocessor(compressor=compressor, keep_rate=0.2).postprocess_nodes(nodes, query_str="q")
    assert [n.model_dump() for n in nodes] == snapshot
    assert all(a.node is not b.node for a, b in zip(out, nodes, strict=True))


def test_no_query_bundle_is_unconditioned_and_still_honours_the_budget(
    compressor: PromptCompressor, events: Any
) -> None:
    """Without a query the draft scores the nodes with an empty query, and the shared budget still holds."""
    nodes = retrieved()
    out = SpeculativePrefillPostprocessor(compressor=compressor, max_tokens=600).postprocess_nodes(nodes)
    kept = sum(n.node.metadata[KEY]["compressed_tokens"] for n in out)
    assert 0 < kept <= 600
    assert all(n.node.metadata[KEY]["fallback_reason"] is None for n in out)
    (start,) = events.of(NodeCompressionStartEvent)
    assert start.query == "" and start.nodes == 4 and start.text_nodes == 4


def test_query_conditions_the_scores(compressor: PromptCompressor) -> None:
    """The query bundle's query_str is what the draft is conditioned on: another query keeps other text."""
    nodes = retrieved(n=3, words=160)
    pp = SpeculativePrefillPostprocessor(compressor=compressor, keep_rate=0.2)
    texts = {
        q: [n.node.get_content() for n in pp.postprocess_nodes(nodes, QueryBundle(q))]
        for q in ("", "the river city", "money and startup founder research")
    }
    assert len({tuple(t) for t in texts.values()}) > 1


def test_all_dropped_nodes_are_removed_only_when_allowed(compressor: PromptCompressor, events: Any) -> None:
    """A shared budget can drop whole nodes: by default they come back with empty text; drop_empty_nodes removes
    them, keeping the others' order, and the end event counts them."""
    nodes = retrieved(n=6)
    kept_all = SpeculativePrefillPostprocessor(compressor=compressor, max_tokens=60).postprocess_nodes(nodes)
    empty = [n.node.node_id for n in kept_all if not n.node.get_content().strip()]
    assert len(kept_all) == 6 and empty  # 60 characters cannot reach six nodes
    dropped = SpeculativePrefillPostprocessor(
        compressor=compressor, max_tokens=60, drop_empty_nodes=True
    ).postprocess_nodes(nodes)
    assert [n.node.node_id for n in dropped] == [n.node.node_id for n in kept_all if n.node.node_id not in empty]
    ends = events.of(NodeCompressionEndEvent)
    assert (ends[0].nodes_out, ends[0].nodes_dropped) == (6, 0)
    assert (ends[1].nodes_out, ends[1].nodes_dropped) == (6 - len(empty), len(empty))


def test_events_report_start_and_end_with_counts(compressor: PromptCompressor, events: Any) -> None:
    """The dispatcher sees a start event (query, node counts, budget) and an end event (tokens, timings)."""
    nodes = retrieved()
    out = SpeculativePrefillPostprocessor(compressor=compressor, keep_rate=0.3).postprocess_nodes(
        nodes, query_str="the answer"
    )
    (start,) = events.of(NodeCompressionStartEvent)
    (end,) = events.of(NodeCompressionEndEvent)
    assert (start.query, start.nodes, start.text_nodes, start.keep_rate, start.max_tokens) == (
        "the answer",
        4,
        4,
        0.3,
        None,
    )
    assert end.nodes_in == end.nodes_out == 4 and end.nodes_dropped == 0
    assert end.original_tokens == sum(len(n.node.get_content()) for n in nodes)
    assert end.compressed_tokens == sum(len(n.node.get_content()) for n in out)
    assert end.draft_s > 0 and end.total_s >= end.draft_s and end.fallback_reason is None
    assert start.class_name() == "NodeCompressionStartEvent" and end.class_name() == "NodeCompressionEndEvent"


def test_nodes_without_text_pass_through_and_new_style_nodes_are_shortened(compressor: PromptCompressor) -> None:
    """An image-only Node is returned as the very same object; a Node holding text_resource is shortened there."""
    image = NodeWithScore(
        node=Node(id_="img", image_resource=MediaResource(url="https://example.com/a.png")), score=1.0
    )
    text_node = Node(id_="new-style", text_resource=MediaResource(text=filler_text(300, seed=7)), metadata={"k": 1})
    nodes = [image, NodeWithScore(node=text_node, score=0.5), *retrieved(n=2)]
    out = SpeculativePrefillPostprocessor(compressor=compressor, keep_rate=0.25).postprocess_nodes(nodes, query_str="q")
    assert out[0] is image
    shortened = out[1].node
    assert isinstance(shortened, Node) and shortened.node_id == "new-style" and shortened.text_resource is not None
    assert len(shortened.text_resource.text or "") < len(text_node.text_resource.text or "")  # type: ignore[union-attr]
    assert shortened.metadata["k"] == 1 and KEY in shortened.metadata
    assert text_node.text_resource is not None and KEY not in text_node.metadata


def test_sync_and_async_agree(compressor: PromptCompressor) -> None:
    """apostprocess_nodes (the native async hook) returns the same nodes, texts and stats as postprocess_nodes."""
    nodes = retrieved()
    pp = SpeculativePrefillPostprocessor(compressor=compressor, keep_rate=0.3)
    sync = pp.postprocess_nodes(nodes, query_str="which key?")
    asyn = asyncio.run(pp.apostprocess_nodes(nodes, query_str="which key?"))

    def view(ns: list[NodeWithScore]) -> list[tuple[str, str, float | None, list[list[int]]]]:
        return [(n.node.node_id, n.node.get_content(), n.score, n.node.metadata[KEY]["kept_spans"]) for n in ns]

    assert view(sync) == view(asyn)


def test_async_hook_is_native() -> None:
    """The postprocessor implements _apostprocess_nodes itself (not the base class's thread wrapper)."""
    from llama_index.core.postprocessor.types import BaseNodePostprocessor

    assert SpeculativePrefillPostprocessor._apostprocess_nodes is not BaseNodePostprocessor._apostprocess_nodes


def test_a_failing_draft_passes_nodes_through_and_says_why(broken_compressor: PromptCompressor, events: Any) -> None:
    """When the draft fails, every node comes back with its full text, and the stats and the end event say why."""
    nodes = retrieved()
    out = SpeculativePrefillPostprocessor(compressor=broken_compressor, keep_rate=0.2).postprocess_nodes(
        nodes, query_str="q"
    )
    assert [n.node.get_content() for n in out] == [n.node.get_content() for n in nodes]
    assert [n.node.node_id for n in out] == [n.node.node_id for n in nodes]
    for n in out:
        reason = n.node.metadata[KEY]["fallback_reason"]
        assert reason is not None and "out of memory" in reason
    (end,) = events.of(NodeCompressionEndEvent)
    assert end.fallback_reason is not None and "out of memory" in end.fallback_reason


def test_empty_input_gives_empty_output(compressor: PromptCompressor) -> None:
    """No nodes: nothing to compress, an empty list back (sync and async)."""
    pp = SpeculativePrefillPostprocessor(compressor=compressor)
    assert pp.postprocess_nodes([], query_str="q") == []
    assert asyncio.run(pp.apostprocess_nodes([])) == []


def test_metadata_key_is_configurable(compressor: PromptCompressor) -> None:
    """metadata_key names where the stats go, and that key is the one excluded."""
    (out,) = SpeculativePrefillPostprocessor(compressor=compressor, metadata_key="cp").postprocess_nodes(retrieved(1))
    assert "cp" in out.node.metadata and KEY not in out.node.metadata
    assert out.node.excluded_llm_metadata_keys == ["page", "cp"]


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"keep_rate": 0.0}, ValueError, "keep_rate"),
        ({"keep_rate": 1.5}, ValueError, "keep_rate"),
        ({"max_tokens": -1}, ValueError, "max_tokens"),
        ({"draft": "smollm2-135m"}, TypeError, "either compressor="),
        ({"config": "fast"}, TypeError, "CompressionConfig"),
    ],
)
def test_bad_options_raise_clear_errors(
    compressor: PromptCompressor, kwargs: dict[str, object], error: type[Exception], match: str
) -> None:
    """Out-of-range budgets, a compressor together with names, or a config of the wrong type fail at construction."""
    with pytest.raises(error, match=match):
        SpeculativePrefillPostprocessor(compressor=compressor, **kwargs)  # type: ignore[arg-type]


def test_bad_compressor_and_bad_nodes_raise_clear_errors(compressor: PromptCompressor) -> None:
    """A compressor that is not a PromptCompressor, bare nodes, or a non-list are rejected with what to do."""
    with pytest.raises(TypeError, match="PromptCompressor"):
        SpeculativePrefillPostprocessor(compressor="smollm2-135m")  # type: ignore[arg-type]
    pp = SpeculativePrefillPostprocessor(compressor=compressor)
    with pytest.raises(TypeError, match="wrap it: NodeWithScore"):
        pp.postprocess_nodes([TextNode(text="x")])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="list of NodeWithScore"):
        pp.postprocess_nodes(retrieved(1)[0])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="both query_str and query_bundle"):
        pp.postprocess_nodes(retrieved(1), query_bundle=QueryBundle("a"), query_str="b")


def test_serialises_and_names_itself(compressor: PromptCompressor) -> None:
    """to_dict() carries the options and class_name; the compressor stays out of it."""
    d = SpeculativePrefillPostprocessor(compressor=compressor, keep_rate=0.4, drop_empty_nodes=True).to_dict()
    assert d["class_name"] == "SpeculativePrefillPostprocessor"
    assert d["keep_rate"] == 0.4 and d["drop_empty_nodes"] is True and d["metadata_key"] == KEY
    assert "compressor" not in d and "_compressor" not in d


def test_components_built_from_names_share_one_loaded_draft(monkeypatch: pytest.MonkeyPatch, tiny: DraftModel) -> None:
    """draft=/target= names are loaded once per process: a second component with the same names, or another
    config, runs over the loaded draft (and memo store) instead of loading it again."""
    loads: list[str] = []

    def fake_from_pretrained(name: str, *, local_files_only: bool = False) -> PromptCompressor:
        loads.append(name)
        return PromptCompressor(tiny, target=len)

    PromptCompressor.release_shared()
    monkeypatch.setattr(PromptCompressor, "from_pretrained", staticmethod(fake_from_pretrained))
    try:
        a = SpeculativePrefillPostprocessor(draft="some-draft", target="cl100k_base")
        b = SpeculativePrefillPostprocessor(draft="some-draft", target="cl100k_base", keep_rate=0.5)
        c = SpeculativePrefillPostprocessor(
            draft="some-draft", target="cl100k_base", config=CompressionConfig(min_tokens=1)
        )
    finally:
        PromptCompressor.release_shared()
    assert loads == ["some-draft"]
    assert a.compressor.config == b.compressor.config  # keep_rate is a per-call override, not another config
    for other in (b, c):
        assert other.compressor.draft is a.compressor.draft and other.compressor.memo is a.compressor.memo
    assert c.compressor.config.min_tokens == 1 and a.compressor.target.name == "cl100k_base"
