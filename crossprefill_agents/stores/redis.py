"""A memo store on a Redis server, shared by hosts."""

from __future__ import annotations

import json
import logging
from types import TracebackType
from typing import Any

from .base import CorruptEntry, Counters, check_key, decode, encode, sha256

__all__ = ["RedisMemoStore"]

logger = logging.getLogger(__name__)

_ENVELOPE_VERSION = 1  # the "crossprefill_memo" field of a Redis envelope
_REDIS_GLOB_SPECIALS = "\\*?[]"  # escaped in the SCAN pattern of a prefix


class RedisMemoStore(Counters):
    """A memo store on a Redis server, under keys ``prefix + key``.

    Each value is a JSON envelope ``{"crossprefill_memo": 1, "sha256": ..., "payload": ...}``
    whose payload is the value's JSON text. ``ttl_s`` sets an expiry on every put (None:
    entries live until deleted or evicted by the server's own policy). :meth:`clear`
    removes only this prefix's keys, found with SCAN.

    Pass a ready ``client`` (a ``redis.Redis``) or a ``url``; the ``redis`` package is
    needed only for the latter (``pip install 'crossprefill-agents[redis]'``). A client made
    from ``url`` gives up on a connect after ``connect_timeout_s`` and on a reply after
    ``socket_timeout_s`` (0.25 s each: a memo is worth less than a stalled turn; None waits
    forever); a passed ``client`` keeps its own timeouts. Errors of the server (down, hung,
    a wrong-type key) raise here; sessions treat them as "no memo" for that call.
    """

    def __init__(
        self,
        url: str = "redis://localhost:6379/0",
        *,
        client: Any = None,
        prefix: str = "crossprefill:memo:",
        ttl_s: float | None = None,
        socket_timeout_s: float | None = 0.25,
        connect_timeout_s: float | None = 0.25,
    ) -> None:
        super().__init__()
        for name, value in (("socket_timeout_s", socket_timeout_s), ("connect_timeout_s", connect_timeout_s)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0):
                raise ValueError(f"{name} must be None (wait forever) or a number of seconds > 0, got {value!r}")
        if not isinstance(prefix, str) or not prefix:
            raise ValueError(f"prefix must be a non-empty str (clear() deletes every key under it), got {prefix!r}")
        if ttl_s is not None and (isinstance(ttl_s, bool) or not isinstance(ttl_s, (int, float)) or not ttl_s > 0):
            raise ValueError(f"ttl_s must be None (no expiry) or a number of seconds > 0, got {ttl_s!r}")
        self._prefix = prefix
        self._ttl_ms = None if ttl_s is None else max(1, round(ttl_s * 1000))
        self._owns_client = client is None
        if client is None:
            try:
                import redis
            except ImportError as e:
                raise ImportError(
                    "RedisMemoStore needs the redis package: pip install 'crossprefill-agents[redis]' "
                    "(or pass client=...)"
                ) from e
            client = redis.Redis.from_url(
                url, socket_timeout=socket_timeout_s, socket_connect_timeout=connect_timeout_s
            )
        self._client = client

    @property
    def prefix(self) -> str:
        """The prefix of every key this store writes."""
        return self._prefix

    @property
    def client(self) -> Any:
        """The Redis client."""
        return self._client

    def get(self, key: str) -> dict[str, Any] | None:
        """The value under ``key``, or None when it is missing or corrupt."""
        name = self._prefix + check_key(key)
        raw = self._client.get(name)
        if raw is None:
            self._count(hit=False)
            return None
        try:
            value = self._open_envelope(raw)
        except CorruptEntry as e:
            self._client.delete(name)
            self._report_corrupt("RedisMemoStore", key, str(e))
            return None
        self._count(hit=True)
        return value

    def put(self, key: str, value: dict[str, Any]) -> None:
        """Store a JSON-able dict under ``key`` (with the store's expiry, if any)."""
        name = self._prefix + check_key(key)
        self._client.set(name, self._envelope(value), px=self._ttl_ms)

    def put_if_absent(self, key: str, value: dict[str, Any]) -> bool:
        """Store ``value`` unless ``key`` holds an entry already (``SET NX``: first writer wins); whether it was."""
        name = self._prefix + check_key(key)
        return bool(self._client.set(name, self._envelope(value), px=self._ttl_ms, nx=True))

    @staticmethod
    def _envelope(value: dict[str, Any]) -> str:
        payload = encode(value).decode("utf-8")
        envelope = {
            "crossprefill_memo": _ENVELOPE_VERSION,
            "sha256": sha256(payload.encode("utf-8")),
            "payload": payload,
        }
        return json.dumps(envelope, ensure_ascii=False, separators=(",", ":"))

    def delete(self, key: str) -> None:
        """Remove the entry under ``key``, if any."""
        self._client.delete(self._prefix + check_key(key))

    def clear(self) -> None:
        """Remove every key under this store's prefix (and no other)."""
        pattern = "".join("\\" + c if c in _REDIS_GLOB_SPECIALS else c for c in self._prefix) + "*"
        batch: list[Any] = []
        for name in self._client.scan_iter(match=pattern, count=500):
            batch.append(name)
            if len(batch) >= 500:
                self._client.delete(*batch)
                batch = []
        if batch:
            self._client.delete(*batch)

    def close(self) -> None:
        """Close the client if this store made it from ``url``; a passed ``client`` is left open."""
        if self._owns_client:
            self._client.close()

    def __enter__(self) -> RedisMemoStore:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"RedisMemoStore(prefix={self._prefix!r}, ttl_ms={self._ttl_ms!r})"

    @staticmethod
    def _open_envelope(raw: object) -> dict[str, Any]:
        envelope = decode(raw)
        if envelope.get("crossprefill_memo") != _ENVELOPE_VERSION:
            raise CorruptEntry(f"not a version-{_ENVELOPE_VERSION} crossprefill memo envelope")
        payload, checksum = envelope.get("payload"), envelope.get("sha256")
        if not isinstance(payload, str) or not isinstance(checksum, str):
            raise CorruptEntry("envelope lacks a str payload and sha256")
        data = payload.encode("utf-8")
        if checksum != sha256(data):
            raise CorruptEntry("checksum mismatch")
        return decode(data)
