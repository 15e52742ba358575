"""One :class:`CompressionSession` per conversation, in a bounded LRU map."""

from __future__ import annotations

import threading
import uuid
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager

from crossprefill_agents import CompressionSession, PromptCompressor, SessionConfig

NS_SEP = "|"  # LangGraph's checkpoint namespace: "node:task_id|node:task_id", one level per (sub)graph
NS_END = ":"


def stable_namespace(checkpoint_ns: object) -> str:
    """A checkpoint namespace without its task ids ("researcher:1f2e|model:9a8b" -> "researcher|model").

    Task ids change at every step; the node path does not, so a conversation keeps its key across the
    model calls of a thread, while two agents nested under different nodes of one thread keep apart.
    """
    if not isinstance(checkpoint_ns, str) or not checkpoint_ns:
        return ""
    parts = (p.split(NS_END)[0] for p in checkpoint_ns.split(NS_SEP))
    return NS_SEP.join(p for p in parts if p and not p.isdigit())


def thread_key(thread_id: object, checkpoint_ns: object = None) -> str | None:
    """The session key of a LangGraph thread (plus namespace), or None when there is no thread."""
    if thread_id is None or thread_id == "":
        return None
    return f"thread={thread_id}{NS_SEP}ns={stable_namespace(checkpoint_ns)}"


class SessionMap:
    """Sessions by conversation key, least recently used dropped beyond ``max_sessions``.

    A dropped session's draft cache is released; the conversation, if it comes back, starts a
    new session whose earlier compressions replay from the compressor's memo store (same bytes).
    A call without a key gets a fresh session that is released right after the call.
    """

    def __init__(self, compressor: PromptCompressor, config: SessionConfig, max_sessions: int) -> None:
        if max_sessions < 1:
            raise ValueError(f"max_sessions must be >= 1, got {max_sessions}")
        self.compressor = compressor
        self.config = config
        self.max_sessions = max_sessions
        self._sessions: OrderedDict[str, CompressionSession] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._sessions)

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._sessions

    def keys(self) -> list[str]:
        """The conversation keys held, least recently used first."""
        with self._lock:
            return list(self._sessions)

    def _new(self) -> CompressionSession:
        return self.compressor.session(self.config, session_id=f"langchain-{uuid.uuid4().hex}")

    @contextmanager
    def use(self, key: str | None) -> Iterator[CompressionSession]:
        """The session of conversation ``key`` (a one-call session when ``key`` is None)."""
        if key is None:
            session = self._new()
            try:
                yield session
            finally:
                session.reset()  # drop its draft cache from the shared store: nobody will come back for it
            return
        evicted: list[CompressionSession] = []
        with self._lock:
            found = self._sessions.get(key)
            if found is None:
                found = self._sessions[key] = self._new()
            self._sessions.move_to_end(key)
            while len(self._sessions) > self.max_sessions:
                evicted.append(self._sessions.popitem(last=False)[1])
        for old in evicted:  # outside the map lock: reset waits for a turn still running on that session
            old.reset()
        yield found
