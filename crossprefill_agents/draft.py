"""Loading a draft model and running it to score context tokens.

Memory stays linear in the context length: the context is prefilled in blocks with the
model's own fused attention (sdpa), and only the query tokens run with eager attention to
expose their weights (a few rows per layer and head, never an n x n map): the question's
tokens and a content-free null query for the default scorer, the last prompt token and
the greedy look-ahead tokens for the published one. The question scorer needs no logits,
so the forward stops after the deepest layer whose heads vote.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import math
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from ._text import sanitize
from .config import CompressionConfig
from .scoring import (
    NoVotingHeadsError,
    context_slice,
    head_rows,
    head_vote,
    mean_over_steps,
    pool_along_keys,
    question_vote,
    renormalize_over_context,
)

__all__ = [
    "DraftError",
    "DraftModel",
    "DraftPrefix",
    "DraftScores",
    "DraftTimeoutError",
    "TokenizedText",
    "load_gguf",
    "quantize_int8",
]

logger = logging.getLogger(__name__)

DEFAULT_WINDOW = 8192  # draft tokens per window when the model states no position limit
NULL_QUERY = "N/A"  # the content-free query whose attention calibrates the question scorer
QUERY_BLOCK = 16  # question tokens per eager forward (bounds the attention maps held at once)


class DraftError(RuntimeError):
    """The draft could not score the context (broken model, too-long query, ...)."""


class DraftTimeoutError(DraftError):
    """Scoring ran past ``CompressionConfig.timeout_s``."""


@dataclass(frozen=True)
class TokenizedText:
    """Draft tokens of a text with their character spans into it."""

    ids: np.ndarray  # (n,) int64
    offsets: np.ndarray  # (n, 2) int64, non-decreasing starts, clamped to [0, len(text)]


@dataclass(frozen=True)
class DraftScores:
    """Per-document token importance from one scoring pass."""

    query: str  # the query the documents were scored against
    tokens: tuple[TokenizedText, ...]  # one per document
    scores: tuple[np.ndarray, ...]  # one (n_doc,) float64 array per document; 1.0 = uniform attention
    prefilled_tokens: int  # draft tokens run through the model (all windows, prompt + query steps)
    windows: int  # scoring windows used
    prefill_s: float
    lookahead_s: float  # the query passes: question + null query, or last prompt token + look-ahead
    reused_tokens: int = 0  # prompt tokens whose keys came from a kept draft cache (incremental scoring)


class DraftPrefix:
    """The draft's KV cache after reading a context, kept between agent turns.

    Owned by one session at a time; :meth:`DraftModel.score_incremental` crops it to
    the longest token prefix it shares with the next prompt and extends it from there.
    After a failed pass it is reset (empty), never left half-written.
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


def load_gguf(path: str | Path, *, dtype: torch.dtype = torch.float32) -> tuple[Any, Any]:
    """Load a GGUF file through transformers, dequantised to ``dtype``, as a plain savable model."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"GGUF file not found: {p}")
    tokenizer = AutoTokenizer.from_pretrained(str(p.parent), gguf_file=p.name)
    model = AutoModelForCausalLM.from_pretrained(str(p.parent), gguf_file=p.name, dtype=dtype)
    # The weights are dequantised in memory; drop the GGUF quantizer marks so the model can be saved.
    model.hf_quantizer = None  # type: ignore[assignment]
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    return model, tokenizer


def quantize_int8(model: Any) -> Any:
    """Dynamic int8 quantisation of the model's linear layers, for CPU drafts (in place; returns the model).

    Weights are stored in int8 and activations quantised on the fly (``torch.ao`` dynamic
    quantisation); attention stays in float. Roughly 1.2-1.5x faster on x86 CPUs.
    """
    if any(p.device.type != "cpu" for p in model.parameters()):
        raise ValueError("int8 dynamic quantisation runs on CPU only; load the draft without device= or quantize=")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao's deprecation notice points to torchao, not installed here
        return torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8, inplace=True)


class DraftModel:
    """A small causal LM and its tokenizer, used only to score context tokens.

    Safe to share between threads: one forward runs at a time.
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
        # Heads that vote for CompressionConfig(heads="auto") in the question scorer; None = all heads.
        # Set from a calibration (crossprefill_agents.heads), or loaded by from_pretrained.
        self.retrieval_heads: tuple[tuple[int, int], ...] | None = (
            tuple((int(a), int(b)) for a, b in retrieval_heads) if retrieval_heads else None
        )
        self.num_layers = int(model.config.num_hidden_layers)
        self._lock = threading.Lock()
        params = inspect.signature(model.forward).parameters
        self._cache_kw = "cache" if "cache" in params else "past_key_values"
        self.max_positions: int | None = getattr(model.config, "max_position_embeddings", None)
        self.eos_ids = frozenset(_eos_ids(model, tokenizer))
        types = getattr(model.config, "layer_types", None) or []
        full = [i for i, t in enumerate(types) if t == "full_attention"]
        # Layers whose attention spans the whole context (a sliding-window layer sees only its tail).
        self.global_layers: tuple[int, ...] | None = tuple(full) if full and len(full) < len(types) else None
        with_special = tokenizer("a")["input_ids"]
        plain = tokenizer("a", add_special_tokens=False)["input_ids"]
        n_prefix = len(with_special) - len(plain)
        ok = n_prefix >= 0 and list(with_special[n_prefix : n_prefix + len(plain)]) == list(plain)
        self.prefix_ids: list[int] = list(with_special[:n_prefix]) if ok else []

    @classmethod
    def from_pretrained(
        cls,
        name: str | Path,
        *,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
        local_files_only: bool = False,
        trust_remote_code: bool = False,
        quantize: Literal["int8"] | None = None,
        model_kwargs: dict[str, Any] | None = None,
        calibrate_heads: bool = True,
    ) -> DraftModel:
        """Load a draft from an embedded alias, a ``.gguf`` file, a local folder or a hub id.

        Embedded aliases (``smollm2-135m``, ``gemma3-270m``) load from the converted folder
        that ``crossprefill download`` writes. ``quantize="int8"`` applies dynamic int8
        quantisation to the linear layers (CPU only; see :func:`quantize_int8`).
        Retrieval heads stored by :func:`crossprefill_agents.heads.calibrate` for this name
        are loaded into ``retrieval_heads``; an embedded draft without them is calibrated
        once here (20-40 s on CPU) unless ``calibrate_heads=False``. Other drafts vote with
        every head until calibrated.
        ``model_kwargs`` are passed to ``AutoModelForCausalLM.from_pretrained`` (copied,
        never modified).
        """
        if quantize not in (None, "int8"):
            raise ValueError(f"quantize must be None or 'int8', got {quantize!r}")
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from .embedded import EMBEDDED_MODELS, embedded_model_dir

        kwargs = dict(model_kwargs or {})
        kwargs.setdefault("dtype", dtype or torch.float32)
        kwargs["trust_remote_code"] = trust_remote_code
        source = str(name)
        path = Path(source).expanduser()
        if source in EMBEDDED_MODELS:
            path = embedded_model_dir(source)
        if path.suffix == ".gguf":
            model, tokenizer = load_gguf(path, dtype=kwargs["dtype"])
        elif path.is_dir() and not (path / "config.json").exists() and list(path.glob("*.gguf")):
            model, tokenizer = load_gguf(sorted(path.glob("*.gguf"))[0], dtype=kwargs["dtype"])
        else:
            where = str(path) if path.is_dir() else source
            tokenizer = AutoTokenizer.from_pretrained(
                where, local_files_only=local_files_only, trust_remote_code=trust_remote_code
            )
            model = AutoModelForCausalLM.from_pretrained(where, local_files_only=local_files_only, **kwargs)
        if device is not None:
            model = model.to(device)
        from .heads import calibrate, load_retrieval_heads

        tolerance = EMBEDDED_MODELS[source].depth_tolerance if source in EMBEDDED_MODELS else None
        draft = cls(model, tokenizer, name=source, retrieval_heads=load_retrieval_heads(source, tolerance))
        if draft.retrieval_heads is None and tolerance is not None and calibrate_heads:
            logger.info("calibrating the retrieval heads of %s once (stored under the models home)", source)
            calibrate(draft, depth_tolerance=tolerance)
        if quantize == "int8":
            draft.model = quantize_int8(draft.model)
            draft.name = f"{source}+{quantize}"
        return draft

    # ------------------------------------------------------------------ tokens
    def tokenize(self, text: str) -> TokenizedText:
        """Draft tokens of ``text`` (no special tokens) with character offsets into it."""
        if not text:
            return TokenizedText(np.zeros(0, dtype=np.int64), np.zeros((0, 2), dtype=np.int64))
        enc = self.tokenizer(sanitize(text), add_special_tokens=False, return_offsets_mapping=True, verbose=False)
        ids = np.asarray(enc["input_ids"], dtype=np.int64)
        offsets = np.asarray(enc["offset_mapping"], dtype=np.int64).reshape(-1, 2)
        offsets = np.clip(offsets, 0, len(text))
        offsets[:, 0] = np.maximum.accumulate(offsets[:, 0]) if len(offsets) else offsets[:, 0]
        offsets[:, 1] = np.maximum(offsets[:, 1], offsets[:, 0])
        return TokenizedText(ids, offsets)

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
        with the query; each window's scores are scaled by its length so that 1.0 means
        "uniform attention" in every window.
        """
        tokens, ctx_ids, doc_starts = self._context_ids(documents)
        head, query_ids = self._prompt_parts(query, config)
        n = len(ctx_ids)
        scores = np.zeros(n, dtype=np.float64)
        prefill_s = lookahead_s = 0.0
        prefilled = 0
        n_windows = 0
        if n:
            room = self._room(len(query_ids), config, head=len(head))
            n_windows = math.ceil(n / room)
            size = math.ceil(n / n_windows)
            for w in range(n_windows):
                lo, hi = w * size, min(n, (w + 1) * size)
                ids = [*head, *ctx_ids[lo:hi].tolist(), *query_ids.tolist()]
                window_scores, p_s, l_s, used = self._score_window(
                    ids, len(head), len(head) + hi - lo, config, deadline
                )
                scores[lo:hi] = window_scores * (hi - lo)
                prefill_s += p_s
                lookahead_s += l_s
                prefilled += used
        per_doc = tuple(scores[s : s + len(t.ids)] for s, t in zip(doc_starts, tokens, strict=True))
        return DraftScores(query, tokens, per_doc, prefilled, n_windows, prefill_s, lookahead_s)

    def head_scores(self, documents: Sequence[str], query: str, *, config: CompressionConfig) -> np.ndarray:
        """Every head's pooled, renormalised attention onto the context, per query token.

        Returns ``(queries, layers, heads, n_ctx)`` float32 over the documents' tokens joined
        as in :meth:`score` (one window; a longer context raises :class:`DraftError`). The
        queries are the question's tokens for ``scorer="question"`` (before the null query is
        subtracted: ``head_scores`` of the query ``"N/A"`` gives that), the last prompt token
        and the look-ahead tokens for ``"lookahead"``. ``config.heads`` and
        ``attention_layers`` are ignored: this is the raw material for choosing heads (see
        :func:`crossprefill_agents.heads.find_retrieval_heads`).
        """
        _, ctx_ids, _ = self._context_ids(documents)
        head, query_ids = self._prompt_parts(query, config)
        room = self._room(len(query_ids), config, head=len(head))
        if not 0 < len(ctx_ids) <= room:
            raise DraftError(f"head_scores needs 1 to {room} context tokens (one window), got {len(ctx_ids)}")
        ids = [*head, *ctx_ids.tolist(), *query_ids.tolist()]
        rows: list[torch.Tensor] = []
        self._score_window(ids, len(head), len(head) + len(ctx_ids), config, None, capture=rows)
        stacked = torch.stack(rows).float().cpu().numpy()  # (steps, layers*heads, n_ctx)
        return stacked.reshape(len(rows), self.num_layers, -1, len(ctx_ids))

    def context_room(self, query: str, config: CompressionConfig) -> int:
        """Draft tokens of context that fit in one window next to ``query`` (see :meth:`score_incremental`)."""
        head, query_ids = self._prompt_parts(query, config)
        return self._room(len(query_ids), config, head=len(head))

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
        a from-scratch :meth:`score` of the same documents and query up to float rounding.
        Afterwards ``state`` holds the context (without the query). The context must fit
        one window (:meth:`context_room`); a longer one raises :class:`DraftError`.
        """
        if state.draft_name != self.name:
            raise ValueError(f"this DraftPrefix belongs to draft {state.draft_name!r}, not {self.name!r}")
        tokens, ctx_ids, doc_starts = self._context_ids(documents)
        head, query_ids = self._prompt_parts(query, config)
        n = len(ctx_ids)
        room = self._room(len(query_ids), config, head=len(head))
        if n > room:
            raise DraftError(
                f"the context takes {n} draft tokens, more than the {room} that fit one window with this "
                "query; score fewer documents or use score()"
            )
        scores = np.zeros(n, dtype=np.float64)
        if not n:
            return DraftScores(query, tokens, tuple(scores[:0] for _ in tokens), 0, 0, 0.0, 0.0)
        stable = [*head, *ctx_ids.tolist()]
        ids = [*stable, *query_ids.tolist()]
        keep = 0
        for a, b in zip(state.ids, stable, strict=False):
            if a != b:
                break
            keep += 1
        keep = min(keep, len(ids) - 1)  # the last prompt token must run as a query step
        try:
            window_scores, p_s, l_s, used = self._score_window(
                ids, len(head), len(stable), config, deadline, state=state, reuse=keep
            )
        except BaseException:
            state.reset()
            raise
        scores[:] = window_scores * n
        per_doc = tuple(scores[s : s + len(t.ids)] for s, t in zip(doc_starts, tokens, strict=True))
        return DraftScores(query, tokens, per_doc, used, 1, p_s, l_s, reused_tokens=keep)

    # ---------------------------------------------------------------- private
    def _context_ids(self, documents: Sequence[str]) -> tuple[tuple[TokenizedText, ...], np.ndarray, list[int]]:
        """Each document's tokens, the documents' ids joined by blank-line tokens, and where each starts."""
        tokens = tuple(self.tokenize(d) for d in documents)
        sep = self.tokenize("\n\n").ids
        pieces: list[np.ndarray] = []
        doc_starts: list[int] = []
        pos = 0
        for i, t in enumerate(tokens):
            if i:
                pieces.append(sep)
                pos += len(sep)
            doc_starts.append(pos)
            pieces.append(t.ids)
            pos += len(t.ids)
        ctx_ids = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.int64)
        return tokens, ctx_ids, doc_starts

    def _query_ids(self, query: str, config: CompressionConfig) -> np.ndarray:
        return self.tokenize(config.query_separator + query).ids if query else np.zeros(0, dtype=np.int64)

    def _prompt_parts(self, query: str, config: CompressionConfig) -> tuple[list[int], np.ndarray]:
        """The ids before the context (special prefix, and the query when read first) and the query ids after it."""
        return [*self.prefix_ids, *self._head_ids(query, config).tolist()], self._query_ids(query, config)

    def _head_ids(self, query: str, config: CompressionConfig) -> np.ndarray:
        """The query read before the context (``query_position="both"``), else nothing."""
        if not query or config.query_position != "both":
            return np.zeros(0, dtype=np.int64)
        return self.tokenize(query + config.query_separator).ids

    def _room(self, n_query: int, config: CompressionConfig, *, head: int) -> int:
        limit = config.window_tokens or self.max_positions or DEFAULT_WINDOW
        if self.max_positions:
            limit = min(limit, self.max_positions)
        if config.scorer == "question":  # the null query reads the same context after the question
            room = limit - head - max(n_query, len(self._query_ids(NULL_QUERY, config))) - 1
        else:
            room = limit - head - n_query - config.lookahead - 1
        if room < 64:
            raise DraftError(
                f"the query takes {n_query} draft tokens and leaves no room for context in the "
                f"draft's {limit}-token window; shorten the query or raise window_tokens"
            )
        return room

    def voting_heads(self, config: CompressionConfig) -> tuple[tuple[int, int], ...]:
        """The (layer, head) pairs that vote under ``config`` (``()`` = every head)."""
        if config.heads == "auto":
            return self.retrieval_heads or () if config.scorer == "question" else ()
        return config.heads

    def _depth(self, config: CompressionConfig, heads: tuple[tuple[int, int], ...], capture: bool) -> int:
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
        """
        from transformers import DynamicCache

        question = config.scorer == "question" and ctx_end < len(ids)  # an empty query: the look-ahead queries
        heads = self.voting_heads(config) if question or config.heads != "auto" else ()
        depth = self._depth(config, heads, capture is not None) if question else self.num_layers
        with self._lock, torch.inference_mode(), self._truncated(depth):
            if state is None:
                cache = DynamicCache(config=self.model.config)  # sliding-window layers keep only their window
            else:
                if state.depth != depth:
                    state.reset()
                state.crop(reuse)
                if state.cache is None or not state.ids:
                    state.cache = DynamicCache()  # full-length layers: cropped anywhere
                    state.ids = []
                state.depth = depth
                cache = state.cache
            t0 = time.perf_counter()
            start = len(state.ids) if state is not None else 0
            body = ids[:ctx_end] if question else ids[:-1]
            self._prefill(body[start:], cache, config, deadline)
            used = len(body) - start
            t1 = time.perf_counter()
            window = _Window(ctx_start, ctx_end, cache, config, heads, deadline, capture)
            if question:
                votes, n_query = self._question_votes(ids[ctx_end:], window)
            else:
                votes, n_query = self._lookahead_votes(ids, window)
            used += n_query
            t2 = time.perf_counter()
            if state is not None:
                state.ids = list(body)
                state.crop(min(ctx_end, len(body)))  # drop the query (and look-ahead) tokens
        return votes.double().cpu().numpy(), t1 - t0, t2 - t1, used

    def _prefill(self, ids: list[int], cache: Any, config: CompressionConfig, deadline: float | None) -> None:
        device = next(self.model.parameters()).device
        block = config.prefill_chunk_tokens
        with self._attention(prefill=True):
            for i in range(0, len(ids), block):
                _check_deadline(deadline)
                chunk = torch.tensor([ids[i : i + block]], device=device)
                self.model(input_ids=chunk, use_cache=True, logits_to_keep=1, **{self._cache_kw: cache})

    def _lookahead_votes(self, ids: list[int], w: _Window) -> tuple[torch.Tensor, int]:
        """The published queries: the last prompt token, then greedy look-ahead tokens.

        Max over the voting heads, mean over the steps."""
        ctx_start, ctx_end, cache, config = w.ctx_start, w.ctx_end, w.cache, w.config
        device = next(self.model.parameters()).device
        steps: list[torch.Tensor] = []
        token = ids[-1]
        used = 0
        with self._attention(prefill=False):
            for step in range(config.lookahead + 1):
                _check_deadline(w.deadline)
                out = self.model(
                    input_ids=torch.tensor([[token]], device=device),
                    use_cache=True,
                    output_attentions=True,
                    logits_to_keep=1,
                    **{self._cache_kw: cache},
                )
                used += 1
                total_keys = len(ids) + step
                per_layer = [  # each (heads, n_ctx)
                    context_slice(a[0, :, -1, :], total_keys=total_keys, ctx_start=ctx_start, ctx_end=ctx_end)
                    for a in out.attentions
                ]
                if w.capture is not None:
                    w.capture.append(head_rows(per_layer, kernel=config.pool_kernel))  # (layers*heads, n_ctx)
                steps.append(self._vote([renormalize_over_context(r) for r in per_layer], config, w.heads))
                if step == config.lookahead:
                    break
                token = int(out.logits[0, -1].argmax())
                if token in self.eos_ids:
                    break
        return mean_over_steps(steps), used

    def _question_votes(self, query_ids: list[int], w: _Window) -> tuple[torch.Tensor, int]:
        """Every question token reads the context; each head's mean, minus its mean for the null query, votes."""
        if hasattr(w.cache, "activate_past_recording"):
            w.cache.activate_past_recording()  # sliding-window layers keep what the question pushes out, for the crop
        asked = self._query_attention(query_ids, w, w.capture)
        w.cache.crop(w.ctx_end - w.cache.get_seq_length())
        null_ids = self._query_ids(NULL_QUERY, w.config).tolist()
        null = self._query_attention(null_ids, w, None)
        return self._vote(asked, w.config, w.heads, null), len(query_ids) + len(null_ids)

    def _query_attention(
        self, query_ids: list[int], w: _Window, capture: list[torch.Tensor] | None
    ) -> list[torch.Tensor]:
        """Per layer ``(heads, n_ctx)``: the mean over the query's tokens (not the separator's) of their
        attention onto the context, renormalised over it in fp32 and pooled along keys."""
        ctx_start, ctx_end, cache, config = w.ctx_start, w.ctx_end, w.cache, w.config
        device = next(self.model.parameters()).device
        skip = self._separator_tokens(query_ids, config)
        sums: list[torch.Tensor] | None = None
        counted = 0
        with self._attention(prefill=False):
            for i in range(0, len(query_ids), QUERY_BLOCK):
                _check_deadline(w.deadline)
                block = query_ids[i : i + QUERY_BLOCK]
                out = self.model(
                    input_ids=torch.tensor([block], device=device),
                    use_cache=True,
                    output_attentions=True,
                    logits_to_keep=1,
                    **{self._cache_kw: cache},
                )
                first = max(0, skip - i)  # rows of this block that belong to the question
                if first >= len(block):
                    continue
                rows = []
                total = ctx_end + i + len(block)  # keys up to the block's last token
                for a in out.attentions:  # (1, heads, block, k): the last k of `total` positions
                    heads, q, k = a[0, :, first:].shape
                    att = context_slice(
                        a[0, :, first:].reshape(heads * q, k), total_keys=total, ctx_start=ctx_start, ctx_end=ctx_end
                    )
                    att = att.reshape(heads, q, ctx_end - ctx_start)  # (heads, q, n_ctx)
                    rows.append(pool_along_keys(renormalize_over_context(att), config.pool_kernel))
                if capture is not None:
                    for j in range(rows[0].shape[1]):
                        capture.append(torch.cat([r[:, j] for r in rows], dim=0))  # (layers*heads, n_ctx)
                block_sums = [r.sum(dim=1) for r in rows]  # (heads, n_ctx) per layer
                sums = block_sums if sums is None else [x + y for x, y in zip(sums, block_sums, strict=True)]
                counted += len(block) - first
        if sums is None:
            raise DraftError("the query has no tokens after the separator to read the context with")
        return [x / counted for x in sums]

    def _separator_tokens(self, query_ids: list[int], config: CompressionConfig) -> int:
        """How many leading ``query_ids`` are the separator's own tokens (0 if it merged with the query)."""
        sep = self.tokenize(config.query_separator).ids.tolist()
        n = len(sep)
        return n if 0 < n < len(query_ids) and query_ids[:n] == sep else 0

    def _vote(
        self,
        per_layer: Sequence[torch.Tensor],
        config: CompressionConfig,
        heads: tuple[tuple[int, int], ...],
        null: Sequence[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """The voting heads' max of per-layer ``(heads, n_ctx)`` rows (the question's excess over ``null``)."""
        layers = self.global_layers if config.attention_layers == "global" else None
        try:
            if null is not None:
                return question_vote(per_layer, null, heads, layers=layers)
            return head_vote(per_layer, heads, layers=layers, kernel=config.pool_kernel)
        except NoVotingHeadsError as e:
            raise DraftError(f"{e} (config.heads, config.attention_layers)") from e

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
        config = self.model.config
        original = getattr(config, "_attn_implementation", None) or "sdpa"
        wanted = ("sdpa" if original == "eager" else original) if prefill else "eager"
        if wanted == original:
            yield
            return
        self.model.set_attn_implementation(wanted)
        try:
            yield
        finally:
            self.model.set_attn_implementation(original)


@dataclass(frozen=True)
class _Window:
    """What the query passes over one scoring window share."""

    ctx_start: int  # first context position in the prompt
    ctx_end: int  # one past the last
    cache: Any  # the draft's KV cache holding the prompt up to ctx_end (at least)
    config: CompressionConfig
    heads: tuple[tuple[int, int], ...]  # voting (layer, head) pairs; () = all
    deadline: float | None
    capture: list[torch.Tensor] | None  # collects per-query rows for head_scores


def _check_deadline(deadline: float | None) -> None:
    if deadline is not None and time.monotonic() > deadline:
        raise DraftTimeoutError("the draft ran past CompressionConfig.timeout_s")


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
