"""The postprocessor inside LlamaIndex pipelines: a VectorStoreIndex over Documents (MockEmbedding), its query engine
(sync and async) with MockLLM, and its retriever. Offline, with the tiny draft."""

from __future__ import annotations

import asyncio

import pytest
from crossprefill_agents import PromptCompressor
from crossprefill_agents.testing import filler_text
from llama_index.core import Document, VectorStoreIndex
from llama_index.core.embeddings import MockEmbedding
from llama_index.core.llms.mock import MockLLM
from llama_index.core.node_parser import SentenceSplitter
from llama_index.core.schema import NodeRelationship

from llama_index.postprocessor.crossprefill import DEFAULT_METADATA_KEY, SpeculativePrefillPostprocessor


@pytest.fixture
def index() -> VectorStoreIndex:
    """Three documents, each split into a few chunks with SOURCE / PREVIOUS / NEXT relationships."""
    docs = [
        Document(id_=f"doc-{i}", text=filler_text(260, seed=30 + i), metadata={"title": f"essay {i}"}) for i in range(3)
    ]
    return VectorStoreIndex.from_documents(
        docs,
        embed_model=MockEmbedding(embed_dim=8),
        transformations=[SentenceSplitter(chunk_size=128, chunk_overlap=0)],
    )


def test_retriever_nodes_keep_identity_links_and_scores(index: VectorStoreIndex, compressor: PromptCompressor) -> None:
    """What a retriever returns comes back with the same ids, scores, order, source document and neighbours."""
    nodes = index.as_retriever(similarity_top_k=4).retrieve("which river is in the city?")
    assert len(nodes) == 4
    out = SpeculativePrefillPostprocessor(compressor=compressor, keep_rate=0.3).postprocess_nodes(
        nodes, query_str="which river is in the city?"
    )
    assert [(n.node.node_id, n.score) for n in out] == [(n.node.node_id, n.score) for n in nodes]
    for before, after in zip(nodes, out, strict=True):
        assert after.node.ref_doc_id == before.node.ref_doc_id and after.node.ref_doc_id is not None
        assert after.node.relationships == before.node.relationships
        assert NodeRelationship.SOURCE in after.node.relationships
        assert after.node.metadata["title"] == before.node.metadata["title"]
    assert sum(len(n.node.get_content()) for n in out) < sum(len(n.node.get_content()) for n in nodes)


def test_query_engine_sends_the_compressed_nodes_to_the_llm(
    index: VectorStoreIndex, compressor: PromptCompressor
) -> None:
    """In as_query_engine(node_postprocessors=[...]) the source nodes are the shortened ones, and the prompt the LLM
    gets (MockLLM echoes it) holds their text and title but none of the stats."""
    pp = SpeculativePrefillPostprocessor(compressor=compressor, keep_rate=0.25)
    qe = index.as_query_engine(llm=MockLLM(), similarity_top_k=3, node_postprocessors=[pp])
    response = qe.query("what is the secret passkey?")
    assert len(response.source_nodes) == 3
    prompt = str(response)
    for n in response.source_nodes:
        stats = n.node.metadata[DEFAULT_METADATA_KEY]
        assert stats["compressed_tokens"] < stats["original_tokens"]
        assert n.node.get_content() in prompt
        assert f"title: {n.node.metadata['title']}" in prompt
    assert DEFAULT_METADATA_KEY not in prompt and "kept_spans" not in prompt


def test_async_query_engine_uses_the_async_hook_and_agrees(
    index: VectorStoreIndex, compressor: PromptCompressor
) -> None:
    """aquery() runs the postprocessor's async path and gets the same nodes as query()."""
    pp = SpeculativePrefillPostprocessor(compressor=compressor, keep_rate=0.25)
    qe = index.as_query_engine(llm=MockLLM(), similarity_top_k=3, node_postprocessors=[pp])
    sync = qe.query("what is the secret passkey?")
    asyn = asyncio.run(qe.aquery("what is the secret passkey?"))
    assert [(n.node.node_id, n.node.get_content()) for n in asyn.source_nodes] == [
        (n.node.node_id, n.node.get_content()) for n in sync.source_nodes
    ]
