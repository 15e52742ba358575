"""A memo store in one SQLite file, shared by threads and processes."""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from .base import CorruptEntry, Counters, check_key, check_max_bytes, decode, encode, sha256

__all__ = ["SQLiteMemoStore"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

_SQLITE_SCHEMA_VERSION = 1  # PRAGMA user_version of a SQLite memo file
# The SQLite last-use clock: wall-clock nanoseconds, but always past every row's, so the order
# of uses is strict even when two land in the same nanosecond or the clocks of processes differ.
_NEXT_TICK = "MAX(?, COALESCE((SELECT MAX(last_used) FROM memo), 0) + 1)"


def _is_corrupt(error: sqlite3.DatabaseError) -> bool:
    """A file that is not (or no longer) a database: SQLITE_CORRUPT / SQLITE_NOTADB."""
    name = getattr(error, "sqlite_errorname", "")
    text = str(error).lower()
    return name in ("SQLITE_CORRUPT", "SQLITE_NOTADB") or "malformed" in text or "not a database" in text


def _is_read_only(error: sqlite3.DatabaseError) -> bool:
    text = str(error).lower()
    return "readonly" in text or "read-only" in text or "unable to open" in text


class SQLiteMemoStore(Counters):
    """A memo store in one SQLite file, shared by threads and processes.

    One row per key: the JSON payload, its sha256, its size and a logical last-use clock.
    WAL mode lets readers run beside a writer; ``timeout_s`` is how long a call waits on
    another process's lock before raising ``sqlite3.OperationalError``. With ``max_bytes``,
    a put evicts least recently used rows until the payloads total at most that many bytes
    (0 stores nothing). Parent folders of ``path`` are created.

    The file is looked after: a corrupt one (``database disk image is malformed``, ``file is
    not a database``), found on opening or on any call, is moved aside to
    ``<name>.corrupt-<timestamp>`` with a warning and a fresh one is made; a file that cannot
    be written (read-only file or folder) opens read-only, serves reads, and skips writes
    after one warning; a file deleted or replaced while in use is noticed on the next call
    and opened again (or made anew).

    Use it as a context manager, or call :meth:`close`.
    """

    def __init__(self, path: str | os.PathLike[str], *, max_bytes: int | None = None, timeout_s: float = 10.0) -> None:
        super().__init__()
        check_max_bytes(max_bytes, allow_none=True)
        if isinstance(timeout_s, bool) or not isinstance(timeout_s, (int, float)) or not timeout_s >= 0:
            raise ValueError(f"timeout_s must be a number of seconds >= 0, got {timeout_s!r}")
        self._path = Path(path)
        self._max_bytes = max_bytes
        self._timeout_s = float(timeout_s)
        self._evictions = 0
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._closed = False
        self._read_only = False
        self._warned_read_only = False
        self._file_id: tuple[int, int] | None = None  # (st_dev, st_ino) of the file the connection has open
        self._open()

    # ----------------------------------------------------------- the file
    def _open(self) -> None:
        """Open the file (making it if missing): a corrupt one is set aside first, a read-only one opens read-only."""
        try:
            self._conn = self._connect_rw()
        except sqlite3.DatabaseError as e:
            if _is_corrupt(e):
                self._set_aside(e)
                self._conn = self._connect_rw()
            elif _is_read_only(e) and self._path.is_file():
                self._conn = self._connect_ro(e)
            else:
                raise
        self._file_id = self._stat()

    def _connect_rw(self) -> sqlite3.Connection:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        # One connection shared by this store's threads (under self._lock); autocommit, with
        # explicit BEGIN IMMEDIATE where a write reads first.
        conn = sqlite3.connect(self._path, timeout=self._timeout_s, isolation_level=None, check_same_thread=False)
        try:
            self._init_schema(conn)
        except BaseException:
            conn.close()
            raise
        self._read_only = False
        return conn

    def _connect_ro(self, why: Exception) -> sqlite3.Connection:
        uri = self._path.resolve().as_uri()
        error: Exception = why
        for mode in ("?mode=ro", "?mode=ro&immutable=1"):  # immutable: a WAL file whose -shm cannot be made
            conn = sqlite3.connect(
                uri + mode, uri=True, timeout=self._timeout_s, isolation_level=None, check_same_thread=False
            )
            try:
                conn.execute("SELECT COUNT(*) FROM memo").fetchone()
            except sqlite3.DatabaseError as e:
                conn.close()
                error = e
                continue
            logger.warning("SQLiteMemoStore: %s cannot be written (%s); serving reads only", self._path, why)
            self._read_only = True
            self._warned_read_only = False
            return conn
        raise error

    def _stat(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self._path)
        except OSError:
            return None
        return (st.st_dev, st.st_ino)

    def _set_aside(self, error: Exception) -> None:
        """Move a corrupt file (and its -wal / -shm) to ``<name>.corrupt-<timestamp>``."""
        stamp = time.strftime("%Y%m%dT%H%M%S")
        aside = self._path.with_name(f"{self._path.name}.corrupt-{stamp}")
        n = 1
        while aside.exists():
            n += 1
            aside = self._path.with_name(f"{self._path.name}.corrupt-{stamp}-{n}")
        os.replace(self._path, aside)
        for suffix in ("-wal", "-shm"):
            side = self._path.with_name(self._path.name + suffix)
            if side.exists():
                os.replace(side, aside.with_name(aside.name + suffix))
        logger.warning(
            "SQLiteMemoStore: %s is corrupt (%s); moved it to %s and started a new one", self._path, error, aside
        )

    def _reopen(self, why: str) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        logger.warning("SQLiteMemoStore: %s %s; opening it again", self._path, why)
        self._open()

    def _call(self, op: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``op`` on the connection (under the lock): after reopening a file deleted or replaced since it was
        opened, and once more on a fresh file when this one turns out corrupt."""
        with self._lock:
            if self._closed:
                raise ValueError(f"SQLiteMemoStore({str(self._path)!r}) is closed: open a new one")
            if self._conn is None:
                self._open()
            else:
                now = self._stat()
                if now != self._file_id:
                    self._reopen("was deleted" if now is None else "was replaced by another file")
            assert self._conn is not None
            try:
                return op(self._conn)
            except sqlite3.DatabaseError as e:
                if not _is_corrupt(e) or self._read_only:
                    raise
                self._conn.close()
                self._conn = None
                if self._stat() == self._file_id:  # not already set aside (and replaced) by another process
                    self._set_aside(e)
                self._open()
                assert self._conn is not None
                return op(self._conn)

    def _skip_write(self, what: str) -> bool:
        """True (after one warning) when the file is open read-only."""
        if not self._read_only:
            return False
        if not self._warned_read_only:
            self._warned_read_only = True
            logger.warning("SQLiteMemoStore: %s is read-only; skipping %s and every later write", self._path, what)
        return True

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

    # ------------------------------------------------------------ the API
    @property
    def path(self) -> Path:
        """The SQLite file."""
        return self._path

    @property
    def read_only(self) -> bool:
        """Whether the file was opened read-only (it could not be written): writes are skipped."""
        return self._read_only

    @property
    def evictions(self) -> int:
        """Rows this store removed to keep within ``max_bytes``."""
        return self._evictions

    @property
    def nbytes(self) -> int:
        """Bytes of JSON payload in the file (all processes' rows)."""
        (total,) = self._call(lambda c: c.execute("SELECT COALESCE(SUM(nbytes), 0) FROM memo").fetchone())
        return int(total)

    def __len__(self) -> int:
        (n,) = self._call(lambda c: c.execute("SELECT COUNT(*) FROM memo").fetchone())
        return int(n)

    def get(self, key: str) -> dict[str, Any] | None:
        """The value under ``key`` (now the most recently used), or None when it is missing or corrupt."""
        check_key(key)
        return self._call(lambda conn: self._get(conn, key))

    def _get(self, conn: sqlite3.Connection, key: str) -> dict[str, Any] | None:
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
            if not self._read_only:
                try:  # only the row that was read: another process may have rewritten it since
                    conn.execute("DELETE FROM memo WHERE key = ? AND last_used = ?", (key, last_used))
                except sqlite3.OperationalError as busy:  # still a miss; the next get tries again
                    logger.debug("SQLiteMemoStore: could not delete corrupt %r: %s", key, busy)
            self._report_corrupt("SQLiteMemoStore", key, str(e))
            return None
        if not self._read_only:
            try:
                conn.execute(f"UPDATE memo SET last_used = {_NEXT_TICK} WHERE key = ?", (time.time_ns(), key))
            except sqlite3.OperationalError as e:  # busy past the timeout: the read stands, the recency is lost
                logger.debug("SQLiteMemoStore: could not mark %r as used: %s", key, e)
        self._count(hit=True)
        return value

    def put(self, key: str, value: dict[str, Any]) -> None:
        """Store a JSON-able dict under ``key``, evicting least recently used rows past ``max_bytes``."""
        self._put(key, value, replace=True)

    def put_if_absent(self, key: str, value: dict[str, Any]) -> bool:
        """Store ``value`` unless ``key`` holds a row already (first writer wins); whether it was stored."""
        return self._put(key, value, replace=False)

    def _put(self, key: str, value: dict[str, Any], *, replace: bool) -> bool:
        check_key(key)
        payload = encode(value)
        size = len(payload)
        if self._skip_write("a put"):
            return False

        def write(conn: sqlite3.Connection) -> bool:
            if self._max_bytes is not None and size > self._max_bytes:
                logger.debug("SQLiteMemoStore: not storing %r: %d bytes > max_bytes=%d", key, size, self._max_bytes)
                if replace:
                    conn.execute("DELETE FROM memo WHERE key = ?", (key,))
                return False
            conn.execute("BEGIN IMMEDIATE")
            try:
                cur = conn.execute(
                    f"INSERT OR {'REPLACE' if replace else 'IGNORE'} INTO memo "
                    "(key, payload, checksum, nbytes, last_used) "
                    f"VALUES (?, ?, ?, ?, {_NEXT_TICK})",
                    (key, payload, sha256(payload), size, time.time_ns()),
                )
                stored = cur.rowcount == 1
                evicted = 0 if self._max_bytes is None or not stored else self._evict(conn, self._max_bytes, keep=key)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            self._evictions += evicted
            return stored

        return self._call(write)

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
        if not self._skip_write("a delete"):
            self._call(lambda c: c.execute("DELETE FROM memo WHERE key = ?", (key,)))

    def clear(self) -> None:
        """Remove every row of the file."""
        if not self._skip_write("a clear"):
            self._call(lambda c: c.execute("DELETE FROM memo"))

    def close(self) -> None:
        """Close the connection; later calls raise ValueError. Closing twice is fine."""
        with self._lock:
            self._closed = True
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
