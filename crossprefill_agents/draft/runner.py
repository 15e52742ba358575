"""Running a draft model over a prompt to score its context tokens.

Memory stays linear in the context length: the context is prefilled in blocks with the
model's own fused attention (sdpa), and only the query tokens run with eager attention to
expose their weights (a few rows per layer and head, never an n x n map): the question's
tokens and a content-free null query for the default scorer, the last prompt token and
the greedy look-ahead tokens for the published one. The question scorer needs no logits,
so the forward stops after the deepest layer whose heads vote. A context longer than the
draft's window is scored in windows that each end with the query.
"""

from __future__ import annotations

import contextlib
import inspect
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..config import MIN_CONTEXT_TOKENS, CompressionConfig
from ..results import DraftError, DraftScores, DraftTimeoutError, TokenizedText
from ..text import sanitize
from .prefix import DraftPrefix
from .queries import NULL_QUERY, Window, check_deadline, lookahead_votes, now, question_votes
from .split import PAST_SPLIT_ROWS, SplitPlan, additive_mask, planned, register

__all__ = ["DEFAULT_WINDOW", "DraftModel"]

DEFAULT_WINDOW = 8192  # draft tokens per window when the model states no position limit
# Under a deadline the prefill runs in blocks sized from the last block's speed, so that one block takes about
# an eighth of the time left when the prefill began (between these bounds): a deadline is overrun by one block.
TIMED_FIRST_BLOCK = 64  # draft tokens of the first timed block (its speed sizes the next)
TIMED_BLOCK_S = (0.05, 1.0)  # the bounds of one timed block's seconds
# Architectures whose forward takes explicit position ids and a ready 4-D additive mask as given, and that
# have no sliding-window layers, so the null query can share the question's last forward (tests/test_heads.py
# checks the scores equal two passes). Others (Gemma-3 among them) run the null query as a second pass.
FUSED_NULL_MODEL_TYPES = frozenset({"llama"})
# On those drafts the context's last prefill block, the question and the null query share one forward
# (draft/split.py) while the voting heads' weights of the query rows take at most this many cells
# (float32: 128 MB); more (every head voting over a long question) runs the query in blocks after the prefill.
MERGED_WEIGHT_CELLS = 1 << 25
# Texts whose draft tokens stay memoised (least recently used dropped): an agent turn re-reads every earlier
# document of its context, and tokenizing them again costs time that grows with the context.
TOKENIZED_TEXTS = 256


@dataclass(frozen=True)
class _Prompt:
    """One scoring prompt in draft tokens: ``[*head, *context, *query]``, and where each document sits in it."""

    tokens: tuple[TokenizedText, ...]  # each document's tokens
    context: np.ndarray  # (n_ctx,) the documents' ids joined by blank-line tokens
    starts: tuple[int, ...]  # where each document starts in ``context``
    head: list[int]  # special prefix, and the query when it is read first too
    query: np.ndarray  # (n_query,) the separator and the query, read after the context
    room: int  # context tokens that fit one window beside ``head`` and the query passes

    def ids(self, lo: int = 0, hi: int | None = None) -> list[int]:
        """The prompt of the window over ``context[lo:hi]``."""
        return [*self.head, *self.context[lo:hi].tolist(), *self.query.tolist()]

    def per_document(self, scores: np.ndarray) -> tuple[np.ndarray, ...]:
        """``(n_ctx,)`` context scores -> one array per document (the separators' scores dropped)."""
        return tuple(scores[s : s + len(t.ids)] for s, t in zip(self.starts, self.tokens, strict=True))


class DraftModel:
    """A small causal LM and its tokenizer, used only to score context tokens.

    Build it from ready objects (``DraftModel(model, tokenizer)``; the tokenizer must be a
    fast one, since character offsets map tokens back to text) or load one with
    :func:`crossprefill_agents.draft.load_draft`. The draft owns its model: during a pass it
    switches the model's attention implementation and depth and restores them afterwards,
    so do not run the same model object elsewhere at the same time. Safe to share between
    threads: one forward runs at a time.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        name: str | None = None,
        retrieval_heads: Sequence[tuple[int, int]] | None = None,
    ) -> None:
        if not getattr(tokenizer, "is_fast", True):
            raise TypeError(
                "the draft tokenizer must be a fast (Rust) tokenizer: character offsets are needed to map "
                "draft tokens back to the text"
            )
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.name = name or getattr(model.config, "name_or_path", None) or type(model).__name__
        # Heads that vote for heads="auto" in the question scorer; None = all heads.
        # Set by a calibration (crossprefill_agents.draft.heads), or loaded by load_draft.
        self.retrieval_heads: tuple[tuple[int, int], ...] | None = (
            tuple((int(a), int(b)) for a, b in retrieval_heads) if retrieval_heads else None
        )
        self.num_layers = int(model.config.num_hidden_layers)
        self._lock = threading.Lock()
        self._tokenized: OrderedDict[str, TokenizedText] = OrderedDict()  # text -> its read-only tokens
        self._tokenized_lock = threading.Lock()
        params = inspect.signature(model.forward).parameters
        self._cache_kw = _cache_keyword(model)
        # The decoder under the LM head, for forwards that need no logits (the prefill and the question scorer's
        # passes): reading the head costs one vocabulary-sized matrix per forward (SmolLM2: 28M weights,
        # Gemma-3: 168M). None: the model has no separate decoder and runs whole.
        base = getattr(model, "base_model", None)
        self._decoder: Any = base if isinstance(base, torch.nn.Module) and base is not model else None
        if self._decoder is not None:
            self._decoder_cache_kw = _cache_keyword(self._decoder)
        self.max_positions: int | None = getattr(model.config, "max_position_embeddings", None)
        self.eos_ids = frozenset(_eos_ids(model, tokenizer))
        types = getattr(model.config, "layer_types", None) or []
        full = [i for i, t in enumerate(types) if t == "full_attention"]
        # Layers whose attention spans the whole context (a sliding-window layer sees only its tail).
        self.global_layers: tuple[int, ...] | None = tuple(full) if full and len(full) < len(types) else None
        # Whether the null query may share the question's last forward (_fused_forward); else a second pass.
        self.fuses_null = (
            getattr(model.config, "model_type", None) in FUSED_NULL_MODEL_TYPES and "position_ids" in params
        )
        with_special = tokenizer("a")["input_ids"]
        plain = tokenizer("a", add_special_tokens=False)["input_ids"]
        n_prefix = len(with_special) - len(plain)
        ok = n_prefix >= 0 and list(with_special[n_prefix : n_prefix + len(plain)]) == list(plain)
        self.prefix_ids: list[int] = list(with_special[:n_prefix]) if ok else []

    # ------------------------------------------------------------------ tokens
    def tokenize(self, text: str) -> TokenizedText:
        """Draft tokens of ``text`` (no special tokens) with character offsets into it.

        The arrays are read-only: the last :data:`TOKENIZED_TEXTS` texts' tokens are memoised and shared.
        """
        with self._tokenized_lock:
            hit = self._tokenized.get(text)
            if hit is not None:
                self._tokenized.move_to_end(text)
                return hit
        tokens = self._tokenize(text)
        tokens.ids.setflags(write=False)
        tokens.offsets.setflags(write=False)
        with self._tokenized_lock:
            self._tokenized[text] = tokens
            while len(self._tokenized) > TOKENIZED_TEXTS:
                self._tokenized.popitem(last=False)
        return tokens

    def _tokenize(self, text: str) -> TokenizedText:
        if not text:
            return TokenizedText(np.zeros(0, dtype=np.int64), np.zeros((0, 2), dtype=np.int64))
        enc = self.tokenizer(sanitize(text), add_special_tokens=False, return_offsets_mapping=True, verbose=False)
        ids = np.asarray(enc["input_ids"], dtype=np.int64)
        offsets = np.asarray(enc["offset_mapping"], dtype=np.int64).reshape(-1, 2)
        offsets = np.clip(offsets, 0, len(text))
        offsets[:, 0] = np.maximum.accumulate(offsets[:, 0]) if len(offsets) else offsets[:, 0]
        offsets[:, 1] = np.maximum(offsets[:, 1], offsets[:, 0])
        return TokenizedText(ids, offsets)

    def prompt_ids(self, documents: Sequence[str], query: str, *, config: CompressionConfig) -> list[int]:
        """The whole draft prompt that scoring reads for ``documents`` and ``query``, as one window."""
        return self._prompt(documents, query, config).ids()

    def context_room(self, query: str, config: CompressionConfig) -> int:
        """Draft tokens of context that fit in one window next to ``query`` (see :meth:`score_incremental`)."""
        return self._prompt((), query, config).room

    def voting_heads(self, config: CompressionConfig) -> tuple[tuple[int, int], ...]:
        """The (layer, head) pairs that vote under ``config`` (``()`` = every head)."""
        x = config.experimental
        if x.heads == "auto":
            return self.retrieval_heads or () if x.scorer == "question" else ()
        return x.heads

    # ----------------------------------------------------------------- scoring
    def score(
        self,
        documents: Sequence[str],
        query: str,
        *,
        config: CompressionConfig,
        deadline: float | None = None,
    ) -> DraftScores:
        """Score every context token of ``documents`` (read in order, joined by blank lines) against ``query``.

        Contexts longer than the draft's window are split into windows that each end
        with the query; each window's scores are scaled by its length, so windows compare.
        ``deadline``: a ``time.monotonic()`` past which :class:`DraftTimeoutError` is raised.
        """
        p = self._prompt(documents, query, config)
        n = len(p.context)
        scores = np.zeros(n, dtype=np.float64)
        prefill_s = query_s = 0.0
        prefilled = 0
        n_windows = math.ceil(n / p.room) if n else 0
        size = math.ceil(n / n_windows) if n else 0
        for w in range(n_windows):
            lo, hi = w * size, min(n, (w + 1) * size)
            ids = p.ids(lo, hi)
            window_scores, p_s, q_s, used = self._score_window(
                ids, len(p.head), len(p.head) + hi - lo, config, deadline
            )
            scores[lo:hi] = window_scores * (hi - lo)
            prefill_s += p_s
            query_s += q_s
            prefilled += used
        return DraftScores(query, p.tokens, p.per_document(scores), prefilled, n_windows, prefill_s, query_s)

    def score_incremental(
        self,
        documents: Sequence[str],
        query: str,
        *,
        config: CompressionConfig,
        state: DraftPrefix,
        deadline: float | None = None,
    ) -> DraftScores:
        """:meth:`score`, reusing and updating ``state``, the draft's cache from an earlier pass.

        The cache is cropped to the longest token prefix it shares with this prompt (the
        documents are tokenized one by one, so appending a document keeps every earlier
        token), only the rest is prefilled, and the query steps run again. The scores equal
        a from-scratch :meth:`score` of the same documents and query up to rounding (float32: ~1e-5 of the
        largest score; bfloat16: a few percent, the ranking alike).
        Afterwards ``state`` holds the context (without the query). The context must fit
        one window (:meth:`context_room`); a longer one raises :class:`DraftError`.
        """
        if state.draft_name != self.name:
            raise ValueError(f"this DraftPrefix belongs to draft {state.draft_name!r}, not {self.name!r}")
        p = self._prompt(documents, query, config)
        n = len(p.context)
        if n > p.room:
            raise DraftError(
                f"the context takes {n} draft tokens, more than the {p.room} that fit one window with this "
                "query; score fewer documents or use score()"
            )
        scores = np.zeros(n, dtype=np.float64)
        if not n:
            return DraftScores(query, p.tokens, tuple(scores[:0] for _ in p.tokens), 0, 0, 0.0, 0.0)
        ids = p.ids()
        stable = len(p.head) + n  # the prompt up to the query
        keep = min(state.shared(ids[:stable]), len(ids) - 1)  # the last prompt token must run as a query step
        try:
            window_scores, p_s, q_s, used = self._score_window(
                ids, len(p.head), stable, config, deadline, state=state, reuse=keep
            )
        except BaseException:
            state.reset()
            raise
        scores[:] = window_scores * n
        return DraftScores(query, p.tokens, p.per_document(scores), used, 1, p_s, q_s, reused_tokens=keep)

    def head_scores(self, documents: Sequence[str], query: str, *, config: CompressionConfig) -> np.ndarray:
        """Every head's pooled, renormalised attention onto the context, per query token.

        Returns ``(queries, layers, heads, n_ctx)`` float32 over the documents' tokens joined
        as in :meth:`score` (one window; a longer context raises :class:`DraftError`). The
        queries are the question's tokens for ``scorer="question"`` (before the null query is
        subtracted: ``head_scores`` of the query ``"N/A"`` gives that), the last prompt token
        and the look-ahead tokens for ``"lookahead"``. ``heads`` and ``attention_layers`` are
        ignored: this is the raw material for choosing heads (see
        :func:`crossprefill_agents.draft.heads.find_retrieval_heads`).
        """
        p = self._prompt(documents, query, config)
        if not 0 < len(p.context) <= p.room:
            raise DraftError(f"head_scores needs 1 to {p.room} context tokens (one window), got {len(p.context)}")
        rows: list[torch.Tensor] = []
        self._score_window(p.ids(), len(p.head), len(p.head) + len(p.context), config, None, capture=rows)
        stacked = torch.stack(rows).float().cpu().numpy()  # (steps, layers*heads, n_ctx)
        return stacked.reshape(len(rows), self.num_layers, -1, len(p.context))

    # ---------------------------------------------------------------- private
    def _prompt(self, documents: Sequence[str], query: str, config: CompressionConfig) -> _Prompt:
        """Tokenize the documents (one by one, joined by blank-line tokens) and the query parts around them."""
        x = config.experimental
        tokens = tuple(self.tokenize(d) for d in documents)
        sep = self.tokenize("\n\n").ids
        pieces: list[np.ndarray] = []
        starts: list[int] = []
        pos = 0
        for i, t in enumerate(tokens):
            if i:
                pieces.append(sep)
                pos += len(sep)
            starts.append(pos)
            pieces.append(t.ids)
            pos += len(t.ids)
        context = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.int64)
        before = query and x.query_position == "both"
        head = [*self.prefix_ids, *(self.tokenize(query + x.query_separator).ids.tolist() if before else [])]
        query_ids = self._query_ids(query, config)
        return _Prompt(tokens, context, tuple(starts), head, query_ids, self._room(len(query_ids), config, len(head)))

    def _query_ids(self, query: str, config: CompressionConfig) -> np.ndarray:
        return self.tokenize(config.experimental.query_separator + query).ids if query else np.zeros(0, np.int64)

    def _room(self, n_query: int, config: CompressionConfig, head: int) -> int:
        x = config.experimental
        limit = config.window_tokens or self.max_positions or DEFAULT_WINDOW
        if self.max_positions:
            limit = min(limit, self.max_positions)
        if x.scorer == "question":  # the null query reads the same context after the question
            room = limit - head - max(n_query, len(self._query_ids(NULL_QUERY, config))) - 1
        else:
            room = limit - head - n_query - x.lookahead - 1
        if room < MIN_CONTEXT_TOKENS:
            raise DraftError(
                f"the query takes {n_query} draft tokens and leaves fewer than {MIN_CONTEXT_TOKENS} for context in "
                f"the draft's {limit}-token window; shorten the query or raise window_tokens"
            )
        return room

    def _depth(self, heads: tuple[tuple[int, int], ...], capture: bool) -> int:
        """Decoder layers the question scorer needs: it stops after the deepest voting layer."""
        if capture or not heads:
            return self.num_layers
        return max(1, min(self.num_layers, 1 + max(layer for layer, _ in heads)))

    def _score_window(
        self,
        ids: list[int],
        ctx_start: int,
        ctx_end: int,
        config: CompressionConfig,
        deadline: float | None,
        *,
        state: DraftPrefix | None = None,
        reuse: int = 0,
        capture: list[torch.Tensor] | None = None,
    ) -> tuple[np.ndarray, float, float, int]:
        """Score one window. With ``state``: start from its first ``reuse`` tokens and leave ``ids[:ctx_end]`` in it.

        ``capture`` collects each query's ``(layers*heads, n_ctx)`` rows at full depth
        (question tokens for the question scorer, the query steps for the look-ahead one).
        Returns the window's context scores ``(n_ctx,)``, prefill and query seconds, and the
        tokens run.
        """
        from transformers import DynamicCache

        x = config.experimental
        question = x.scorer == "question" and ctx_end < len(ids)  # an empty query: the look-ahead queries
        heads = self.voting_heads(config) if question or x.heads != "auto" else ()
        depth = self._depth(heads, capture is not None) if question else self.num_layers
        with self._locked(deadline), torch.inference_mode(), self._truncated(depth):
            if state is None:
                cache = DynamicCache(config=self.model.config)  # sliding-window layers keep only their window
                start = 0
            else:
                cache = state.open(reuse, depth)
                start = len(state)
            t0 = time.perf_counter()
            body = ids[:ctx_end] if question else ids[:-1]
            todo = body[start:]
            null_ids = self._query_ids(NULL_QUERY, config).tolist()
            rows = len(ids) - ctx_end + len(null_ids)  # the query rows whose weights the merged forward keeps
            merge = question and capture is None and self._merges(heads, depth, rows, ctx_end + rows)
            # Merged: the prefill's last block runs in the query's forward (none under a deadline: the timed
            # blocks keep their size, and the query's forward holds only its own tokens).
            held = (len(todo) % config.prefill_chunk_tokens or config.prefill_chunk_tokens) if deadline is None else 0
            pending = todo[len(todo) - min(held, len(todo)) :] if merge else []
            self._prefill(todo[: len(todo) - len(pending)], cache, config, deadline)
            t1 = time.perf_counter()
            window = Window(
                ctx_start,
                ctx_end,
                cache,
                config,
                heads,
                deadline,
                capture,
                global_layers=self.global_layers,
                separator_ids=self.tokenize(x.query_separator).ids.tolist(),
                null_ids=null_ids,
                eos_ids=self.eos_ids,
                forward=self._query_forward if question else self._eager_forward,
                fused_forward=self._fused_forward if self.fuses_null else None,
                merged_forward=self._merged(pending, depth) if merge else None,
                layer_heads=(int(self.model.config.num_attention_heads),) * depth,
            )
            # The merged forward picks its own attention (draft/split.py): no switch to eager for it.
            with contextlib.nullcontext() if merge else self._attention(prefill=False):
                votes, n_query = question_votes(ids[ctx_end:], window) if question else lookahead_votes(ids, window)
            t2 = time.perf_counter()
            if state is not None:
                state.close(body, ctx_end)  # drop the query (and look-ahead) tokens
        return votes.double().cpu().numpy(), t1 - t0, t2 - t1, len(body) - start + n_query

    def _prefill(self, ids: list[int], cache: Any, config: CompressionConfig, deadline: float | None) -> None:
        """Extend ``cache`` by ``ids``: ``prefill_chunk_tokens`` per forward, or under a ``deadline`` in blocks
        that each take a small share of the time left (:data:`TIMED_BLOCK_S`), checked before each block."""
        block = config.prefill_chunk_tokens
        with self._attention(prefill=True):
            if deadline is None:
                for i in range(0, len(ids), block):
                    self._prefill_block(ids[i : i + block], cache)
                return
            low, high = TIMED_BLOCK_S
            share = min(high, max(low, (deadline - now()) / 8))  # seconds one block may take
            size, i = min(block, TIMED_FIRST_BLOCK), 0
            while i < len(ids):
                check_deadline(deadline)
                t0 = now()
                self._prefill_block(ids[i : i + size], cache)
                i += size
                rate = size / max(now() - t0, 1e-6)  # tokens per second of this block
                size = int(min(block, max(16, rate * share)))
        check_deadline(deadline)

    def _prefill_block(self, ids: list[int], cache: Any) -> None:
        """One prefill forward. A long block after a cached past, on a draft that runs the split attention, reads
        the past and itself in two fused passes (draft/split.py) instead of one under a mask; else fused as is."""
        past = cache.get_seq_length()
        on_cpu = next(self.model.parameters()).device.type == "cpu"
        if not (self.fuses_null and past and len(ids) >= PAST_SPLIT_ROWS and on_cpu):
            self._forward(ids, cache)
            return
        with planned(SplitPlan(0, past, None, ())), self._implementation(register()):
            self._forward(ids, cache)

    @contextlib.contextmanager
    def _locked(self, deadline: float | None) -> Iterator[None]:
        """Hold the draft's lock (one forward at a time), waiting for it no later than ``deadline``."""
        if deadline is None:
            with self._lock:
                yield
            return
        if not self._lock.acquire(timeout=max(0.0, deadline - now())):
            raise DraftTimeoutError("the draft was busy with another call until CompressionConfig.timeout_s")
        try:
            yield
        finally:
            self._lock.release()

    def _forward(
        self, ids: list[int], cache: Any, *, attentions: bool = False, logits: bool = False, **extra: Any
    ) -> Any:
        """One forward of ``ids`` extending ``cache``, with attention weights if asked; ``logits``: the last
        token's logits too (else the LM head is skipped where the model has a separate decoder)."""
        device = next(self.model.parameters()).device
        if attentions:
            extra["output_attentions"] = True
        extra = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in extra.items()}
        x = torch.tensor([ids], device=device)
        if not logits and self._decoder is not None:
            return self._decoder(input_ids=x, use_cache=True, **extra, **{self._decoder_cache_kw: cache})
        return self.model(input_ids=x, use_cache=True, logits_to_keep=1, **extra, **{self._cache_kw: cache})

    def _eager_forward(self, ids: list[int], cache: Any) -> Any:
        """The look-ahead's forward: attention weights and the last token's logits (its next token)."""
        return self._forward(ids, cache, attentions=True, logits=True)

    def _query_forward(self, ids: list[int], cache: Any) -> Any:
        """The question scorer's eager forward: attention weights only."""
        return self._forward(ids, cache, attentions=True)

    def _fused_forward(self, ids: list[int], cache: Any, n_null: int, ctx_end: int) -> Any:
        """One eager forward: ``ids[:-n_null]`` continue the cache causally; the last ``n_null`` (the null query)
        see only the context ``[0, ctx_end)`` and each other, at positions ``ctx_end...``, as they would alone
        after the cache was cropped to the context."""
        past = cache.get_seq_length()
        n = len(ids)
        asked = n - n_null
        seen = torch.zeros((n, past + n), dtype=torch.bool)
        seen[:asked, : past + asked] = torch.ones((asked, past + asked), dtype=torch.bool).tril(past)
        seen[asked:, :ctx_end] = True
        seen[asked:, past + asked :] = torch.ones((n_null, n_null), dtype=torch.bool).tril()
        dtype = self.model.dtype
        mask = torch.zeros(seen.shape, dtype=dtype).masked_fill(~seen, torch.finfo(dtype).min)
        positions = [*range(past, past + asked), *range(ctx_end, ctx_end + n_null)]
        return self._forward(
            ids, cache, attentions=True, position_ids=torch.tensor([positions]), attention_mask=mask[None, None]
        )

    def _merges(self, heads: tuple[tuple[int, int], ...], depth: int, rows: int, keys: int) -> bool:
        """Whether the query passes may share one split forward with the prefill's last block: a llama draft, and
        the voting heads' weights of the ``rows`` query rows over ``keys`` within :data:`MERGED_WEIGHT_CELLS`."""
        if not self.fuses_null:
            return False
        n_heads = int(self.model.config.num_attention_heads)
        voting = sum(1 for layer, h in heads if layer < depth and 0 <= h < n_heads) if heads else depth * n_heads
        return voting * rows * keys <= MERGED_WEIGHT_CELLS

    def _merged(self, pending: list[int], depth: int) -> Any:
        """The Window's merged forward: ``pending`` context tokens, then the question and the null query."""

        def forward(query_ids: list[int], null_ids: list[int], cache: Any, ctx_end: int, voters: Any) -> list[Any]:
            return self._split_forward(pending, query_ids, null_ids, cache, ctx_end, voters, depth)

        return forward

    def _split_forward(
        self,
        body: list[int],
        query_ids: list[int],
        null_ids: list[int],
        cache: Any,
        ctx_end: int,
        voters: tuple[tuple[int, ...], ...],
        depth: int,
    ) -> list[torch.Tensor]:
        """One forward of ``[*body, *query_ids, *null_ids]`` (draft/split.py): the body extends the cache to
        ``ctx_end`` under fused attention, the question reads everything before it, and the null query reads only
        ``[0, ctx_end)`` and itself at the positions right after it. Returns, per layer up to ``depth``, the
        voting heads' ``(1, voters, n_query + n_null, keys)`` weights of those rows."""
        past = cache.get_seq_length()
        if past + len(body) != ctx_end:
            raise DraftError(f"the cache holds {past} tokens and {len(body)} more do not end the context at {ctx_end}")
        nq, nn = len(query_ids), len(null_ids)
        keys = ctx_end + nq + nn
        dtype = self.model.dtype
        seen = torch.zeros((nq + nn, keys), dtype=torch.bool)
        seen[:nq, : ctx_end + nq] = torch.ones((nq, ctx_end + nq), dtype=torch.bool).tril(ctx_end)
        seen[nq:, :ctx_end] = True
        seen[nq:, ctx_end + nq :] = torch.ones((nn, nn), dtype=torch.bool).tril()
        device = next(self.model.parameters()).device
        plan = SplitPlan(nq + nn, past, additive_mask(seen, dtype).to(device), voters)
        positions = [*range(past, ctx_end + nq), *range(ctx_end, ctx_end + nn)]
        with planned(plan), self._implementation(register()):
            self._forward([*body, *query_ids, *null_ids], cache, position_ids=torch.tensor([positions]))
        empty = torch.zeros((1, 0, nq + nn, keys), dtype=dtype)
        return [plan.weights.get(layer, empty) for layer in range(depth)]

    @contextlib.contextmanager
    def _truncated(self, depth: int) -> Iterator[None]:
        """Run only the first ``depth`` decoder layers (the model's forward reads ``config.num_hidden_layers``)."""
        config = self.model.config
        if depth >= self.num_layers:
            yield
            return
        config.num_hidden_layers = depth
        try:
            yield
        finally:
            config.num_hidden_layers = self.num_layers

    @contextlib.contextmanager
    def _attention(self, *, prefill: bool) -> Iterator[None]:
        """Fused attention for the prefill, eager (weights exposed) for the query steps; restored after."""
        original = getattr(self.model.config, "_attn_implementation", None) or "sdpa"
        with self._implementation(("sdpa" if original == "eager" else original) if prefill else "eager"):
            yield

    @contextlib.contextmanager
    def _implementation(self, wanted: str) -> Iterator[None]:
        """Run the model under the attention implementation ``wanted``; the original one is restored after."""
        original = getattr(self.model.config, "_attn_implementation", None) or "sdpa"
        if wanted == original:
            yield
            return
        self.model.set_attn_implementation(wanted)
        try:
            yield
        finally:
            self.model.set_attn_implementation(original)


def _cache_keyword(module: Any) -> str:
    """The keyword ``module.forward`` takes its KV cache by (``cache`` in newer transformers)."""
    return "cache" if "cache" in inspect.signature(module.forward).parameters else "past_key_values"


def _eos_ids(model: Any, tokenizer: Any) -> set[int]:
    found: set[int] = set()
    for value in (
        getattr(getattr(model, "generation_config", None), "eos_token_id", None),
        getattr(model.config, "eos_token_id", None),
        getattr(tokenizer, "eos_token_id", None),
    ):
        if value is None:
            continue
        found.update([value] if isinstance(value, int) else list(value))
    return found
