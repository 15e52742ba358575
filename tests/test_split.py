"""The split attention's body after a cached past: two fused passes merged by log-sum-exp, as one masked pass."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import make_text

from crossprefill_agents import CompressionConfig
from crossprefill_agents.draft import DraftModel, DraftPrefix, runner, split
from crossprefill_agents.draft.split import additive_mask, attend_after_past


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(("heads", "kv_heads"), [(4, 4), (9, 3)])
@pytest.mark.parametrize(("rows", "past"), [(1, 5), (7, 1), (40, 33), (64, 300), (1100, 700)])
def test_attend_after_past_equals_one_masked_pass(
    dtype: torch.dtype, heads: int, kv_heads: int, rows: int, past: int
) -> None:
    """Rows that read every cached key and themselves causally: the same output as sdpa under that mask, for plain
    and grouped key/value heads, in float32 and (to its rounding) bfloat16."""
    g = torch.Generator().manual_seed(rows * 1000 + past)
    q = torch.randn(1, heads, rows, 16, generator=g).to(dtype)
    k = torch.randn(1, kv_heads, past + rows, 16, generator=g).to(dtype)
    v = torch.randn(1, kv_heads, past + rows, 16, generator=g).to(dtype)
    mask = additive_mask(torch.ones((rows, past + rows), dtype=torch.bool).tril(past), dtype)
    want = torch.nn.functional.scaled_dot_product_attention(
        q, k, v, attn_mask=mask, scale=0.25, enable_gqa=kv_heads < heads
    ).transpose(1, 2)
    got = attend_after_past(q, k, v, past, 0.25)
    assert got.shape == (1, rows, heads, 16) and got.dtype == dtype
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(got.float(), want.float(), rtol=tol, atol=tol)
    # every row reads the past: a change to the first cached key's value moves the first row and the last
    v2 = v.clone()
    v2[:, :, 0] += 10
    moved = attend_after_past(q, k, v2, past, 0.25)
    for row in (0, -1):
        assert not torch.allclose(moved[:, row].float(), got[:, row].float())
    with pytest.raises(ValueError, match="past keys"):
        attend_after_past(q, k, v, 0, 0.25)


def test_prefill_blocks_after_a_past_score_as_under_a_mask(tiny_llama_draft: DraftModel, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Prefill blocks that follow a cached past (a one-pass score, a session's next turn, the merged forward's
    last block) run the two-pass attention from PAST_SPLIT_ROWS rows on: the scores equal those of the masked
    single pass, and the two-pass attention did run (each layer of each such block)."""
    calls = []
    real = split.attend_after_past

    def counted(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(args[0].shape[2])
        return real(*args, **kwargs)

    monkeypatch.setattr(split, "attend_after_past", counted)
    docs = [make_text(180, seed=41), make_text(140, seed=42)]
    q = "where did the bridge go?"
    layers = tiny_llama_draft.num_layers
    # blocks of 64; under a deadline, timed blocks sized by speed (the merged forward then holds no body)
    for config in (CompressionConfig(prefill_chunk_tokens=64), CompressionConfig(timeout_s=60.0)):
        runs = []
        for rows in (16, 10**9):
            monkeypatch.setattr(runner, "PAST_SPLIT_ROWS", rows)
            monkeypatch.setattr(split, "PAST_SPLIT_ROWS", rows)
            state = DraftPrefix(tiny_llama_draft.name)
            first = tiny_llama_draft.score_incremental(docs[:1], q, config=config, state=state)
            second = tiny_llama_draft.score_incremental(docs, q, config=config, state=state)
            whole = tiny_llama_draft.score(docs, q, config=config)
            runs.append((first, second, whole, len(calls)))
            calls.clear()
        assert runs[0][3] > 0 and runs[0][3] % layers == 0 and runs[1][3] == 0
        for split_run, masked_run in zip(runs[0][:3], runs[1][:3], strict=True):
            for a, b in zip(split_run.scores, masked_run.scores, strict=True):
                np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_gemma_prefill_keeps_its_own_attention(tiny_gemma_draft: DraftModel, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A draft with sliding-window layers never runs the split attention: its prefill stays on sdpa."""
    monkeypatch.setattr(runner, "PAST_SPLIT_ROWS", 1)
    monkeypatch.setattr(split, "PAST_SPLIT_ROWS", 1)
    monkeypatch.setattr(split, "split_attention", lambda *a, **k: pytest.fail("gemma3 ran the split attention"))
    monkeypatch.setattr(runner, "register", lambda: pytest.fail("gemma3 switched to the split attention"))
    scores = tiny_gemma_draft.score(
        [make_text(200, seed=43)], "who?", config=CompressionConfig(prefill_chunk_tokens=32)
    )
    assert np.isfinite(scores.scores[0]).all()
