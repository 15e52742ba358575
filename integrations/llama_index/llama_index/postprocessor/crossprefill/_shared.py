"""One loaded draft per name in a process, shared by every component that names it.

``SpeculativePrefillPostprocessor(draft="smollm2-135m", target="cl100k_base")`` and a
``CompressingLLM`` built with the same names get compressors over the same draft (loaded
once through :meth:`PromptCompressor.shared`), memo store and draft cache; a different
:class:`CompressionConfig` gets a view of it, never a second copy of the weights.
"""

from __future__ import annotations

from crossprefill_agents import CompressionConfig, PromptCompressor

__all__ = ["check_budget", "resolve_compressor", "shared_compressor", "with_budget"]


def check_budget(keep_rate: float | None, max_tokens: int | None) -> None:
    """Raise the core's own TypeError / ValueError for a bad budget, before any model is loaded."""
    CompressionConfig().with_overrides(keep_rate=keep_rate, max_tokens=max_tokens)


def shared_compressor(draft: str, target: str | None, config: CompressionConfig | None = None) -> PromptCompressor:
    """The process-wide compressor for ``(draft, target, config)`` (:meth:`PromptCompressor.shared`)."""
    if not isinstance(draft, str) or not draft:
        raise TypeError(f"draft must be a non-empty draft name (e.g. 'smollm2-135m'), got {draft!r}")
    if target is not None and not isinstance(target, str):
        raise TypeError(
            f"target must be a tokenizer name (e.g. 'cl100k_base') or None, got {type(target).__name__}; "
            "for a tokenizer object or a callable, build PromptCompressor(..., target=...) and pass compressor="
        )
    return PromptCompressor.shared(draft, target=target, config=config)


def resolve_compressor(
    compressor: PromptCompressor | None,
    draft: str | None,
    target: str | None,
    config: CompressionConfig | None,
    *,
    default_draft: str = "smollm2-135m",
) -> PromptCompressor:
    """The compressor a component was given, or the shared one for its names (``default_draft`` when none)."""
    if config is not None and not isinstance(config, CompressionConfig):
        raise TypeError(f"config must be a crossprefill_agents.CompressionConfig, got {type(config).__name__}")
    if compressor is not None:
        if not isinstance(compressor, PromptCompressor):
            raise TypeError(
                f"compressor must be a crossprefill_agents.PromptCompressor, got {type(compressor).__name__}"
            )
        if draft is not None or target is not None or config is not None:
            raise TypeError(
                "pass either compressor= (a ready PromptCompressor) or draft=/target=/config= (loaded for you), "
                "not both"
            )
        return compressor
    return shared_compressor(draft if draft is not None else default_draft, target, config)


def with_budget(pc: PromptCompressor, keep_rate: float | None, max_tokens: int | None) -> PromptCompressor:
    """``pc`` itself when no budget is given, else a view of it (same draft, target, memo store and draft cache)
    whose config carries the budget (sessions read the budget from their compressor's config)."""
    if keep_rate is None and max_tokens is None:
        return pc
    return pc.with_config(pc.config.with_overrides(keep_rate=keep_rate, max_tokens=max_tokens))
