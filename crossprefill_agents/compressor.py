"""PromptCompressor: the facade users call."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np

from .cache import ByteLRU, InMemoryMemoStore, MemoStore
from .config import CompressionConfig, SessionConfig, _check_keep_rate, _check_max_tokens
from .draft import DraftModel, DraftPrefix, DraftScores
from .lexical import fuse, lexical_scores
from .selection import (
    Unit,
    coarse_to_fine,
    make_units,
    paragraph_ids,
    paragraph_spans,
    protected_spans,
    select,
    span_means,
)
from .session import CompressionSession
from .targets import TokenCounter, resolve_target

__all__ = ["CompressionResult", "PromptCompressor", "Timings"]

logger = logging.getLogger(__name__)

Span = tuple[int, int]

DEFAULT_KV_CACHE_BYTES = 1 << 30  # draft caches kept for sessions: ~5k SmolLM2 / ~6k Gemma-3-270M tokens each GiB


@dataclass(frozen=True)
class Timings:
    """Where the seconds of one compression went."""

    draft_prefill_s: float = 0.0  # draft forward over the prompt (all windows)
    lookahead_s: float = 0.0  # the query passes: question + null query, or last prompt token + look-ahead
    selection_s: float = 0.0  # units, budget search on the target tokenizer, rendering
    total_s: float = 0.0


@dataclass(frozen=True)
class CompressionResult:
    """One compressed context.

    ``kept_spans`` are ``(start, end)`` character offsets into the original context, in
    order and non-overlapping; ``text`` is their slices joined by the delimiter.
    """

    text: str
    kept_spans: tuple[Span, ...]
    original_tokens: int  # target tokens of the original context
    compressed_tokens: int  # target tokens of ``text``
    keep_rate: float  # compressed_tokens / original_tokens (1.0 for an empty context)
    budget_tokens: int  # the target-token budget this context was compressed to (its share, for documents)
    draft_tokens: int  # draft tokens of this context (0 when the draft did not run)
    timings: Timings
    fallback_reason: str | None = None  # why the context was passed through after a draft failure

    @property
    def saved_tokens(self) -> int:
        """Target tokens saved: ``original_tokens - compressed_tokens``."""
        return self.original_tokens - self.compressed_tokens

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every field."""
        d = asdict(self)
        d["kept_spans"] = [list(s) for s in self.kept_spans]
        return d


class PromptCompressor:
    """Shortens long contexts for a target model using a small draft model's attention.

    Build it from ready objects (``PromptCompressor(model, tokenizer, target=...)`` or a
    :class:`DraftModel`) or load a draft with :meth:`from_pretrained`. One instance can be
    shared across threads and asyncio tasks; the draft runs one forward at a time.

    For agent loops, :meth:`session` gives one :class:`CompressionSession` per
    conversation. Sessions keep their draft caches in one LRU store bounded by
    ``kv_cache_bytes`` (an evicted session prefills from scratch next turn) and write
    frozen compressions to ``memo`` (in memory, 64 MiB, by default; pass a
    ``SQLiteMemoStore`` or ``RedisMemoStore`` to share them across processes).
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any = None,
        *,
        target: object = None,
        config: CompressionConfig | None = None,
        memo: MemoStore | None = None,
        kv_cache_bytes: int = DEFAULT_KV_CACHE_BYTES,
    ) -> None:
        if isinstance(model, DraftModel):
            if tokenizer is not None:
                raise TypeError("pass a tokenizer only with a transformers model, not with a DraftModel")
            self.draft = model
        else:
            if tokenizer is None:
                raise TypeError("PromptCompressor(model, tokenizer): the draft's tokenizer is required")
            self.draft = DraftModel(model, tokenizer)
        if config is not None and not isinstance(config, CompressionConfig):
            raise TypeError(f"config must be a CompressionConfig, got {type(config).__name__}")
        self.config = config or CompressionConfig()
        # No target: budgets are counted in the draft's own tokens.
        self.target: TokenCounter = resolve_target(self.draft.tokenizer if target is None else target)
        if memo is not None and not isinstance(memo, MemoStore):
            raise TypeError(f"memo must be a MemoStore (get/put/delete/clear), got {type(memo).__name__}")
        self.memo: MemoStore = memo if memo is not None else InMemoryMemoStore()
        if isinstance(kv_cache_bytes, bool) or not isinstance(kv_cache_bytes, int) or kv_cache_bytes < 0:
            raise ValueError(
                f"kv_cache_bytes must be an int >= 0 (0 = no draft reuse across turns), got {kv_cache_bytes!r}"
            )
        self._kv: ByteLRU[str, DraftPrefix] = ByteLRU(kv_cache_bytes, sizeof=lambda p: p.nbytes)

    @classmethod
    def from_pretrained(
        cls,
        name: str | Path = "smollm2-135m",
        *,
        target: object = None,
        config: CompressionConfig | None = None,
        memo: MemoStore | None = None,
        kv_cache_bytes: int = DEFAULT_KV_CACHE_BYTES,
        device: Any = None,
        dtype: Any = None,
        local_files_only: bool = False,
        trust_remote_code: bool = False,
        quantize: Literal["int8"] | None = None,
        model_kwargs: dict[str, Any] | None = None,
    ) -> PromptCompressor:
        """Load a draft (embedded alias, ``.gguf`` file, local folder or hub id) and wrap it.

        ``target`` says whose tokens the budget counts: a tiktoken encoding or OpenAI model
        name, a transformers tokenizer or its id/path, or a callable ``str -> int``; by
        default the draft's own tokenizer. ``quantize="int8"``: dynamic int8 linear layers
        (CPU). ``memo`` and ``kv_cache_bytes``: see the class docstring.
        """
        draft = DraftModel.from_pretrained(
            name,
            device=device,
            dtype=dtype,
            local_files_only=local_files_only,
            trust_remote_code=trust_remote_code,
            quantize=quantize,
            model_kwargs=model_kwargs,
        )
        if isinstance(target, str):
            target = resolve_target(target, local_files_only=local_files_only)
        return cls(draft, target=target, config=config, memo=memo, kv_cache_bytes=kv_cache_bytes)

    def session(
        self, config: SessionConfig | None = None, *, session_id: str | None = None, **options: Any
    ) -> CompressionSession:
        """A :class:`CompressionSession` for one conversation or agent thread.

        Pass a :class:`SessionConfig` or its fields as keywords
        (``pc.session(recompress="on_budget_pressure", max_tokens=8000)``).
        ``session_id`` names the session's draft cache in the shared store (random by default).
        """
        if config is not None and options:
            raise TypeError("pass either a SessionConfig or its fields as keywords, not both")
        if config is not None and not isinstance(config, SessionConfig):
            raise TypeError(f"config must be a SessionConfig, got {type(config).__name__}")
        return CompressionSession(self, config or SessionConfig(**options), session_id=session_id)

    # ----------------------------------------------------------------- public
    def compress(
        self,
        context: str,
        query: str = "",
        *,
        keep_rate: float | None = None,
        max_tokens: int | None = None,
    ) -> CompressionResult:
        """Compress one context for the target, conditioned on ``query`` (which is never compressed).

        The budget is ``max_tokens`` target tokens when given (here or in the config),
        else ``keep_rate`` of the context's target tokens.
        """
        _check_str(context, "context")
        return self._compress([context], query, keep_rate, max_tokens)[0]

    def compress_documents(
        self,
        documents: Sequence[str],
        query: str = "",
        *,
        keep_rate: float | None = None,
        max_tokens: int | None = None,
    ) -> list[CompressionResult]:
        """Compress several documents under one shared budget; one result per document, in order.

        The draft reads the documents together, so their scores compare, and the best
        units of all of them are kept until the shared budget is met: a document may be
        kept whole or dropped entirely.
        """
        if isinstance(documents, str) or not isinstance(documents, Sequence):
            raise TypeError(f"documents must be a list of str, got {type(documents).__name__}")
        for i, d in enumerate(documents):
            _check_str(d, f"documents[{i}]")
        return self._compress(list(documents), query, keep_rate, max_tokens)

    async def acompress(
        self,
        context: str,
        query: str = "",
        *,
        keep_rate: float | None = None,
        max_tokens: int | None = None,
    ) -> CompressionResult:
        """:meth:`compress` in a worker thread, so the event loop keeps running."""
        return await asyncio.to_thread(self.compress, context, query, keep_rate=keep_rate, max_tokens=max_tokens)

    async def acompress_documents(
        self,
        documents: Sequence[str],
        query: str = "",
        *,
        keep_rate: float | None = None,
        max_tokens: int | None = None,
    ) -> list[CompressionResult]:
        """:meth:`compress_documents` in a worker thread."""
        return await asyncio.to_thread(
            self.compress_documents, documents, query, keep_rate=keep_rate, max_tokens=max_tokens
        )

    def compress_scored(
        self,
        documents: Sequence[str],
        scores: DraftScores,
        *,
        keep_rate: float | None = None,
        max_tokens: int | None = None,
    ) -> list[CompressionResult]:
        """Select from an earlier scoring pass (``self.draft.score(documents, query, config=...)``).

        Scores do not depend on the budget, so one draft pass can serve several budgets
        (benchmarks sweep keep rates this way). ``documents`` must be the ones scored; the
        query is the one they were scored against (``scores.query``).
        """
        docs = list(documents)
        if len(scores.tokens) != len(docs):
            raise ValueError(f"scores are for {len(scores.tokens)} documents, got {len(docs)}")
        for i, d in enumerate(docs):
            _check_str(d, f"documents[{i}]")
        t0 = time.perf_counter()
        cfg, originals, cap, unchanged = self._budget(docs, keep_rate, max_tokens, t0)
        if unchanged is not None:
            return unchanged
        return self._select(docs, scores, originals, cap, cfg, t0)

    # ---------------------------------------------------------------- private
    def _compress_one(self, text: str, scores: DraftScores) -> CompressionResult:
        """Select from ``scores`` (one document) at this compressor's budget."""
        t0 = time.perf_counter()
        cfg, originals, cap, unchanged = self._budget([text], None, None, t0)
        if unchanged is not None:
            return unchanged[0]
        return self._select([text], scores, originals, cap, cfg, t0)[0]

    def _passthrough(self, text: str, reason: str) -> CompressionResult:
        n = self.target.count(text) if text.strip() else 0
        return _unchanged(text, n, n, Timings(), reason)

    def _budget(
        self, docs: list[str], keep_rate: float | None, max_tokens: int | None, t0: float
    ) -> tuple[CompressionConfig, list[int], int, list[CompressionResult] | None]:
        """The effective config, each document's target tokens, the budget, and the pass-through results if any."""
        if keep_rate is not None:
            _check_keep_rate(keep_rate)
        _check_max_tokens(max_tokens)
        cfg = self.config.with_overrides(keep_rate=keep_rate, max_tokens=max_tokens)
        originals = [self.target.count(d) if d.strip() else 0 for d in docs]
        total = sum(originals)
        cap = cfg.max_tokens if cfg.max_tokens is not None else round(cfg.keep_rate * total)
        if total == 0 or total < cfg.min_tokens or cap >= total:
            timings = Timings(total_s=time.perf_counter() - t0)
            return cfg, originals, cap, [_unchanged(d, n, n, timings) for d, n in zip(docs, originals, strict=True)]
        return cfg, originals, cap, None

    def _compress(
        self, docs: list[str], query: str, keep_rate: float | None, max_tokens: int | None
    ) -> list[CompressionResult]:
        _check_str(query, "query")
        t0 = time.perf_counter()
        cfg, originals, cap, unchanged = self._budget(docs, keep_rate, max_tokens, t0)
        if unchanged is not None:
            return unchanged

        deadline = time.monotonic() + cfg.timeout_s if cfg.timeout_s is not None else None
        try:
            scored = self.draft.score(docs, query, config=cfg, deadline=deadline)
        except Exception as e:  # fail open: a broken draft must not break the agent
            if cfg.on_error == "raise":
                raise
            reason = f"{type(e).__name__}: {e}"
            logger.warning("draft scoring failed, passing the context through unchanged: %s", reason)
            timings = Timings(total_s=time.perf_counter() - t0)
            return [_unchanged(d, n, n, timings, reason) for d, n in zip(docs, originals, strict=True)]

        return self._select(docs, scored, originals, cap, cfg, t0)

    def _select(
        self,
        docs: list[str],
        scored: DraftScores,
        originals: list[int],
        cap: int,
        cfg: CompressionConfig,
        t0: float,
    ) -> list[CompressionResult]:
        t1 = time.perf_counter()
        units: list[Unit] = []
        for i, (doc, toks, sc) in enumerate(zip(docs, scored.tokens, scored.scores, strict=True)):
            units += make_units(
                doc,
                toks.offsets,
                sc,
                doc=i,
                chunk_size=cfg.chunk_size,
                snap_to_words=cfg.snap_to_words,
                unit=cfg.unit,
                max_sentence_tokens=cfg.max_sentence_tokens,
            )
        if cfg.lexical_weight > 0 and units:
            draft_scores = np.array([u.score for u in units])
            lexical = lexical_scores([docs[u.doc][u.start : u.end] for u in units], scored.query)
            fused = fuse(draft_scores, lexical, cfg.lexical_weight)
            units = [replace(u, score=float(f)) for u, f in zip(units, fused, strict=True)]
        if cfg.paragraph_weight > 0 and units:
            groups = paragraph_ids(docs, units)
            coarse = _paragraph_scores(docs, scored, units, groups, cfg) if cfg.paragraph_score == "mean" else None
            ranked = coarse_to_fine(np.array([u.score for u in units]), groups, cfg.paragraph_weight, coarse)
            units = [replace(u, score=float(f)) for u, f in zip(units, ranked, strict=True)]
        protected = [protected_spans(d, cfg.protect_patterns) for d in docs]
        chosen = select(docs, units, protected, budget=cap, count=self.target.count, delimiter=cfg.delimiter)
        t2 = time.perf_counter()
        timings = Timings(
            draft_prefill_s=scored.prefill_s,
            lookahead_s=scored.lookahead_s,
            selection_s=t2 - t1,
            total_s=t2 - t0,
        )
        total = sum(originals)
        return [
            CompressionResult(
                text=chosen.texts[i],
                kept_spans=chosen.spans[i],
                original_tokens=n_orig,
                compressed_tokens=chosen.tokens[i],
                keep_rate=chosen.tokens[i] / n_orig if n_orig else 1.0,
                budget_tokens=cap if len(docs) == 1 else round(cap * n_orig / total),
                draft_tokens=len(scored.tokens[i].ids),
                timings=timings,
            )
            for i, n_orig in enumerate(originals)
        ]


def _paragraph_scores(
    docs: list[str], scored: DraftScores, units: list[Unit], groups: np.ndarray, cfg: CompressionConfig
) -> np.ndarray:
    """``(paragraphs,)``: each paragraph read as one unit, its tokens' mean draft score fused with its query overlap."""
    paras = paragraph_spans(units, groups)
    draft = np.zeros(len(paras))
    for d, (toks, sc) in enumerate(zip(scored.tokens, scored.scores, strict=True)):
        mine = [i for i, p in enumerate(paras) if p[0] == d]
        draft[mine] = span_means(toks.offsets, sc, [paras[i][1:] for i in mine])
    if cfg.lexical_weight <= 0:
        return draft
    lexical = lexical_scores([docs[d][s:e] for d, s, e in paras], scored.query)
    return fuse(draft, lexical, cfg.lexical_weight)


def _check_str(value: object, name: str) -> None:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, got {type(value).__name__}")


def _unchanged(text: str, n_tokens: int, budget: int, timings: Timings, reason: str | None = None) -> CompressionResult:
    return CompressionResult(
        text=text,
        kept_spans=((0, len(text)),) if text else (),
        original_tokens=n_tokens,
        compressed_tokens=n_tokens,
        keep_rate=1.0,
        budget_tokens=budget,
        draft_tokens=0,
        timings=timings,
        fallback_reason=reason,
    )
