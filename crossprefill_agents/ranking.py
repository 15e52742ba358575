"""Units + query -> priority: which units the budget takes first.

Pure functions on strings and arrays. A small draft's attention separates evidence only
weakly where the question shares words with it; an idf-weighted query-word overlap finds
that evidence for free, and a rank fusion lets the draft decide the rest
(:func:`fuse`). Evidence clusters, so coarse-to-fine then lifts the units of the
paragraphs that read best as a whole (:func:`coarse_to_fine`). :func:`rank_units` is the
whole stage.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from .results import DraftScores
from .text import content_words
from .units import Unit, paragraph_ids, paragraph_spans, span_means

__all__ = ["coarse_to_fine", "fuse", "lexical_scores", "paragraph_scores", "percentile_ranks", "rank_units"]


def rank_units(
    docs: Sequence[str],
    units: Sequence[Unit],
    scores: DraftScores,
    *,
    lexical_weight: float,
    paragraph_weight: float,
    paragraph_score: str = "mean",
) -> np.ndarray:
    """``(units,)`` priorities, higher first: draft score fused with query overlap, then coarse-to-fine.

    ``scores`` is the pass the units were cut from (its query and token scores read the
    paragraphs). ``lexical_weight`` 0 leaves the draft's means alone; ``paragraph_weight`` 0
    skips coarse-to-fine. ``paragraph_score``: ``"mean"`` reads each paragraph as one unit,
    ``"best_unit"`` ranks it by its best unit.
    """
    priority = np.array([u.score for u in units], dtype=np.float64)  # (units,)
    if not units:
        return priority
    if lexical_weight > 0:
        lexical = lexical_scores([docs[u.doc][u.start : u.end] for u in units], scores.query)
        priority = fuse(priority, lexical, lexical_weight)
    if paragraph_weight > 0:
        groups = paragraph_ids(docs, units)
        coarse = paragraph_scores(docs, units, groups, scores, lexical_weight) if paragraph_score == "mean" else None
        priority = coarse_to_fine(priority, groups, paragraph_weight, coarse)
    return priority


def paragraph_scores(
    docs: Sequence[str], units: Sequence[Unit], groups: np.ndarray, scores: DraftScores, lexical_weight: float
) -> np.ndarray:
    """``(paragraphs,)``: each paragraph read as one unit, its tokens' mean draft score fused with its query overlap."""
    paras = paragraph_spans(units, groups)
    draft = np.zeros(len(paras))
    for d, (toks, sc) in enumerate(zip(scores.tokens, scores.scores, strict=True)):
        mine = [i for i, p in enumerate(paras) if p[0] == d]
        draft[mine] = span_means(toks.offsets, sc, [paras[i][1:] for i in mine])
    if lexical_weight <= 0:
        return draft
    lexical = lexical_scores([docs[d][s:e] for d, s, e in paras], scores.query)
    return fuse(draft, lexical, lexical_weight)


def lexical_scores(unit_texts: Sequence[str], query: str) -> np.ndarray:
    """Sum over the query's content words found in each unit of their idf over the units.

    Returns ``(units,)`` float64; all zeros when the query has no content words.
    """
    q = content_words(query)
    bags = [content_words(t) & q for t in unit_texts]
    n = len(bags)
    df = {w: sum(w in b for b in bags) for w in q}
    idf = {w: math.log((n + 1) / (df[w] + 0.5)) for w in q}
    # fsum: exactly rounded, so a bag's score does not depend on its set's iteration order (PYTHONHASHSEED, the
    # set's size): a plain sum split true ties by an ulp, and the ranking differed from one process to the next.
    return np.array([math.fsum(idf[w] for w in b) for b in bags], dtype=np.float64)


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
