"""Agent sessions: compress a growing conversation so that each turn costs what is new.

A :class:`CompressionSession` is made by :meth:`PromptCompressor.session`, one per
conversation or agent thread. Every turn it gets the whole message list the agent is
about to send and returns it with long tool outputs (and other compressible messages)
cut down. Three things make a turn cheap and the prompt stable:

* **Incremental draft prefill.** The draft's KV cache for the conversation it has read
  is kept (in the compressor's byte-bounded LRU store, one entry per session). Next turn
  the cache is cropped to the longest token prefix shared with the new conversation,
  only the new tokens are prefilled, and only the query steps run again.
* **Compress once.** A segment compressed at one turn is frozen: later turns send the
  same bytes for it, so the target's prompt cache keeps hitting. Frozen segments are kept
  in the session and written to the compressor's memo store, so another session, worker
  or process (SQLite / Redis stores) replays the same compression.
* **Window rebase.** When the conversation outgrows the draft's window, the draft stops
  reading the oldest messages (the system message stays unless it fills over a quarter
  of the window), dropping to half a window, so a rebase, which costs one fresh
  prefill, happens rarely.

Memo key: the segment's text, the query it was scored against, the draft, the target
tokenizer, every :class:`CompressionConfig` field and the heads that vote (``heads="auto"``
resolves to the draft's calibrated heads). The query of a segment is the
latest user message *before* it in the conversation (or the caller's ``query``
override), a value that does not change as the conversation grows and that another
process can recompute. The surrounding conversation is not part of the key: the same
tool output under the same question is compressed the same way wherever it appears.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any

from .config import CompressionConfig, SessionConfig
from .draft import DraftPrefix, DraftScores

if TYPE_CHECKING:
    from .compressor import CompressionResult, PromptCompressor

__all__ = ["CompressionSession", "SessionTurn", "TurnStats"]

logger = logging.getLogger(__name__)

MEMO_VERSION = 2  # bump when the memo payload or the meaning of a key changes


@dataclass(frozen=True)
class TurnStats:
    """What one :meth:`CompressionSession.compress_messages` call did and cost."""

    messages: int  # messages in this turn's input
    target_tokens_before: int  # target tokens of all message contents as given
    target_tokens_after: int  # target tokens of all message contents as returned
    segments: int  # messages compressible under the policy and long enough (>= min_tokens)
    compressed_now: int  # segments the draft scored this turn
    frozen_hits: int  # segments replayed from this session's earlier turns
    memo_hits: int  # segments replayed from the memo store (another session, worker or process)
    recompressed: int  # frozen segments shrunk again under budget pressure (the prompt prefix changed)
    draft_tokens_prefilled: int  # draft tokens run through the model this turn (prompt + query steps)
    draft_tokens_reused: int  # draft tokens whose keys came from the session's cache
    draft_s: float  # seconds in draft forward passes
    total_s: float  # seconds for the whole call
    draft_first_message: int  # index of the first non-system message the draft reads (> 0 after a rebase)
    draft_read: tuple[int, ...]  # indices of the messages the draft read this turn (empty when it did not run)
    over_budget: bool  # the prompt still exceeds SessionConfig.max_tokens
    fallback_reason: str | None = None  # why segments passed through unchanged after a draft failure

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every field."""
        return asdict(self)


@dataclass(frozen=True)
class SessionTurn:
    """One compressed turn: the messages to send, and what happened.

    ``results`` maps a message's index to its :class:`CompressionResult` (kept character
    spans into the original content, token counts) for every message whose content was
    compressed, whether now or at an earlier turn.
    """

    messages: list[dict[str, Any]]
    stats: TurnStats
    results: dict[int, CompressionResult] = field(default_factory=dict)


class CompressionSession:
    """One conversation's compression state. Made by :meth:`PromptCompressor.session`.

    Calls on one session are serialised (a lock); many sessions may share one compressor
    from threads or asyncio tasks, and never see each other's state.
    """

    def __init__(self, compressor: PromptCompressor, config: SessionConfig, *, session_id: str | None = None) -> None:
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
            return self._turn(msgs, query)

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
            self.compressor._kv.pop(self.session_id)

    # ---------------------------------------------------------------- private
    def _turn(self, msgs: list[dict[str, Any]], query_override: str | None) -> SessionTurn:
        t0 = time.perf_counter()
        pc = self.compressor
        cfg = pc.config
        last_user = max((i for i, m in enumerate(msgs) if m["role"] == "user"), default=None)
        query = query_override if query_override is not None else _content(msgs, last_user)

        # Which messages are segments, and the query each one is compressed against.
        segments: dict[int, str] = {}  # message index -> memo key
        seg_query: dict[int, str] = {}
        latest_user_text = ""
        for i, m in enumerate(msgs):
            text = m["content"]
            if m["role"] == "user" and isinstance(text, str):
                latest_user_text = text
            if not self._compressible(i, m, last_user) or not isinstance(text, str):
                continue
            if self._count(text) < cfg.min_tokens:
                continue
            q = query_override if query_override is not None else latest_user_text
            seg_query[i] = q
            segments[i] = self._key(text, q)

        results: dict[int, CompressionResult] = {}
        frozen_hits = memo_hits = 0
        missing: list[int] = []
        for i, key in segments.items():
            if key in self._frozen:
                results[i] = self._frozen[key]
                frozen_hits += 1
                continue
            stored = self._load(key)
            if stored is not None:
                results[i] = self._frozen[key] = stored
                memo_hits += 1
                continue
            missing.append(i)

        draft_prefilled = draft_reused = 0
        draft_s = 0.0
        fallback: str | None = None
        read: tuple[int, ...] = ()
        if missing:
            try:
                new, read, draft_prefilled, draft_reused, draft_s = self._score_and_select(msgs, missing, seg_query)
            except Exception as e:  # fail open: a broken draft must not break the agent
                if cfg.on_error == "raise":
                    raise
                fallback = f"{type(e).__name__}: {e}"
                logger.warning(
                    "draft scoring failed, passing %d segment(s) through unchanged: %s", len(missing), fallback
                )
                new = {i: pc._passthrough(msgs[i]["content"], fallback) for i in missing}
            for i, res in new.items():
                self._frozen[segments[i]] = res  # frozen even on a fallback, so the prompt prefix stays stable
                results[i] = res
                if res.fallback_reason is None:
                    self._store(segments[i], res)

        before = sum(self._count(m["content"]) for m in msgs if isinstance(m["content"], str))
        fixed = sum(
            self._count(m["content"]) for i, m in enumerate(msgs) if isinstance(m["content"], str) and i not in results
        )
        after = fixed + sum(r.compressed_tokens for r in results.values())
        budget = self.config.max_tokens
        recompressed = 0
        if budget is not None and after > budget and results and self.config.recompress == "on_budget_pressure":
            target = max(0, round(budget * self.config.pressure_headroom) - fixed)
            order = sorted(results)
            texts = [msgs[i]["content"] for i in order]
            shrunk = pc.compress_documents(texts, query, max_tokens=target)
            for i, res in zip(order, shrunk, strict=True):
                if res.fallback_reason is not None:
                    continue
                if res.text != results[i].text:
                    recompressed += 1
                results[i] = self._frozen[segments[i]] = res
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
            segments=len(segments),
            compressed_now=len(missing) if fallback is None else 0,
            frozen_hits=frozen_hits,
            memo_hits=memo_hits,
            recompressed=recompressed,
            draft_tokens_prefilled=draft_prefilled,
            draft_tokens_reused=draft_reused,
            draft_s=draft_s,
            total_s=time.perf_counter() - t0,
            draft_first_message=self._first,
            draft_read=read,
            over_budget=over,
            fallback_reason=fallback,
        )
        return SessionTurn(out, stats, results)

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

    def _score_and_select(
        self, msgs: list[dict[str, Any]], missing: list[int], seg_query: dict[int, str]
    ) -> tuple[dict[int, CompressionResult], tuple[int, ...], int, int, float]:
        """Score the conversation with the draft (reusing this session's cache) and compress ``missing``."""
        pc = self.compressor
        cfg = pc.config
        deadline = time.monotonic() + cfg.timeout_s if cfg.timeout_s is not None else None
        queries = list(dict.fromkeys(seg_query[i] for i in missing))
        room = min(pc.draft.context_room(q, cfg) for q in queries)
        visible = self._visible(msgs, missing, room)
        new: dict[int, CompressionResult] = {}
        prefilled = reused = 0
        draft_s = 0.0
        state: DraftPrefix | None = None
        if visible is not None:
            state = pc._kv.pop(self.session_id)
            if state is None or state.draft_name != pc.draft.name:
                state = DraftPrefix(pc.draft.name)
        try:
            for q in queries:
                want = [i for i in missing if seg_query[i] == q]
                if visible is not None and state is not None:
                    docs = [msgs[j]["content"] for j in visible]
                    scored = pc.draft.score_incremental(docs, q, config=cfg, state=state, deadline=deadline)
                    where = {j: k for k, j in enumerate(visible)}
                    per = [_slice(scored, where[i]) for i in want]
                else:  # a segment too long for one window: windowed scoring of the segments alone
                    scored = pc.draft.score([msgs[i]["content"] for i in want], q, config=cfg, deadline=deadline)
                    per = [_slice(scored, k) for k in range(len(want))]
                prefilled += scored.prefilled_tokens
                reused += scored.reused_tokens
                draft_s += scored.prefill_s + scored.lookahead_s
                for i, one in zip(want, per, strict=True):
                    new[i] = pc._compress_one(msgs[i]["content"], one)
        finally:
            if state is not None and len(state):
                pc._kv.put(self.session_id, state)
        return new, tuple(visible if visible is not None else missing), prefilled, reused, draft_s

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

        start = self._first
        if start > first_missing:
            start = first_missing  # an earlier segment is new to this session (e.g. after a reset)
        if total(start) > room:
            starts = [i for i in readable if start <= i <= first_missing and i not in head]
            fits_half = [s for s in starts if total(s) <= room // 2]
            fits = [s for s in starts if total(s) <= room]
            if fits_half:
                start = fits_half[0]
            elif fits:
                start = fits[0]
            else:
                return None
            logger.info("the conversation outgrew the draft's window: the draft now reads from message %d", start)
        self._first = start
        return head + [i for i in readable if i >= start and i not in head]

    def _count(self, text: object) -> int:
        """Target tokens of a message's content, counted once per distinct content."""
        if not isinstance(text, str) or not text.strip():
            return 0
        key = "t" + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
        n = self._counts.get(key)
        if n is None:
            n = self._counts[key] = self.compressor.target.count(text)
        return n

    def _draft_len(self, text: str) -> int:
        """Draft tokens of a message's content, counted once per distinct content."""
        key = "d" + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
        n = self._counts.get(key)
        if n is None:
            n = self._counts[key] = len(self.compressor.draft.tokenize(text).ids)
        return n

    def _key(self, text: str, query: str) -> str:
        pc = self.compressor
        ident = {
            "v": MEMO_VERSION,
            "draft": pc.draft.name,
            "target": pc.target.name,
            "config": _config_fingerprint(pc.config),
            "heads": [list(p) for p in pc.draft.voting_heads(pc.config)],  # heads="auto" resolves per draft
            "query": query,
            "text": text,
        }
        blob = json.dumps(ident, sort_keys=True, ensure_ascii=False).encode("utf-8", "surrogatepass")
        return hashlib.sha256(blob).hexdigest()

    def _load(self, key: str) -> CompressionResult | None:
        from .compressor import CompressionResult, Timings

        payload = self.compressor.memo.get(key)
        if payload is None:
            return None
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
            )
        except (KeyError, TypeError, ValueError) as e:
            logger.warning("dropping a malformed memo entry %s: %s", key[:12], e)
            self.compressor.memo.delete(key)
            return None

    def _store(self, key: str, res: CompressionResult) -> None:
        payload = res.to_dict()
        payload.pop("timings", None)
        payload.pop("fallback_reason", None)
        try:
            self.compressor.memo.put(key, payload)
        except Exception as e:  # a memo store outage must not break the agent
            logger.warning("could not write to the memo store: %s: %s", type(e).__name__, e)


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


def _slice(scored: DraftScores, k: int) -> DraftScores:
    """The scores of document ``k`` alone, as a one-document :class:`DraftScores`."""
    return replace(scored, tokens=(scored.tokens[k],), scores=(scored.scores[k],))


def _typed(value: Any, kind: type) -> Any:
    if isinstance(value, bool) or not isinstance(value, kind):
        raise TypeError(f"expected {kind.__name__}, got {type(value).__name__}")
    return value


def _config_fingerprint(config: CompressionConfig) -> dict[str, Any]:
    d = asdict(config)
    d.pop("_compiled_protect", None)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}
