"""The draft's KV state between agent turns: the tokens it has read, behind crop / reset / extend."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

__all__ = ["DraftPrefix"]


class DraftPrefix:
    """The draft's KV cache after reading a context, kept between agent turns.

    Owned by one session at a time. Before a pass, :meth:`open` crops it to the tokens the
    next prompt shares with it and hands out the cache to extend; after the pass,
    :meth:`close` records what the cache now holds. A pass that fails resets it (empty),
    so it is never left half-written. The cache itself is created lazily, on first use.
    """

    def __init__(self, draft_name: str) -> None:
        self.draft_name = draft_name  # the draft this cache belongs to
        self.ids: list[int] = []  # draft tokens whose keys and values the cache holds
        self.cache: Any = None  # a transformers DynamicCache, created on first use
        self.depth: int | None = None  # decoder layers the cache holds (a truncated forward keeps fewer)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def nbytes(self) -> int:
        """Bytes held by the cached keys and values."""
        if self.cache is None:
            return 0
        total = 0
        for layer in getattr(self.cache, "layers", ()):
            for t in (getattr(layer, "keys", None), getattr(layer, "values", None)):
                if isinstance(t, torch.Tensor):
                    total += t.numel() * t.element_size()
        return total

    def shared(self, ids: Sequence[int]) -> int:
        """How many leading tokens of ``ids`` the cache already holds."""
        n = 0
        for a, b in zip(self.ids, ids, strict=False):
            if a != b:
                break
            n += 1
        return n

    def crop(self, length: int) -> None:
        """Keep only the first ``length`` tokens."""
        if length < 0:
            raise ValueError(f"length must be >= 0, got {length}")
        if self.cache is not None:
            extra = self.cache.get_seq_length() - length
            if extra > 0:
                self.cache.crop(-extra)
        del self.ids[length:]

    def reset(self) -> None:
        """Drop everything (the next pass prefills from scratch)."""
        self.ids = []
        self.cache = None
        self.depth = None

    def open(self, keep: int, depth: int) -> Any:
        """The cache to extend, holding the first ``keep`` tokens at ``depth`` layers (another depth: emptied)."""
        from transformers import DynamicCache

        if self.depth != depth:
            self.reset()
        self.crop(keep)
        if self.cache is None or not self.ids:
            self.cache = DynamicCache()  # full-length layers: cropped anywhere
            self.ids = []
        self.depth = depth
        return self.cache

    def close(self, ids: Sequence[int], length: int) -> None:
        """After a pass that read ``ids``: keep their first ``length`` (the context, without the query steps)."""
        self.ids = list(ids)
        self.crop(min(length, len(self.ids)))
