"""timeout_s on the real SmolLM2 draft: the call is answered within the timeout's 20% or 0.5 s, failing open."""

from __future__ import annotations

import time

import pytest

from crossprefill_agents import CompressionConfig, PromptCompressor
from crossprefill_agents.draft import DraftModel
from crossprefill_agents.targets import resolve_target

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("timeout_s", [0.5, 2.0])
def test_timeout_bounds_a_3k_token_call(smollm2: DraftModel, essays: str, timeout_s: float) -> None:
    """~3.4k cl100k tokens (a 10-40 s compression on CPU) with timeout_s: answered within timeout_s * 1.2 + 0.5 s,
    the context unchanged and the reason naming the timeout (it took 11.6 s at timeout_s=0.5 before)."""
    count = resolve_target("cl100k_base").count
    context = essays[:14500]
    assert 3000 < count(context) < 3800
    pc = PromptCompressor(smollm2, target="cl100k_base", config=CompressionConfig(timeout_s=timeout_s))
    t0 = time.monotonic()
    r = pc.compress(context, "What did the author work on before college?", keep_rate=0.25)
    elapsed = time.monotonic() - t0
    assert elapsed <= timeout_s * 1.2 + 0.5, elapsed
    if r.fallback_reason is not None:
        assert "timeout" in r.fallback_reason and r.text == context
