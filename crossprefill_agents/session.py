"""Agent sessions: compress a growing conversation so that each turn costs what is new.

A :class:`CompressionSession` is made by ``PromptCompressor.session()``, one per
conversation or agent thread. Every turn it gets the whole message list the agent is
about to send and returns it with long tool outputs (and other compressible messages)
cut down. Three things make a turn cheap and the prompt stable:

* **Incremental draft prefill.** The draft's KV cache for the conversation it has read
  is kept (in the compressor's byte-bounded ``draft_cache``, one entry per session). Next
  turn the cache is cropped to the longest token prefix shared with the new conversation,
  only the new tokens are prefilled, and only the query steps run again.
* **Compress once.** A segment compressed at one turn is frozen: later turns send the
  same bytes for it, so the target's prompt cache keeps hitting. Frozen segments are kept
  in the session and written to the compressor's memo store (key: :func:`~crossprefill_agents.memo.memo_key`),
  so another session, worker or process (SQLite / Redis stores) replays the same compression.
  The query of a segment is the latest user message *before* it (or the caller's ``query``
  override), a value that does not change as the conversation grows.
* **Window rebase.** When the conversation outgrows the draft's window, the draft stops
  reading the oldest messages (the system message stays unless it fills over a quarter
  of the window), dropping to half a window, so a rebase, which costs one fresh
  prefill, happens rarely.

The session works on the compressor's public surface only (:class:`Compressor`).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from .config import CompressionConfig, SessionConfig
from .draft import DraftModel, DraftPrefix
from .memo import checked_result, memo_key, result_payload, store_delete, store_get, store_put
from .results import CompressionResult, DraftScores, SessionTurn, TurnStats, fail_open, unchanged
from .stores import ByteLRU, MemoStore
from .targets import TokenCounter

__all__ = ["CompressionSession", "Compressor"]

logger = logging.getLogger(__name__)


class Compressor(Protocol):
    """What a session needs of its compressor (``PromptCompressor`` is one)."""

    draft: DraftModel
    config: CompressionConfig
    target: TokenCounter
    memo: MemoStore
    draft_cache: ByteLRU[str, DraftPrefix]

    def compress_scored(
        self,
        documents: Sequence[str],
        scores: DraftScores,
        *,
        keep_rate: float | None = ...,
        max_tokens: int | None = ...,
    ) -> list[CompressionResult]: ...

    def compress_documents(
        self, documents: Sequence[str], query: str = ..., *, keep_rate: float | None = ..., max_tokens: int | None = ...
    ) -> list[CompressionResult]: ...


@dataclass
class _Turn:
    """One turn's working state, filled in step by step."""

    msgs: list[dict[str, Any]]
    query: str  # what conditions scoring when a segment has no query of its own
    keys: dict[int, str]  # segment message index -> memo key
    queries: dict[int, str]  # segment message index -> the query it is compressed against
    results: dict[int, CompressionResult] = field(default_factory=dict)
    frozen_hits: int = 0
    memo_hits: int = 0
    missing: list[int] = field(default_factory=list)  # segments nobody has compressed yet
    prefilled: int = 0
    reused: int = 0
    draft_s: float = 0.0
    read: tuple[int, ...] = ()
    fallback: str | None = None
    recompressed: int = 0
    memo_errors: int = 0  # store reads and writes that failed or were skipped after a failure
    memo_rejected: int = 0  # entries dropped as not a valid compression of their segment
    store_down: bool = False  # a store call failed this turn: make no more


class CompressionSession:
    """One conversation's compression state. Made by ``PromptCompressor.session()``.

    Calls on one session are serialised (a lock); many sessions may share one compressor
    from threads or asyncio tasks, and never see each other's state.
    """

    def __init__(self, compressor: Compressor, config: SessionConfig, *, session_id: str | None = None) -> None:
        self.compressor = compressor
        self.config = config
        self.session_id = session_id or uuid.uuid4().hex  # key of this session's draft cache in the shared store
        self._lock = threading.Lock()
        self._frozen: dict[str, CompressionResult] = {}  # memo key -> the compression sent at first sight
        self._counts: dict[str, int] = {}  # "t" / "d" + content digest -> target / draft tokens
        self._first = 0  # first non-system message the draft reads (moves forward on a rebase)

    # ----------------------------------------------------------------- public
    def compress_messages(self, messages: Sequence[Mapping[str, Any]], *, query: str | None = None) -> SessionTurn:
        """Compress this turn's messages; returns new message dicts (the input is not modified).

        ``messages`` are ``{"role": ..., "content": ...}`` mappings (other keys are copied
        through). System messages and the latest user message are never compressed;
        messages whose role is in ``SessionConfig.compress_roles`` are, and so are older
        user/assistant messages when ``compress_history`` is set. A message's own
        ``"compress"`` key (True/False) overrides the policy, except for system messages
        and the latest user message. Content that is not a str passes through. ``query``
        overrides the text that conditions scoring (default: the latest user message).
        """
        msgs = _check_messages(messages)
        with self._lock:
            t0 = time.perf_counter()
            turn = self._plan(msgs, query)
            self._replay(turn)
            if turn.missing:
                self._compress_missing(turn)
            return self._finish(turn, t0)

    async def acompress_messages(
        self, messages: Sequence[Mapping[str, Any]], *, query: str | None = None
    ) -> SessionTurn:
        """:meth:`compress_messages` in a worker thread, so the event loop keeps running."""
        return await asyncio.to_thread(self.compress_messages, messages, query=query)

    def reset(self) -> None:
        """Forget this session's frozen segments and drop its draft cache."""
        with self._lock:
            self._frozen.clear()
            self._counts.clear()
            self._first = 0
            self.compressor.draft_cache.pop(self.session_id)

    # ------------------------------------------------------------ the steps
    def _plan(self, msgs: list[dict[str, Any]], query_override: str | None) -> _Turn:
        """Which messages are segments, and the query each one is compressed against."""
        last_user = max((i for i, m in enumerate(msgs) if m["role"] == "user"), default=None)
        query = query_override if query_override is not None else _content(msgs, last_user)
        turn = _Turn(msgs, query, {}, {})
        latest_user_text = ""
        for i, m in enumerate(msgs):
            text = m["content"]
            if m["role"] == "user" and isinstance(text, str):
                latest_user_text = text
            if not self._compressible(i, m, last_user) or not isinstance(text, str) or not text.strip():
                continue  # empty text (an assistant turn that only calls tools) is no segment, whatever min_tokens
            if self._count(text) < self.compressor.config.min_tokens:
                continue
            q = query_override if query_override is not None else latest_user_text
            turn.queries[i] = q
            turn.keys[i] = self._key(text, q)
        return turn

    def _replay(self, turn: _Turn) -> None:
        """Segments frozen in this session or found in the memo store; the rest are ``missing``."""
        for i, key in turn.keys.items():
            if key in self._frozen:
                turn.results[i] = self._frozen[key]
                turn.frozen_hits += 1
                continue
            stored = self._load(turn, i)
            if stored is not None:
                turn.results[i] = self._frozen[key] = stored
                turn.memo_hits += 1
                continue
            turn.missing.append(i)

    def _compress_missing(self, turn: _Turn) -> None:
        """Score the missing segments with the draft and freeze them; on a draft failure, freeze them unchanged."""
        try:
            new = self._score_and_select(turn)
        except Exception as e:  # fail open: a broken draft must not break the agent
            turn.fallback = fail_open(
                e, on_error=self.compressor.config.on_error, what=f"{len(turn.missing)} segment(s)"
            )
            new = {
                i: unchanged(turn.msgs[i]["content"], self._count(turn.msgs[i]["content"]), reason=turn.fallback)
                for i in turn.missing
            }
        for i, res in new.items():
            if res.fallback_reason is None:
                res = self._publish(turn, i, res)
            self._frozen[turn.keys[i]] = res  # frozen even on a fallback, so the prompt prefix stays stable
            turn.results[i] = res

    def _score_and_select(self, turn: _Turn) -> dict[int, CompressionResult]:
        """Score the conversation with the draft (reusing this session's cache) and compress the missing segments."""
        pc = self.compressor
        deadline = pc.config.deadline()
        queries = list(dict.fromkeys(turn.queries[i] for i in turn.missing))
        room = min(pc.draft.context_room(q, pc.config) for q in queries)
        visible = self._visible(turn.msgs, turn.missing, room)
        new: dict[int, CompressionResult] = {}
        state: DraftPrefix | None = None
        if visible is not None:
            state = pc.draft_cache.pop(self.session_id)
            if state is None or state.draft_name != pc.draft.name:
                state = DraftPrefix(pc.draft.name)
        try:
            for q in queries:
                want = [i for i in turn.missing if turn.queries[i] == q]
                if state is not None and visible is not None:
                    docs = [turn.msgs[j]["content"] for j in visible]
                    scored = pc.draft.score_incremental(docs, q, config=pc.config, state=state, deadline=deadline)
                    per = [scored.document(visible.index(i)) for i in want]
                else:  # a segment too long for one window: windowed scoring of the segments alone
                    scored = pc.draft.score(
                        [turn.msgs[i]["content"] for i in want], q, config=pc.config, deadline=deadline
                    )
                    per = [scored.document(k) for k in range(len(want))]
                turn.prefilled += scored.prefilled_tokens
                turn.reused += scored.reused_tokens
                turn.draft_s += scored.prefill_s + scored.query_s
                for i, one in zip(want, per, strict=True):
                    new[i] = pc.compress_scored([turn.msgs[i]["content"]], one)[0]
        finally:
            if state is not None and len(state):
                pc.draft_cache.put(self.session_id, state)
        turn.read = tuple(visible if visible is not None else turn.missing)
        return new

    def _finish(self, turn: _Turn, t0: float) -> SessionTurn:
        """Count the prompt, relieve budget pressure if asked, and build the messages to send."""
        msgs, results = turn.msgs, turn.results
        before = sum(self._count(m["content"]) for m in msgs)
        fixed = sum(self._count(m["content"]) for i, m in enumerate(msgs) if i not in results)
        after = fixed + sum(r.compressed_tokens for r in results.values())
        budget = self.config.max_tokens
        if budget is not None and after > budget and results and self.config.recompress == "on_budget_pressure":
            self._recompress(turn, target=max(0, round(budget * self.config.pressure_headroom) - fixed))
            after = fixed + sum(r.compressed_tokens for r in results.values())
        over = budget is not None and after > budget
        if over:
            logger.warning("the prompt takes %d target tokens, over the session budget of %d", after, budget)
        out = [dict(m) for m in msgs]
        for i, res in results.items():
            out[i]["content"] = res.text
        stats = TurnStats(
            messages=len(msgs),
            target_tokens_before=before,
            target_tokens_after=after,
            segments=len(turn.keys),
            compressed_now=len(turn.missing) if turn.fallback is None else 0,
            frozen_hits=turn.frozen_hits,
            memo_hits=turn.memo_hits,
            recompressed=turn.recompressed,
            draft_tokens_prefilled=turn.prefilled,
            draft_tokens_reused=turn.reused,
            draft_s=turn.draft_s,
            total_s=time.perf_counter() - t0,
            draft_first_message=self._first,
            draft_read=turn.read,
            over_budget=over,
            fallback_reason=turn.fallback,
            memo_errors=turn.memo_errors,
            memo_rejected=turn.memo_rejected,
        )
        return SessionTurn(out, stats, results)

    def _recompress(self, turn: _Turn, *, target: int) -> None:
        """Shrink every compressed segment together to ``target`` target tokens (the prompt prefix changes once)."""
        order = sorted(turn.results)
        shrunk = self.compressor.compress_documents(
            [turn.msgs[i]["content"] for i in order], turn.query, max_tokens=target
        )
        for i, res in zip(order, shrunk, strict=True):
            if res.fallback_reason is not None:
                continue
            if res.text != turn.results[i].text:
                turn.recompressed += 1
            turn.results[i] = self._frozen[turn.keys[i]] = res

    # --------------------------------------------------------------- helpers
    def _compressible(self, i: int, m: Mapping[str, Any], last_user: int | None) -> bool:
        role = m["role"]
        if role == "system" or i == last_user:
            return False
        flag = m.get("compress")
        if flag is not None:
            return bool(flag)
        if role in self.config.compress_roles:
            return True
        older = last_user is not None and i < last_user
        return self.config.compress_history and role in ("user", "assistant") and older

    def _visible(self, msgs: list[dict[str, Any]], missing: list[int], room: int) -> list[int] | None:
        """Indices of the messages the draft reads, fitting one window; None when the segments alone do not fit."""
        draft = self.compressor.draft
        sep = len(draft.tokenize("\n\n").ids)
        readable = [i for i, m in enumerate(msgs) if isinstance(m["content"], str) and m["content"].strip()]
        size = {i: self._draft_len(msgs[i]["content"]) + sep for i in readable}
        # The system message stays in view (its cache is reused every turn) unless it would crowd out the
        # conversation: a system prompt over a quarter of the window (e.g. long tool schemas) is not read.
        head = [i for i in readable if i == 0 and msgs[0]["role"] == "system" and size[0] <= room // 4]
        first_missing = min(missing)

        def total(start: int) -> int:
            return sum(size[i] for i in head) + sum(size[i] for i in readable if i >= start and i not in head)

        start = min(self._first, first_missing)  # an earlier segment may be new to this session (after a reset)
        if total(start) > room:
            starts = [i for i in readable if start <= i <= first_missing and i not in head]
            fits_half = [s for s in starts if total(s) <= room // 2]
            fits = [s for s in starts if total(s) <= room]
            if not fits:
                return None
            start = (fits_half or fits)[0]
            logger.info("the conversation outgrew the draft's window: the draft now reads from message %d", start)
        self._first = start
        return head + [i for i in readable if i >= start and i not in head]

    def _count(self, text: object) -> int:
        """Target tokens of a message's content (0 for non-str content; whitespace counts, it is sent), counted once
        per distinct content."""
        if not isinstance(text, str) or not text:
            return 0
        return self._counted("t", text, self.compressor.target.count)

    def _draft_len(self, text: str) -> int:
        """Draft tokens of a message's content, counted once per distinct content."""
        return self._counted("d", text, lambda t: len(self.compressor.draft.tokenize(t).ids))

    def _counted(self, kind: str, text: str, count: Callable[[str], int]) -> int:
        key = kind + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
        n = self._counts.get(key)
        if n is None:
            n = self._counts[key] = int(count(text))
        return n

    def _key(self, text: str, query: str) -> str:
        pc = self.compressor
        heads = pc.draft.voting_heads(pc.config)  # heads="auto" resolves per draft
        return memo_key(text, query, draft=pc.draft.name, target=pc.target.name, config=pc.config, heads=heads)

    def _load(self, turn: _Turn, i: int) -> CompressionResult | None:
        """The memo entry of segment ``i`` if the store serves it and it is a valid compression of the segment.

        A store that fails reads as a miss (counted, and the turn makes no more store calls); an entry that is
        malformed or not a compression of this segment is deleted, counted and recomputed.
        """
        key = turn.keys[i]
        if turn.store_down:
            turn.memo_errors += 1
            return None
        payload, failed = store_get(self.compressor.memo, key)
        if failed:
            turn.memo_errors += 1
            turn.store_down = True
            return None
        if payload is None:
            return None
        text = turn.msgs[i]["content"]
        pc = self.compressor
        try:
            return checked_result(
                payload, text, config=pc.config, count=self._count, draft_tokens=self._draft_len(text)
            )
        except ValueError as e:
            logger.warning("dropping memo entry %s: not a valid compression of its segment: %s", key[:12], e)
            turn.memo_rejected += 1
            if not store_delete(pc.memo, key):
                turn.memo_errors += 1
                turn.store_down = True
            return None

    def _publish(self, turn: _Turn, i: int, res: CompressionResult) -> CompressionResult:
        """Write ``res`` for segment ``i`` unless another writer was first; then the stored one is sent instead.

        First writer wins, so every process sharing the store sends the same bytes for a segment (the scores
        behind a compression depend on the conversation around it, which the key leaves out).
        """
        if turn.store_down:
            turn.memo_errors += 1
            return res
        written = store_put(self.compressor.memo, turn.keys[i], result_payload(res))
        if written is None:
            turn.memo_errors += 1
            turn.store_down = True
            return res
        if written:
            return res
        stored = self._load(turn, i)
        return stored if stored is not None else res


def _check_messages(messages: object) -> list[dict[str, Any]]:
    if isinstance(messages, (str, Mapping)) or not isinstance(messages, Sequence):
        raise TypeError(f"messages must be a list of {{'role', 'content'}} dicts, got {type(messages).__name__}")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, Mapping):
            raise TypeError(f"messages[{i}] must be a mapping with 'role' and 'content', got {type(m).__name__}")
        if "role" not in m or "content" not in m:
            raise ValueError(f"messages[{i}] needs both a 'role' and a 'content' key, got keys {sorted(m)}")
        if not isinstance(m["role"], str):
            raise TypeError(f"messages[{i}]['role'] must be a str, got {type(m['role']).__name__}")
        out.append(dict(m))
    return out


def _content(msgs: list[dict[str, Any]], i: int | None) -> str:
    if i is None:
        return ""
    text = msgs[i]["content"]
    return text if isinstance(text, str) else ""
