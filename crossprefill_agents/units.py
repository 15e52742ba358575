"""Token scores -> units: the stretches of text that are kept or dropped whole, and the paragraphs they sit in.

Pure functions on strings and arrays. A unit is a sentence or a line (one longer than
``max_sentence_tokens`` draft tokens is cut into chunks as well), or, for the paper's
method, a fixed number of draft tokens; it scores the mean of its draft tokens. Paragraphs
are blank-line separated blocks; the ranking reads them as one unit each.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .results import DraftScores, Span
from .structure import Layout, line_spans
from .text import is_word_boundary, is_word_start, sentence_starts

__all__ = [
    "Unit",
    "cut_units",
    "make_units",
    "paragraph_ids",
    "paragraph_spans",
    "segment_means",
    "span_means",
]

_SNAP_RADIUS = 48  # characters searched on each side for a word boundary before giving up
_BLANK_LINE = re.compile(r"\n[^\S\n]*\n")


@dataclass(frozen=True)
class Unit:
    """A scored stretch ``[start, end)`` of one document."""

    doc: int  # index of the document
    start: int
    end: int
    score: float  # mean draft score of the unit's tokens
    cuts: tuple[int, ...]  # ascending positions in (start, end] where the unit may be cut; last is ``end``
    group: int | None = None  # its paragraph for the ranking when not a blank-line block (a JSON value's parent)


def cut_units(
    docs: Sequence[str],
    scores: DraftScores,
    layouts: Sequence[Layout] | None = None,
    *,
    unit: str = "sentence",
    chunk_size: int = 32,
    max_sentence_tokens: int = 256,
    snap_to_words: bool = True,
) -> list[Unit]:
    """Every document's units, in document order, as its layout wants them (prose when none is given).

    Prose: :func:`make_units`. Lines: each line is one unit; a line longer than ``max_sentence_tokens``
    draft tokens is cut into sentences and chunks like prose. JSON: each of the layout's leaves (a value,
    with its key for a member) is one unit, kept or dropped whole, grouped with its siblings for the
    paragraph ranking (``Unit.group``: the parent container).
    """
    units: list[Unit] = []
    for i, (doc, toks, sc) in enumerate(zip(docs, scores.tokens, scores.scores, strict=True)):
        kind = layouts[i].kind if layouts is not None else "prose"
        if kind == "json":
            units += _json_units(doc, toks.offsets, sc, layouts[i], doc_index=i)  # type: ignore[index]
            continue
        if kind == "lines":
            units += _line_units(doc, toks.offsets, sc, i, chunk_size, max_sentence_tokens, snap_to_words)
            continue
        units += make_units(
            doc,
            toks.offsets,
            sc,
            doc=i,
            chunk_size=chunk_size,
            snap_to_words=snap_to_words,
            unit=unit,
            max_sentence_tokens=max_sentence_tokens,
        )
    return units


def _json_units(
    text: str, offsets: np.ndarray, token_scores: np.ndarray, layout: Layout, *, doc_index: int
) -> list[Unit]:
    spans = [(leaf.member_start, leaf.end) for leaf in layout.leaves]
    means = span_means(offsets, token_scores, spans)  # (leaves,)
    parent: dict[int, int] = {}  # id(node) -> id(its container)
    stack = [layout.tree] if layout.tree is not None else []
    while stack:
        node = stack.pop()
        for child in node.children:
            parent[id(child)] = id(node)
            stack.append(child)
    group_of = {p: g for g, p in enumerate(dict.fromkeys(parent.get(id(leaf), -1) for leaf in layout.leaves))}
    return [
        Unit(doc_index, s, e, float(m), (e,), group=group_of[parent.get(id(leaf), -1)])
        for leaf, (s, e), m in zip(layout.leaves, spans, means, strict=True)
    ]


def _line_units(
    text: str,
    offsets: np.ndarray,
    token_scores: np.ndarray,
    doc: int,
    chunk_size: int,
    max_sentence_tokens: int,
    snap_to_words: bool,
) -> list[Unit]:
    units: list[Unit] = []
    starts = offsets[:, 0] if len(offsets) else np.zeros(0, dtype=np.int64)
    for ls, le in line_spans(text):
        body_start = ls + len(text[ls:le]) - len(text[ls:le].lstrip())
        if body_start >= le:
            continue  # a blank line is no unit
        first = int(np.searchsorted(starts, ls, side="left"))
        last = int(np.searchsorted(starts, le, side="left"))
        if last - first <= max_sentence_tokens:
            (mean,) = span_means(offsets, token_scores, [(ls, le)])
            units.append(Unit(doc, ls, le, float(mean), (le,)))
            continue
        line = text[ls:le]
        local = offsets[first:last] - ls
        for u in make_units(
            line,
            np.clip(local, 0, len(line)),
            token_scores[first:last],
            doc=doc,
            chunk_size=chunk_size,
            snap_to_words=snap_to_words,
            unit="sentence",
            max_sentence_tokens=max_sentence_tokens,
        ):
            units.append(Unit(doc, u.start + ls, u.end + ls, u.score, tuple(c + ls for c in u.cuts)))
    return units


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
    if unit not in ("chunk", "sentence"):
        raise ValueError(f"unit must be 'chunk' or 'sentence', got {unit!r}")
    if not text:
        return []
    if len(offsets) == 0:
        return [Unit(doc, 0, len(text), 0.0, (len(text),))]
    edges = _unit_edges(text, offsets, unit, chunk_size, max_sentence_tokens, snap_to_words)  # (units+1,)
    starts = offsets[:, 0]  # (n,)
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


def _unit_edges(
    text: str, offsets: np.ndarray, unit: str, chunk_size: int, max_sentence_tokens: int, snap_to_words: bool
) -> np.ndarray:
    """``(units+1,)`` character positions that cut ``text`` into units, from 0 to ``len(text)``."""
    starts = offsets[:, 0]  # (n,)
    ends = offsets[:, 1]  # (n,)
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
    return np.asarray(bounds, dtype=np.int64)


def _snap(text: str, pos: int, lo: int, hi: int) -> int:
    """The word start nearest ``pos`` within ``[lo, hi]`` and the search radius, else ``pos``."""
    if is_word_start(text, pos):
        return pos
    for d in range(1, _SNAP_RADIUS + 1):
        for p in (pos - d, pos + d):
            if lo <= p <= hi and is_word_start(text, p):
                return p
    return pos


def paragraph_ids(texts: Sequence[str], units: Sequence[Unit]) -> np.ndarray:
    """``(units,)``: the paragraph each unit starts in, numbered across all documents.

    Paragraphs are separated by blank lines; a document without blank lines is one paragraph. Units that
    carry a ``group`` (JSON values) are a paragraph per group of their document instead.
    """
    ends = [[m.end() for m in _BLANK_LINE.finditer(t)] for t in texts]  # per document: where paragraphs start
    first = np.cumsum([0, *(len(e) + 1 for e in ends)])  # id of each document's first paragraph
    ids = np.array([first[u.doc] + np.searchsorted(ends[u.doc], u.start, side="right") for u in units], dtype=np.int64)
    if all(u.group is None for u in units):
        return ids
    # Units with a group (a JSON value's parent) form paragraphs of their own, numbered in document order.
    keys = [(u.doc, 0, int(i)) if u.group is None else (u.doc, 1, u.group) for u, i in zip(units, ids, strict=True)]
    order = {k: n for n, k in enumerate(dict.fromkeys(sorted(keys)))}
    return np.array([order[k] for k in keys], dtype=np.int64)


def paragraph_spans(units: Sequence[Unit], groups: np.ndarray) -> list[tuple[int, int, int]]:
    """``(doc, start, end)`` of each paragraph, in ascending id order: from its first unit's start to its last's end.

    ``groups`` ``(units,)`` are the units' paragraph ids (:func:`paragraph_ids`).
    """
    spans: dict[int, list[int]] = {}
    for u, g in zip(units, np.asarray(groups).tolist(), strict=True):
        s = spans.setdefault(int(g), [u.doc, u.start, u.end])
        s[1], s[2] = min(s[1], u.start), max(s[2], u.end)
    return [(d, s, e) for _, (d, s, e) in sorted(spans.items())]


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
