"""What survives between agent turns: a byte-bounded LRU map and memo stores for compressed segments.

An agent resends most of its context every turn. Two kinds of state let a later turn
reuse the work of an earlier one:

* :class:`ByteLRU` holds live objects (a draft's KV cache, decoded memo entries) in this
  process, bounded by the bytes the caller says each value takes.
* A :class:`MemoStore` holds JSON-able results (``dict[str, Any]``) keyed by a string the
  caller derives from the segment and the settings. Three implementations:
  :class:`InMemoryMemoStore` (this process), :class:`SQLiteMemoStore` (one file, shared
  by threads and processes) and :class:`RedisMemoStore` (a Redis server, shared by hosts).

Payloads are JSON, never pickle: a shared store never runs code it reads. An entry that
does not decode (bad JSON, checksum mismatch, wrong shape) is deleted, logged and
reported as a miss, so the caller recomputes it; a corrupt entry never raises.

JSON round-trips what JSON has: tuples come back as lists and non-``str`` dict keys as
``str``. Store results in their ``to_dict()`` form.
"""

from __future__ import annotations

import hashlib
import json
import logging
import operator
import os
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from pathlib import Path
from types import TracebackType
from typing import Any, Generic, Protocol, TypeVar, runtime_checkable

__all__ = ["ByteLRU", "InMemoryMemoStore", "MemoStore", "RedisMemoStore", "SQLiteMemoStore"]

logger = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

_ENVELOPE_VERSION = 1  # the "crossprefill_memo" field of a Redis envelope
_SQLITE_SCHEMA_VERSION = 1  # PRAGMA user_version of a SQLite memo file
# The SQLite last-use clock: wall-clock nanoseconds, but always past every row's, so the order
# of uses is strict even when two land in the same nanosecond or the clocks of processes differ.
_NEXT_TICK = "MAX(?, COALESCE((SELECT MAX(last_used) FROM memo), 0) + 1)"


def _check_max_bytes(max_bytes: object, *, allow_none: bool) -> None:
    if max_bytes is None and allow_none:
        return
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 0:
        none = "None (unbounded) or " if allow_none else ""
        raise ValueError(f"max_bytes must be {none}an int >= 0 (0 stores nothing), got {max_bytes!r}")


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
        _check_max_bytes(max_bytes, allow_none=False)
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


@runtime_checkable
class MemoStore(Protocol):
    """A key -> JSON-able dict store; a missing or corrupt entry reads as None."""

    def get(self, key: str) -> dict[str, Any] | None: ...

    def put(self, key: str, value: dict[str, Any]) -> None: ...

    def delete(self, key: str) -> None: ...

    def clear(self) -> None: ...


class _CorruptEntry(Exception):
    """A stored entry that does not decode; the message says why."""


def _check_key(key: object) -> str:
    if not isinstance(key, str):
        raise TypeError(f"memo keys are str (e.g. a sha256 hex digest), got {type(key).__name__}")
    return key


def _encode(value: object) -> bytes:
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


def _decode(raw: object) -> dict[str, Any]:
    """A payload written by :func:`_encode`, or :class:`_CorruptEntry`."""
    if isinstance(raw, str):
        raw = raw.encode("utf-8")
    if not isinstance(raw, (bytes, bytearray, memoryview)):
        raise _CorruptEntry(f"payload is a {type(raw).__name__}, not bytes")
    try:
        value = json.loads(bytes(raw))
    except (UnicodeDecodeError, ValueError) as e:  # json.JSONDecodeError is a ValueError
        raise _CorruptEntry(f"payload is not JSON: {e}") from None
    if not isinstance(value, dict):
        raise _CorruptEntry(f"payload is a JSON {type(value).__name__}, not an object")
    return value


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class _Counters:
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


class InMemoryMemoStore(_Counters):
    """A memo store in this process: a :class:`ByteLRU` of encoded JSON, bounded by its bytes.

    Entries are kept encoded, so neither the dict given to :meth:`put` nor one returned by
    :meth:`get` can change what is stored.
    """

    def __init__(self, max_bytes: int = 64 * 2**20) -> None:
        super().__init__()
        self._lru: ByteLRU[str, bytes] = ByteLRU(max_bytes, sizeof=len)

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
        raw = self._lru.get(_check_key(key))
        if raw is None:
            self._count(hit=False)
            return None
        try:
            value = _decode(raw)
        except _CorruptEntry as e:
            self._lru.pop(key)
            self._report_corrupt("InMemoryMemoStore", key, str(e))
            return None
        self._count(hit=True)
        return value

    def put(self, key: str, value: dict[str, Any]) -> None:
        """Store a JSON-able dict under ``key``; TypeError if it is not one."""
        self._lru.put(_check_key(key), _encode(value))

    def delete(self, key: str) -> None:
        """Remove the entry under ``key``, if any."""
        self._lru.pop(_check_key(key))

    def clear(self) -> None:
        """Remove every entry."""
        self._lru.clear()


class SQLiteMemoStore(_Counters):
    """A memo store in one SQLite file, shared by threads and processes.

    One row per key: the JSON payload, its sha256, its size and a logical last-use clock.
    WAL mode lets readers run beside a writer; ``timeout_s`` is how long a call waits on
    another process's lock before raising ``sqlite3.OperationalError``. With ``max_bytes``,
    a put evicts least recently used rows until the payloads total at most that many bytes
    (0 stores nothing). Parent folders of ``path`` are created.

    Use it as a context manager, or call :meth:`close`.
    """

    def __init__(self, path: str | os.PathLike[str], *, max_bytes: int | None = None, timeout_s: float = 10.0) -> None:
        super().__init__()
        _check_max_bytes(max_bytes, allow_none=True)
        if isinstance(timeout_s, bool) or not isinstance(timeout_s, (int, float)) or not timeout_s >= 0:
            raise ValueError(f"timeout_s must be a number of seconds >= 0, got {timeout_s!r}")
        self._path = Path(path)
        self._max_bytes = max_bytes
        self._evictions = 0
        self._lock = threading.Lock()
        self._path.parent.mkdir(parents=True, exist_ok=True)
        # One connection shared by this store's threads (under self._lock); autocommit, with
        # explicit BEGIN IMMEDIATE where a write reads first.
        self._conn: sqlite3.Connection | None = sqlite3.connect(
            self._path, timeout=float(timeout_s), isolation_level=None, check_same_thread=False
        )
        try:
            self._init_schema(self._conn)
        except BaseException:
            self._conn.close()
            self._conn = None
            raise

    def _init_schema(self, conn: sqlite3.Connection) -> None:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute(
            "CREATE TABLE IF NOT EXISTS memo ("
            " key TEXT PRIMARY KEY,"
            " payload BLOB NOT NULL,"
            " checksum TEXT NOT NULL,"
            " nbytes INTEGER NOT NULL,"
            " last_used INTEGER NOT NULL)"
        )
        conn.execute("CREATE INDEX IF NOT EXISTS memo_last_used ON memo (last_used)")
        (version,) = conn.execute("PRAGMA user_version").fetchone()
        if version == 0:
            conn.execute(f"PRAGMA user_version={_SQLITE_SCHEMA_VERSION}")
        elif version != _SQLITE_SCHEMA_VERSION:
            raise ValueError(
                f"{self._path} holds memo schema version {version}, this library reads "
                f"{_SQLITE_SCHEMA_VERSION}: upgrade crossprefill-agents or use another file"
            )

    @property
    def path(self) -> Path:
        """The SQLite file."""
        return self._path

    @property
    def evictions(self) -> int:
        """Rows this store removed to keep within ``max_bytes``."""
        return self._evictions

    @property
    def nbytes(self) -> int:
        """Bytes of JSON payload in the file (all processes' rows)."""
        with self._lock:
            (total,) = self._connection().execute("SELECT COALESCE(SUM(nbytes), 0) FROM memo").fetchone()
        return int(total)

    def __len__(self) -> int:
        with self._lock:
            (n,) = self._connection().execute("SELECT COUNT(*) FROM memo").fetchone()
        return int(n)

    def get(self, key: str) -> dict[str, Any] | None:
        """The value under ``key`` (now the most recently used), or None when it is missing or corrupt."""
        _check_key(key)
        with self._lock:
            conn = self._connection()
            row = conn.execute("SELECT payload, checksum, last_used FROM memo WHERE key = ?", (key,)).fetchone()
            if row is None:
                self._count(hit=False)
                return None
            payload, checksum, last_used = row
            try:
                if isinstance(payload, str):
                    payload = payload.encode("utf-8")
                if not isinstance(payload, bytes):
                    raise _CorruptEntry(f"payload is a {type(payload).__name__}, not bytes")
                if checksum != _sha256(payload):
                    raise _CorruptEntry("checksum mismatch")
                value = _decode(payload)
            except _CorruptEntry as e:
                try:  # only the row that was read: another process may have rewritten it since
                    conn.execute("DELETE FROM memo WHERE key = ? AND last_used = ?", (key, last_used))
                except sqlite3.OperationalError as busy:  # still a miss; the next get tries again
                    logger.debug("SQLiteMemoStore: could not delete corrupt %r: %s", key, busy)
                self._report_corrupt("SQLiteMemoStore", key, str(e))
                return None
            try:
                conn.execute(f"UPDATE memo SET last_used = {_NEXT_TICK} WHERE key = ?", (time.time_ns(), key))
            except sqlite3.OperationalError as e:  # busy past the timeout: the read stands, the recency is lost
                logger.debug("SQLiteMemoStore: could not mark %r as used: %s", key, e)
        self._count(hit=True)
        return value

    def put(self, key: str, value: dict[str, Any]) -> None:
        """Store a JSON-able dict under ``key``, evicting least recently used rows past ``max_bytes``."""
        _check_key(key)
        payload = _encode(value)
        size = len(payload)
        with self._lock:
            conn = self._connection()
            if self._max_bytes is not None and size > self._max_bytes:
                logger.debug("SQLiteMemoStore: not storing %r: %d bytes > max_bytes=%d", key, size, self._max_bytes)
                conn.execute("DELETE FROM memo WHERE key = ?", (key,))
                return
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute(
                    "INSERT OR REPLACE INTO memo (key, payload, checksum, nbytes, last_used) "
                    f"VALUES (?, ?, ?, ?, {_NEXT_TICK})",
                    (key, payload, _sha256(payload), size, time.time_ns()),
                )
                evicted = 0 if self._max_bytes is None else self._evict(conn, self._max_bytes, keep=key)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            self._evictions += evicted

    @staticmethod
    def _evict(conn: sqlite3.Connection, max_bytes: int, *, keep: str) -> int:
        """Delete least recently used rows (never ``keep``) until the payloads fit; how many went."""
        (total,) = conn.execute("SELECT COALESCE(SUM(nbytes), 0) FROM memo").fetchone()
        excess = int(total) - max_bytes
        if excess <= 0:
            return 0
        victims: list[tuple[str]] = []
        for victim, nbytes in conn.execute("SELECT key, nbytes FROM memo WHERE key != ? ORDER BY last_used", (keep,)):
            victims.append((victim,))
            excess -= int(nbytes)
            if excess <= 0:
                break
        conn.executemany("DELETE FROM memo WHERE key = ?", victims)
        return len(victims)

    def delete(self, key: str) -> None:
        """Remove the row under ``key``, if any."""
        _check_key(key)
        with self._lock:
            self._connection().execute("DELETE FROM memo WHERE key = ?", (key,))

    def clear(self) -> None:
        """Remove every row of the file."""
        with self._lock:
            self._connection().execute("DELETE FROM memo")

    def close(self) -> None:
        """Close the connection; later calls raise ValueError. Closing twice is fine."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __enter__(self) -> SQLiteMemoStore:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"SQLiteMemoStore({str(self._path)!r}, max_bytes={self._max_bytes!r})"

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise ValueError(f"SQLiteMemoStore({str(self._path)!r}) is closed: open a new one")
        return self._conn


_REDIS_GLOB_SPECIALS = "\\*?[]"  # escaped in the SCAN pattern of a prefix


class RedisMemoStore(_Counters):
    """A memo store on a Redis server, under keys ``prefix + key``.

    Each value is a JSON envelope ``{"crossprefill_memo": 1, "sha256": ..., "payload": ...}``
    whose payload is the value's JSON text. ``ttl_s`` sets an expiry on every put (None:
    entries live until deleted or evicted by the server's own policy). :meth:`clear`
    removes only this prefix's keys, found with SCAN.

    Pass a ready ``client`` (a ``redis.Redis``) or a ``url``; the ``redis`` package is
    needed only for the latter (``pip install 'crossprefill-agents[redis]'``).
    """

    def __init__(
        self,
        url: str = "redis://localhost:6379/0",
        *,
        client: Any = None,
        prefix: str = "crossprefill:memo:",
        ttl_s: float | None = None,
    ) -> None:
        super().__init__()
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
            client = redis.Redis.from_url(url)
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
        name = self._prefix + _check_key(key)
        raw = self._client.get(name)
        if raw is None:
            self._count(hit=False)
            return None
        try:
            value = self._open_envelope(raw)
        except _CorruptEntry as e:
            self._client.delete(name)
            self._report_corrupt("RedisMemoStore", key, str(e))
            return None
        self._count(hit=True)
        return value

    def put(self, key: str, value: dict[str, Any]) -> None:
        """Store a JSON-able dict under ``key`` (with the store's expiry, if any)."""
        name = self._prefix + _check_key(key)
        payload = _encode(value).decode("utf-8")
        envelope = {
            "crossprefill_memo": _ENVELOPE_VERSION,
            "sha256": _sha256(payload.encode("utf-8")),
            "payload": payload,
        }
        self._client.set(name, json.dumps(envelope, ensure_ascii=False, separators=(",", ":")), px=self._ttl_ms)

    def delete(self, key: str) -> None:
        """Remove the entry under ``key``, if any."""
        self._client.delete(self._prefix + _check_key(key))

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
        envelope = _decode(raw)
        if envelope.get("crossprefill_memo") != _ENVELOPE_VERSION:
            raise _CorruptEntry(f"not a version-{_ENVELOPE_VERSION} crossprefill memo envelope")
        payload, checksum = envelope.get("payload"), envelope.get("sha256")
        if not isinstance(payload, str) or not isinstance(checksum, str):
            raise _CorruptEntry("envelope lacks a str payload and sha256")
        data = payload.encode("utf-8")
        if checksum != _sha256(data):
            raise _CorruptEntry("checksum mismatch")
        return _decode(data)
