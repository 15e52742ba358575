"""Per-head scores and head selection: the raw material for retrieval heads, and the ``heads`` config."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import make_text

from crossprefill_agents import CompressionConfig, DraftModel
from crossprefill_agents.draft import DraftError
from crossprefill_agents.heads import find_retrieval_heads, head_needle_mass
from crossprefill_agents.scoring import pick_heads


def test_all_heads_vote_equals_score(tiny_draft: DraftModel) -> None:
    """Max over every head of head_scores, averaged over steps, is what score() returns (up to its scale n)."""
    context, q = make_text(200, seed=3), "where did they go?"
    cfg = CompressionConfig()
    per_head = tiny_draft.head_scores([context], q, config=cfg)
    n = len(tiny_draft.tokenize(context).ids)
    layers = tiny_draft.model.config.num_hidden_layers
    heads = tiny_draft.model.config.num_attention_heads
    assert per_head.shape[1:] == (layers, heads, n) and 1 <= per_head.shape[0] <= cfg.lookahead + 1
    assert np.isfinite(per_head).all() and (per_head >= 0).all()
    vote = per_head.reshape(per_head.shape[0], -1, n).max(axis=1).mean(axis=0)
    np.testing.assert_allclose(vote * n, tiny_draft.score([context], q, config=cfg).scores[0], rtol=1e-5, atol=1e-6)


def test_heads_config_votes_with_the_chosen_heads_only(tiny_llama_draft: DraftModel) -> None:
    """CompressionConfig(heads=...) scores with the max over those heads alone."""
    context, q = make_text(200, seed=4), "what happened?"
    pairs = ((0, 1), (1, 3))
    per_head = tiny_llama_draft.head_scores([context], q, config=CompressionConfig())
    n = per_head.shape[-1]
    expected = np.stack([per_head[:, 0, 1], per_head[:, 1, 3]], axis=1).max(axis=1).mean(axis=0) * n
    got = tiny_llama_draft.score([context], q, config=CompressionConfig(heads=pairs)).scores[0]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="exist in this draft"):
        tiny_llama_draft.score([context], q, config=CompressionConfig(heads=((7, 0),)))


def test_heads_outside_the_global_layers(tiny_gemma_draft: DraftModel) -> None:
    """Heads only in sliding-window layers with attention_layers='global' leave nobody to vote: a DraftError."""
    cfg = CompressionConfig(heads=((0, 0),), attention_layers="global")
    with pytest.raises(DraftError, match="no head"):
        tiny_gemma_draft.score([make_text(100, seed=1)], "q", config=cfg)


def test_pick_heads_and_validation() -> None:
    """pick_heads keeps the named rows per layer; bad pairs are refused by the config."""
    rows = [torch.arange(6.0).reshape(3, 2), torch.arange(6.0, 12.0).reshape(3, 2)]
    kept = pick_heads(rows, [(1, 2), (0, 0), (1, 0)])
    assert [r.tolist() for r in kept] == [[[0.0, 1.0]], [[6.0, 7.0], [10.0, 11.0]]]
    assert pick_heads(rows, [(1, 1)])[0].shape == (0, 2)  # layers stay aligned
    assert pick_heads(rows, []) == rows
    for bad in (((0,),), ((-1, 0),), ((0, 1.5),)):
        with pytest.raises(ValueError, match="heads"):
            CompressionConfig(heads=bad)  # type: ignore[arg-type]


def test_find_retrieval_heads_ranks_real_pairs(tiny_llama_draft: DraftModel) -> None:
    """The ranking returns ``top`` distinct, valid (layer, head) pairs, best needle mass first, reproducibly."""
    texts = [make_text(150, seed=s) for s in range(3)]
    top = find_retrieval_heads(tiny_llama_draft, texts, top=5)
    assert len(set(top)) == 5 and top == find_retrieval_heads(tiny_llama_draft, texts, top=5)
    cfg = tiny_llama_draft.model.config
    assert all(0 <= layer < cfg.num_hidden_layers and 0 <= h < cfg.num_attention_heads for layer, h in top)
    context = texts[0][:200] + "The access code of the blue depot is 4821. " + texts[0][200:]
    mass = head_needle_mass(tiny_llama_draft, context, "What is the access code?", (200, 242), CompressionConfig())
    assert mass.shape == (cfg.num_hidden_layers, cfg.num_attention_heads) and ((mass >= 0) & (mass <= 1)).all()
    with pytest.raises(ValueError, match="top"):
        find_retrieval_heads(tiny_llama_draft, texts, top=0)
