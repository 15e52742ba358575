"""The query passes over a prefilled window: whose attention votes, and how the votes become token scores.

The question scorer runs the question's tokens (in blocks) and then a content-free null
query over the same cached context, and each head's excess over the null query votes.
The published look-ahead scorer runs the last prompt token and greedy look-ahead tokens.
Both read eager attention weights, turned into scores by :mod:`crossprefill_agents.scoring`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..config import CompressionConfig
from ..results import DraftError, DraftTimeoutError
from ..scoring import (
    NoVotingHeadsError,
    context_slice,
    head_rows,
    head_vote,
    heads_by_layer,
    mean_over_steps,
    pool_along_keys,
    question_vote,
    renormalize_over_context,
)

__all__ = ["NULL_QUERY", "QUERY_BLOCK", "Window", "check_deadline", "lookahead_votes", "now", "question_votes"]

NULL_QUERY = "N/A"  # the content-free query whose attention calibrates the question scorer
# Question tokens per eager forward (bounds the attention maps held at once); where the null query shares
# the last forward, that forward runs its tokens too (3 on SmolLM2).
QUERY_BLOCK = 16

Forward = Callable[[list[int], Any], Any]  # (ids, cache) -> model output with eager attentions and last logits


@dataclass(frozen=True)
class Window:
    """What the query passes over one prefilled scoring window share."""

    ctx_start: int  # first context position in the prompt
    ctx_end: int  # one past the last
    cache: Any  # the draft's KV cache holding the prompt up to ctx_end (at least)
    config: CompressionConfig
    heads: tuple[tuple[int, int], ...]  # voting (layer, head) pairs; () = all
    deadline: float | None  # time.monotonic() past which the pass gives up
    capture: list[torch.Tensor] | None  # collects per-query (layers*heads, n_ctx) rows for head_scores
    global_layers: tuple[int, ...] | None  # the draft's full-attention layers, where it has sliding ones
    separator_ids: list[int]  # draft tokens of the query separator alone
    null_ids: list[int]  # draft tokens of the separator + the null query
    eos_ids: frozenset[int]  # tokens that end the look-ahead
    forward: Forward  # one eager forward extending the cache
    # One eager forward of question tokens and, last, ``n_null`` null-query tokens that read only the prompt
    # up to the context's end (``[0, ctx_end)``: special prefix and context) at the positions right after it:
    # (ids, cache, n_null, ctx_end) -> output. None: the draft cannot mask that way; the null query runs apart.
    fused_forward: Callable[[list[int], Any, int, int], Any] | None = None
    # One forward of the context tokens not yet in the cache, the question and the null query (draft/split.py):
    # (query ids, null ids, cache, ctx_end, voters per layer) -> per layer the voters' (1, h, rows, keys) weights
    # of the query rows. None: the context is prefilled already and the query runs in its own forwards.
    merged_forward: Callable[[list[int], list[int], Any, int, tuple[tuple[int, ...], ...]], list[Any]] | None = None
    layer_heads: tuple[int, ...] = ()  # attention heads of each layer the forward runs (for merged_forward's voters)


def now() -> float:
    """The clock deadlines are read on: ``time.monotonic()``."""
    return time.monotonic()


def check_deadline(deadline: float | None) -> None:
    """Raise :class:`DraftTimeoutError` once :func:`now` is past ``deadline``."""
    if deadline is not None and now() > deadline:
        raise DraftTimeoutError("the draft ran past CompressionConfig.timeout_s")


def question_votes(query_ids: list[int], w: Window) -> tuple[torch.Tensor, int]:
    """Every question token reads the context; each head's mean, minus its mean for the null query, votes.

    Only the voting heads' rows are renormalised and pooled (all of them when ``w.capture`` collects them).
    Where the draft has a ``fused_forward``, the null query rides in the question's last forward instead
    of a second pass. Returns ``(n_ctx,)`` scores and the query tokens run.
    """
    if w.merged_forward is not None:
        return _merged_votes(query_ids, w)
    if hasattr(w.cache, "activate_past_recording"):
        w.cache.activate_past_recording()  # sliding-window layers keep what the question pushes out, for the crop
    every = w.capture is not None  # head_scores collects every head's rows: form them all, choose the voters after
    fuse = w.fused_forward is not None and not every
    asked, null = _query_attention(query_ids, w, w.capture, every=every, null_ids=w.null_ids if fuse else ())
    w.cache.crop(w.ctx_end - w.cache.get_seq_length())
    if null is None:  # no fused forward: the null query reads the context in a second pass
        null, _ = _query_attention(w.null_ids, w, None, every=every)
    return _vote(asked, w, null, chosen=not every), len(query_ids) + len(w.null_ids)


def _merged_votes(query_ids: list[int], w: Window) -> tuple[torch.Tensor, int]:
    """:func:`question_votes` in one forward that also finishes the context (``w.merged_forward``)."""
    assert w.merged_forward is not None
    check_deadline(w.deadline)
    voters = heads_by_layer(w.layer_heads, w.heads, layers=_layers(w))
    weights = w.merged_forward(list(query_ids), list(w.null_ids), w.cache, w.ctx_end, voters)
    total = w.ctx_end + len(query_ids) + len(w.null_ids)
    # Pooling along keys is linear, so the means over the query rows are pooled, not every row.
    rows = _context_rows(weights, None, total, w, pool=False)  # per layer (voters, rows, n_ctx)
    asked, null = _Mean(_skip(query_ids, w)), _Mean(_skip(w.null_ids, w))
    asked.add(0, [r[:, : len(query_ids)] for r in rows], None)
    null.add(0, [r[:, len(query_ids) :] for r in rows], None)
    w.cache.crop(w.ctx_end - w.cache.get_seq_length())
    kernel = w.config.experimental.pool_kernel
    asked_rows, null_rows = ([pool_along_keys(r, kernel) if len(r) else r for r in m.mean()] for m in (asked, null))
    return _vote(asked_rows, w, null_rows, chosen=True), len(query_ids) + len(w.null_ids)


def lookahead_votes(ids: list[int], w: Window) -> tuple[torch.Tensor, int]:
    """The published queries: the last prompt token, then greedy look-ahead tokens.

    Max over the voting heads, mean over the steps. Returns ``(n_ctx,)`` scores and the steps run.
    """
    steps: list[torch.Tensor] = []
    token = ids[-1]
    used = 0
    lookahead = w.config.experimental.lookahead
    for step in range(lookahead + 1):
        check_deadline(w.deadline)
        out = w.forward([token], w.cache)
        used += 1
        total_keys = len(ids) + step
        per_layer = [  # each (heads, n_ctx)
            context_slice(a[0, :, -1, :], total_keys=total_keys, ctx_start=w.ctx_start, ctx_end=w.ctx_end)
            for a in out.attentions
        ]
        if w.capture is not None:
            w.capture.append(head_rows(per_layer, kernel=w.config.experimental.pool_kernel))  # (layers*heads, n_ctx)
        steps.append(_vote([renormalize_over_context(r) for r in per_layer], w))
        if step == lookahead:
            break
        token = int(out.logits[0, -1].argmax())
        if token in w.eos_ids:
            break
    return mean_over_steps(steps), used


Rows = list[torch.Tensor]  # per layer (heads, n_ctx)


def _query_attention(
    query_ids: list[int],
    w: Window,
    capture: list[torch.Tensor] | None,
    *,
    every: bool,
    null_ids: Sequence[int] = (),
) -> tuple[Rows, Rows | None]:
    """Per layer ``(heads, n_ctx)``: the mean over the query's tokens (not the separator's) of their
    attention onto the context, renormalised over it in fp32 and pooled along keys.

    ``every``: every head's rows; else only the voting heads' (a layer with none gets ``(0, n_ctx)``).
    ``capture`` collects each query token's rows. ``null_ids`` (with ``w.fused_forward``) run in the last
    block's forward, reading only the prompt up to ``ctx_end``: returns ``(query mean, null mean)``, the
    null mean ``None`` without them.
    """
    asked = _Mean(_skip(query_ids, w))
    null = _Mean(_skip(null_ids, w))
    voters: tuple[tuple[int, ...], ...] | None = None
    for i in range(0, len(query_ids), QUERY_BLOCK):
        check_deadline(w.deadline)
        block = query_ids[i : i + QUERY_BLOCK]
        fused = w.fused_forward if null_ids and i + QUERY_BLOCK >= len(query_ids) else None
        extra = null_ids if fused is not None else ()
        out = w.forward(block, w.cache) if fused is None else fused([*block, *extra], w.cache, len(extra), w.ctx_end)
        if not asked.wants(i, len(block)) and not extra:
            continue
        if not every and voters is None:
            voters = heads_by_layer([a.shape[1] for a in out.attentions], w.heads, layers=_layers(w))
        total = w.ctx_end + i + len(block) + len(extra)  # keys up to the forward's last token
        rows = _context_rows(out.attentions, voters, total, w)  # per layer (heads, block + extra, n_ctx)
        asked.add(i, [r[:, : len(block)] for r in rows], capture)
        if extra:
            null.add(0, [r[:, len(block) :] for r in rows], None)
    return asked.mean(), null.mean() if null_ids else None


def _skip(ids: Sequence[int], w: Window) -> int:
    """Leading tokens of ``ids`` that are the query separator, which reads the context but does not vote."""
    n_sep = len(w.separator_ids)
    return n_sep if 0 < n_sep < len(ids) and list(ids[:n_sep]) == w.separator_ids else 0


def _context_rows(
    attentions: Sequence[torch.Tensor],
    voters: tuple[tuple[int, ...], ...] | None,
    total: int,
    w: Window,
    *,
    pool: bool = True,
) -> Rows:
    """Each layer's ``(1, heads, q, k)`` weights (the last ``k`` of ``total`` positions) -> the voters' (all
    heads' when ``voters`` is None) ``(heads, q, n_ctx)`` rows, renormalised over the context and (``pool``)
    pooled along keys."""
    rows = []
    for layer, a in enumerate(attentions):
        a = a[0] if voters is None else a[0, list(voters[layer])]
        heads, q, k = a.shape
        att = context_slice(a.reshape(heads * q, k), total_keys=total, ctx_start=w.ctx_start, ctx_end=w.ctx_end)
        att = att.reshape(heads, q, w.ctx_end - w.ctx_start)  # (heads, q, n_ctx)
        if heads:
            att = renormalize_over_context(att)
            rows.append(pool_along_keys(att, w.config.experimental.pool_kernel) if pool else att)
        else:
            rows.append(att.float())
    return rows


class _Mean:
    """The running mean over a query's voting tokens (those past its first ``skip``) of per-layer rows."""

    def __init__(self, skip: int) -> None:
        self.skip = skip
        self.sums: Rows | None = None
        self.counted = 0

    def wants(self, start: int, n: int) -> bool:
        """Whether the block of ``n`` tokens from ``start`` holds a voting token."""
        return start + n > self.skip

    def add(self, start: int, rows: Rows, capture: list[torch.Tensor] | None) -> None:
        """Count the block's rows (per layer ``(heads, q, n_ctx)``, its tokens from ``start`` on)."""
        first = max(0, self.skip - start)
        q = rows[0].shape[1] if rows else 0
        if first >= q:
            return
        rows = [r[:, first:] for r in rows]
        if capture is not None:
            for j in range(q - first):
                capture.append(torch.cat([r[:, j] for r in rows], dim=0))  # (layers*heads, n_ctx)
        sums = [r.sum(dim=1) for r in rows]  # (heads, n_ctx) per layer
        self.sums = sums if self.sums is None else [x + y for x, y in zip(self.sums, sums, strict=True)]
        self.counted += q - first

    def mean(self) -> Rows:
        """Per layer ``(heads, n_ctx)``: the sums over the counted tokens, divided by their number."""
        if self.sums is None:
            raise DraftError("the query has no tokens after the separator to read the context with")
        return [x / self.counted for x in self.sums]


def _layers(w: Window) -> tuple[int, ...] | None:
    """The layers whose heads may vote: the full-attention ones under ``attention_layers="global"``, else all."""
    return w.global_layers if w.config.experimental.attention_layers == "global" else None


def _vote(
    per_layer: Sequence[torch.Tensor], w: Window, null: Sequence[torch.Tensor] | None = None, *, chosen: bool = False
) -> torch.Tensor:
    """The voting heads' max of per-layer ``(heads, n_ctx)`` rows (the question's excess over ``null``).

    ``chosen``: the rows are the voting heads' already (:func:`_query_attention` without capture), so all vote.
    """
    layers, heads = (None, ()) if chosen else (_layers(w), w.heads)
    try:
        if null is not None:
            votes = question_vote(per_layer, null, heads, layers=layers)
        else:
            votes = head_vote(per_layer, heads, layers=layers, kernel=w.config.experimental.pool_kernel)
    except NoVotingHeadsError as e:
        raise DraftError(f"{e} (experimental.heads, experimental.attention_layers)") from e
    if not bool(torch.isfinite(votes).all()):  # scores of NaN / inf are no ranking: fail open, never rank on zeros
        raise DraftError("the draft's attention is not finite (NaN or inf in its weights or activations)")
    return votes
