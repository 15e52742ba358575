"""What survives between agent turns: memo stores for compressed segments, and a byte-bounded LRU map.

* :class:`ByteLRU` holds live objects (a draft's KV cache) in this process, bounded by the
  bytes the caller says each value takes.
* A :class:`MemoStore` holds JSON-able results keyed by a string: :class:`InMemoryMemoStore`
  (this process), :class:`SQLiteMemoStore` (one file, shared by threads and processes) and
  :class:`RedisMemoStore` (a Redis server, shared by hosts).
"""

from .base import MemoStore
from .memory import ByteLRU, InMemoryMemoStore
from .redis import RedisMemoStore
from .sqlite import SQLiteMemoStore

__all__ = ["ByteLRU", "InMemoryMemoStore", "MemoStore", "RedisMemoStore", "SQLiteMemoStore"]
