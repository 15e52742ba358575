"""The embedded drafts on real text: a planted passkey survives heavy compression; long contexts work."""

from __future__ import annotations

import pytest

from crossprefill_agents import CompressionConfig, PromptCompressor
from crossprefill_agents.draft import DraftModel, load_draft
from crossprefill_agents.targets import resolve_target

pytestmark = pytest.mark.integration

PASSKEY = "The pass key is 71432. Remember it. 71432 is the pass key."
QUESTION = "What is the pass key? The pass key is"


def haystack(essays: str, n_tokens: int, depth: float) -> str:
    """About ``n_tokens`` cl100k tokens of essay text with the passkey sentence at ``depth``."""
    enc = resolve_target("cl100k_base")
    text = essays[: n_tokens * 5]
    while enc.count(text) > n_tokens:
        text = text[: int(len(text) * 0.95)]
    cut = text.rfind(". ", 0, int(len(text) * depth)) + 2
    return text[:cut] + PASSKEY + " " + text[cut:]


@pytest.mark.parametrize("target", ["cl100k_base", "o200k_base"])
def test_planted_passkey_survives_keep_rate_0_1(real_draft: DraftModel, essays: str, target: str) -> None:
    """~3k tokens of essays with a passkey sentence in the middle: the key is in the 10% that is kept."""
    context = haystack(essays, 3000, 0.5)
    pc = PromptCompressor(real_draft, target=target)
    r = pc.compress(context, QUESTION, keep_rate=0.1)
    assert r.fallback_reason is None
    assert r.compressed_tokens <= r.budget_tokens and r.compressed_tokens >= 0.97 * r.budget_tokens
    assert "71432" in r.text
    assert r.text == " [...] ".join(context[s:e] for s, e in r.kept_spans)


def test_20k_token_context_with_the_8k_smollm2(smollm2: DraftModel, essays: str) -> None:
    """A 20k-token context, far past SmolLM2's 8k positions, is scored in windows and compressed."""
    context = haystack(essays, 20_000, 0.7)
    pc = PromptCompressor(smollm2, target="cl100k_base", config=CompressionConfig(keep_rate=0.1))
    r = pc.compress(context, QUESTION)
    assert r.fallback_reason is None and r.draft_tokens > 16_000
    assert r.original_tokens > 19_000 and r.compressed_tokens <= r.budget_tokens
    assert "71432" in r.text


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_incremental_scoring_matches_from_scratch(real_draft: DraftModel, essays: str, dtype: str) -> None:
    """Three agent turns of real text: scores from the kept draft cache equal fresh scoring, for the default and
    the published scorer. float32: max abs diff under 1e-4 of the largest score. bfloat16 rounds every block's
    activations, so a cache built over other blocks differs by a few percent of the largest score: 2.9-3.6% on one
    machine, and on an AMD EPYC (avx512_bf16) 12.5% at a single token, the context's first, which takes 2.4x the
    next score as the attention sink, with 99% of the scores within 3.2%. So bfloat16 is held to what selection
    reads: 99% of the scores within 5% of the largest, the same top quarter (>= 95% shared), correlation > 0.99."""
    import numpy as np

    from crossprefill_agents.draft import DraftPrefix

    draft = load_draft(real_draft.name.split("+", 1)[0], dtype=dtype)
    docs = [essays[i * 1500 : (i + 1) * 1500] for i in range(4)]  # ~350 tokens each
    for cfg in (CompressionConfig(), CompressionConfig().with_experimental(scorer="lookahead", heads=())):
        state = DraftPrefix(draft.name)
        draft.score_incremental(docs[:2], "What did the author work on?", config=cfg, state=state)
        for n in (3, 4):
            inc = draft.score_incremental(docs[:n], QUESTION, config=cfg, state=state)
            ref = draft.score(docs[:n], QUESTION, config=cfg)
            assert inc.reused_tokens > 0 and inc.prefilled_tokens < ref.prefilled_tokens / 2
            scale = max(float(np.abs(r).max()) for r in ref.scores)
            diff = max(float(np.abs(a - b).max()) for a, b in zip(inc.scores, ref.scores, strict=True))
            if dtype == "float32":
                assert diff < 1e-4 * max(1.0, scale)
            else:
                a, b = np.concatenate(inc.scores), np.concatenate(ref.scores)
                quarter = len(b) // 4
                shared = len(set(np.argsort(-a)[:quarter]) & set(np.argsort(-b)[:quarter])) / quarter
                assert float(np.percentile(np.abs(a - b), 99)) < 0.05 * max(1.0, scale), diff
                assert shared >= 0.95 and float(np.corrcoef(a, b)[0, 1]) > 0.99, (shared, diff)


def test_embedded_drafts_come_with_retrieval_heads_that_find_the_passkey(real_draft: DraftModel, essays: str) -> None:
    """Loading an embedded draft gives its 8 calibrated heads; with them the draft alone (no word-overlap fusion)
    keeps the passkey at keep 0.1. (A paraphrased needle, "Write down 58213 to open the door." asked as "Which
    number unlocks the entrance?", is not kept by SmolLM2 at keep 0.1: the heads find what the question names.)"""
    heads = real_draft.retrieval_heads
    layers, per_layer = real_draft.num_layers, real_draft.model.config.num_attention_heads
    assert heads is not None and len(heads) == 8
    assert all(0 <= a < layers and 0 <= b < per_layer for a, b in heads)
    context = haystack(essays, 3000, 0.3)
    pc = PromptCompressor(real_draft, target="cl100k_base", config=CompressionConfig(lexical_weight=0.0))
    r = pc.compress(context, QUESTION, keep_rate=0.1)
    assert r.fallback_reason is None and "71432" in r.text
