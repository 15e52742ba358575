"""Units + priority + a budget in target tokens -> kept character spans and the text for the target.

Units are taken in priority order until the budget is met, the last one possibly in part
(up to one of its cuts). The budget is closed on the target's real tokenizer: the rendered
text is counted, not estimated, and the largest selection whose count fits is kept.
Protected spans (matches of the user's patterns) are always kept.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from .results import Span
from .text import is_word_boundary
from .units import Unit

__all__ = ["Selection", "merge_spans", "protected_spans", "render", "select", "trim_spans"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Selection:
    """What is kept of each document."""

    spans: tuple[tuple[Span, ...], ...]  # per document: merged, ordered, whitespace-trimmed spans
    texts: tuple[str, ...]  # per document: kept spans joined by the delimiter
    tokens: tuple[int, ...]  # per document: target tokens of ``texts``
    budget: int
    protected_over_budget: bool  # the protected spans alone exceed the budget (they are kept anyway)


def protected_spans(text: str, patterns: Sequence[re.Pattern[str]]) -> list[Span]:
    """Spans of every non-empty match of the ``protect`` patterns, widened to whole words."""
    spans = []
    for pat in patterns:
        for m in pat.finditer(text):
            s, e = m.span()
            if e <= s:
                continue
            while s > 0 and not is_word_boundary(text, s):
                s -= 1
            while e < len(text) and not is_word_boundary(text, e):
                e += 1
            spans.append((s, e))
    return spans


def merge_spans(text: str, spans: Sequence[Span]) -> list[Span]:
    """Sort spans, merge those that overlap or are separated by whitespace only, trim whitespace edges."""
    merged: list[list[int]] = []
    for s, e in sorted(spans):
        if e <= s:
            continue
        if merged and (s <= merged[-1][1] or not text[merged[-1][1] : s].strip()):
            merged[-1][1] = max(merged[-1][1], e)
        else:
            merged.append([s, e])
    return trim_spans(text, [(s, e) for s, e in merged])


def trim_spans(text: str, spans: Iterable[Span]) -> list[Span]:
    """Each span without the whitespace at its edges; spans left empty are dropped."""
    out = []
    for s, e in spans:
        while s < e and text[s].isspace():
            s += 1
        while e > s and text[e - 1].isspace():
            e -= 1
        if e > s:
            out.append((s, e))
    return out


def render(text: str, spans: Sequence[Span], delimiter: str) -> str:
    """The kept text: each span's slice of ``text``, joined by ``delimiter``."""
    return delimiter.join(text[s:e] for s, e in spans)


def select(
    texts: Sequence[str],
    units: Sequence[Unit],
    priority: Sequence[float] | np.ndarray,
    protected: Sequence[Sequence[Span]],
    *,
    budget: int,
    count: Callable[[str], int],
    delimiter: str,
) -> Selection:
    """Keep the best units of all documents within ``budget`` target tokens in total.

    ``priority`` ``(units,)`` orders the units (higher first; ties by document, then position).
    Units are added in that order, cut by cut (so the last unit may be kept in part); the
    number of target tokens of the rendered documents is counted with ``count`` and the
    longest prefix of that order whose count fits the budget is kept (binary search).
    Protected spans are always kept, even when they alone exceed the budget.
    """
    if len(priority) != len(units):
        raise ValueError(f"priority has {len(priority)} entries for {len(units)} units")
    rank_of = np.asarray(priority, dtype=np.float64).tolist()
    order = sorted(range(len(units)), key=lambda i: (-rank_of[i], units[i].doc, units[i].start))
    step_unit = np.array([i for i in order for _ in units[i].cuts], dtype=np.int64)  # (steps,)
    step_cut = np.array([c for i in order for c in units[i].cuts], dtype=np.int64)  # (steps,)
    step_rank = np.array([r for r, i in enumerate(order) for _ in units[i].cuts], dtype=np.int64)

    def build(s: int) -> tuple[list[list[Span]], list[str], list[int]]:
        per_doc: list[list[Span]] = [list(p) for p in protected]
        if s > 0:
            rank = int(step_rank[s - 1])
            for i in order[:rank]:
                per_doc[units[i].doc].append((units[i].start, units[i].end))
            u = units[int(step_unit[s - 1])]
            per_doc[u.doc].append((u.start, int(step_cut[s - 1])))
        spans = [merge_spans(t, sp) for t, sp in zip(texts, per_doc, strict=True)]
        rendered = [render(t, sp, delimiter) for t, sp in zip(texts, spans, strict=True)]
        return spans, rendered, [count(r) if r else 0 for r in rendered]

    lo_spans, lo_texts, lo_tokens = build(0)
    over = sum(lo_tokens) > budget
    if over:
        logger.warning(
            "protected spans alone take %d target tokens, over the budget of %d; they are kept anyway",
            sum(lo_tokens),
            budget,
        )
    else:
        lo, hi = 0, len(step_cut)  # invariant: build(lo) fits
        while lo < hi:
            mid = (lo + hi + 1) // 2
            spans, rendered, tokens = build(mid)
            if sum(tokens) <= budget:
                lo, lo_spans, lo_texts, lo_tokens = mid, spans, rendered, tokens
            else:
                hi = mid - 1
    return Selection(
        spans=tuple(tuple(s) for s in lo_spans),
        texts=tuple(lo_texts),
        tokens=tuple(lo_tokens),
        budget=budget,
        protected_over_budget=over,
    )
