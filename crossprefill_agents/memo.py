"""Frozen segments in a memo store: the key that names one compression, and the payload that carries it.

Key: the segment's text, the query it was scored against, the draft, the target tokenizer,
every :class:`CompressionConfig` field and the heads that vote (``heads="auto"`` resolves to
the draft's calibrated heads). The surrounding conversation is not part of the key: the
same tool output under the same question is compressed the same way wherever it appears.
Payload: :meth:`CompressionResult.to_dict` without timings and fallback reason; a payload
that does not have that shape is refused with a ``ValueError``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from .config import CompressionConfig
from .results import CompressionResult, Timings

__all__ = ["MEMO_VERSION", "memo_key", "result_from_payload", "result_payload"]

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
