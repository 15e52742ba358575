"""The memo-store protocol and what every store shares: JSON payloads, checksums, hit/miss/corrupt counters.

A :class:`MemoStore` holds JSON-able results (``dict[str, Any]``) keyed by a string the
caller derives from the segment and the settings. Payloads are JSON, never pickle: a
shared store never runs code it reads. An entry that does not decode (bad JSON, checksum
mismatch, wrong shape) is deleted, logged and reported as a miss, so the caller
recomputes it; a corrupt entry never raises.

JSON round-trips what JSON has: tuples come back as lists and non-``str`` dict keys as
``str``. Store results in their ``to_dict()`` form.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from typing import Any, Protocol, runtime_checkable

__all__ = ["CorruptEntry", "Counters", "MemoStore", "check_key", "check_max_bytes", "decode", "encode", "sha256"]

logger = logging.getLogger(__name__)


def check_max_bytes(max_bytes: object, *, allow_none: bool) -> None:
    if max_bytes is None and allow_none:
        return
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 0:
        none = "None (unbounded) or " if allow_none else ""
        raise ValueError(f"max_bytes must be {none}an int >= 0 (0 stores nothing), got {max_bytes!r}")


@runtime_checkable
class MemoStore(Protocol):
    """A key -> JSON-able dict store; a missing or corrupt entry reads as None.

    A store may also have ``put_if_absent(key, value) -> bool`` (store unless an entry is there; whether it
    stored), done atomically; every store of this library has it, and sessions use it so that the first
    writer of a segment wins across processes.
    """

    def get(self, key: str) -> dict[str, Any] | None: ...

    def put(self, key: str, value: dict[str, Any]) -> None: ...

    def delete(self, key: str) -> None: ...

    def clear(self) -> None: ...


class CorruptEntry(Exception):
    """A stored entry that does not decode; the message says why."""


def check_key(key: object) -> str:
    if not isinstance(key, str):
        raise TypeError(f"memo keys are str (e.g. a sha256 hex digest), got {type(key).__name__}")
    return key


def encode(value: object) -> bytes:
    """``value`` as compact UTF-8 JSON; a TypeError that says what to do for anything else."""
    if not isinstance(value, dict):
        raise TypeError(
            f"memo values are JSON-able dicts (e.g. CompressionResult.to_dict()), got {type(value).__name__}"
        )
    try:
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    except (TypeError, ValueError) as e:
        raise TypeError(f"memo value is not JSON-able ({e}); store plain dicts, lists, str, numbers and None") from e
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate (text cut mid-pair): \u escapes carry it through
        return json.dumps(value, ensure_ascii=True, separators=(",", ":")).encode("ascii")


def decode(raw: object) -> dict[str, Any]:
    """A payload written by :func:`encode`, or :class:`CorruptEntry`."""
    if isinstance(raw, str):
        raw = raw.encode("utf-8")
    if not isinstance(raw, (bytes, bytearray, memoryview)):
        raise CorruptEntry(f"payload is a {type(raw).__name__}, not bytes")
    try:
        value = json.loads(bytes(raw))
    except (UnicodeDecodeError, ValueError) as e:  # json.JSONDecodeError is a ValueError
        raise CorruptEntry(f"payload is not JSON: {e}") from None
    if not isinstance(value, dict):
        raise CorruptEntry(f"payload is a JSON {type(value).__name__}, not an object")
    return value


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Counters:
    """``hits``, ``misses`` and ``corrupt``, counted under a lock; a corrupt entry counts as a miss too."""

    def __init__(self) -> None:
        self._counter_lock = threading.Lock()
        self._hits = 0
        self._misses = 0
        self._corrupt = 0

    @property
    def hits(self) -> int:
        """Calls of ``get`` that returned a value."""
        return self._hits

    @property
    def misses(self) -> int:
        """Calls of ``get`` that returned None (corrupt entries included)."""
        return self._misses

    @property
    def corrupt(self) -> int:
        """Entries found undecodable on ``get``, then deleted."""
        return self._corrupt

    def _count(self, *, hit: bool, corrupt: bool = False) -> None:
        with self._counter_lock:
            if hit:
                self._hits += 1
            else:
                self._misses += 1
            if corrupt:
                self._corrupt += 1

    def _report_corrupt(self, store: str, key: str, reason: str) -> None:
        logger.warning("%s: dropped corrupt memo entry %r (%s); it will be recomputed", store, key, reason)
        self._count(hit=False, corrupt=True)
