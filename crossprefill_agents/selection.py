"""Token importance + a budget in target tokens -> kept character spans.

Contexts are cut into units (chunks of draft tokens, edges snapped to word boundaries),
each scored by the mean of its tokens. Units are taken best-first until the budget is
met, the last one possibly in part (up to a word boundary). The budget is closed on the
target's real tokenizer: the rendered text is counted, not estimated, and the largest
selection whose count fits is kept.
"""

from __future__ import annotations

import itertools
import logging
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from ._text import is_word_boundary, is_word_start, sentence_starts
from .lexical import percentile_ranks

__all__ = [
    "Selection",
    "Unit",
    "coarse_to_fine",
    "make_units",
    "merge_spans",
    "paragraph_ids",
    "paragraph_spans",
    "protected_spans",
    "render",
    "segment_means",
    "select",
    "span_means",
    "trim_spans",
]

logger = logging.getLogger(__name__)

Span = tuple[int, int]
_SNAP_RADIUS = 48  # characters searched on each side for a word boundary before giving up
_BLANK_LINE = re.compile(r"\n[^\S\n]*\n")


@dataclass(frozen=True)
class Unit:
    """A scored stretch ``[start, end)`` of one document."""

    doc: int
    start: int
    end: int
    score: float
    cuts: tuple[int, ...]  # ascending positions in (start, end] where the unit may be cut; last is ``end``


@dataclass(frozen=True)
class Selection:
    """What is kept of each document."""

    spans: tuple[tuple[Span, ...], ...]  # per document: merged, ordered, whitespace-trimmed spans
    texts: tuple[str, ...]  # per document: kept spans joined by the delimiter
    tokens: tuple[int, ...]  # per document: target tokens of ``texts``
    budget: int
    protected_over_budget: bool  # the protected spans alone exceed the budget (they are kept anyway)


def _snap(text: str, pos: int, lo: int, hi: int) -> int:
    """The word start nearest ``pos`` within ``[lo, hi]`` and the search radius, else ``pos``."""
    if is_word_start(text, pos):
        return pos
    for d in range(1, _SNAP_RADIUS + 1):
        for p in (pos - d, pos + d):
            if lo <= p <= hi and is_word_start(text, p):
                return p
    return pos


def make_units(
    text: str,
    offsets: np.ndarray,
    token_scores: np.ndarray,
    *,
    doc: int = 0,
    chunk_size: int = 32,
    snap_to_words: bool = True,
    unit: str = "chunk",
    max_sentence_tokens: int = 256,
) -> list[Unit]:
    """Cut one document into units scored by the mean of their draft tokens' scores.

    ``unit="chunk"``: chunks of ``chunk_size`` draft tokens. ``unit="sentence"``: sentences
    and lines; one longer than ``max_sentence_tokens`` draft tokens is cut into chunks as well
    (text without sentence boundaries, such as a JSON blob, still gets fine units).
    ``offsets`` ``(n, 2)`` are the draft tokens' character spans (non-decreasing starts),
    ``token_scores`` ``(n,)`` their importance. The units partition ``[0, len(text))``.
    """
    n = len(offsets)
    if not text:
        return []
    if n == 0:
        return [Unit(doc, 0, len(text), 0.0, (len(text),))]
    starts = offsets[:, 0]  # (n,)
    ends = offsets[:, 1]  # (n,)
    if unit not in ("chunk", "sentence"):
        raise ValueError(f"unit must be 'chunk' or 'sentence', got {unit!r}")
    pieces = [0, *(sentence_starts(text) if unit == "sentence" else []), len(text)]  # character ranges
    bounds = [0]
    for cs, ce in itertools.pairwise(pieces):
        if bounds[-1] < cs < len(text):
            bounds.append(cs)
        a = int(np.searchsorted(ends, cs, side="right"))  # first token of the piece
        z = int(np.searchsorted(starts, ce, side="left"))  # one past its last token
        if unit == "sentence" and z - a <= max_sentence_tokens:
            continue  # a sentence of normal length is one unit
        stop = z - chunk_size // 2 if unit == "sentence" else z  # no stub chunk at a sentence's end
        for k in range(a + chunk_size, stop, chunk_size):
            edge = int(starts[k])
            if snap_to_words:
                edge = _snap(text, edge, bounds[-1] + 1, min(ce, len(text) - 1))
            if bounds[-1] < edge < len(text):
                bounds.append(edge)
    bounds.append(len(text))
    edges = np.asarray(bounds, dtype=np.int64)  # (units+1,)
    first, last = _token_ranges(offsets, edges[:-1], edges[1:])
    means = segment_means(token_scores, first, last)  # (units,)
    units = []
    for i in range(len(edges) - 1):
        s, e = int(edges[i]), int(edges[i + 1])
        inner = [int(p) for p in starts[first[i] : last[i]] if s < p < e]
        if snap_to_words:
            words = [p for p in inner if is_word_boundary(text, p)]
            inner = words or inner
        units.append(Unit(doc, s, e, float(means[i]), (*sorted(set(inner)), e)))
    return units


def paragraph_ids(texts: Sequence[str], units: Sequence[Unit]) -> np.ndarray:
    """``(units,)``: the paragraph each unit starts in, numbered across all documents.

    Paragraphs are separated by blank lines; a document without blank lines is one paragraph.
    """
    ends = [[m.end() for m in _BLANK_LINE.finditer(t)] for t in texts]  # per document: where paragraphs start
    first = np.cumsum([0, *(len(e) + 1 for e in ends)])  # id of each document's first paragraph
    return np.array([first[u.doc] + np.searchsorted(ends[u.doc], u.start, side="right") for u in units], dtype=np.int64)


def paragraph_spans(units: Sequence[Unit], groups: np.ndarray) -> list[tuple[int, int, int]]:
    """``(doc, start, end)`` of each paragraph, in ascending id order: from its first unit's start to its last's end.

    ``groups`` ``(units,)`` are the units' paragraph ids (:func:`paragraph_ids`).
    """
    spans: dict[int, list[int]] = {}
    for u, g in zip(units, np.asarray(groups).tolist(), strict=True):
        s = spans.setdefault(int(g), [u.doc, u.start, u.end])
        s[1], s[2] = min(s[1], u.start), max(s[2], u.end)
    return [(d, s, e) for _, (d, s, e) in sorted(spans.items())]


def coarse_to_fine(
    scores: np.ndarray, groups: np.ndarray, weight: float, group_scores: np.ndarray | None = None
) -> np.ndarray:
    """Rank paragraphs first, then units within them: ``rank(u) + weight * rank(u's paragraph)``.

    ``scores`` ``(units,)``, ``groups`` ``(units,)`` integer ids; ranks are percentiles in [0, 1].
    A paragraph's rank is that of ``group_scores`` ``(groups,)`` (one score per distinct id, in
    ascending id order) among the paragraphs; without them, the best rank of its units. Evidence
    clusters: a sentence of the paragraph that reads best as a whole is more likely needed than a
    lone sentence that scores a little higher elsewhere. ``weight`` 0 returns ``scores`` unchanged.
    """
    scores = np.asarray(scores, dtype=np.float64)
    if weight <= 0.0 or len(scores) == 0:
        return scores
    ranks = percentile_ranks(scores)  # (units,)
    _, inverse = np.unique(np.asarray(groups), return_inverse=True)
    if group_scores is None:
        best = np.full(inverse.max() + 1, -np.inf)
        np.maximum.at(best, inverse, ranks)
        return ranks + weight * best[inverse]
    group_scores = np.asarray(group_scores, dtype=np.float64)
    if len(group_scores) != inverse.max() + 1:
        raise ValueError(f"group_scores has {len(group_scores)} entries for {inverse.max() + 1} groups")
    return ranks + weight * percentile_ranks(group_scores)[inverse]


def _token_ranges(offsets: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per character range ``[starts[i], ends[i])``: its first token and one past its last (``offsets`` ``(n, 2)``)."""
    first = np.searchsorted(offsets[:, 1], starts, side="right")  # first token ending after the range's start
    last = np.searchsorted(offsets[:, 0], ends, side="left")  # one past the last token starting before its end
    return first, last


def span_means(offsets: np.ndarray, token_scores: np.ndarray, spans: Sequence[Span]) -> np.ndarray:
    """``(spans,)``: the mean score of the draft tokens inside each character span (0 where it holds none).

    ``offsets`` ``(n, 2)`` are the tokens' character spans (non-decreasing starts), ``token_scores`` ``(n,)``.
    """
    if not spans:
        return np.zeros(0)
    bounds = np.asarray(spans, dtype=np.int64).reshape(-1, 2)
    if len(offsets) == 0:
        return np.zeros(len(bounds))
    first, last = _token_ranges(np.asarray(offsets), bounds[:, 0], bounds[:, 1])
    return segment_means(token_scores, first, last)


def segment_means(token_scores: np.ndarray, first: np.ndarray, last: np.ndarray) -> np.ndarray:
    """Mean of ``token_scores[first[i]:last[i]]`` for each i; an empty range scores 0."""
    csum = np.concatenate([[0.0], np.cumsum(np.asarray(token_scores, dtype=np.float64))])  # (n+1,)
    lo = np.asarray(first, dtype=np.int64)
    hi = np.maximum(np.asarray(last, dtype=np.int64), lo)
    counts = hi - lo
    return np.where(counts > 0, (csum[hi] - csum[lo]) / np.maximum(counts, 1), 0.0)


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
    protected: Sequence[Sequence[Span]],
    *,
    budget: int,
    count: Callable[[str], int],
    delimiter: str,
) -> Selection:
    """Keep the best units of all documents within ``budget`` target tokens in total.

    Units are added best-first, cut by cut (so the last unit may be kept in part); the
    number of target tokens of the rendered documents is counted with ``count`` and the
    longest prefix of that order whose count fits the budget is kept (binary search).
    Protected spans are always kept, even when they alone exceed the budget.
    """
    order = sorted(range(len(units)), key=lambda i: (-units[i].score, units[i].doc, units[i].start))
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
