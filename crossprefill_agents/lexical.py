"""Query-word overlap: an idf-weighted lexical score per unit, fused with the draft's score.

Pure functions on strings and arrays. A small draft's attention separates evidence only
weakly where the question shares words with it; an idf-weighted overlap finds that
evidence for free, and a rank fusion lets the draft decide the rest.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import numpy as np

__all__ = ["content_words", "fuse", "lexical_scores", "percentile_ranks"]

_WORD = re.compile(r"\w+", re.UNICODE)
_STOP = frozenset(
    """a an the and or but if then else of in on at to for from by with about as into over under after before
    between through during without within is are was were be been being am do does did doing have has had having
    it its this that these those there here what which who whom whose when where why how i you he she we they
    me him her us them my your his our their not no nor so than too very can could will would shall should may
    might must just also only any all each some such own same other more most few both one many much""".split()
)


def _stem(word: str) -> str:
    for suffix in ("ies", "es", "s", "ing", "ed"):
        if len(word) > len(suffix) + 3 and word.endswith(suffix):
            return word[: -len(suffix)]
    return word


def content_words(text: str) -> set[str]:
    """Lower-cased, crudely stemmed words of ``text`` that are not stopwords."""
    return {_stem(w) for w in (m.group().lower() for m in _WORD.finditer(text)) if w not in _STOP}


def lexical_scores(unit_texts: Sequence[str], query: str) -> np.ndarray:
    """Sum over the query's content words found in each unit of their idf over the units.

    Returns ``(units,)`` float64; all zeros when the query has no content words.
    """
    q = content_words(query)
    bags = [content_words(t) & q for t in unit_texts]
    n = len(bags)
    df = {w: sum(w in b for b in bags) for w in q}
    idf = {w: math.log((n + 1) / (df[w] + 0.5)) for w in q}
    return np.array([sum(idf[w] for w in b) for b in bags], dtype=np.float64)


def percentile_ranks(x: np.ndarray) -> np.ndarray:
    """Each value's rank among ``x`` scaled to [0, 1] (ties share their mean rank); ``(n,)`` -> ``(n,)``."""
    x = np.asarray(x, dtype=np.float64)
    n = len(x)
    if n <= 1:
        return np.ones(n)
    order = np.argsort(x, kind="stable")
    ranks = np.empty(n)
    ranks[order] = np.arange(n, dtype=np.float64)
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, weights=ranks)
    return (sums / counts)[inverse] / (n - 1)


def fuse(draft: np.ndarray, lexical: np.ndarray, weight: float) -> np.ndarray:
    """Rank fusion: ``(1 - weight) * rank(draft) + weight * rank(lexical)``, both as percentiles."""
    if weight <= 0.0:
        return np.asarray(draft, dtype=np.float64)
    if not np.any(lexical > 0):  # the query shares no content word with the context: the draft decides
        return np.asarray(draft, dtype=np.float64)
    return (1.0 - weight) * percentile_ranks(draft) + weight * percentile_ranks(lexical)
