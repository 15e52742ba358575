"""Stores in this process: a byte-bounded LRU map of live objects, and the in-memory memo store built on it."""

from __future__ import annotations

import logging
import operator
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any, Generic, TypeVar

from .base import CorruptEntry, Counters, check_key, check_max_bytes, decode, encode

__all__ = ["ByteLRU", "InMemoryMemoStore"]

logger = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class ByteLRU(Generic[K, V]):
    """A thread-safe least-recently-used map whose values together take at most ``max_bytes``.

    ``sizeof(value)`` says how many bytes a value takes (``tensor.nbytes`` summed over a
    KV cache, ``len`` of an encoded payload); it is called once per :meth:`put`, outside
    the lock. Putting evicts least recently used entries until the total fits. A value
    larger than ``max_bytes`` on its own is not stored, and it removes any entry already
    under its key. ``max_bytes=0`` stores nothing.

    Counters: ``hits`` and ``misses`` of :meth:`get`, and ``evictions`` (entries pushed out
    to make room).
    """

    def __init__(self, max_bytes: int, *, sizeof: Callable[[V], int]) -> None:
        check_max_bytes(max_bytes, allow_none=False)
        if not callable(sizeof):
            raise TypeError(f"sizeof must be a callable value -> bytes, e.g. len; got {type(sizeof).__name__}")
        self._max_bytes = max_bytes
        self._sizeof = sizeof
        self._lock = threading.Lock()
        self._entries: OrderedDict[K, tuple[V, int]] = OrderedDict()  # oldest first
        self._nbytes = 0
        self._hits = 0
        self._misses = 0
        self._evictions = 0

    @property
    def max_bytes(self) -> int:
        """The bound on the total size of the stored values."""
        return self._max_bytes

    @property
    def nbytes(self) -> int:
        """The total size of the stored values, as ``sizeof`` reported it."""
        with self._lock:
            return self._nbytes

    @property
    def hits(self) -> int:
        """Calls of :meth:`get` that found their key."""
        with self._lock:
            return self._hits

    @property
    def misses(self) -> int:
        """Calls of :meth:`get` that did not find their key."""
        with self._lock:
            return self._misses

    @property
    def evictions(self) -> int:
        """Entries removed to keep the total within ``max_bytes``."""
        with self._lock:
            return self._evictions

    def get(self, key: K) -> V | None:
        """The value under ``key`` (now the most recently used), or None."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                self._misses += 1
                return None
            self._entries.move_to_end(key)
            self._hits += 1
            return entry[0]

    def put(self, key: K, value: V) -> None:
        """Store ``value`` under ``key`` as the most recently used entry, evicting the least recently used."""
        size = self._size_of(value)
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._nbytes -= old[1]
            if self._max_bytes == 0 or size > self._max_bytes:
                logger.debug("ByteLRU: not storing %r: %d bytes > max_bytes=%d", key, size, self._max_bytes)
                return
            self._entries[key] = (value, size)
            self._nbytes += size
            while self._nbytes > self._max_bytes:
                _, (_, evicted_size) = self._entries.popitem(last=False)
                self._nbytes -= evicted_size
                self._evictions += 1

    def pop(self, key: K) -> V | None:
        """Remove and return the value under ``key``, or None if there is none."""
        with self._lock:
            entry = self._entries.pop(key, None)
            if entry is None:
                return None
            self._nbytes -= entry[1]
            return entry[0]

    def clear(self) -> None:
        """Remove every entry (the counters keep counting)."""
        with self._lock:
            self._entries.clear()
            self._nbytes = 0

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def __contains__(self, key: object) -> bool:
        """Whether ``key`` is stored; does not count as a use."""
        with self._lock:
            return key in self._entries

    def __repr__(self) -> str:
        return f"ByteLRU(entries={len(self)}, nbytes={self.nbytes}, max_bytes={self._max_bytes})"

    def _size_of(self, value: V) -> int:
        raw = self._sizeof(value)
        try:
            size = operator.index(raw)
        except TypeError:
            raise TypeError(f"sizeof must return an int number of bytes, got {type(raw).__name__}") from None
        if size < 0:
            raise ValueError(f"sizeof must return a byte count >= 0, got {size}")
        return size


class InMemoryMemoStore(Counters):
    """A memo store in this process: a :class:`ByteLRU` of encoded JSON, bounded by its bytes.

    Entries are kept encoded, so neither the dict given to :meth:`put` nor one returned by
    :meth:`get` can change what is stored.
    """

    def __init__(self, max_bytes: int = 64 * 2**20) -> None:
        super().__init__()
        self._lru: ByteLRU[str, bytes] = ByteLRU(max_bytes, sizeof=len)
        self._write_lock = threading.Lock()  # makes put_if_absent's look and write one step

    @property
    def nbytes(self) -> int:
        """Bytes of encoded JSON held."""
        return self._lru.nbytes

    @property
    def evictions(self) -> int:
        """Entries removed to keep within ``max_bytes``."""
        return self._lru.evictions

    def __len__(self) -> int:
        return len(self._lru)

    def get(self, key: str) -> dict[str, Any] | None:
        """The value under ``key``, or None when it is missing or corrupt."""
        raw = self._lru.get(check_key(key))
        if raw is None:
            self._count(hit=False)
            return None
        try:
            value = decode(raw)
        except CorruptEntry as e:
            self._lru.pop(key)
            self._report_corrupt("InMemoryMemoStore", key, str(e))
            return None
        self._count(hit=True)
        return value

    def put(self, key: str, value: dict[str, Any]) -> None:
        """Store a JSON-able dict under ``key``; TypeError if it is not one."""
        payload = encode(value)
        with self._write_lock:
            self._lru.put(check_key(key), payload)

    def put_if_absent(self, key: str, value: dict[str, Any]) -> bool:
        """Store ``value`` unless ``key`` holds an entry already (first writer wins); whether it was stored."""
        payload = encode(value)
        with self._write_lock:
            if check_key(key) in self._lru:
                return False
            self._lru.put(key, payload)
            return key in self._lru

    def delete(self, key: str) -> None:
        """Remove the entry under ``key``, if any."""
        self._lru.pop(check_key(key))

    def clear(self) -> None:
        """Remove every entry."""
        self._lru.clear()
