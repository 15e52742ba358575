"""The embedded drafts on real text: a planted passkey survives heavy compression; long contexts work."""

from __future__ import annotations

import pytest

from crossprefill_agents import CompressionConfig, DraftModel, PromptCompressor, resolve_target

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
