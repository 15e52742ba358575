"""Frozen segments in a memo store: the key that names one compression, and the payload that carries it.

Key: the segment's text, the query it was scored against, the draft, the target tokenizer,
every :class:`CompressionConfig` field and the heads that vote (``heads="auto"`` resolves to
the draft's calibrated heads). The surrounding conversation is not part of the key: the
same tool output under the same question is compressed the same way wherever it appears.
Payload: :meth:`CompressionResult.to_dict` without timings and fallback reason; a payload
that does not have that shape is refused with a ``ValueError``.

A payload is never trusted: :func:`checked_result` uses it only when it is a valid
compression of the segment it was looked up for (its spans re-rendered give its text, its
token counts are recounted). The guarded calls (:func:`store_get`, :func:`store_put`,
:func:`store_delete`) turn a store that raises into "no memo" and log one warning per outage.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import weakref
from collections.abc import Callable, Sequence
from dataclasses import asdict
from typing import Any

from .config import CompressionConfig
from .results import CompressionResult, Span, Timings
from .selection import layout_for, protected_spans, render_layout
from .stores import MemoStore

__all__ = [
    "MEMO_VERSION",
    "checked_result",
    "memo_key",
    "result_from_payload",
    "result_payload",
    "store_delete",
    "store_get",
    "store_put",
]

logger = logging.getLogger(__name__)

MEMO_VERSION = 3  # bump when the payload or the meaning of a key changes


def memo_key(
    text: str,
    query: str,
    *,
    draft: str,
    target: str,
    config: CompressionConfig,
    heads: Sequence[tuple[int, int]],
) -> str:
    """The sha256 hex digest that names the compression of ``text`` under ``query`` with these settings."""
    settings = asdict(config)
    settings.pop("_compiled_protect", None)
    ident = {
        "v": MEMO_VERSION,
        "draft": draft,
        "target": target,
        "config": settings,
        "heads": [list(p) for p in heads],
        "query": query,
        "text": text,
    }
    blob = json.dumps(ident, sort_keys=True, ensure_ascii=False).encode("utf-8", "surrogatepass")
    return hashlib.sha256(blob).hexdigest()


def result_payload(result: CompressionResult) -> dict[str, Any]:
    """What a memo store keeps of a result: every field but its timings and fallback reason."""
    payload = result.to_dict()
    payload.pop("timings", None)
    payload.pop("fallback_reason", None)
    return payload


def result_from_payload(payload: dict[str, Any]) -> CompressionResult:
    """The result a payload of :func:`result_payload` carries; ``ValueError`` when it has another shape."""
    try:
        return CompressionResult(
            text=_typed(payload["text"], str),
            kept_spans=tuple((_typed(a, int), _typed(b, int)) for a, b in payload["kept_spans"]),
            original_tokens=_typed(payload["original_tokens"], int),
            compressed_tokens=_typed(payload["compressed_tokens"], int),
            keep_rate=float(payload["keep_rate"]),
            budget_tokens=_typed(payload["budget_tokens"], int),
            draft_tokens=_typed(payload["draft_tokens"], int),
            timings=Timings(),
            kept_paths=tuple(_typed(p, str) for p in payload.get("kept_paths", ())),
        )
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"not a compression payload: {type(e).__name__}: {e}") from e


def _typed(value: Any, kind: type) -> Any:
    if isinstance(value, bool) or not isinstance(value, kind):
        raise TypeError(f"expected {kind.__name__}, got {type(value).__name__}")
    return value


def checked_result(
    payload: dict[str, Any],
    text: str,
    *,
    config: CompressionConfig,
    count: Callable[[str], int],
    draft_tokens: int,
) -> CompressionResult:
    """The compression of ``text`` that ``payload`` carries, or ``ValueError`` when it is not a valid one.

    Valid: its spans lie inside ``text``, each non-empty, sorted and non-overlapping, and its text is
    exactly what those spans render to under ``config`` (:func:`~crossprefill_agents.selection.render_layout`,
    so JSON and line layouts are checked too), or it is ``text`` passed through whole. It must also be one
    the selection could have made: within the budget, or (protected spans over the budget) exactly the
    protected and required spans. Every count is recomputed (target tokens with ``count``); only the text
    and spans come from the payload, and both are checked.
    """
    stored = result_from_payload(payload)
    spans = stored.kept_spans
    end = 0
    for s, e in spans:
        if not 0 <= s < e <= len(text) or s < end:
            raise ValueError(f"span ({s}, {e}) is empty, out of order or outside the {len(text)}-character segment")
        end = e
    original = count(text) if text else 0
    budget = config.budget_tokens(original if text.strip() else 0)  # as the compressor derives it
    if spans == ((0, len(text)),) and stored.text == text and not stored.kept_paths:  # passed through whole
        return _recounted(text, spans, (), original, original, budget, draft_tokens)
    layout = layout_for(text, config)
    rendering = render_layout(text, spans, layout, config.delimiter)
    if rendering.text != stored.text or rendering.spans != spans or rendering.paths != stored.kept_paths:
        raise ValueError("its text is not what its spans of the segment render to")
    tokens = count(rendering.text) if rendering.text else 0
    if tokens > budget:
        fixed = [*protected_spans(text, config.protect_patterns), *layout.required]
        if render_layout(text, fixed, layout, config.delimiter).spans != spans:
            raise ValueError(f"it takes {tokens} target tokens, over its budget of {budget}")
    return _recounted(rendering.text, spans, rendering.paths, original, tokens, budget, draft_tokens)


def _recounted(
    text: str, spans: tuple[Span, ...], paths: tuple[str, ...], original: int, tokens: int, budget: int, draft: int
) -> CompressionResult:
    return CompressionResult(
        text=text,
        kept_spans=spans,
        original_tokens=original,
        compressed_tokens=tokens,
        keep_rate=tokens / original if original else 1.0,
        budget_tokens=budget,
        draft_tokens=draft,
        timings=Timings(),
        kept_paths=paths,
    )


# ------------------------------------------------------------ guarded store calls
class _Health:
    """Whether a store's last call worked; a warning is logged when it stops working, once per outage."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.down = False


_HEALTH: weakref.WeakKeyDictionary[Any, _Health] = weakref.WeakKeyDictionary()
_HEALTH_BY_ID: dict[int, _Health] = {}  # stores that take no weak reference
_HEALTH_LOCK = threading.Lock()


def _health(store: object) -> _Health:
    with _HEALTH_LOCK:
        try:
            return _HEALTH.setdefault(store, _Health())
        except TypeError:
            return _HEALTH_BY_ID.setdefault(id(store), _Health())


def _worked(store: object) -> None:
    h = _health(store)
    if h.down:
        with h.lock:
            if h.down:
                h.down = False
                logger.info("the memo store %r works again", store)


def _failed(store: object, what: str, error: Exception) -> None:
    h = _health(store)
    with h.lock:
        if not h.down:
            h.down = True
            logger.warning(
                "the memo store %r failed on %s (%s: %s); compressing without it until it works again",
                store,
                what,
                type(error).__name__,
                error,
            )
        else:
            logger.debug("the memo store %r is still failing on %s: %s", store, what, error)


def store_get(store: MemoStore, key: str) -> tuple[dict[str, Any] | None, bool]:
    """``(payload or None, failed)``: a store that raises reads as a miss, with ``failed`` set."""
    try:
        value = store.get(key)
    except Exception as e:  # an outage must not break the turn: no memo for this call
        _failed(store, "a read", e)
        return None, True
    _worked(store)
    return value, False


def store_put(store: MemoStore, key: str, payload: dict[str, Any]) -> bool | None:
    """Write ``payload`` unless an entry is already there (first writer wins): True when written, False when an
    entry was there (or the store kept nothing), None when the store raised.

    Stores with a ``put_if_absent`` method (all of this library's) write atomically; for another store it is
    a ``get`` then a ``put``, which two processes can race.
    """
    try:
        put_if_absent = getattr(store, "put_if_absent", None)
        if callable(put_if_absent):
            written = bool(put_if_absent(key, payload))
        elif store.get(key) is not None:
            written = False
        else:
            store.put(key, payload)
            written = True
    except Exception as e:  # an outage must not break the turn
        _failed(store, "a write", e)
        return None
    _worked(store)
    return written


def store_delete(store: MemoStore, key: str) -> bool:
    """Delete ``key``; False when the store raised."""
    try:
        store.delete(key)
    except Exception as e:
        _failed(store, "a delete", e)
        return False
    _worked(store)
    return True
