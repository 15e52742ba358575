"""Ways in: a ready compressor, or draft/target names loaded once per process and shared."""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from typing import Any

import pytest
from crossprefill_agents import CompressionConfig, ModelNotAvailableError, PromptCompressor
from crossprefill_agents.testing import tiny_draft
from langchain_core.messages import AIMessage
from lc_fakes import ScriptedChatModel
from pydantic import ValidationError

from langchain_crossprefill import (
    CompressingChatModel,
    SpeculativePrefillCompressor,
    SpeculativePrefillDocumentCompressor,
    SpeculativePrefillMiddleware,
)
from langchain_crossprefill.middleware import MiddlewareOptions


@pytest.fixture
def loads(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """An empty process-wide registry, and PromptCompressor.from_pretrained replaced by a tiny draft that records
    each load."""
    PromptCompressor.release_shared()
    seen: list[str] = []

    def fake(name: str, *, local_files_only: bool = False) -> PromptCompressor:
        seen.append(name)
        return PromptCompressor(tiny_draft())

    monkeypatch.setattr(PromptCompressor, "from_pretrained", fake)
    yield seen
    PromptCompressor.release_shared()


def _same_draft(a: PromptCompressor, b: PromptCompressor) -> bool:
    return a.draft is b.draft and a.memo is b.memo and a.draft_cache is b.draft_cache


def test_a_named_draft_loads_once_and_components_share_it(loads: list[str]) -> None:
    """Four components naming one draft load it once and run over the same draft model, memo store and draft
    cache, each with its own budget and target."""
    a = SpeculativePrefillCompressor(draft="smollm2-135m", target=len)
    b = SpeculativePrefillDocumentCompressor(draft="smollm2-135m", target=len)
    c = CompressingChatModel(
        model=ScriptedChatModel(script=lambda _: AIMessage("")), draft="smollm2-135m", target=len, keep_rate=0.5
    )
    d = SpeculativePrefillMiddleware(draft="smollm2-135m", target="cl100k_base")
    assert loads == ["smollm2-135m"]
    assert a.prompt_compressor.config == b.prompt_compressor.config
    assert c.prompt_compressor.config.keep_rate == 0.5 and a.prompt_compressor.config.keep_rate == 0.25
    assert d.prompt_compressor.target.name == "cl100k_base" and a.prompt_compressor.target.count("ab c") == 4
    for other in (b, c, d):
        assert _same_draft(other.prompt_compressor, a.prompt_compressor)


def test_the_default_draft_is_smollm2(loads: list[str]) -> None:
    """With neither compressor= nor draft=, the embedded smollm2-135m is loaded."""
    SpeculativePrefillCompressor(target=len)
    assert loads == ["smollm2-135m"]


def test_budget_options_over_a_ready_compressor_derive_a_view(compressor: PromptCompressor) -> None:
    """keep_rate=/max_tokens=/min_tokens= with compressor=: a view over the same draft, target, memo and draft cache
    with that budget, the given one untouched; without them the given one is used as is."""
    assert SpeculativePrefillCompressor(compressor=compressor).prompt_compressor is compressor
    one = SpeculativePrefillCompressor(compressor=compressor, keep_rate=0.5, max_tokens=40).prompt_compressor
    two = SpeculativePrefillDocumentCompressor(compressor=compressor, keep_rate=0.5, max_tokens=40).prompt_compressor
    assert one is not compressor and one.config == two.config
    assert (one.config.keep_rate, one.config.max_tokens) == (0.5, 40) and compressor.config.keep_rate == 0.25
    assert _same_draft(one, compressor) and one.target is compressor.target


def test_a_compressor_and_draft_names_together_are_refused(compressor: PromptCompressor) -> None:
    """compressor= with draft=, target= or compression_config= is ambiguous: the error names both ways in."""
    for extra in ({"draft": "smollm2-135m"}, {"target": "cl100k_base"}, {"compression_config": CompressionConfig()}):
        with pytest.raises(ValueError, match="either compressor= or"):
            SpeculativePrefillCompressor(compressor=compressor, **extra)
    with pytest.raises(ValidationError):
        SpeculativePrefillCompressor(compressor="not a compressor")  # type: ignore[arg-type]


@pytest.mark.filterwarnings("ignore:A test tried to use socket")  # transformers looks up the hub host; blocked
def test_an_unknown_draft_name_says_how_to_install_one() -> None:
    """A draft that is neither an embedded alias nor found locally fails naming `crossprefill download` and the
    embedded aliases."""
    with pytest.raises(ModelNotAvailableError, match="crossprefill download") as info:
        SpeculativePrefillCompressor(draft="no-such-draft", target=len, local_files_only=True)
    assert "smollm2-135m" in str(info.value)


def test_options_are_validated(compressor: PromptCompressor) -> None:
    """Out-of-range budgets and session options fail at construction, with the option named."""
    bad: list[dict[str, Any]] = [
        {"keep_rate": 0},
        {"keep_rate": 1.5},
        {"max_tokens": -1},
        {"pressure_headroom": 0},
        {"max_sessions": 0},
        {"recompress": "always"},
        {"compress_roles": ("system",)},
    ]
    for options in bad:
        with pytest.raises(ValueError, match=next(iter(options)).split("_")[0]):
            SpeculativePrefillCompressor(compressor=compressor, **options)


def test_the_middleware_signature_matches_its_options() -> None:
    """Every keyword of SpeculativePrefillMiddleware is a documented option with the same default."""
    params = inspect.signature(SpeculativePrefillMiddleware.__init__).parameters
    fields = MiddlewareOptions.model_fields
    assert set(params) - {"self"} == set(fields)
    for name, field in fields.items():
        assert field.description, name
        default = params[name].default
        assert (tuple(default) if isinstance(default, (list, tuple)) else default) == field.default, name


def test_every_option_of_every_component_is_described() -> None:
    """Each pydantic field of the four components carries a description (what the README and IDEs show)."""
    own = {"compressor", "draft", "target", "compression_config", "keep_rate", "min_tokens", "local_files_only"}
    for cls in (
        SpeculativePrefillCompressor,
        CompressingChatModel,
        SpeculativePrefillDocumentCompressor,
        MiddlewareOptions,
    ):
        fields = cls.model_fields
        assert own <= set(fields), cls
        for name in own | {"max_tokens", "context_max_tokens", "drop_empty", "compress_roles", "prompt_max_tokens"}:
            if name in fields:
                assert fields[name].description, (cls.__name__, name)
