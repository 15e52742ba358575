"""A memo store in one SQLite file, shared by threads and processes."""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from .base import CorruptEntry, Counters, check_key, check_max_bytes, decode, encode, sha256

__all__ = ["SQLiteMemoStore"]

logger = logging.getLogger(__name__)

_SQLITE_SCHEMA_VERSION = 1  # PRAGMA user_version of a SQLite memo file
# The SQLite last-use clock: wall-clock nanoseconds, but always past every row's, so the order
# of uses is strict even when two land in the same nanosecond or the clocks of processes differ.
_NEXT_TICK = "MAX(?, COALESCE((SELECT MAX(last_used) FROM memo), 0) + 1)"


class SQLiteMemoStore(Counters):
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
        check_max_bytes(max_bytes, allow_none=True)
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
        check_key(key)
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
                    raise CorruptEntry(f"payload is a {type(payload).__name__}, not bytes")
                if checksum != sha256(payload):
                    raise CorruptEntry("checksum mismatch")
                value = decode(payload)
            except CorruptEntry as e:
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
        check_key(key)
        payload = encode(value)
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
                    (key, payload, sha256(payload), size, time.time_ns()),
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
        check_key(key)
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
