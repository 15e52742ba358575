"""CompressionConfig validates every knob on construction, with messages that say what to do."""

from __future__ import annotations

import dataclasses

import pytest

from crossprefill_agents import CompressionConfig


def test_defaults_are_the_measured_scorer() -> None:
    """Defaults: the question scorer on the draft's retrieval heads, pooled like the paper (kernel 13),
    sentence units fused with word overlap at 0.3, paragraphs ranked first at weight 2 (the levers
    benchmarks/results/ablation-scorer.md kept)."""
    c = CompressionConfig()
    assert (c.scorer, c.heads, c.pool_kernel, c.chunk_size, c.delimiter) == ("question", "auto", 13, 32, " [...] ")
    assert (c.unit, c.max_sentence_tokens, c.lexical_weight, c.attention_layers) == ("sentence", 256, 0.3, "all")
    assert c.paragraph_weight == 2.0
    assert c.paragraph_score == "mean"
    assert c.min_tokens == 256 and c.on_error == "fallback"


def test_paper_preset_is_the_published_method() -> None:
    """CompressionConfig.paper() is the faithful reference: 32-token chunks, draft attention only, all layers."""
    p = CompressionConfig.paper()
    assert (p.scorer, p.heads, p.lookahead, p.pool_kernel, p.chunk_size) == ("lookahead", (), 8, 13, 32)
    assert (p.unit, p.lexical_weight, p.attention_layers, p.snap_to_words) == ("chunk", 0.0, "all", False)
    assert p.paragraph_weight == 0.0


def test_config_is_frozen() -> None:
    """A config cannot be mutated after construction."""
    with pytest.raises(dataclasses.FrozenInstanceError):
        CompressionConfig().keep_rate = 0.5  # type: ignore[misc]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"keep_rate": 0.0}, r"\(0, 1\]"),
        ({"keep_rate": 1.5}, r"\(0, 1\]"),
        ({"max_tokens": -1}, ">= 0"),
        ({"min_tokens": -5}, ">= 0"),
        ({"lookahead": -1}, ">= 0"),
        ({"pool_kernel": 4}, "odd"),
        ({"chunk_size": 0}, ">= 1"),
        ({"window_tokens": 10}, ">= 64"),
        ({"timeout_s": 0}, "> 0"),
        ({"on_error": "ignore"}, "fallback"),
        ({"protect": ("(unclosed",)}, "not a valid regular expression"),
        ({"scorer": "attention"}, "'question' or 'lookahead'"),
        ({"heads": "best"}, "'auto'"),
        ({"max_sentence_tokens": 0}, ">= 1"),
    ],
)
def test_bad_values_raise_value_error_naming_the_range(kwargs: dict, message: str) -> None:
    """Each out-of-range knob raises ValueError that says the valid range."""
    with pytest.raises(ValueError, match=message):
        CompressionConfig(**kwargs)


def test_wrong_types_raise_type_error() -> None:
    """Wrong types are TypeErrors, including a bare string for protect."""
    with pytest.raises(TypeError):
        CompressionConfig(keep_rate="0.5")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="protect"):
        CompressionConfig(protect=r"\d+")  # type: ignore[arg-type]


def test_protect_is_compiled_and_stored_as_tuple() -> None:
    """protect accepts any sequence and keeps a tuple plus compiled patterns."""
    c = CompressionConfig(protect=[r"\d{5}", "KEY"])  # type: ignore[arg-type]
    assert c.protect == (r"\d{5}", "KEY")
    assert [p.pattern for p in c.protect_patterns] == [r"\d{5}", "KEY"]


def test_with_overrides_validates_and_keeps_the_rest() -> None:
    """Per-call budgets go through the same validation; None keeps the configured value."""
    c = CompressionConfig(keep_rate=0.3, chunk_size=16)
    assert c.with_overrides() is c
    d = c.with_overrides(keep_rate=0.1, max_tokens=50)
    assert (d.keep_rate, d.max_tokens, d.chunk_size) == (0.1, 50, 16)
    with pytest.raises(ValueError):
        c.with_overrides(keep_rate=2.0)
