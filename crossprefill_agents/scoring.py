"""Attention of the draft's queries -> importance of each context token.

Pure tensor functions, no model: each one can be checked on hand-made tensors.

The published method (speculative prefill, ``scorer="lookahead"``): the last prompt token
and N greedy look-ahead tokens are the queries; their attention onto the context keys is
renormalised over those keys in fp32, average-pooled along the keys, reduced by max over
layers x heads (:func:`head_vote`), and averaged over query steps (:func:`mean_over_steps`).

The question scorer (``scorer="question"``): every question token is a query; each head's
renormalised, pooled attention is averaged over them, the same head's average for a
content-free query is subtracted, and the voting heads take the max (:func:`question_vote`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

__all__ = [
    "NoVotingHeadsError",
    "context_slice",
    "head_rows",
    "head_vote",
    "heads_by_layer",
    "mean_over_steps",
    "pick_heads",
    "pool_along_keys",
    "question_vote",
    "renormalize_over_context",
]


class NoVotingHeadsError(ValueError):
    """The chosen heads and layers leave no head to vote."""


def context_slice(weights: torch.Tensor, *, total_keys: int, ctx_start: int, ctx_end: int) -> torch.Tensor:
    """Cut the context keys out of one layer's attention row.

    ``weights`` is ``(heads, k)``: attention of one query onto the *last* ``k`` of
    ``total_keys`` positions (a sliding-window layer keeps fewer than all of them).
    Returns ``(heads, ctx_end - ctx_start)``; context positions the layer cannot see are 0.
    """
    heads, k = weights.shape  # (heads, k)
    n = ctx_end - ctx_start
    out = weights.new_zeros((heads, n))  # (heads, n_ctx)
    first_seen = total_keys - k  # absolute position of weights[:, 0]
    lo = max(ctx_start, first_seen)
    if lo < ctx_end:
        out[:, lo - ctx_start :] = weights[:, lo - first_seen : ctx_end - first_seen]
    return out


def renormalize_over_context(weights: torch.Tensor) -> torch.Tensor:
    """Renormalise attention rows over the context keys only, in fp32.

    ``weights`` ``(..., n_ctx)`` are softmax probabilities over all keys; dividing by
    their sum over the context equals a softmax over the context logits alone.
    Rows with no mass on the context stay all-zero; rows that are not finite (a draft with NaN or
    inf weights) stay NaN, so the caller can tell them from real zeros.
    """
    w = weights.float()  # (..., n_ctx)
    total = w.sum(dim=-1, keepdim=True)  # (..., 1)
    out = torch.where(total > 0, w / total.clamp_min(torch.finfo(torch.float32).tiny), torch.zeros_like(w))
    return torch.where(torch.isnan(total), total.expand_as(w), out)


def pool_along_keys(scores: torch.Tensor, kernel: int) -> torch.Tensor:
    """Average-pool ``(..., n)`` along the last axis with stride 1, keeping length ``n``.

    Edges average over the positions that exist (padding is not counted), so tokens
    at the ends of the context are not damped.
    """
    if kernel == 1:
        return scores
    shape = scores.shape
    flat = scores.reshape(-1, 1, shape[-1])  # (rows, 1, n)
    pooled = F.avg_pool1d(flat, kernel_size=kernel, stride=1, padding=kernel // 2, count_include_pad=False)
    return pooled.reshape(shape)


def head_rows(per_layer: Sequence[torch.Tensor], *, kernel: int) -> torch.Tensor:
    """Per-layer ``(heads, n_ctx)`` rows -> ``(layers*heads, n_ctx)``, each renormalised and pooled."""
    stacked = torch.cat([renormalize_over_context(w) for w in per_layer], dim=0)  # (layers*heads, n_ctx)
    return pool_along_keys(stacked, kernel)


def pick_heads(per_layer: Sequence[torch.Tensor], heads: Sequence[tuple[int, int]]) -> list[torch.Tensor]:
    """Keep only the ``(layer, head)`` pairs in ``heads`` of per-layer ``(heads, n_ctx)`` rows.

    The result stays aligned with the layers: a layer with none of the pairs gets an empty
    ``(0, n_ctx)`` row block. An empty ``heads`` keeps everything.
    """
    if not heads:
        return list(per_layer)
    chosen = heads_by_layer([len(r) for r in per_layer], heads)
    return [rows[list(keep)] for rows, keep in zip(per_layer, chosen, strict=True)]  # (len(keep), n_ctx) each


def heads_by_layer(
    n_heads: Sequence[int], heads: Sequence[tuple[int, int]], *, layers: Sequence[int] | None = None
) -> tuple[tuple[int, ...], ...]:
    """Per layer, the sorted head indices that vote: ``n_heads[i]`` is layer ``i``'s head count.

    ``heads`` are ``(layer, head)`` pairs (empty: every head); pairs the draft lacks are skipped, and
    :class:`ValueError` is raised when none exists. ``layers`` keeps only those layers (``None``: all).
    """
    if heads and not any(0 <= layer < len(n_heads) and 0 <= h < n_heads[layer] for layer, h in heads):
        raise ValueError(f"none of the heads {list(heads)[:4]} exist in this draft's {len(n_heads)} layers")
    allowed = set(range(len(n_heads)) if layers is None else layers)
    return tuple(
        (tuple(range(n)) if not heads else tuple(sorted({h for layer, h in heads if layer == i and 0 <= h < n})))
        if i in allowed
        else ()
        for i, n in enumerate(n_heads)
    )


def mean_over_steps(steps: Sequence[torch.Tensor]) -> torch.Tensor:
    """``steps`` of ``(n_ctx,)`` -> their mean ``(n_ctx,)``."""
    if not steps:
        raise ValueError("at least one query step is needed to score the context")
    return torch.stack(list(steps), dim=0).mean(dim=0)  # (n_ctx,)


def head_vote(
    per_layer: Sequence[torch.Tensor],
    heads: Sequence[tuple[int, int]] = (),
    *,
    layers: Sequence[int] | None = None,
    kernel: int = 1,
) -> torch.Tensor:
    """Per-layer ``(heads, n_ctx)`` rows -> ``(n_ctx,)``: the max over the voting heads.

    ``heads`` are the voting ``(layer, head)`` pairs (empty: every head); ``layers`` keeps only
    those layers (``None``: all). Rows are pooled along keys with ``kernel`` before the max.
    Raises :class:`NoVotingHeadsError` when no head is left to vote.
    """
    chosen = heads_by_layer([len(r) for r in per_layer], heads, layers=layers)
    rows = [r[list(keep)] if len(keep) < len(r) else r for r, keep in zip(per_layer, chosen, strict=True) if keep]
    if not rows:
        raise NoVotingHeadsError("no head is left to vote: the chosen heads lie outside the chosen layers")
    return pool_along_keys(torch.cat(rows, dim=0), kernel).amax(dim=0)  # (n_ctx,)


def question_vote(
    asked: Sequence[torch.Tensor],
    null: Sequence[torch.Tensor],
    heads: Sequence[tuple[int, int]] = (),
    *,
    layers: Sequence[int] | None = None,
) -> torch.Tensor:
    """The question scorer's vote: per head, the question's attention minus a content-free query's.

    ``asked`` and ``null`` are per-layer ``(heads, n_ctx)`` rows, each already renormalised over
    the context, pooled along keys and averaged over its query's tokens. What a head gives
    every query alike (attention sinks, the pull toward the end of the context) cancels; the
    max over the voting heads of what is left is each token's importance, ``(n_ctx,)``.
    """
    if len(asked) != len(null):
        raise ValueError(f"asked has {len(asked)} layers, null has {len(null)}")
    excess = [a - b for a, b in zip(asked, null, strict=True)]  # per layer (heads, n_ctx)
    return head_vote(excess, heads, layers=layers, kernel=1)
