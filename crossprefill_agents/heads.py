"""Choosing the heads that vote: retrieval heads, found once per draft, training-free.

Many attention heads of a small draft attend by position (the last tokens, the first
token) rather than by content. Retrieval heads are the ones that, asked about a fact,
look at where the fact is. :func:`find_retrieval_heads` plants a synthetic fact ("The
access code of the blue depot is 4821.") at a random depth in text the caller gives,
asks for it, and ranks every (layer, head) by the attention mass its query steps put on
the fact; the top ones go to ``CompressionConfig(heads=...)``.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import numpy as np

from .config import CompressionConfig
from .draft import DraftModel

__all__ = ["find_retrieval_heads", "head_needle_mass"]

_COLOURS = ("blue", "amber", "green", "silver", "crimson", "violet", "grey", "golden")
_PLACES = ("depot", "harbour", "archive", "tower", "garden", "station", "library", "foundry")


def _plant(text: str, rng: random.Random) -> tuple[str, str, tuple[int, int]]:
    """``text`` with a fact sentence at a random sentence boundary, its question, and its character span."""
    name = f"the {rng.choice(_COLOURS)} {rng.choice(_PLACES)}"
    fact = f"The access code of {name} is {rng.randint(1000, 9999)}. "
    cuts = [i + 2 for i in range(len(text) - 2) if text[i] == "." and text[i + 1] == " "]
    at = rng.choice(cuts[len(cuts) // 10 : -max(1, len(cuts) // 10)] or cuts or [0])
    return text[:at] + fact + text[at:], f"What is the access code of {name}?", (at, at + len(fact) - 1)


def head_needle_mass(
    draft: DraftModel, context: str, question: str, span: tuple[int, int], config: CompressionConfig
) -> np.ndarray:
    """``(layers, heads)``: the mean over query steps of each head's attention mass on ``context[span]``."""
    scores = draft.head_scores([context], question, config=config)  # (steps, layers, heads, n_ctx)
    offsets = draft.tokenize(context).offsets
    inside = (offsets[:, 1] > span[0]) & (offsets[:, 0] < span[1])
    return scores[..., inside].sum(axis=-1).mean(axis=0) / scores.sum(axis=-1).mean(axis=0).clip(min=1e-12)


def find_retrieval_heads(
    draft: DraftModel,
    texts: Sequence[str],
    *,
    top: int = 16,
    seed: int = 0,
    config: CompressionConfig | None = None,
) -> tuple[tuple[int, int], ...]:
    """The ``top`` (layer, head) pairs that put the most attention on a planted fact, best first.

    ``texts`` are stretches of ordinary prose that fit one draft window (a few hundred to a
    few thousand tokens each; 8 or more give a stable ranking). Scoring uses ``config``'s
    look-ahead and pooling (default: :class:`CompressionConfig`).
    """
    if top < 1:
        raise ValueError(f"top must be >= 1, got {top}")
    if not texts:
        raise ValueError("find_retrieval_heads needs at least one text to plant facts in")
    cfg = config or CompressionConfig()
    rng = random.Random(seed)
    masses = []
    for text in texts:
        context, question, span = _plant(text, rng)
        masses.append(head_needle_mass(draft, context, question, span, cfg))
    mean = np.mean(masses, axis=0)  # (layers, heads)
    order = np.argsort(-mean, axis=None)[:top]
    return tuple((int(i // mean.shape[1]), int(i % mean.shape[1])) for i in order)
