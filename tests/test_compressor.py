"""PromptCompressor end to end on tiny random-init llama and gemma3 drafts."""

from __future__ import annotations

import asyncio
import itertools
import logging
from dataclasses import replace

import numpy as np
import pytest
import torch
from helpers import make_text

from crossprefill_agents import CompressionConfig, DraftError, PromptCompressor, SessionConfig
from crossprefill_agents.draft import DraftModel


def words(t: str) -> int:
    return len(t.split())


def assert_valid(r, context: str, delimiter: str = " [...] ") -> None:  # type: ignore[no-untyped-def]
    spans = r.kept_spans
    assert all(isinstance(s, int) and isinstance(e, int) for s, e in spans)
    assert all(0 <= s < e <= len(context) for s, e in spans)
    assert all(a[1] < b[0] for a, b in itertools.pairwise(spans))
    assert r.text == delimiter.join(context[s:e] for s, e in spans)


def test_compress_keeps_the_budget_in_target_tokens(tiny_draft: DraftModel) -> None:
    """The achieved count is the target's real count of the text, within 3% below the keep rate."""
    context = make_text(1500, seed=1)
    pc = PromptCompressor(tiny_draft, target=words)
    r = pc.compress(context, "what is the secret passkey?", keep_rate=0.25)
    assert_valid(r, context)
    assert r.original_tokens == words(context)
    assert r.compressed_tokens == words(r.text) <= r.budget_tokens == round(0.25 * r.original_tokens)
    assert r.compressed_tokens >= 0.97 * r.budget_tokens
    assert r.keep_rate == pytest.approx(r.compressed_tokens / r.original_tokens)
    assert r.draft_tokens > 0 and r.fallback_reason is None
    assert r.timings.draft_prefill_s > 0 and r.timings.query_s > 0 and r.timings.total_s > 0


def test_max_tokens_is_never_exceeded(tiny_llama_draft: DraftModel) -> None:
    """max_tokens is a hard cap on the compressed context's target tokens."""
    context = make_text(1200, seed=2)
    pc = PromptCompressor(tiny_llama_draft, target=words)
    for cap in (50, 137, 400):
        r = pc.compress(context, "money", max_tokens=cap)
        assert r.compressed_tokens <= cap and r.budget_tokens == cap
        assert_valid(r, context)


def test_short_empty_and_whitespace_contexts_pass_through(tiny_llama_draft: DraftModel) -> None:
    """Under min_tokens, empty or whitespace-only: returned unchanged, draft not run."""
    pc = PromptCompressor(tiny_llama_draft, target=words)
    for ctx in ("", "   \n\t ", make_text(100)):
        r = pc.compress(ctx, "q")
        assert r.text == ctx and r.keep_rate == 1.0 and r.draft_tokens == 0 and r.fallback_reason is None
    r = pc.compress(make_text(400), "q", keep_rate=1.0)
    assert r.keep_rate == 1.0 and r.draft_tokens == 0


def test_bad_inputs_raise_clear_errors(tiny_llama_draft: DraftModel) -> None:
    """Non-strings are TypeErrors naming the argument; out-of-range budgets are ValueErrors with the range."""
    pc = PromptCompressor(tiny_llama_draft, target=words)
    with pytest.raises(TypeError, match="context"):
        pc.compress(b"bytes", "q")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="query"):
        pc.compress("text", None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"documents\[1\]"):
        pc.compress_documents(["a", 3], "q")  # type: ignore[list-item]
    with pytest.raises(TypeError, match="documents"):
        pc.compress_documents("a single string", "q")
    for bad in (0, -0.1, 1.01):
        with pytest.raises(ValueError, match=r"\(0, 1\]"):
            pc.compress("text", "q", keep_rate=bad)
    with pytest.raises(ValueError, match=">= 0"):
        pc.compress("text", "q", max_tokens=-3)


@pytest.mark.parametrize(
    "odd",
    [
        "漢字かな交じり文。" * 40,
        "😀👍🏽 emoji 🇫🇷 " * 60,
        "e\u0301a\u0308 combining " * 80,
        "lone \ud800 surrogate \udfff here " * 60,
        "ctrl \x00\x07\x1b[0m \r\n text " * 60,
    ],
)
def test_any_unicode_gives_valid_slices(tiny_draft: DraftModel, odd: str) -> None:
    """CJK, emoji, combining marks, lone surrogates, control characters: every span is a valid slice."""
    context = make_text(300, seed=3) + " " + odd + " " + make_text(300, seed=4)
    pc = PromptCompressor(tiny_draft, target=len, config=CompressionConfig(min_tokens=0))
    r = pc.compress(context, "what? 漢字 😀", keep_rate=0.3)
    assert r.fallback_reason is None
    assert_valid(r, context)
    assert 0 < r.compressed_tokens <= r.budget_tokens


def test_protected_patterns_are_never_dropped(tiny_draft: DraftModel) -> None:
    """Every match of a protect regex survives, even at a tiny keep rate."""
    keys = [f"KEY-{i:04d}" for i in range(5)]
    parts = [make_text(200, seed=10 + i) + f" {k} " for i, k in enumerate(keys)]
    context = "".join(parts)
    pc = PromptCompressor(tiny_draft, target=words, config=CompressionConfig(protect=(r"KEY-\d{4}",)))
    r = pc.compress(context, "anything", keep_rate=0.05)
    assert all(k in r.text for k in keys)
    assert_valid(r, context)


class _Broken(torch.nn.Module):
    """A model whose forward always fails, like a corrupt checkpoint or an out-of-memory error."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.config = inner.config

    def forward(self, input_ids=None, cache=None, **kw):  # type: ignore[no-untyped-def]
        raise RuntimeError("CUDA out of memory (simulated)")


def test_draft_failure_falls_back_unchanged_and_logs(tiny_llama_draft, tiny_tokenizer, caplog) -> None:  # type: ignore[no-untyped-def]
    """When the draft fails, the context comes back unchanged with fallback_reason set and a warning."""
    broken = DraftModel(_Broken(tiny_llama_draft.model), tiny_tokenizer)
    context = make_text(800, seed=5)
    pc = PromptCompressor(broken, target=words)
    with caplog.at_level(logging.WARNING):
        r = pc.compress(context, "q")
    assert r.text == context and r.kept_spans == ((0, len(context)),) and r.keep_rate == 1.0
    assert r.fallback_reason is not None and "out of memory" in r.fallback_reason
    assert any("passing the context through unchanged" in m for m in caplog.messages)
    strict = PromptCompressor(broken, target=words, config=CompressionConfig(on_error="raise"))
    with pytest.raises(RuntimeError, match="out of memory"):
        strict.compress(context, "q")


def test_timeout_falls_back(tiny_llama_draft: DraftModel) -> None:
    """A draft slower than timeout_s gives a pass-through result saying it timed out."""
    cfg = CompressionConfig(timeout_s=1e-9)
    r = PromptCompressor(tiny_llama_draft, target=words, config=cfg).compress(make_text(800), "q")
    assert r.fallback_reason is not None and "DraftTimeoutError" in r.fallback_reason


def test_long_context_is_scored_in_windows(tiny_draft: DraftModel) -> None:
    """A context longer than the draft's window is scored in several windows, each ending with the query."""
    context = make_text(2500, seed=6)
    cfg = CompressionConfig(window_tokens=256)
    scored = tiny_draft.score([context], "secret passkey", config=cfg)
    n = len(scored.tokens[0].ids)
    assert scored.windows >= n // 256 + 1
    assert scored.scores[0].shape == (n,) and np.all(np.isfinite(scored.scores[0]))
    paper = tiny_draft.score([context], "secret passkey", config=replace(CompressionConfig.paper(), window_tokens=256))
    assert paper.windows >= n // 256 + 1 and np.all(paper.scores[0] >= 0)  # attention shares, never negative
    r = PromptCompressor(tiny_draft, target=words, config=cfg).compress(context, "secret passkey", keep_rate=0.2)
    assert r.fallback_reason is None and r.compressed_tokens <= r.budget_tokens


def test_single_window_scores_do_not_depend_on_the_window_limit(tiny_llama_draft: DraftModel) -> None:
    """When the context fits, a smaller prefill block or larger window limit gives the same scores."""
    context = make_text(600, seed=7)
    a = tiny_llama_draft.score([context], "q", config=CompressionConfig(prefill_chunk_tokens=2048))
    b = tiny_llama_draft.score([context], "q", config=CompressionConfig(prefill_chunk_tokens=64, window_tokens=1900))
    assert a.windows == b.windows == 1
    np.testing.assert_allclose(a.scores[0], b.scores[0], atol=1e-4)


def test_lookahead_stops_at_the_models_own_eos(tiny_llama_draft: DraftModel, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """If every greedy token is an EOS id, only the last prompt token is a query (no look-ahead)."""
    context = make_text(400, seed=8)
    cfg = CompressionConfig().with_experimental(scorer="lookahead", lookahead=8)
    full = tiny_llama_draft.score([context], "q", config=cfg)
    monkeypatch.setattr(tiny_llama_draft, "eos_ids", frozenset(range(len(tiny_llama_draft.tokenizer))))
    stopped = tiny_llama_draft.score([context], "q", config=cfg)
    assert full.prefilled_tokens - stopped.prefilled_tokens == 8


def test_attention_implementation_is_restored(tiny_draft: DraftModel) -> None:
    """Scoring switches to eager only for the query steps and restores the model's own attention."""
    before = tiny_draft.model.config._attn_implementation
    tiny_draft.score([make_text(300)], "q", config=CompressionConfig())
    assert tiny_draft.model.config._attn_implementation == before


def test_compress_documents_shares_one_budget(tiny_draft: DraftModel) -> None:
    """One budget over all documents, one result per document, spans into each document."""
    docs = [make_text(300 + 100 * i, seed=20 + i) for i in range(4)]
    pc = PromptCompressor(tiny_draft, target=words)
    rs = pc.compress_documents(docs, "money", keep_rate=0.25)
    assert len(rs) == 4
    total = sum(words(d) for d in docs)
    assert sum(r.compressed_tokens for r in rs) <= round(0.25 * total)
    assert sum(r.compressed_tokens for r in rs) >= 0.97 * round(0.25 * total)
    for r, d in zip(rs, docs, strict=True):
        assert_valid(r, d)
        assert r.original_tokens == words(d)


def test_acompress_equals_compress(tiny_llama_draft: DraftModel) -> None:
    """The async API gives the same result as the sync one."""
    pc = PromptCompressor(tiny_llama_draft, target=words)
    context = make_text(700, seed=9)
    a = pc.compress(context, "q", keep_rate=0.3)
    b = asyncio.run(pc.acompress(context, "q", keep_rate=0.3))
    assert (a.text, a.kept_spans) == (b.text, b.kept_spans)
    c = asyncio.run(pc.acompress_documents([context], "q", keep_rate=0.3))
    assert c[0].kept_spans == a.kept_spans


def test_constructor_from_ready_objects(tiny_llama_draft: DraftModel) -> None:
    """PromptCompressor(model, tokenizer) builds the draft; a missing tokenizer is a clear TypeError."""
    pc = PromptCompressor(tiny_llama_draft.model, tiny_llama_draft.tokenizer, target="cl100k_base")
    assert pc.target.name == "cl100k_base"
    with pytest.raises(TypeError, match="tokenizer"):
        PromptCompressor(tiny_llama_draft.model)
    with pytest.raises(TypeError, match="CompressionConfig"):
        PromptCompressor(tiny_llama_draft, config={"keep_rate": 0.5})  # type: ignore[arg-type]


def test_query_longer_than_the_window_falls_back(tiny_llama_draft: DraftModel) -> None:
    """A query that leaves no room in the draft's window is a draft failure: passed through, reason given."""
    cfg = CompressionConfig(window_tokens=128)
    r = PromptCompressor(tiny_llama_draft, target=words, config=cfg).compress(make_text(600), make_text(200))
    assert r.fallback_reason is not None and "window" in r.fallback_reason
    with pytest.raises(DraftError):
        tiny_llama_draft.score([make_text(600)], make_text(200), config=cfg)


def test_compress_scored_reuses_one_scoring_pass(tiny_llama_draft: DraftModel) -> None:
    """Selecting from an earlier scoring pass equals compressing from scratch, for any budget."""
    pc = PromptCompressor(tiny_llama_draft, target=words)
    context = make_text(900, seed=30)
    scored = tiny_llama_draft.score([context], "money", config=pc.config)
    for rate in (0.1, 0.5):
        a = pc.compress(context, "money", keep_rate=rate)
        (b,) = pc.compress_scored([context], scored, keep_rate=rate)
        assert (a.text, a.kept_spans, a.compressed_tokens) == (b.text, b.kept_spans, b.compressed_tokens)
    with pytest.raises(ValueError, match="documents"):
        pc.compress_scored([context, context], scored)


def test_with_config_shares_the_draft_and_stores(tiny_llama_draft: DraftModel) -> None:
    """with_config gives a compressor with another budget on the same draft, target, memo and draft cache; the
    original keeps its config, and each compresses to its own budget."""
    pc = PromptCompressor(tiny_llama_draft, target=words)
    other = pc.with_config(CompressionConfig(keep_rate=0.5))
    assert other.draft is pc.draft and other.target is pc.target
    assert other.memo is pc.memo and other.draft_cache is pc.draft_cache
    assert pc.config.keep_rate == 0.25 and other.config.keep_rate == 0.5
    context = make_text(900, seed=31)
    assert other.compress(context, "q").compressed_tokens > pc.compress(context, "q").compressed_tokens
    with pytest.raises(TypeError, match="CompressionConfig"):
        pc.with_config({"keep_rate": 0.5})  # type: ignore[arg-type]


def test_session_takes_typed_options_or_a_config(tiny_llama_draft: DraftModel) -> None:
    """pc.session() builds its SessionConfig from typed keywords (None keeps a default), or takes one whole;
    both at once is a TypeError."""
    pc = PromptCompressor(tiny_llama_draft, target=words)
    s = pc.session(compress_roles=["tool"], max_tokens=500, session_id="t1")
    assert s.config == SessionConfig(compress_roles=("tool",), max_tokens=500) and s.session_id == "t1"
    assert pc.session().config == SessionConfig()
    with pytest.raises(TypeError, match="not both"):
        pc.session(SessionConfig(), max_tokens=10)
    with pytest.raises(ValueError, match="on_budget_pressure"):
        pc.session(recompress="always")  # type: ignore[arg-type]


def test_shared_loads_a_draft_once_per_process(tiny_llama_draft: DraftModel, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """PromptCompressor.shared loads each draft name once; other targets and configs are views over the same
    draft, memo store and draft cache; release_shared forgets them so the next call loads again."""
    loads: list[str] = []

    def fake(name: str, *, local_files_only: bool = False) -> PromptCompressor:
        loads.append(name)
        return PromptCompressor(tiny_llama_draft)

    PromptCompressor.release_shared()
    monkeypatch.setattr(PromptCompressor, "from_pretrained", fake)
    try:
        base = PromptCompressor.shared("tiny")
        assert PromptCompressor.shared("tiny") is base
        other = PromptCompressor.shared("tiny", target="cl100k_base", config=CompressionConfig(keep_rate=0.5))
        assert loads == ["tiny"] and other.target.name == "cl100k_base" and other.config.keep_rate == 0.5
        assert (other.draft, other.memo, other.draft_cache) == (base.draft, base.memo, base.draft_cache)
        assert PromptCompressor.shared("tiny", target="cl100k_base").target is other.target  # resolved once
        PromptCompressor.release_shared()
        PromptCompressor.shared("tiny")
        assert loads == ["tiny", "tiny"]
        with pytest.raises(TypeError, match="non-empty str"):
            PromptCompressor.shared("")
    finally:
        PromptCompressor.release_shared()


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
@pytest.mark.parametrize("scorer", ["question", "lookahead"])
def test_non_finite_draft_weights_fail_open(value: float, scorer: str) -> None:
    """A draft with NaN or inf weights gives non-finite attention: the context passes through with a
    fallback_reason that says so (compress and sessions), never a silent ranking of all-zero scores."""
    from crossprefill_agents.testing import tiny_draft

    draft = tiny_draft("llama")
    with torch.no_grad():
        draft.model.model.layers[0].self_attn.q_proj.weight.fill_(value)
    pc = PromptCompressor(draft, target=words, config=CompressionConfig().with_experimental(scorer=scorer))
    context = make_text(400, seed=3)
    r = pc.compress(context, "what is the secret passkey?", keep_rate=0.3)
    assert r.text == context and r.fallback_reason is not None and "not finite" in r.fallback_reason
    turn = pc.session().compress_messages(
        [{"role": "user", "content": "the passkey?"}, {"role": "tool", "content": context}]
    )
    assert turn.messages[1]["content"] == context
    assert turn.stats.fallback_reason is not None and "not finite" in turn.stats.fallback_reason


def test_non_finite_scores_given_to_compress_scored_fail_open() -> None:
    """Scores a caller hands to compress_scored with a NaN in them pass the context through with a reason,
    never a selection ranked on NaN."""
    import numpy as np

    from crossprefill_agents.testing import tiny_draft

    pc = PromptCompressor(tiny_draft("llama"), target=words, config=CompressionConfig(min_tokens=0))
    context = make_text(300, seed=5)
    scores = pc.draft.score([context], "which river?", config=pc.config)
    bad = scores.scores[0].copy()
    bad[len(bad) // 2] = np.nan
    (r,) = pc.compress_scored([context], replace(scores, scores=(bad,)), keep_rate=0.3)
    assert r.text == context and r.fallback_reason is not None and "not finite" in r.fallback_reason
    (ok,) = pc.compress_scored([context], scores, keep_rate=0.3)
    assert ok.fallback_reason is None and ok.compressed_tokens <= ok.budget_tokens
