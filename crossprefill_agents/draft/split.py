"""One forward that prefills context tokens with fused attention and runs query tokens with their weights exposed.

A forward costs a fixed ~0.1 s on a small CPU draft whatever its length (every weight is read once), so the
question scorer runs the context's last block, the question and the null query in a single forward:
:func:`split_attention`, registered with transformers as :data:`SPLIT_ATTENTION`, computes the leading
``body`` rows with the model's sdpa attention and the trailing ``tail`` rows eagerly, keeping the voting
heads' weights of those rows. The masks come from the :class:`SplitPlan` of the running forward.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = ["SPLIT_ATTENTION", "SplitPlan", "additive_mask", "planned", "register", "split_attention"]

SPLIT_ATTENTION = "crossprefill_split"  # the attention implementation's name in transformers' registry

_PLAN: contextvars.ContextVar[SplitPlan | None] = contextvars.ContextVar("crossprefill_split_plan", default=None)


@dataclass
class SplitPlan:
    """What one split forward computes: where the tail starts, both masks, and whose weights to keep."""

    n_tail: int  # trailing rows run eagerly (the question and the null query)
    body_mask: torch.Tensor | None  # (1, 1, body, past + body) additive; None: no past, the body is plainly causal
    tail_mask: torch.Tensor  # (1, 1, n_tail, past + body + n_tail) additive
    voters: tuple[tuple[int, ...], ...]  # per layer, the heads whose tail weights are kept
    weights: dict[int, torch.Tensor] = field(default_factory=dict)  # layer -> (1, voters, n_tail, keys)


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
    past + n, d)`` -> ``(1, n, heads, d)``. The body rows go through sdpa exactly as a plain prefill would; the
    tail rows' softmax is formed as in transformers' eager attention (float32, then the model's dtype), and the
    voting heads' rows are stored in the plan. ``attention_mask`` is unused: the plan carries the masks."""
    from transformers.integrations.sdpa_attention import repeat_kv, sdpa_attention_forward

    plan = _PLAN.get()
    if plan is None:
        raise RuntimeError(f"the {SPLIT_ATTENTION!r} attention runs only inside crossprefill's planned forward")
    n = query.shape[2]
    body = n - plan.n_tail
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    parts = []
    if body:
        seen = key.shape[2] - plan.n_tail  # the body never sees the tail's keys
        out, _ = sdpa_attention_forward(
            module,
            query[:, :, :body],
            key[:, :, :seen],
            value[:, :, :seen],
            plan.body_mask,
            dropout=0.0,
            scaling=scale,
            **kwargs,
        )
        parts.append(out)
    groups = getattr(module, "num_key_value_groups", 1)
    k, v = repeat_kv(key, groups), repeat_kv(value, groups)
    logits = torch.matmul(query[:, :, body:], k.transpose(2, 3)) * scale + plan.tail_mask
    weights = torch.softmax(logits, dim=-1, dtype=torch.float32).to(query.dtype)
    parts.append(torch.matmul(weights, v).transpose(1, 2))
    layer = int(module.layer_idx)
    if layer < len(plan.voters) and plan.voters[layer]:
        plan.weights[layer] = weights[:, list(plan.voters[layer])]
    return torch.cat(parts, dim=1).contiguous(), None


def register() -> str:
    """Register :func:`split_attention` with transformers (idempotent); returns its implementation name."""
    from transformers import AttentionInterface

    if AttentionInterface._global_mapping.get(SPLIT_ATTENTION) is not split_attention:
        AttentionInterface.register(SPLIT_ATTENTION, split_attention)
    return SPLIT_ATTENTION
