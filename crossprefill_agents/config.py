"""The one frozen bag of knobs that steers a compression.

Every field is validated on construction, so a bad value fails where it is written,
not deep inside a forward pass.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Literal

__all__ = ["CompressionConfig", "SessionConfig"]

OnError = Literal["fallback", "raise"]
Unit = Literal["chunk", "sentence"]
AttentionLayers = Literal["all", "global"]
Recompress = Literal["never", "on_budget_pressure"]
QueryPosition = Literal["after", "both"]
Scorer = Literal["question", "lookahead"]
ParagraphScore = Literal["mean", "best_unit"]
Heads = tuple[tuple[int, int], ...] | Literal["auto"]


@dataclass(frozen=True)
class CompressionConfig:
    """How a context is scored by the draft and cut down for the target.

    Budget: give ``keep_rate`` (a fraction of the context's *target* tokens) or
    ``max_tokens`` (an absolute number of target tokens); ``max_tokens`` wins when both
    are set. Both can also be passed per call to ``PromptCompressor.compress``.

    Scoring: with ``scorer="question"`` (the default) every token of the query reads the
    context; each head's mean attention onto a context token, minus that head's attention
    from a content-free query ("N/A") over the same context (what the context draws
    whatever is asked: attention sinks, the last tokens), is the head's vote, and a token
    scores the max over the voting heads. ``scorer="lookahead"`` is the published method:
    the last prompt token and ``lookahead`` greedy tokens are the queries, max over heads,
    mean over steps. ``heads="auto"`` lets the draft's retrieval heads vote in the question
    scorer (calibrated once per draft, see :mod:`crossprefill_agents.heads`), else every head.

    Selection: each unit (a sentence by default) scores the mean of its tokens, rank-fused
    with its idf query-word overlap (``lexical_weight``); coarse-to-fine then adds
    ``paragraph_weight`` x its paragraph's rank, the paragraph read as one unit the same way
    (``paragraph_score="mean"``) or ranked by its best unit (``"best_unit"``).
    """

    # --- budget (in target tokens) ---
    keep_rate: float = 0.25  # fraction of the context's target tokens to keep, in (0, 1]
    max_tokens: int | None = None  # hard cap on the compressed context's target tokens
    min_tokens: int = 256  # contexts shorter than this many target tokens pass through unchanged

    # --- scoring ---
    scorer: Scorer = "question"  # whose attention votes: "question" (its tokens, calibrated) or "lookahead" (paper)
    lookahead: int = 2  # "lookahead" scorer: greedy look-ahead tokens (8 in the paper); 0 = last prompt token only
    pool_kernel: int = 13  # width of the average pooling along context keys (odd, >= 1)
    query_separator: str = "\n\n"  # text placed between the context and the query in the draft prompt
    attention_layers: AttentionLayers = "all"  # "global": only layers that see the whole context vote
    query_position: QueryPosition = "after"  # "both": the query is also read before the context
    heads: Heads = "auto"  # (layer, head) pairs that vote; () = all; "auto" = the draft's calibrated retrieval heads

    # --- selection ---
    chunk_size: int = 32  # draft tokens per selection chunk
    unit: Unit = "sentence"  # "sentence": sentences/lines; "chunk": chunk_size-token chunks
    max_sentence_tokens: int = 256  # sentence units: a sentence longer than this (draft tokens) is cut into chunks
    lexical_weight: float = 0.3  # weight of idf query-word overlap in a rank fusion with the draft's score
    paragraph_weight: float = 2.0  # coarse-to-fine: a unit's rank + this x its paragraph's rank
    paragraph_score: ParagraphScore = "mean"  # a paragraph's score: "mean" (read as one unit) or "best_unit"
    delimiter: str = " [...] "  # joins kept spans that have a gap between them
    protect: tuple[str, ...] = ()  # regular expressions whose matches are never dropped
    snap_to_words: bool = True  # move chunk edges to the nearest word boundary (no cut words)

    # --- draft execution ---
    window_tokens: int | None = None  # draft tokens per scoring window; None = the draft's position limit
    prefill_chunk_tokens: int = 2048  # prefill this many tokens per forward pass (bounds peak memory)
    timeout_s: float | None = None  # give up on the draft after this many seconds (then fall back or raise)
    on_error: OnError = "fallback"  # "fallback": return the context unchanged and log; "raise": re-raise

    _compiled_protect: tuple[re.Pattern[str], ...] = field(init=False, repr=False, compare=False, default=())

    def __post_init__(self) -> None:
        _check_keep_rate(self.keep_rate)
        _check_max_tokens(self.max_tokens)
        if isinstance(self.min_tokens, bool) or not isinstance(self.min_tokens, int) or self.min_tokens < 0:
            raise ValueError(f"min_tokens must be an int >= 0, got {self.min_tokens!r}")
        if not isinstance(self.lookahead, int) or self.lookahead < 0:
            raise ValueError(f"lookahead must be an int >= 0 (8 in the paper), got {self.lookahead!r}")
        if not isinstance(self.pool_kernel, int) or self.pool_kernel < 1 or self.pool_kernel % 2 == 0:
            raise ValueError(f"pool_kernel must be an odd int >= 1 (13 in the paper), got {self.pool_kernel!r}")
        if not isinstance(self.chunk_size, int) or self.chunk_size < 1:
            raise ValueError(f"chunk_size must be an int >= 1 (32 in the paper), got {self.chunk_size!r}")
        if self.unit not in ("chunk", "sentence"):
            raise ValueError(f"unit must be 'chunk' or 'sentence', got {self.unit!r}")
        if self.query_position not in ("after", "both"):
            raise ValueError(f"query_position must be 'after' or 'both', got {self.query_position!r}")
        if self.scorer not in ("question", "lookahead"):
            raise ValueError(f"scorer must be 'question' or 'lookahead', got {self.scorer!r}")
        if isinstance(self.heads, str):
            if self.heads != "auto":
                raise ValueError(f"heads must be 'auto' or a sequence of (layer, head) pairs, got {self.heads!r}")
        else:
            heads = tuple(tuple(p) for p in self.heads)
            for pair in heads:
                if len(pair) != 2 or not all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in pair):
                    raise ValueError(f"heads must be (layer, head) pairs of ints >= 0, got {pair!r}")
            object.__setattr__(self, "heads", heads)
        if (
            isinstance(self.max_sentence_tokens, bool)
            or not isinstance(self.max_sentence_tokens, int)
            or self.max_sentence_tokens < 1
        ):
            raise ValueError(f"max_sentence_tokens must be an int >= 1, got {self.max_sentence_tokens!r}")
        if self.attention_layers not in ("all", "global"):
            raise ValueError(f"attention_layers must be 'all' or 'global', got {self.attention_layers!r}")
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
        if self.paragraph_score not in ("mean", "best_unit"):
            raise ValueError(f"paragraph_score must be 'mean' or 'best_unit', got {self.paragraph_score!r}")
        if not isinstance(self.delimiter, str):
            raise TypeError(f"delimiter must be a str, got {type(self.delimiter).__name__}")
        if not isinstance(self.query_separator, str):
            raise TypeError(f"query_separator must be a str, got {type(self.query_separator).__name__}")
        if self.window_tokens is not None and (not isinstance(self.window_tokens, int) or self.window_tokens < 64):
            raise ValueError(f"window_tokens must be None or an int >= 64, got {self.window_tokens!r}")
        if not isinstance(self.prefill_chunk_tokens, int) or self.prefill_chunk_tokens < 16:
            raise ValueError(f"prefill_chunk_tokens must be an int >= 16, got {self.prefill_chunk_tokens!r}")
        if self.timeout_s is not None and not self.timeout_s > 0:
            raise ValueError(f"timeout_s must be None or > 0 seconds, got {self.timeout_s!r}")
        if self.on_error not in ("fallback", "raise"):
            raise ValueError(f"on_error must be 'fallback' or 'raise', got {self.on_error!r}")
        if isinstance(self.protect, str):
            raise TypeError(
                "protect must be a sequence of regular expressions, not a single str: use protect=(r'...',)"
            )
        patterns = tuple(self.protect)
        compiled = []
        for p in patterns:
            try:
                compiled.append(re.compile(p))
            except (re.error, TypeError) as e:
                raise ValueError(f"protect pattern {p!r} is not a valid regular expression: {e}") from e
        object.__setattr__(self, "protect", patterns)
        object.__setattr__(self, "_compiled_protect", tuple(compiled))

    @classmethod
    def paper(cls) -> CompressionConfig:
        """The faithful published speculative-prefill scorer: 8 look-ahead tokens, kernel 13, 32-token chunks.

        No sentence units, no lexical fusion, no paragraph prior, every head of every layer votes, chunk edges
        are not moved: the reference row of every benchmark table.
        """
        return cls(
            scorer="lookahead",
            heads=(),
            lookahead=8,
            pool_kernel=13,
            chunk_size=32,
            unit="chunk",
            lexical_weight=0.0,
            paragraph_weight=0.0,
            attention_layers="all",
            snap_to_words=False,
        )

    def with_overrides(self, *, keep_rate: float | None = None, max_tokens: int | None = None) -> CompressionConfig:
        """A copy with a per-call budget; ``None`` keeps this config's value."""
        changes: dict[str, object] = {}
        if keep_rate is not None:
            changes["keep_rate"] = keep_rate
        if max_tokens is not None:
            changes["max_tokens"] = max_tokens
        return replace(self, **changes) if changes else self  # type: ignore[arg-type]

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
        _check_max_tokens(self.max_tokens)
        if self.recompress not in ("never", "on_budget_pressure"):
            raise ValueError(f"recompress must be 'never' or 'on_budget_pressure', got {self.recompress!r}")
        if isinstance(self.pressure_headroom, bool) or not 0.0 < self.pressure_headroom <= 1.0:
            raise ValueError(f"pressure_headroom must be in (0, 1], got {self.pressure_headroom!r}")


def _check_keep_rate(keep_rate: object) -> None:
    if isinstance(keep_rate, bool) or not isinstance(keep_rate, (int, float)):
        raise TypeError(f"keep_rate must be a number in (0, 1], got {type(keep_rate).__name__}")
    if not 0.0 < float(keep_rate) <= 1.0:
        raise ValueError(f"keep_rate must be in (0, 1] (the fraction of target tokens to keep), got {keep_rate!r}")


def _check_max_tokens(max_tokens: object) -> None:
    if max_tokens is None:
        return
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int):
        raise TypeError(f"max_tokens must be None or an int >= 0, got {type(max_tokens).__name__}")
    if max_tokens < 0:
        raise ValueError(f"max_tokens must be >= 0 target tokens, got {max_tokens!r}")
