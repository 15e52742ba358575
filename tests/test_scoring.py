"""The scoring maths on hand-made tensors: no model involved."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from crossprefill_agents.scoring import (
    context_slice,
    head_vote,
    heads_by_layer,
    mean_over_steps,
    pool_along_keys,
    question_vote,
    renormalize_over_context,
)
from crossprefill_agents.selection import select
from crossprefill_agents.units import make_units, segment_means


def test_context_slice_maps_right_aligned_keys_to_context_positions() -> None:
    """A sliding-window layer's k keys are the last k positions; unseen context positions read 0."""
    total = 10
    w = torch.arange(1, 5, dtype=torch.float32).repeat(2, 1)  # (heads=2, k=4): positions 6..9
    out = context_slice(w, total_keys=total, ctx_start=2, ctx_end=8)  # context = positions 2..7
    assert out.shape == (2, 6)
    assert out[0].tolist() == [0, 0, 0, 0, 1, 2]  # positions 6, 7 seen as weights 1, 2


def test_context_slice_full_layer_drops_prefix_and_query_keys() -> None:
    """With all keys visible, only the context columns are kept, in order."""
    w = torch.arange(10, dtype=torch.float32)[None]  # (1, 10)
    out = context_slice(w, total_keys=10, ctx_start=1, ctx_end=7)
    assert out[0].tolist() == [1, 2, 3, 4, 5, 6]


def test_renormalize_sums_to_one_in_fp32_and_keeps_zero_rows() -> None:
    """Rows are renormalised over the context keys in fp32; a row with no context mass stays 0."""
    w = torch.tensor([[0.1, 0.1, 0.2], [0.0, 0.0, 0.0]], dtype=torch.float16)
    out = renormalize_over_context(w)
    assert out.dtype == torch.float32
    assert torch.allclose(out[0], torch.tensor([0.25, 0.25, 0.5]))
    assert torch.equal(out[1], torch.zeros(3))


def test_renormalize_keeps_non_finite_rows_non_finite() -> None:
    """A row holding NaN (a broken draft) stays NaN, not 0, so it cannot pass for a row with no context mass."""
    w = torch.tensor([[0.1, float("nan"), 0.2], [0.0, 0.0, 0.0]])
    out = renormalize_over_context(w)
    assert torch.isnan(out[0]).all() and torch.equal(out[1], torch.zeros(3))


def test_renormalize_equals_softmax_over_context_logits() -> None:
    """Dividing full-softmax weights by their context sum equals a softmax over the context logits alone."""
    logits = torch.randn(3, 20)
    full = torch.softmax(logits, dim=-1)
    assert torch.allclose(renormalize_over_context(full[:, 4:15]), torch.softmax(logits[:, 4:15], dim=-1), atol=1e-6)


def test_pooling_spreads_a_spike_over_the_kernel_and_keeps_constants() -> None:
    """Average pooling along keys: a spike becomes a plateau of height 1/k and width k; constants stay."""
    x = torch.zeros(1, 31)
    x[0, 15] = 1.0
    y = pool_along_keys(x, 13)
    assert y.shape == x.shape
    assert torch.allclose(y[0, 9:22], torch.full((13,), 1 / 13))
    assert y[0, :9].abs().sum() == 0 and y[0, 22:].abs().sum() == 0
    c = torch.full((2, 3, 17), 0.5)
    assert torch.allclose(pool_along_keys(c, 13), c)  # edges average only over existing keys
    assert torch.equal(pool_along_keys(x, 1), x)


def test_head_vote_takes_max_over_the_chosen_heads_and_layers_only() -> None:
    """Only the named (layer, head) pairs vote; ``layers`` drops whole layers; nothing left is an error."""
    layer0 = torch.tensor([[0.9, 0.0, 0.1], [0.0, 0.2, 0.0]])  # (heads=2, n_ctx=3)
    layer1 = torch.tensor([[0.0, 0.0, 0.7], [0.3, 0.8, 0.0]])
    assert head_vote([layer0, layer1]).tolist() == pytest.approx([0.9, 0.8, 0.7])
    assert head_vote([layer0, layer1], [(0, 1), (1, 0)]).tolist() == pytest.approx([0.0, 0.2, 0.7])
    assert head_vote([layer0, layer1], layers=[1]).tolist() == pytest.approx([0.3, 0.8, 0.7])
    with pytest.raises(ValueError, match="no head is left"):
        head_vote([layer0, layer1], [(0, 0)], layers=[1])


def test_heads_by_layer_names_the_voters_of_each_layer() -> None:
    """The query passes form rows only for these heads, so they must be exactly the heads head_vote keeps."""
    assert heads_by_layer([2, 3], []) == ((0, 1), (0, 1, 2))  # no pairs: every head
    assert heads_by_layer([2, 3], [(1, 2), (1, 0), (0, 1), (1, 2)]) == ((1,), (0, 2))  # sorted, once each
    assert heads_by_layer([2, 3], [(0, 1), (1, 2)], layers=[1]) == ((), (2,))
    assert heads_by_layer([2, 3], [(0, 1), (5, 0), (0, 7)]) == ((1,), ())  # pairs the draft lacks are skipped
    with pytest.raises(ValueError, match="none of the heads"):
        heads_by_layer([2, 3], [(5, 0)])
    rows = [torch.rand(2, 4), torch.rand(3, 4)]
    pairs = [(1, 2), (0, 1)]
    chosen = [r[list(k)] for r, k in zip(rows, heads_by_layer([2, 3], pairs), strict=True)]
    assert torch.equal(head_vote(chosen), head_vote(rows, pairs))  # the pre-chosen rows vote alike


def test_question_vote_cancels_what_every_query_attends_to() -> None:
    """A sink that the null query attends to as much as the question drops out; the excess decides."""
    asked = [torch.tensor([[0.5, 0.3, 0.2], [0.6, 0.1, 0.3]])]  # (heads=2, n_ctx=3): position 0 is a sink
    null = [torch.tensor([[0.5, 0.4, 0.1], [0.6, 0.3, 0.1]])]
    vote = question_vote(asked, null)
    assert vote.tolist() == pytest.approx([0.0, -0.1, 0.2])  # max over heads of asked - null
    assert int(vote.argmax()) == 2  # the sink no longer wins
    assert question_vote(asked, null, [(0, 0)]).tolist() == pytest.approx([0.0, -0.1, 0.1])
    with pytest.raises(ValueError, match="layers"):
        question_vote(asked, [*null, *null])


def test_mean_over_steps_averages_query_steps() -> None:
    """The token importance is the mean over the query steps."""
    out = mean_over_steps([torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0]), torch.tensor([2.0, 2.0])])
    assert torch.allclose(out, torch.tensor([1.0, 1.0]))
    with pytest.raises(ValueError):
        mean_over_steps([])


def test_segment_means() -> None:
    """Chunks are scored by the mean of their tokens; an empty chunk scores 0."""
    s = np.array([1.0, 3.0, 5.0, 7.0])
    assert segment_means(s, np.array([0, 2, 3]), np.array([2, 4, 3])).tolist() == [2.0, 6.0, 0.0]


def test_planted_attention_spike_selects_its_chunk() -> None:
    """End to end on hand-made attention: the chunk holding the spiked token is the one kept."""
    words = [f"w{i}" for i in range(320)]
    text = " ".join(words)
    starts = np.cumsum([0] + [len(w) + 1 for w in words[:-1]])
    offsets = np.stack([starts, starts + np.array([len(w) for w in words])], axis=1)
    n = len(words)
    layers = [torch.full((2, n), 1.0 / n) for _ in range(3)]
    layers[1][0] = 0.0
    layers[1][0, 205] = 1.0  # token 205 lives in chunk 6 (tokens 192..223)
    step = head_vote([renormalize_over_context(r) for r in layers], kernel=13)  # the look-ahead scorer's step
    token_scores = mean_over_steps([step]).numpy()
    units = make_units(text, offsets, token_scores, chunk_size=32, snap_to_words=True)
    best = max(units, key=lambda u: u.score)
    assert best.start <= offsets[205, 0] < best.end
    chosen = select(
        [text], units, [u.score for u in units], [[]], budget=40, count=lambda t: len(t.split()), delimiter=" [...] "
    )
    kept = " ".join(text[s:e] for s, e in chosen.spans[0])
    assert "w205" in kept.split()
