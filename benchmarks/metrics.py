"""Quality metrics for compressed contexts and target answers: pure functions, no model.

- :func:`answer_kept`: does the compressed text still contain a gold answer?
- :func:`evidence_recall`: which evidence sentences survived, by the share of their words
  that lie inside the kept character spans;
- :func:`exact_match` and :func:`f1`: SQuAD's answer metrics, over several gold answers.

Answers are compared after SQuAD's normalisation (:func:`normalize_answer`): lowercase,
punctuation removed, the articles "a", "an", "the" removed, whitespace collapsed.
"""

from __future__ import annotations

import bisect
import re
import string
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from benchmarks.text import Span, word_spans

__all__ = [
    "answer_kept",
    "evidence_recall",
    "exact_match",
    "f1",
    "kept_word_fraction",
    "normalize_answer",
]

_PUNCTUATION = frozenset(string.punctuation) | frozenset("‘’“”–—…")
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(text: str) -> str:
    """SQuAD's normalisation: lowercase, drop punctuation, drop articles, collapse whitespace."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def answer_kept(compressed_text: str, answers: Iterable[str]) -> bool:
    """True when some gold answer occurs in ``compressed_text`` after normalisation, on word boundaries.

    Answers that normalise to nothing (e.g. "the") are ignored; with none left it is False.
    """
    haystack = f" {normalize_answer(compressed_text)} "
    return any(f" {a} " in haystack for a in map(normalize_answer, answers) if a)


def _merged(spans: Iterable[Span]) -> list[Span]:
    out: list[list[int]] = []
    for s, e in sorted(spans):
        if e <= s:
            continue
        if out and s <= out[-1][1]:
            out[-1][1] = max(out[-1][1], e)
        else:
            out.append([s, e])
    return [(s, e) for s, e in out]


def _inside(merged: Sequence[Span], starts: Sequence[int], s: int, e: int) -> bool:
    """True when ``[s, e)`` lies within one of the ``merged`` (sorted, disjoint) spans."""
    i = bisect.bisect_right(starts, s) - 1
    return i >= 0 and merged[i][1] >= e


def kept_word_fraction(kept_spans: Iterable[Span], context: str, span: Span) -> float:
    """The share of the words of ``context[span]`` that lie wholly inside the kept spans (1.0 for no words)."""
    merged = _merged(kept_spans)
    starts = [s for s, _ in merged]
    s0, e0 = span
    spans = [(s0 + s, s0 + e) for s, e in word_spans(context[s0:e0])]
    if not spans:
        return 1.0
    return sum(_inside(merged, starts, s, e) for s, e in spans) / len(spans)


def evidence_recall(
    kept_spans: Iterable[Span],
    context: str,
    evidence: Iterable[Sequence[Any]],
    threshold: float = 0.8,
) -> tuple[bool, ...]:
    """For each evidence ``(start, end, ...)`` span of ``context``: is it kept?

    A piece of evidence counts as kept when at least ``threshold`` of its words lie wholly
    inside the ``kept_spans`` (character offsets into ``context``). Extra fields of the
    evidence tuples (the overlap count, the hop) are ignored.
    """
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    kept = _merged(kept_spans)
    return tuple(kept_word_fraction(kept, context, (int(ev[0]), int(ev[1]))) >= threshold for ev in evidence)


def exact_match(prediction: str, answers: Iterable[str]) -> float:
    """1.0 when the normalised prediction equals some normalised gold answer, else 0.0."""
    p = normalize_answer(prediction)
    return float(any(p == normalize_answer(a) for a in answers))


def _f1_one(prediction: str, answer: str) -> float:
    p, g = normalize_answer(prediction).split(), normalize_answer(answer).split()
    if not p or not g:
        return float(p == g)  # SQuAD v2: both empty (no answer) is a match, one empty is not
    common = sum((Counter(p) & Counter(g)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(p), common / len(g)
    return 2 * precision * recall / (precision + recall)


def f1(prediction: str, answers: Iterable[str]) -> float:
    """SQuAD's token F1 of the normalised prediction against the best-matching gold answer (0.0 for none)."""
    return max((_f1_one(prediction, a) for a in answers), default=0.0)
