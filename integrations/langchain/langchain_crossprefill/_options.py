"""The options every component shares, and the one place drafts are loaded.

A component takes either a ready ``compressor=PromptCompressor(...)`` or a ``draft=`` name
(with ``target=`` and ``compression_config=``). Named drafts are loaded once per process
through :meth:`PromptCompressor.shared`: two components naming the same
draft share one model (and its memo store), whatever their budgets.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Literal

from crossprefill_agents import CompressionConfig, PromptCompressor, SessionConfig
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_validator

logger = logging.getLogger(__name__)

DEFAULT_DRAFT = "smollm2-135m"
METADATA_KEY = "crossprefill"  # the one key our stats live under, in message and document metadata
DEFAULT_ROLES = ("tool", "function", "context", "document")


class DraftOptions(BaseModel):
    """Which compressor a component uses and how hard it cuts each context."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    compressor: PromptCompressor | None = Field(
        default=None,
        exclude=True,
        description="A ready PromptCompressor, used as is (shared, never copied). Pass it or draft=, not both.",
    )
    draft: str | None = Field(
        default=None,
        description=(
            "The draft to load when no compressor is given: an embedded alias (smollm2-135m, gemma3-270m; "
            "`crossprefill download NAME` installs one), a .gguf file, a local folder or a hub id. Loaded once "
            f"per process and shared by every component that names it. Default {DEFAULT_DRAFT}."
        ),
    )
    target: Any = Field(
        default=None,
        description=(
            "Whose tokens the budgets count, with draft=: a tiktoken encoding or OpenAI model name "
            "('cl100k_base', 'gpt-4o'), a transformers tokenizer or its id/path, or a callable str -> int. "
            "Default: the draft's own tokens."
        ),
    )
    compression_config: CompressionConfig | None = Field(
        default=None,
        description="The CompressionConfig (scoring, selection, min_tokens, on_error, ...) for a loaded draft.",
    )
    keep_rate: float | None = Field(
        default=None,
        gt=0.0,
        le=1.0,
        description="Fraction of each compressed context's target tokens to keep; default: the config's (0.25).",
    )
    min_tokens: int | None = Field(
        default=None,
        ge=0,
        description="Contexts shorter than this many target tokens pass through unchanged; default: the config's.",
    )
    local_files_only: bool = Field(
        default=False,
        description="Load the draft (and a target tokenizer named by hub id) from local files only.",
    )

    _compressor: PromptCompressor = PrivateAttr()

    def _context_max_tokens(self) -> int | None:
        """The per-context token budget (``max_tokens`` on most components)."""
        value = getattr(self, "max_tokens", None)
        return value if isinstance(value, int) else None

    @model_validator(mode="after")
    def _resolve_compressor(self) -> Any:
        self._compressor = resolve_compressor(
            compressor=self.compressor,
            draft=self.draft,
            target=self.target,
            config=self.compression_config,
            keep_rate=self.keep_rate,
            max_tokens=self._context_max_tokens(),
            min_tokens=self.min_tokens,
            local_files_only=self.local_files_only,
        )
        return self

    @property
    def prompt_compressor(self) -> PromptCompressor:
        """The compressor this component runs (the one passed in, or one derived from it or loaded)."""
        return self._compressor


class SessionOptions(BaseModel):
    """How a conversation is compressed turn after turn (see the core's SessionConfig)."""

    compress_roles: tuple[str, ...] = Field(
        default=DEFAULT_ROLES,
        description=(
            "Roles whose messages are compressed. ToolMessage is 'tool', FunctionMessage 'function', "
            "ChatMessage its own role (e.g. 'context', 'document')."
        ),
    )
    compress_history: bool = Field(
        default=False,
        description="Also compress human and AI messages older than the latest human message.",
    )
    prompt_max_tokens: int | None = Field(
        default=None,
        ge=0,
        description="Target tokens for the whole prompt (all message contents); None: no prompt-level budget.",
    )
    recompress: Literal["never", "on_budget_pressure"] = Field(
        default="never",
        description=(
            "'never': an over-budget prompt is sent and flagged (over_budget); 'on_budget_pressure': shrink all "
            "compressed messages together to pressure_headroom x prompt_max_tokens (changes the prefix once)."
        ),
    )
    pressure_headroom: float = Field(
        default=0.75,
        gt=0.0,
        le=1.0,
        description="A recompression aims at this fraction of prompt_max_tokens, leaving room for later turns.",
    )
    max_sessions: int = Field(
        default=512,
        ge=1,
        description="Conversations whose session is kept; the least recently used one is dropped beyond this.",
    )

    _session_config: SessionConfig = PrivateAttr()

    @model_validator(mode="after")
    def _build_session_config(self) -> Any:
        self._session_config = SessionConfig(
            compress_roles=self.compress_roles,
            compress_history=self.compress_history,
            max_tokens=self.prompt_max_tokens,
            recompress=self.recompress,
            pressure_headroom=self.pressure_headroom,
        )
        return self

    @property
    def session_config(self) -> SessionConfig:
        """The core :class:`SessionConfig` these options make."""
        return self._session_config


# --------------------------------------------------------------------------- loading
def resolve_compressor(
    *,
    compressor: PromptCompressor | None,
    draft: str | None,
    target: object,
    config: CompressionConfig | None,
    keep_rate: float | None,
    max_tokens: int | None,
    min_tokens: int | None,
    local_files_only: bool,
) -> PromptCompressor:
    """The compressor a component runs: the one given (or a view of it with the overridden budget), or the
    process-wide one for the draft's name (:meth:`PromptCompressor.shared`: loaded once, weights never copied)."""
    if compressor is not None:
        given = [n for n, v in (("draft", draft), ("target", target), ("compression_config", config)) if v is not None]
        if local_files_only:
            given.append("local_files_only")
        if given:
            raise ValueError(
                f"pass either compressor= or {'/'.join(given)}=, not both: a ready compressor already has "
                "its draft, target and config (keep_rate=, max_tokens= and min_tokens= may still override its budget)"
            )
        if not isinstance(compressor, PromptCompressor):
            raise TypeError(
                f"compressor must be a crossprefill_agents.PromptCompressor, got {type(compressor).__name__}"
            )
        cfg = _overridden(compressor.config, keep_rate, max_tokens, min_tokens)
        return compressor if cfg == compressor.config else compressor.with_config(cfg)
    if config is not None and not isinstance(config, CompressionConfig):
        raise TypeError(f"compression_config must be a CompressionConfig, got {type(config).__name__}")
    name = draft if draft is not None else DEFAULT_DRAFT
    if not isinstance(name, str) or not name:
        raise TypeError(f"draft must be a non-empty str naming a draft, got {name!r}")
    cfg = _overridden(config or CompressionConfig(), keep_rate, max_tokens, min_tokens)
    logger.debug("using the shared draft %s", name)
    return PromptCompressor.shared(name, target=target, config=cfg, local_files_only=local_files_only)


def _overridden(
    config: CompressionConfig, keep_rate: float | None, max_tokens: int | None, min_tokens: int | None
) -> CompressionConfig:
    changes: dict[str, Any] = {}
    if keep_rate is not None:
        changes["keep_rate"] = keep_rate
    if max_tokens is not None:
        changes["max_tokens"] = max_tokens
    if min_tokens is not None:
        changes["min_tokens"] = min_tokens
    return dataclasses.replace(config, **changes) if changes else config
