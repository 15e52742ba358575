"""CompressionConfig and its experimental levers validate every knob on construction, with messages that say
what to do."""

from __future__ import annotations

import time

import pytest

from crossprefill_agents import CompressionConfig, SessionConfig
from crossprefill_agents.config import ExperimentalOptions


def test_defaults_are_the_measured_scorer() -> None:
    """Defaults: the question scorer on the draft's retrieval heads, pooled like the paper (kernel 13),
    sentence units fused with word overlap at 0.3, paragraphs read whole and ranked first at weight 2 (the levers
    benchmarks/results/ablation-scorer.md kept)."""
    c = CompressionConfig()
    x = c.experimental
    assert (x.scorer, x.heads, x.pool_kernel, x.chunk_size, c.delimiter) == ("question", "auto", 13, 32, " [...] ")
    assert (x.unit, x.max_sentence_tokens, c.lexical_weight, x.attention_layers) == ("sentence", 256, 0.3, "all")
    assert (c.paragraph_weight, x.paragraph_score) == (2.0, "mean")
    assert c.min_tokens == 256 and c.on_error == "fallback"


def test_paper_preset_is_the_published_method() -> None:
    """CompressionConfig.paper() is the faithful reference: 32-token chunks, draft attention only, all layers."""
    p = CompressionConfig.paper()
    x = p.experimental
    assert (x.scorer, x.heads, x.lookahead, x.pool_kernel, x.chunk_size) == ("lookahead", (), 8, 13, 32)
    assert (x.unit, p.lexical_weight, x.attention_layers, x.snap_to_words) == ("chunk", 0.0, "all", False)
    assert p.paragraph_weight == 0.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"keep_rate": 0.0}, r"\(0, 1\]"),
        ({"keep_rate": 1.5}, r"\(0, 1\]"),
        ({"max_tokens": -1}, ">= 0"),
        ({"min_tokens": -5}, ">= 0"),
        ({"window_tokens": 10}, ">= 128"),
        ({"window_tokens": 64}, ">= 128"),
        ({"prefill_chunk_tokens": 8}, ">= 16"),
        ({"timeout_s": 0}, "> 0"),
        ({"on_error": "ignore"}, "fallback"),
        ({"protect": ("(unclosed",)}, "not a valid regular expression"),
        ({"lexical_weight": 1.5}, r"\[0, 1\]"),
        ({"paragraph_weight": float("inf")}, "finite"),
    ],
)
def test_bad_values_raise_value_error_naming_the_range(kwargs: dict, message: str) -> None:
    """Each out-of-range knob raises ValueError that says the valid range."""
    with pytest.raises(ValueError, match=message):
        CompressionConfig(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"lookahead": -1}, ">= 0"),
        ({"pool_kernel": 4}, "odd"),
        ({"chunk_size": 0}, ">= 1"),
        ({"scorer": "attention"}, "'question' or 'lookahead'"),
        ({"heads": "best"}, "'auto'"),
        ({"heads": ((0, -1),)}, "ints >= 0"),
        ({"max_sentence_tokens": 0}, ">= 1"),
        ({"unit": "word"}, "'chunk' or 'sentence'"),
        ({"attention_layers": "sliding"}, "'all' or 'global'"),
        ({"query_position": "before"}, "'after' or 'both'"),
        ({"paragraph_score": "max"}, "'mean' or 'best_unit'"),
    ],
)
def test_bad_experimental_values_raise_value_error(kwargs: dict, message: str) -> None:
    """The research levers are validated the same way, whether built directly or through with_experimental."""
    with pytest.raises(ValueError, match=message):
        ExperimentalOptions(**kwargs)
    with pytest.raises(ValueError, match=message):
        CompressionConfig().with_experimental(**kwargs)


@pytest.mark.parametrize("bad", [-0.5, float("inf"), float("nan"), True, "1"])
def test_paragraph_weight_must_be_a_finite_non_negative_number(bad: object) -> None:
    """paragraph_weight refuses negatives, infinities, NaN, bools and strings alike."""
    with pytest.raises(ValueError, match="paragraph_weight"):
        CompressionConfig(paragraph_weight=bad)  # type: ignore[arg-type]


def test_wrong_types_raise_type_error() -> None:
    """Wrong types are TypeErrors, including a bare string for protect and a dict for experimental."""
    with pytest.raises(TypeError):
        CompressionConfig(keep_rate="0.5")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="protect"):
        CompressionConfig(protect=r"\d+")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="ExperimentalOptions"):
        CompressionConfig(experimental={"scorer": "lookahead"})  # type: ignore[arg-type]


def test_protect_is_compiled_and_stored_as_tuple() -> None:
    """protect accepts any sequence and keeps a tuple plus compiled patterns."""
    c = CompressionConfig(protect=[r"\d{5}", "KEY"])  # type: ignore[arg-type]
    assert c.protect == (r"\d{5}", "KEY")
    assert [p.pattern for p in c.protect_patterns] == [r"\d{5}", "KEY"]


def test_with_overrides_validates_and_keeps_the_rest() -> None:
    """Per-call budgets go through the same validation; None keeps the configured value."""
    c = CompressionConfig(keep_rate=0.3, max_tokens=80).with_experimental(chunk_size=16)
    assert c.with_overrides() is c
    d = c.with_overrides(keep_rate=0.1)
    assert (d.keep_rate, d.max_tokens, d.experimental.chunk_size) == (0.1, 80, 16)
    assert c.with_overrides(max_tokens=50).keep_rate == 0.3
    with pytest.raises(ValueError):
        c.with_overrides(keep_rate=2.0)


def test_deadline_is_timeout_from_now() -> None:
    """deadline() is timeout_s past the monotonic clock when asked, None without a timeout."""
    assert CompressionConfig().deadline() is None
    before = time.monotonic()
    deadline = CompressionConfig(timeout_s=2.0).deadline()
    assert deadline is not None and before + 2.0 <= deadline <= time.monotonic() + 2.0


def test_session_config_validates_its_knobs() -> None:
    """Session knobs fail where they are written: roles as a sequence without 'system', a bool history flag."""
    assert SessionConfig(compress_roles=["tool"]).compress_roles == ("tool",)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="not a str"):
        SessionConfig(compress_roles="tool")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="never compressed"):
        SessionConfig(compress_roles=("tool", "system"))
    with pytest.raises(TypeError, match="bool"):
        SessionConfig(compress_history="yes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="on_budget_pressure"):
        SessionConfig(recompress="always")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        SessionConfig(pressure_headroom=0.0)
