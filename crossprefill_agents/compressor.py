"""PromptCompressor: the facade users call. Text and query -> draft scores -> units -> ranking -> kept text."""

from __future__ import annotations

import asyncio
import copy
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from .config import CompressionConfig, Recompress, SessionConfig, check_keep_rate, check_max_tokens
from .draft import DraftModel, DraftPrefix, load_draft
from .ranking import rank_units
from .results import CompressionResult, DraftError, DraftScores, DraftTimeoutError, Timings, fail_open, unchanged
from .selection import layout_for, protected_spans, select
from .session import CompressionSession
from .stores import ByteLRU, InMemoryMemoStore, MemoStore
from .targets import TokenCounter, resolve_target
from .units import cut_units

__all__ = ["DEFAULT_KV_CACHE_BYTES", "PromptCompressor"]

DEFAULT_KV_CACHE_BYTES = 1 << 30  # draft caches kept for sessions: ~5k SmolLM2 / ~6k Gemma-3-270M tokens each GiB

# PromptCompressor.shared: one loaded draft per (name, local_files_only) in this process, and its named targets.
_SHARED: dict[tuple[str, bool], PromptCompressor] = {}
_SHARED_TARGETS: dict[tuple[str, bool, str], TokenCounter] = {}
_SHARED_LOCK = threading.Lock()


@dataclass(frozen=True)
class _Budget:
    """One call's budget: the config with its overrides, each document's target tokens, the cap on their total."""

    config: CompressionConfig
    originals: list[int]  # target tokens of each document (whitespace counts: it is sent)
    cap: int  # target tokens the kept text of all documents may take
    text_tokens: list[int]  # target tokens of each document with text (0 for a blank one): what keep_rate is of

    @property
    def passes_through(self) -> bool:
        """Nothing to cut: no text, fewer than ``min_tokens`` of it, or the cap holds it all."""
        total = sum(self.text_tokens)
        return total == 0 or total < self.config.min_tokens or self.cap >= total

    def unchanged(self, docs: Sequence[str], t0: float, reason: str | None = None) -> list[CompressionResult]:
        """Every document passed through whole."""
        timings = Timings(total_s=time.perf_counter() - t0)
        return [unchanged(d, n, timings=timings, reason=reason) for d, n in zip(docs, self.originals, strict=True)]


class PromptCompressor:
    """Shortens long contexts for a target model using a small draft model's attention.

    Build it from ready objects (``PromptCompressor(model, tokenizer, target=...)`` or a
    :class:`~crossprefill_agents.draft.DraftModel`) or load a draft with :meth:`from_pretrained`.
    One instance can be shared across threads and asyncio tasks; the draft runs one forward
    at a time.

    For agent loops, :meth:`session` gives one :class:`CompressionSession` per
    conversation. Sessions keep their draft caches in :attr:`draft_cache`, one LRU store
    bounded by ``kv_cache_bytes`` (an evicted session prefills from scratch next turn), and
    write frozen compressions to ``memo`` (in memory, 64 MiB, by default; pass a
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
        # The draft caches of this compressor's sessions, by session id, bounded by the bytes they hold.
        self.draft_cache: ByteLRU[str, DraftPrefix] = ByteLRU(kv_cache_bytes, sizeof=lambda p: p.nbytes)

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
        default the draft's own tokenizer. ``dtype``: the draft's weights, ``None`` / ``"auto"`` =
        bfloat16 where the device computes it natively, else float32 (see
        :func:`crossprefill_agents.draft.load.resolve_dtype`). ``quantize="int8"``: dynamic int8
        linear layers (CPU, float32 weights). ``memo`` and ``kv_cache_bytes``: see the class docstring.
        """
        draft = load_draft(
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

    @classmethod
    def shared(
        cls,
        name: str = "smollm2-135m",
        *,
        target: object = None,
        config: CompressionConfig | None = None,
        local_files_only: bool = False,
    ) -> PromptCompressor:
        """The process-wide compressor for a draft name: loaded once, shared by everything that names it.

        The first call for ``(name, local_files_only)`` loads the draft with :meth:`from_pretrained`;
        later calls with another ``target`` or ``config`` get :meth:`with_config` views of it (same weights,
        memo store and draft cache). Integrations use this so that components naming the same draft never
        hold two copies of it. A target given by name (``"cl100k_base"``) is resolved once too.
        """
        if not isinstance(name, str) or not name:
            raise TypeError(f"name must be a non-empty str naming a draft, got {name!r}")
        if config is not None and not isinstance(config, CompressionConfig):
            raise TypeError(f"config must be a CompressionConfig, got {type(config).__name__}")
        with _SHARED_LOCK:
            base = _SHARED.get((name, local_files_only))
            if base is None:
                base = _SHARED[(name, local_files_only)] = cls.from_pretrained(name, local_files_only=local_files_only)
            if isinstance(target, str):
                key = (name, local_files_only, target)
                if key not in _SHARED_TARGETS:
                    _SHARED_TARGETS[key] = resolve_target(target, local_files_only=local_files_only)
                target = _SHARED_TARGETS[key]
        if target is None and config is None:
            return base
        return base.with_config(config or base.config, target=target)

    @classmethod
    def release_shared(cls) -> None:
        """Forget the process-wide compressors of :meth:`shared` (the next call loads again; memory is freed once
        nothing else holds them)."""
        with _SHARED_LOCK:
            _SHARED.clear()
            _SHARED_TARGETS.clear()

    def with_config(self, config: CompressionConfig, *, target: object = None) -> PromptCompressor:
        """A compressor with another config (and target, if given) on the same draft, memo store and draft cache.

        Nothing reloads. Memo keys include every config field and the target, so the two never replay each
        other's compressions.
        """
        if not isinstance(config, CompressionConfig):
            raise TypeError(f"config must be a CompressionConfig, got {type(config).__name__}")
        other = copy.copy(self)
        other.config = config
        if target is not None:
            other.target = resolve_target(target)
        return other

    def session(
        self,
        config: SessionConfig | None = None,
        *,
        session_id: str | None = None,
        compress_roles: Sequence[str] | None = None,
        compress_history: bool | None = None,
        max_tokens: int | None = None,
        recompress: Recompress | None = None,
        pressure_headroom: float | None = None,
    ) -> CompressionSession:
        """A :class:`CompressionSession` for one conversation or agent thread.

        Pass a :class:`SessionConfig`, or its fields as keywords (``None`` keeps its default):
        ``pc.session(recompress="on_budget_pressure", max_tokens=8000)``. ``session_id`` names
        the session's draft cache in :attr:`draft_cache` (random by default).
        """
        fields = {
            "compress_roles": None if compress_roles is None else tuple(compress_roles),
            "compress_history": compress_history,
            "max_tokens": max_tokens,
            "recompress": recompress,
            "pressure_headroom": pressure_headroom,
        }
        given = {k: v for k, v in fields.items() if v is not None}
        if config is not None and given:
            raise TypeError("pass either a SessionConfig or its fields as keywords, not both")
        if config is not None and not isinstance(config, SessionConfig):
            raise TypeError(f"config must be a SessionConfig, got {type(config).__name__}")
        return CompressionSession(self, config or SessionConfig(**given), session_id=session_id)  # type: ignore[arg-type]

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
        return self._compress(_check_documents(documents), query, keep_rate, max_tokens)

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
        """Select from an earlier scoring pass (``self.draft.score(documents, query, config=self.config)``).

        Scores do not depend on the budget, so one draft pass can serve several budgets
        (benchmarks sweep keep rates this way). ``documents`` must be the ones scored; the
        query is the one they were scored against (``scores.query``).
        """
        docs = _check_documents(documents)
        if len(scores.tokens) != len(docs):
            raise ValueError(f"scores are for {len(scores.tokens)} documents, got {len(docs)}")
        t0 = time.perf_counter()
        budget = self._budget(docs, keep_rate, max_tokens)
        if budget.passes_through:
            return budget.unchanged(docs, t0)
        try:  # timeout_s bounds the protect matching here (the draft already ran)
            if not all(np.isfinite(s).all() for s in scores.scores):  # a caller's scores: no ranking on NaN
                raise DraftError("the scores are not finite (NaN or inf): there is no ranking to select by")
            protected = self._protected(docs, budget.config, budget.config.deadline())
        except Exception as e:
            return budget.unchanged(docs, t0, fail_open(e, on_error=budget.config.on_error, what="the context"))
        return self._select(docs, scores, budget, t0, protected)

    # ---------------------------------------------------------------- private
    def _budget(self, docs: list[str], keep_rate: float | None, max_tokens: int | None) -> _Budget:
        if keep_rate is not None:
            check_keep_rate(keep_rate)
        check_max_tokens(max_tokens)
        cfg = self.config.with_overrides(keep_rate=keep_rate, max_tokens=max_tokens)
        originals = [self.target.count(d) if d else 0 for d in docs]
        text_tokens = [n if d.strip() else 0 for n, d in zip(originals, docs, strict=True)]
        return _Budget(cfg, originals, cfg.budget_tokens(sum(text_tokens)), text_tokens)

    def _compress(
        self, docs: list[str], query: str, keep_rate: float | None, max_tokens: int | None
    ) -> list[CompressionResult]:
        _check_str(query, "query")
        t0 = time.perf_counter()
        budget = self._budget(docs, keep_rate, max_tokens)
        if budget.passes_through:
            return budget.unchanged(docs, t0)
        deadline = budget.config.deadline()  # one deadline for the protect matching and every draft pass
        try:
            protected = self._protected(docs, budget.config, deadline)  # first: a hopeless pattern costs no draft
            scored = _by_deadline(
                lambda: self.draft.score(docs, query, config=budget.config, deadline=deadline), deadline
            )
        except Exception as e:  # fail open: a broken draft (or a timeout) must not break the agent
            reason = fail_open(e, on_error=budget.config.on_error, what="the context")
            return budget.unchanged(docs, t0, reason)
        return self._select(docs, scored, budget, t0, protected)

    @staticmethod
    def _protected(docs: list[str], cfg: CompressionConfig, deadline: float | None) -> list[list[tuple[int, int]]]:
        return [protected_spans(d, cfg.protect_patterns, deadline=deadline) for d in docs]

    def _select(
        self,
        docs: list[str],
        scored: DraftScores,
        budget: _Budget,
        t0: float,
        protected: list[list[tuple[int, int]]],
    ) -> list[CompressionResult]:
        """Units -> ranking -> the kept spans within the budget, one result per document."""
        cfg, x = budget.config, budget.config.experimental
        t1 = time.perf_counter()
        layouts = [layout_for(d, cfg) for d in docs]
        units = cut_units(
            docs,
            scored,
            layouts,
            unit=x.unit,
            chunk_size=x.chunk_size,
            max_sentence_tokens=x.max_sentence_tokens,
            snap_to_words=x.snap_to_words,
        )
        priority = rank_units(
            docs,
            units,
            scored,
            lexical_weight=cfg.lexical_weight,
            paragraph_weight=cfg.paragraph_weight,
            paragraph_score=x.paragraph_score,
        )
        chosen = select(
            docs,
            units,
            priority,
            protected,
            budget=budget.cap,
            count=self.target.count,
            delimiter=cfg.delimiter,
            layouts=layouts,
        )
        t2 = time.perf_counter()
        timings = Timings(
            draft_prefill_s=scored.prefill_s, query_s=scored.query_s, selection_s=t2 - t1, total_s=t2 - t0
        )
        total = sum(budget.text_tokens)
        return [
            CompressionResult(
                text=chosen.texts[i],
                kept_spans=chosen.spans[i],
                original_tokens=n_orig,
                compressed_tokens=chosen.tokens[i],
                keep_rate=chosen.tokens[i] / n_orig if n_orig else 1.0,
                budget_tokens=budget.cap if len(docs) == 1 else round(budget.cap * budget.text_tokens[i] / total),
                draft_tokens=len(scored.tokens[i].ids),
                timings=timings,
                kept_paths=chosen.paths[i],
            )
            for i, n_orig in enumerate(budget.originals)
        ]


def _by_deadline(run: Callable[[], DraftScores], deadline: float | None) -> DraftScores:
    """``run()``; under a deadline in a worker thread, abandoned (DraftTimeoutError) once the deadline passes.

    The draft checks the deadline between its forward passes, but one forward cannot be stopped and on a busy
    machine it can take seconds: the caller gets its fallback at the deadline, and the worker stops at its next
    check (still holding the draft's lock until then, which later calls wait for no longer than their own
    deadline). Only stateless scoring runs this way; a session's cache is never left to a worker.
    """
    if deadline is None:
        return run()
    box: dict[str, Any] = {}

    def work() -> None:
        try:
            box["scores"] = run()
        except BaseException as e:  # re-raised in the caller's thread
            box["error"] = e

    worker = threading.Thread(target=work, name="crossprefill-draft", daemon=True)
    worker.start()
    worker.join(max(0.0, deadline - time.monotonic()) + _JOIN_GRACE_S)
    if worker.is_alive():
        raise DraftTimeoutError(
            "the draft ran past CompressionConfig.timeout_s inside one forward pass (abandoned; it stops at its next "
            "check)"
        )
    if "error" in box:
        raise box["error"]
    scores: DraftScores = box["scores"]
    return scores


_JOIN_GRACE_S = 0.05  # past the deadline, the draft's own check usually answers first, with its own reason


def _check_str(value: object, name: str) -> None:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, got {type(value).__name__}")


def _check_documents(documents: object) -> list[str]:
    if isinstance(documents, str) or not isinstance(documents, Sequence):
        raise TypeError(f"documents must be a list of str, got {type(documents).__name__}")
    for i, d in enumerate(documents):
        _check_str(d, f"documents[{i}]")
    return list(documents)
