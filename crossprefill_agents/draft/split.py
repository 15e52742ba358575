"""One forward that prefills context tokens with fused attention and runs query tokens with their weights exposed.

A forward costs a fixed ~0.1 s on a small CPU draft whatever its length (every weight is read once), so the
question scorer runs the context's last block, the question and the null query in a single forward:
:func:`split_attention`, registered with transformers as :data:`SPLIT_ATTENTION`, computes every row's
output with fused attention (the leading ``body`` rows as a prefill would, the trailing ``tail`` rows under
their own mask) and forms attention weights only where they vote: the voting heads' rows of the tail.
The masks come from the :class:`SplitPlan` of the running forward.

The same function runs the prefill's blocks that follow a cached past (a plan with no tail): on a CPU, a
long body reads the past and itself in two fused passes merged by their log-sum-exp
(:func:`attend_after_past`), which skips the additive mask a single pass needs.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = [
    "PAST_SPLIT_ROWS",
    "SPLIT_ATTENTION",
    "SplitPlan",
    "additive_mask",
    "attend_after_past",
    "planned",
    "register",
    "split_attention",
]

SPLIT_ATTENTION = "crossprefill_split"  # the attention implementation's name in transformers' registry
# Body rows from which a body with a past attends in two fused passes (attend_after_past, CPU) rather than one
# under a mask. Measured on 2 cores in bfloat16 (SmolLM2's heads): 1.18x faster at 1,024 rows over 3k cached
# keys, 1.5x at 2,048 rows over 2k and 6k; 0.88x at 400 rows, where the mask's single pass is cheaper.
PAST_SPLIT_ROWS = 1024

_PLAN: contextvars.ContextVar[SplitPlan | None] = contextvars.ContextVar("crossprefill_split_plan", default=None)


@dataclass
class SplitPlan:
    """What one split forward computes: where the tail starts, both masks, and whose weights to keep."""

    n_tail: int  # trailing rows run eagerly (the question and the null query); 0: a prefill block
    past: int  # cached tokens before the body: each body row reads them all, then the body causally
    tail_mask: torch.Tensor | None  # (1, 1, n_tail, past + body + n_tail) additive; None without a tail
    voters: tuple[tuple[int, ...], ...]  # per layer, the heads whose tail weights are kept
    weights: dict[int, torch.Tensor] = field(default_factory=dict)  # layer -> (1, voters, n_tail, keys)
    body_mask: torch.Tensor | None = None  # (1, 1, body, past + body) additive, made on first use by a masked body


def additive_mask(seen: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A boolean ``(q, k)`` "may attend" map -> the ``(1, 1, q, k)`` additive mask attention adds to its logits."""
    return torch.zeros(seen.shape, dtype=dtype).masked_fill(~seen, torch.finfo(dtype).min)[None, None]


@contextlib.contextmanager
def planned(plan: SplitPlan) -> Iterator[SplitPlan]:
    """Make ``plan`` the one :func:`split_attention` follows for forwards in this context."""
    token = _PLAN.set(plan)
    try:
        yield plan
    finally:
        _PLAN.reset(token)


def split_attention(
    module: Any,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    *,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """transformers' attention-function signature: ``query (1, heads, n, d)``, ``key``/``value`` ``(1, kv_heads,
    past + n, d)`` -> ``(1, n, heads, d)``. Every row's output comes from torch's fused attention (grouped
    key/value heads read in place, never repeated): the body rows causally over the context, as a plain
    prefill computes them, the tail rows under the plan's tail mask. Only the voting heads' tail weights are
    formed as well, as in transformers' eager attention (float32 softmax, then the model's dtype), and stored
    in the plan; a layer with no voting head forms none. ``attention_mask`` is unused: the plan carries the
    masks."""
    plan = _PLAN.get()
    if plan is None:
        raise RuntimeError(f"the {SPLIT_ATTENTION!r} attention runs only inside crossprefill's planned forward")
    n = query.shape[2]
    body = n - plan.n_tail
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    groups = query.shape[1] // key.shape[1]
    parts = []
    if body:
        seen = key.shape[2] - plan.n_tail  # the body never sees the tail's keys
        if seen != plan.past + body:
            raise RuntimeError(f"the plan expects {plan.past} cached keys before the body, the layer has {seen - body}")
        q, k, v = query[:, :, :body], key[:, :, :seen], value[:, :, :seen]
        if not plan.past:  # the body alone, plainly causal
            parts.append(_attend(q, k, v, None, scale, groups, True))
        elif body >= PAST_SPLIT_ROWS and query.device.type == "cpu":
            parts.append(attend_after_past(q, k, v, plan.past, scale))
        else:
            if plan.body_mask is None:
                seen_map = torch.ones((body, seen), dtype=torch.bool).tril(plan.past)
                plan.body_mask = additive_mask(seen_map, query.dtype).to(query.device)
            parts.append(_attend(q, k, v, plan.body_mask, scale, groups, False))
    if plan.n_tail:
        if plan.tail_mask is None:
            raise RuntimeError("a split forward with a tail needs the plan's tail mask")
        tail = query[:, :, body:]
        parts.append(_attend(tail, key, value, plan.tail_mask, scale, groups, False))
        layer = int(module.layer_idx)
        voters = list(plan.voters[layer]) if layer < len(plan.voters) else []
        if voters:
            kv = [h // groups for h in voters]  # the key/value head each voting head reads
            logits = torch.matmul(tail[:, voters], key[:, kv].transpose(2, 3)) * scale + plan.tail_mask
            plan.weights[layer] = torch.softmax(logits, dim=-1, dtype=torch.float32).to(query.dtype)
    return (torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]).contiguous(), None


def attend_after_past(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, past: int, scale: float
) -> torch.Tensor:
    """Attention of ``query (1, heads, q, d)`` rows that read all ``past`` leading keys of ``key``/``value``
    ``(1, kv_heads, past + q, d)`` and the last ``q`` causally -> ``(1, q, heads, d)``, as one pass under that
    mask computes it. Two fused passes instead (CPU flash attention: over the past unmasked, over the rows' own
    keys causally), each with its log-sum-exp, are merged in float32."""
    if not 0 < past < key.shape[2]:
        raise ValueError(f"attend_after_past needs 1 to {key.shape[2] - 1} past keys, got {past}")
    groups = query.shape[1] // key.shape[1]
    if groups > 1:  # the CPU kernel that returns the log-sum-exp takes one key/value head per query head
        key, value = key.repeat_interleave(groups, dim=1), value.repeat_interleave(groups, dim=1)
    flash = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
    old, old_lse = flash(query, key[:, :, :past], value[:, :, :past], 0.0, False, scale=scale)[:2]
    new, new_lse = flash(query, key[:, :, past:], value[:, :, past:], 0.0, True, scale=scale)[:2]
    lse = torch.logaddexp(old_lse, new_lse)
    out = old.float() * torch.exp(old_lse - lse).unsqueeze(-1) + new.float() * torch.exp(new_lse - lse).unsqueeze(-1)
    return out.to(query.dtype).transpose(1, 2)


def _attend(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    mask: torch.Tensor | None,
    scale: float,
    groups: int,
    causal: bool,
) -> torch.Tensor:
    """Fused attention of ``query (1, heads, q, d)`` over ``key``/``value`` ``(1, kv_heads, k, d)`` -> ``(1, q,
    heads, d)``; ``causal`` (with no mask) aligns the rows with the last ``q`` keys, here all of them."""
    out = torch.nn.functional.scaled_dot_product_attention(
        query, key, value, attn_mask=mask, scale=scale, is_causal=causal, enable_gqa=groups > 1
    )
    return out.transpose(1, 2)


def register() -> str:
    """Register :func:`split_attention` with transformers (idempotent); returns its implementation name."""
    from transformers import AttentionInterface

    if AttentionInterface._global_mapping.get(SPLIT_ATTENTION) is not split_attention:
        AttentionInterface.register(SPLIT_ATTENTION, split_attention)
    return SPLIT_ATTENTION
