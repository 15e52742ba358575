"""The types every layer passes on: draft tokens and scores, compression results, timings, errors.

Nothing here computes anything beyond small helpers; every other module imports from here.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "CompressionResult",
    "DraftError",
    "DraftScores",
    "DraftTimeoutError",
    "ModelNotAvailableError",
    "SessionTurn",
    "Span",
    "Timings",
    "TokenizedText",
    "TurnStats",
    "fail_open",
    "unchanged",
]

logger = logging.getLogger(__name__)

Span = tuple[int, int]  # (start, end) character offsets, end exclusive


class DraftError(RuntimeError):
    """The draft could not score the context (broken model, too-long query, ...)."""


class DraftTimeoutError(DraftError):
    """Scoring ran past ``CompressionConfig.timeout_s``."""


class ModelNotAvailableError(RuntimeError):
    """An embedded model is not installed here; the message names the command that installs it."""


@dataclass(frozen=True)
class TokenizedText:
    """Draft tokens of a text with their character spans into it."""

    ids: np.ndarray  # (n,) int64
    offsets: np.ndarray  # (n, 2) int64, non-decreasing starts, clamped to [0, len(text)]


@dataclass(frozen=True)
class DraftScores:
    """Per-document token importance from one scoring pass (``PromptCompressor.draft.score``).

    Scores do not depend on the budget: one pass can serve any number of
    ``PromptCompressor.compress_scored`` calls.
    """

    query: str  # the query the documents were scored against
    tokens: tuple[TokenizedText, ...]  # one per document
    # one (n_doc,) float64 array per document, higher = more needed; scaled by each window's length, so windows
    # compare (for the look-ahead scorer 1.0 is uniform attention; the question scorer's votes are excesses over
    # a content-free query's attention, and can be negative)
    scores: tuple[np.ndarray, ...]
    prefilled_tokens: int  # draft tokens run through the model (all windows, prompt + query steps)
    windows: int  # scoring windows used
    prefill_s: float  # forward passes over the prompt, all windows
    # the query passes: question + null query (with the context's last block where it shares their forward),
    # or the last prompt token + look-ahead
    query_s: float
    reused_tokens: int = 0  # prompt tokens whose keys came from a kept draft cache (incremental scoring)

    def document(self, k: int) -> DraftScores:
        """The scores of document ``k`` alone, as a one-document :class:`DraftScores` (timings and counts kept)."""
        return DraftScores(
            self.query,
            (self.tokens[k],),
            (self.scores[k],),
            self.prefilled_tokens,
            self.windows,
            self.prefill_s,
            self.query_s,
            self.reused_tokens,
        )


@dataclass(frozen=True)
class Timings:
    """Where the seconds of one compression went."""

    draft_prefill_s: float = 0.0  # draft forward over the prompt (all windows)
    query_s: float = 0.0  # the query passes: question + null query, or last prompt token + look-ahead
    selection_s: float = 0.0  # units, ranking, budget search on the target tokenizer, rendering
    total_s: float = 0.0


@dataclass(frozen=True)
class CompressionResult:
    """One compressed context.

    ``kept_spans`` are ``(start, end)`` character offsets into the original context, in
    order and non-overlapping. For prose ``text`` is their slices joined by the delimiter; for
    line-oriented text it keeps them on their lines, and for JSON it is the valid JSON document
    holding the kept values (``kept_paths``), see ``selection.render_layout``.
    """

    text: str
    kept_spans: tuple[Span, ...]
    original_tokens: int  # target tokens of the original context
    compressed_tokens: int  # target tokens of ``text``
    keep_rate: float  # compressed_tokens / original_tokens (1.0 for an empty context)
    budget_tokens: int  # the target-token budget this context was compressed to (its share, for documents)
    draft_tokens: int  # draft tokens of this context (0 when the draft did not run)
    timings: Timings
    fallback_reason: str | None = None  # why the context was passed through after a draft failure
    kept_paths: tuple[str, ...] = ()  # a JSON context: the paths of the values kept ("$.flights[3]")

    @property
    def saved_tokens(self) -> int:
        """Target tokens saved: ``original_tokens - compressed_tokens``."""
        return self.original_tokens - self.compressed_tokens

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every field."""
        d = asdict(self)
        d["kept_spans"] = [list(s) for s in self.kept_spans]
        return d


@dataclass(frozen=True)
class TurnStats:
    """What one ``CompressionSession.compress_messages`` call did and cost."""

    messages: int  # messages in this turn's input
    target_tokens_before: int  # target tokens of all message contents as given
    target_tokens_after: int  # target tokens of all message contents as returned
    segments: int  # messages compressible under the policy and long enough (>= min_tokens)
    compressed_now: int  # segments the draft scored this turn
    frozen_hits: int  # segments replayed from this session's earlier turns
    memo_hits: int  # segments replayed from the memo store (another session, worker or process)
    recompressed: int  # frozen segments shrunk again under budget pressure (the prompt prefix changed)
    draft_tokens_prefilled: int  # draft tokens run through the model this turn (prompt + query steps)
    draft_tokens_reused: int  # draft tokens whose keys came from the session's cache
    draft_s: float  # seconds in draft forward passes
    total_s: float  # seconds for the whole call
    draft_first_message: int  # index of the first non-system message the draft reads (> 0 after a rebase)
    draft_read: tuple[int, ...]  # indices of the messages the draft read this turn (empty when it did not run)
    over_budget: bool  # the prompt still exceeds SessionConfig.max_tokens
    fallback_reason: str | None = None  # why segments passed through unchanged after a draft failure
    # memo store reads and writes that raised, or were skipped after one raised (the turn then goes on without
    # the store: segments are recomputed, nothing is written)
    memo_errors: int = 0
    # memo entries dropped because they were not a valid compression of their segment (then recomputed)
    memo_rejected: int = 0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every field."""
        return asdict(self)


@dataclass(frozen=True)
class SessionTurn:
    """One compressed turn: the messages to send, and what happened.

    ``results`` maps a message's index to its :class:`CompressionResult` (kept character
    spans into the original content, token counts) for every message whose content was
    compressed, whether now or at an earlier turn.
    """

    messages: list[dict[str, Any]]
    stats: TurnStats
    results: dict[int, CompressionResult] = field(default_factory=dict)


def unchanged(
    text: str, n_tokens: int, *, budget: int | None = None, timings: Timings | None = None, reason: str | None = None
) -> CompressionResult:
    """``text`` passed through whole: one span covering it, ``n_tokens`` target tokens kept of ``n_tokens``."""
    return CompressionResult(
        text=text,
        kept_spans=((0, len(text)),) if text else (),
        original_tokens=n_tokens,
        compressed_tokens=n_tokens,
        keep_rate=1.0,
        budget_tokens=n_tokens if budget is None else budget,
        draft_tokens=0,
        timings=timings or Timings(),
        fallback_reason=reason,
    )


def fail_open(error: Exception, *, on_error: str, what: str) -> str:
    """Re-raise ``error`` when ``on_error == "raise"``; else log it and return the reason to report.

    A broken draft must not break the agent: callers pass ``what`` they hand on unchanged instead.
    """
    if on_error == "raise":
        raise error
    reason = f"{type(error).__name__}: {error}"
    logger.warning("draft scoring failed, passing %s through unchanged: %s", what, reason)
    return reason
