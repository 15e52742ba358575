"""The one frozen bag of knobs that steers a compression, and the one that steers a session.

Every field is validated on construction, so a bad value fails where it is written,
not deep inside a forward pass. Research levers (the paper's scorer, other units,
other readings of the paragraphs) live apart in :class:`ExperimentalOptions`.
"""

from __future__ import annotations

import functools
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any, Literal

__all__ = [
    "MIN_CONTEXT_TOKENS",
    "MIN_WINDOW_TOKENS",
    "CompressionConfig",
    "ExperimentalOptions",
    "SessionConfig",
    "bounded_pattern",
    "check_keep_rate",
    "check_max_tokens",
]

# A scoring window holds [special prefix, context, query] in draft tokens (draft/runner.py). It must leave at least
# MIN_CONTEXT_TOKENS of context beside the query passes; MIN_WINDOW_TOKENS adds 64 for the special prefix, the
# separator and a short query or the null query (SmolLM2 takes 0 + 5 of them for an empty query, Gemma-3 1 + 4; the
# paper's scorer adds its 8 look-ahead steps). A longer query needs a longer window: the runner says so.
MIN_CONTEXT_TOKENS = 64
MIN_WINDOW_TOKENS = 2 * MIN_CONTEXT_TOKENS

OnError = Literal["fallback", "raise"]
UnitKind = Literal["chunk", "sentence"]
AttentionLayers = Literal["all", "global"]
Recompress = Literal["never", "on_budget_pressure"]
QueryPosition = Literal["after", "both"]
Scorer = Literal["question", "lookahead"]
ParagraphScore = Literal["mean", "best_unit"]
Heads = tuple[tuple[int, int], ...] | Literal["auto"]
Structure = Literal["auto", "text"]


@dataclass(frozen=True)
class ExperimentalOptions:
    """Research levers, kept so the benchmarks' ablations and the paper's reference row can run.

    Not a stable API: the defaults are what the ablations in ``benchmarks/README.md`` chose,
    and a lever may go once an ablation has settled it. ``CompressionConfig.paper()`` sets
    the published method's values.
    """

    scorer: Scorer = "question"  # whose attention votes: the question's tokens, or "lookahead" (the paper's)
    lookahead: int = 2  # "lookahead" scorer: greedy look-ahead tokens (8 in the paper); 0 = last prompt token only
    heads: Heads = "auto"  # (layer, head) pairs that vote; () = all; "auto" = the draft's calibrated retrieval heads
    pool_kernel: int = 13  # width of the average pooling along context keys (odd, >= 1)
    query_separator: str = "\n\n"  # text placed between the context and the query in the draft prompt
    attention_layers: AttentionLayers = "all"  # "global": only layers that see the whole context vote
    query_position: QueryPosition = "after"  # "both": the query is also read before the context
    unit: UnitKind = "sentence"  # "sentence": sentences and lines; "chunk": chunk_size-token chunks (the paper's)
    chunk_size: int = 32  # draft tokens per chunk (the "chunk" unit, and the cut of an overlong sentence)
    max_sentence_tokens: int = 256  # a sentence longer than this (draft tokens) is cut into chunks as well
    snap_to_words: bool = True  # move chunk edges to the nearest word start (no cut words)
    paragraph_score: ParagraphScore = "mean"  # a paragraph's score: "mean" (read as one unit) or "best_unit"

    def __post_init__(self) -> None:
        _choice("scorer", self.scorer, ("question", "lookahead"))
        _int("lookahead", self.lookahead, low=0, hint="8 in the paper")
        if not isinstance(self.pool_kernel, int) or self.pool_kernel < 1 or self.pool_kernel % 2 == 0:
            raise ValueError(f"pool_kernel must be an odd int >= 1 (13 in the paper), got {self.pool_kernel!r}")
        if isinstance(self.heads, str):
            if self.heads != "auto":
                raise ValueError(f"heads must be 'auto' or a sequence of (layer, head) pairs, got {self.heads!r}")
        else:
            heads = tuple(tuple(p) for p in self.heads)
            for pair in heads:
                if len(pair) != 2 or not all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in pair):
                    raise ValueError(f"heads must be (layer, head) pairs of ints >= 0, got {pair!r}")
            object.__setattr__(self, "heads", heads)
        if not isinstance(self.query_separator, str):
            raise TypeError(f"query_separator must be a str, got {type(self.query_separator).__name__}")
        _choice("attention_layers", self.attention_layers, ("all", "global"))
        _choice("query_position", self.query_position, ("after", "both"))
        _choice("unit", self.unit, ("chunk", "sentence"))
        _int("chunk_size", self.chunk_size, low=1, hint="32 in the paper")
        _int("max_sentence_tokens", self.max_sentence_tokens, low=1)
        _choice("paragraph_score", self.paragraph_score, ("mean", "best_unit"))


@dataclass(frozen=True)
class CompressionConfig:
    """How a context is scored by the draft and cut down for the target.

    Budget: give ``keep_rate`` (a fraction of the context's *target* tokens) or
    ``max_tokens`` (an absolute number of target tokens); ``max_tokens`` wins when both
    are set. Both can also be passed per call to ``PromptCompressor.compress``.

    Scoring (see docs/how-it-works.md): every token of the query reads the context with
    the draft's calibrated retrieval heads, minus what the same heads give a content-free
    query. Selection: each sentence or line scores the mean of its tokens, rank-fused with
    its idf query-word overlap (``lexical_weight``); coarse-to-fine then adds
    ``paragraph_weight`` x the rank of its paragraph, read as one unit the same way.

    Structure: with ``structure="auto"`` a JSON context is cut into its values and comes back
    as valid JSON, and code, logs, tables and JSON lines into whole lines (see
    :mod:`crossprefill_agents.structure`); prose, and everything with ``"text"``, into sentences.
    """

    # --- budget (in target tokens) ---
    keep_rate: float = 0.25  # fraction of the context's target tokens to keep, in (0, 1]
    max_tokens: int | None = None  # hard cap on the compressed context's target tokens
    min_tokens: int = 256  # contexts shorter than this many target tokens pass through unchanged

    # --- ranking ---
    lexical_weight: float = 0.3  # weight of idf query-word overlap in a rank fusion with the draft's score
    paragraph_weight: float = 2.0  # coarse-to-fine: a unit's rank + this x its paragraph's rank (0 = units alone)

    # --- output ---
    structure: Structure = "auto"  # "auto": JSON stays valid JSON, code/logs/tables keep whole lines; "text": all prose
    delimiter: str = " [...] "  # joins kept spans that have a gap between them
    protect: tuple[str, ...] = ()  # regular expressions whose matches are never dropped

    # --- draft execution ---
    window_tokens: int | None = None  # draft tokens per scoring window (>= 128); None = the draft's position limit
    prefill_chunk_tokens: int = 2048  # prefill this many tokens per forward pass (bounds peak memory)
    timeout_s: float | None = None  # bound on a call's draft passes and protect matching (then fall back or raise)
    on_error: OnError = "fallback"  # "fallback": return the context unchanged and log; "raise": re-raise

    experimental: ExperimentalOptions = field(default_factory=ExperimentalOptions)  # research levers

    _compiled_protect: tuple[re.Pattern[str], ...] = field(init=False, repr=False, compare=False, default=())

    def __post_init__(self) -> None:
        check_keep_rate(self.keep_rate)
        check_max_tokens(self.max_tokens)
        _int("min_tokens", self.min_tokens, low=0)
        if isinstance(self.lexical_weight, bool) or not 0.0 <= self.lexical_weight <= 1.0:
            raise ValueError(f"lexical_weight must be in [0, 1] (0 = draft only), got {self.lexical_weight!r}")
        if (
            isinstance(self.paragraph_weight, bool)
            or not isinstance(self.paragraph_weight, int | float)
            or not 0.0 <= self.paragraph_weight < float("inf")
        ):
            raise ValueError(
                f"paragraph_weight must be a finite number >= 0 (0 = units alone), got {self.paragraph_weight!r}"
            )
        _choice("structure", self.structure, ("auto", "text"))
        if not isinstance(self.delimiter, str):
            raise TypeError(f"delimiter must be a str, got {type(self.delimiter).__name__}")
        if self.window_tokens is not None:
            _int(
                "window_tokens",
                self.window_tokens,
                low=MIN_WINDOW_TOKENS,
                none=True,
                hint=f"{MIN_CONTEXT_TOKENS} context tokens beside the prefix and the query",
            )
        _int("prefill_chunk_tokens", self.prefill_chunk_tokens, low=16)
        if self.timeout_s is not None and not self.timeout_s > 0:
            raise ValueError(f"timeout_s must be None or > 0 seconds, got {self.timeout_s!r}")
        _choice("on_error", self.on_error, ("fallback", "raise"))
        if not isinstance(self.experimental, ExperimentalOptions):
            raise TypeError(f"experimental must be an ExperimentalOptions, got {type(self.experimental).__name__}")
        patterns, compiled = _compile_protect(self.protect)
        object.__setattr__(self, "protect", patterns)
        object.__setattr__(self, "_compiled_protect", compiled)
        if self.timeout_s is not None:
            for pattern in compiled:
                try:
                    bounded_pattern(pattern)
                except Exception as e:
                    raise ValueError(
                        f"protect pattern {pattern.pattern!r} cannot be matched under a timeout (the `regex` "
                        f"module refuses it: {e}); rewrite it or leave timeout_s None"
                    ) from e

    @classmethod
    def paper(cls) -> CompressionConfig:
        """The faithful published speculative-prefill scorer: 8 look-ahead tokens, kernel 13, 32-token chunks.

        No sentence units, no lexical fusion, no paragraph prior, every head of every layer votes, chunk edges
        are not moved, every context is text: the reference row of every benchmark table.
        """
        return cls(
            structure="text",
            lexical_weight=0.0,
            paragraph_weight=0.0,
            experimental=ExperimentalOptions(
                scorer="lookahead",
                heads=(),
                lookahead=8,
                pool_kernel=13,
                chunk_size=32,
                unit="chunk",
                attention_layers="all",
                snap_to_words=False,
            ),
        )

    def budget_tokens(self, text_tokens: int) -> int:
        """Target tokens the kept text may take, for a context of ``text_tokens`` (whitespace-only text has none)."""
        return self.max_tokens if self.max_tokens is not None else round(self.keep_rate * text_tokens)

    def with_overrides(self, *, keep_rate: float | None = None, max_tokens: int | None = None) -> CompressionConfig:
        """A copy with a per-call budget; ``None`` keeps this config's value."""
        if keep_rate is None and max_tokens is None:
            return self
        return replace(
            self,
            keep_rate=self.keep_rate if keep_rate is None else keep_rate,
            max_tokens=self.max_tokens if max_tokens is None else max_tokens,
        )

    def with_experimental(self, **changes: Any) -> CompressionConfig:
        """A copy whose :class:`ExperimentalOptions` have ``changes`` (validated): research code's shorthand."""
        return replace(self, experimental=replace(self.experimental, **changes))

    def deadline(self) -> float | None:
        """The ``time.monotonic()`` by which a pass started now must end (``timeout_s`` from now), or None."""
        return None if self.timeout_s is None else time.monotonic() + self.timeout_s

    @property
    def protect_patterns(self) -> tuple[re.Pattern[str], ...]:
        """The compiled ``protect`` expressions."""
        return self._compiled_protect


@dataclass(frozen=True)
class SessionConfig:
    """Which messages of a conversation a session compresses, and what it does when the prompt outgrows a budget.

    Per-segment budgets (``keep_rate``, ``max_tokens`` per message, ``min_tokens``) come from
    the compressor's :class:`CompressionConfig`; these knobs are about the conversation.
    """

    compress_roles: tuple[str, ...] = ("tool", "function", "context", "document")  # roles whose messages shrink
    compress_history: bool = False  # also shrink user/assistant messages older than the latest user message
    max_tokens: int | None = None  # target tokens for the whole prompt; None = no prompt-level budget
    recompress: Recompress = "never"  # "on_budget_pressure": shrink frozen segments again when over max_tokens
    pressure_headroom: float = 0.75  # a recompression aims at this fraction of max_tokens, so later turns fit

    def __post_init__(self) -> None:
        if isinstance(self.compress_roles, str):
            raise TypeError("compress_roles must be a sequence of role names, not a str: use compress_roles=('tool',)")
        roles = tuple(self.compress_roles)
        for r in roles:
            if not isinstance(r, str):
                raise TypeError(f"compress_roles must hold str role names, got {type(r).__name__}")
            if r == "system":
                raise ValueError("system messages are never compressed; remove 'system' from compress_roles")
        object.__setattr__(self, "compress_roles", roles)
        if not isinstance(self.compress_history, bool):
            raise TypeError(f"compress_history must be a bool, got {type(self.compress_history).__name__}")
        check_max_tokens(self.max_tokens)
        _choice("recompress", self.recompress, ("never", "on_budget_pressure"))
        if isinstance(self.pressure_headroom, bool) or not 0.0 < self.pressure_headroom <= 1.0:
            raise ValueError(f"pressure_headroom must be in (0, 1], got {self.pressure_headroom!r}")


def _choice(name: str, value: object, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        options = " or ".join(repr(a) for a in allowed)
        raise ValueError(f"{name} must be {options}, got {value!r}")


def _int(name: str, value: object, *, low: int, hint: str = "", none: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        extra = f" ({hint})" if hint else ""
        prefix = "None or " if none else ""
        raise ValueError(f"{name} must be {prefix}an int >= {low}{extra}, got {value!r}")


def _compile_protect(protect: Iterable[str]) -> tuple[tuple[str, ...], tuple[re.Pattern[str], ...]]:
    if isinstance(protect, str):
        raise TypeError("protect must be a sequence of regular expressions, not a single str: use protect=(r'...',)")
    patterns = tuple(protect)
    compiled = []
    for p in patterns:
        try:
            compiled.append(re.compile(p))
        except (re.error, TypeError) as e:
            raise ValueError(f"protect pattern {p!r} is not a valid regular expression: {e}") from e
    return patterns, tuple(compiled)


@functools.lru_cache(maxsize=256)
def bounded_pattern(pattern: re.Pattern[str]) -> Any:
    """``pattern`` compiled by the `regex` module, whose matching takes a timeout and can release the GIL.

    It finds the same matches as ``re`` for the syntax both accept (its VERSION0 is ``re``-compatible), and
    backtracks far less on nested quantifiers (``(a+)+$`` is linear there). Used only under ``timeout_s``.
    """
    import regex

    flags = regex.VERSION0  # re's flag bits differ from regex's for ASCII (regex's 256 is VERSION1)
    for ours, theirs in ((re.I, regex.I), (re.M, regex.M), (re.S, regex.S), (re.X, regex.X), (re.A, regex.A)):
        if pattern.flags & ours:
            flags |= theirs
    return regex.compile(pattern.pattern, flags)


def check_keep_rate(keep_rate: object) -> None:
    """Raise a TypeError / ValueError that says what to pass unless ``keep_rate`` is a number in (0, 1]."""
    if isinstance(keep_rate, bool) or not isinstance(keep_rate, (int, float)):
        raise TypeError(f"keep_rate must be a number in (0, 1], got {type(keep_rate).__name__}")
    if not 0.0 < float(keep_rate) <= 1.0:
        raise ValueError(f"keep_rate must be in (0, 1] (the fraction of target tokens to keep), got {keep_rate!r}")


def check_max_tokens(max_tokens: object) -> None:
    """Raise a TypeError / ValueError that says what to pass unless ``max_tokens`` is None or an int >= 0."""
    if max_tokens is None:
        return
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int):
        raise TypeError(f"max_tokens must be None or an int >= 0, got {type(max_tokens).__name__}")
    if max_tokens < 0:
        raise ValueError(f"max_tokens must be >= 0 target tokens, got {max_tokens!r}")
