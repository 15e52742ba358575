"""Agent sessions on tiny random-init drafts: incremental draft reuse, compress-once, stores, concurrency."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import make_text

from crossprefill_agents import (
    CompressionConfig,
    DraftError,
    InMemoryMemoStore,
    PromptCompressor,
    SessionConfig,
    SQLiteMemoStore,
)
from crossprefill_agents.draft import DraftModel, DraftPrefix

SYSTEM = {"role": "system", "content": "You are a research agent. Use the tools and answer from what they return."}


def words(t: str) -> int:
    return len(t.split())


def trace(turns: int, *, seed: int = 0, tool_words: int = 300) -> list[list[dict[str, Any]]]:
    """An append-only agent trace: system, a question, then (assistant call, long tool output) per turn."""
    msgs: list[dict[str, Any]] = [SYSTEM, {"role": "user", "content": "what is the secret passkey of the archive?"}]
    out = [list(msgs)]
    for t in range(turns):
        msgs = [
            *msgs,
            {"role": "assistant", "content": f"search(query='archive part {t}')"},
            {"role": "tool", "content": make_text(tool_words, seed=seed * 100 + t)},
        ]
        out.append(list(msgs))
    return out


def max_diff(a, b) -> float:  # type: ignore[no-untyped-def]
    return max((float(np.abs(x - y).max()) for x, y in zip(a.scores, b.scores, strict=True) if len(x)), default=0.0)


# ------------------------------------------------------------------ draft level
def test_incremental_scores_equal_from_scratch(tiny_draft: DraftModel) -> None:
    """Growing, then editing, a conversation: reused-cache scores equal a fresh scoring (< 1e-4) and reuse is real."""
    cfg = CompressionConfig()
    docs = [make_text(80, seed=i) for i in range(5)]
    state = DraftPrefix(tiny_draft.name)
    first = tiny_draft.score_incremental(docs[:2], "where is the key?", config=cfg, state=state)
    assert first.reused_tokens == 0
    for n, q in ((3, "where is the key?"), (5, "a different question now")):
        inc = tiny_draft.score_incremental(docs[:n], q, config=cfg, state=state)
        ref = tiny_draft.score(docs[:n], q, config=cfg)
        assert max_diff(inc, ref) < 1e-4
        assert inc.reused_tokens > 0
        assert inc.prefilled_tokens < ref.prefilled_tokens
        assert len(state) == len(tiny_draft.prefix_ids) + sum(len(t.ids) for t in inc.tokens) + (n - 1) * len(
            tiny_draft.tokenize("\n\n").ids
        )
    edited = [docs[0], make_text(70, seed=77), *docs[2:]]  # an edit in the middle: reuse up to it only
    inc = tiny_draft.score_incremental(edited, "q", config=cfg, state=state)
    ref = tiny_draft.score(edited, "q", config=cfg)
    assert max_diff(inc, ref) < 1e-4
    assert 0 < inc.reused_tokens < len(state)


def test_draft_prefix_is_bound_to_its_draft_and_window(tiny_llama_draft: DraftModel) -> None:
    """A cache from another draft is refused; a context past one window raises DraftError and leaves no half state."""
    cfg = CompressionConfig(window_tokens=128)
    with pytest.raises(ValueError, match="belongs to draft"):
        tiny_llama_draft.score_incremental(["x"], "q", config=cfg, state=DraftPrefix("other"))
    state = DraftPrefix(tiny_llama_draft.name)
    with pytest.raises(DraftError, match="one window"):
        tiny_llama_draft.score_incremental([make_text(400, seed=1)], "q", config=cfg, state=state)
    assert len(state) == 0 and state.nbytes == 0


def test_failed_pass_resets_the_prefix(tiny_llama_draft: DraftModel) -> None:
    """A pass that times out leaves an empty cache rather than a half-written one."""
    state = DraftPrefix(tiny_llama_draft.name)
    tiny_llama_draft.score_incremental([make_text(100, seed=1)], "q", config=CompressionConfig(), state=state)
    assert len(state) > 0
    with pytest.raises(DraftError):
        tiny_llama_draft.score_incremental(
            [make_text(100, seed=1), make_text(50, seed=2)], "q", config=CompressionConfig(), state=state, deadline=0.0
        )
    assert len(state) == 0 and state.cache is None


# ---------------------------------------------------------------- session level
def test_roles_policy(tiny_llama_draft: DraftModel) -> None:
    """System and latest user message stay; tool output shrinks; short and non-str content pass; flags override."""
    pc = PromptCompressor(tiny_llama_draft, target=words, config=CompressionConfig(min_tokens=50))
    long_user = make_text(400, seed=3)
    msgs = [
        {"role": "system", "content": make_text(400, seed=1)},
        {"role": "user", "content": long_user},
        {"role": "assistant", "content": make_text(400, seed=2), "name": "planner"},
        {"role": "tool", "content": make_text(400, seed=4), "tool_call_id": "c1"},
        {"role": "tool", "content": "short output"},
        {"role": "tool", "content": [{"type": "text", "text": "parts"}]},
        {"role": "tool", "content": make_text(400, seed=5), "compress": False},
        {"role": "user", "content": make_text(400, seed=6)},
    ]
    original = [dict(m) for m in msgs]
    turn = pc.session().compress_messages(msgs)
    assert msgs == original  # the input is not modified
    out = turn.messages
    assert set(turn.results) == {3}
    assert words(out[3]["content"]) < 0.3 * 400 and out[3]["tool_call_id"] == "c1"
    for i in (0, 1, 2, 4, 5, 6, 7):
        assert out[i] == msgs[i]
    assert turn.stats.segments == 1 and turn.stats.compressed_now == 1

    hist = pc.session(compress_history=True).compress_messages(msgs)
    assert set(hist.results) == {1, 2, 3}  # older user/assistant too; never the system or the latest user message
    forced = pc.session(compress_roles=()).compress_messages([*msgs[:2], {**msgs[2], "compress": True}, msgs[7]])
    assert set(forced.results) == {2}


def test_prefix_stability_and_incremental_cost(tiny_llama_draft: DraftModel) -> None:
    """Over 5 turns: earlier messages are byte-identical turn to turn, and each turn prefills about what is new."""
    pc = PromptCompressor(tiny_llama_draft, target=words, config=CompressionConfig(min_tokens=50))
    session = pc.session()
    previous: list[dict[str, Any]] | None = None
    for k, msgs in enumerate(trace(5, tool_words=100)):  # all of it fits the tiny draft's 2k-token window
        turn = session.compress_messages(msgs)
        if previous is not None:
            assert turn.messages[: len(previous)] == previous
        if k >= 2:
            assert turn.stats.frozen_hits == k - 1 and turn.stats.compressed_now == 1
            assert turn.stats.draft_tokens_reused > turn.stats.draft_tokens_prefilled
            assert turn.stats.draft_first_message == 0
        previous = turn.messages
    assert turn.stats.target_tokens_after < 0.45 * turn.stats.target_tokens_before


def test_kv_eviction_recomputes_the_same_result(tiny_llama_draft: DraftModel) -> None:
    """With no room for draft caches every turn prefills from scratch, and the compressed prompt is the same."""
    cfg = CompressionConfig(min_tokens=50)
    kept = PromptCompressor(tiny_llama_draft, target=words, config=cfg).session()
    evicted = PromptCompressor(tiny_llama_draft, target=words, config=cfg, kv_cache_bytes=0).session()
    for msgs in trace(3):
        a, b = kept.compress_messages(msgs), evicted.compress_messages(msgs)
        assert a.messages == b.messages
        assert b.stats.draft_tokens_reused == 0
    assert a.stats.draft_tokens_reused > 0


def test_kv_store_is_bounded_in_bytes(tiny_llama_draft: DraftModel) -> None:
    """Many sessions' draft caches never exceed kv_cache_bytes; the oldest sessions are evicted and still work."""
    one = PromptCompressor(tiny_llama_draft, target=words, config=CompressionConfig(min_tokens=50))
    s = one.session()
    s.compress_messages(trace(1)[1])
    size = one.draft_cache.nbytes
    assert size > 0
    pc = PromptCompressor(
        tiny_llama_draft, target=words, config=CompressionConfig(min_tokens=50), kv_cache_bytes=3 * size
    )
    sessions = [pc.session() for _ in range(6)]
    for i, sess in enumerate(sessions):
        sess.compress_messages(trace(1, seed=i)[1])
        assert pc.draft_cache.nbytes <= 3 * size
    again = sessions[0].compress_messages(trace(2, seed=0)[2])  # evicted: recomputes, never errors
    assert again.stats.draft_tokens_reused == 0 and again.stats.compressed_now == 1


def test_memo_is_shared_across_sessions_and_processes(tiny_llama_draft: DraftModel, tmp_path: Path) -> None:
    """A second session (same store) and a second compressor on the same SQLite file replay without the draft."""
    cfg = CompressionConfig(min_tokens=50)
    msgs = trace(2)[2]
    pc = PromptCompressor(tiny_llama_draft, target=words, config=cfg, memo=SQLiteMemoStore(tmp_path / "memo.db"))
    first = pc.session().compress_messages(msgs)
    second = pc.session().compress_messages(msgs)
    assert second.messages == first.messages
    assert second.stats.memo_hits == 2 and second.stats.draft_tokens_prefilled == 0
    other = PromptCompressor(tiny_llama_draft, target=words, config=cfg, memo=SQLiteMemoStore(tmp_path / "memo.db"))
    third = other.session().compress_messages(msgs)
    assert third.messages == first.messages and third.stats.memo_hits == 2
    changed = PromptCompressor(
        tiny_llama_draft, target=words, config=CompressionConfig(min_tokens=50, keep_rate=0.5), memo=other.memo
    )
    assert changed.session().compress_messages(msgs).stats.memo_hits == 0  # the config is part of the key


def test_workers_share_one_redis_memo(tiny_llama_draft: DraftModel, redis_server: str) -> None:
    """Two compressors (two agent workers) on one Redis memo: the second replays the first's compressions."""
    from crossprefill_agents import RedisMemoStore

    cfg = CompressionConfig(min_tokens=50)
    msgs = trace(2)[2]
    worker_a = PromptCompressor(tiny_llama_draft, target=words, config=cfg, memo=RedisMemoStore(redis_server))
    worker_b = PromptCompressor(tiny_llama_draft, target=words, config=cfg, memo=RedisMemoStore(redis_server))
    first = worker_a.session().compress_messages(msgs)
    second = worker_b.session().compress_messages(msgs)
    assert second.messages == first.messages
    assert second.stats.memo_hits == 2 and second.stats.draft_tokens_prefilled == 0


def test_malformed_memo_entry_is_dropped_and_recomputed(tiny_llama_draft: DraftModel) -> None:
    """A memo payload of the wrong shape is deleted and the segment compressed again."""
    store = InMemoryMemoStore()
    pc = PromptCompressor(tiny_llama_draft, target=words, config=CompressionConfig(min_tokens=50), memo=store)
    msgs = trace(1)[1]
    good = pc.session().compress_messages(msgs)
    key = pc.session()._key(msgs[3]["content"], msgs[1]["content"])
    assert store.get(key) is not None
    store.put(key, {"text": 3})
    again = pc.session().compress_messages(msgs)
    assert again.stats.memo_hits == 0 and again.stats.compressed_now == 1
    assert again.messages == good.messages
    assert store.get(key) is not None and store.get(key)["text"] == good.messages[3]["content"]  # type: ignore[index]


def test_draft_failure_passes_through_and_freezes(
    tiny_llama_draft: DraftModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failing draft: segments pass unchanged with the reason; they stay unchanged next turn (stable prefix)."""
    pc = PromptCompressor(tiny_llama_draft, target=words, config=CompressionConfig(min_tokens=50))
    session = pc.session()

    def boom(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("draft exploded")

    monkeypatch.setattr(pc.draft, "score_incremental", boom)
    t1 = trace(2)
    turn = session.compress_messages(t1[1])
    assert turn.messages == t1[1] and turn.stats.fallback_reason == "RuntimeError: draft exploded"
    monkeypatch.undo()
    turn2 = session.compress_messages(t1[2])
    assert turn2.messages[:4] == t1[1] and turn2.stats.compressed_now == 1
    strict = PromptCompressor(tiny_llama_draft, target=words, config=CompressionConfig(min_tokens=50, on_error="raise"))
    monkeypatch.setattr(strict.draft, "score_incremental", boom)
    with pytest.raises(RuntimeError, match="exploded"):
        strict.session().compress_messages(t1[1])


def test_budget_pressure(tiny_llama_draft: DraftModel) -> None:
    """Over the prompt budget: 'never' keeps the prefix and reports it; 'on_budget_pressure' shrinks old segments."""
    cfg = CompressionConfig(min_tokens=50, keep_rate=0.5)
    pc = PromptCompressor(tiny_llama_draft, target=words, config=cfg)
    msgs = trace(4)
    never = pc.session(max_tokens=400)
    previous: list[dict[str, Any]] = []
    for m in msgs:
        turn = never.compress_messages(m)
        assert turn.messages[: len(previous)] == previous and turn.stats.recompressed == 0
        previous = turn.messages
    assert turn.stats.over_budget
    pressed = pc.session(max_tokens=400, recompress="on_budget_pressure")
    shrunk = 0
    for m in msgs:
        turn = pressed.compress_messages(m)
        assert turn.stats.target_tokens_after <= 400 and not turn.stats.over_budget
        shrunk += turn.stats.recompressed
    assert shrunk > 0
    assert turn.stats.target_tokens_after <= 0.75 * 400 + 1  # a rewrite aims below the budget (pressure_headroom)


def test_window_rebase(tiny_llama_draft: DraftModel) -> None:
    """A conversation longer than the draft's window: the draft reads from a later message, the system stays."""
    pc = PromptCompressor(tiny_llama_draft, target=words, config=CompressionConfig(min_tokens=50, window_tokens=900))
    session = pc.session()
    for msgs in trace(8, tool_words=200):
        turn = session.compress_messages(msgs)
        assert turn.stats.fallback_reason is None
    assert turn.stats.draft_first_message > 2 and turn.stats.compressed_now == 1
    big_system = [{"role": "system", "content": make_text(400, seed=5)}, *trace(2, tool_words=100)[2][1:]]
    fresh = pc.session()
    turn = fresh.compress_messages(big_system)  # a system prompt past a quarter window is not read
    assert turn.stats.fallback_reason is None and turn.stats.compressed_now == 2 and 0 not in turn.results
    system_tokens = len(tiny_llama_draft.tokenize(big_system[0]["content"]).ids)
    read = pc.draft_cache.get(fresh.session_id)
    assert (
        read is not None
        and system_tokens > 900 // 4
        and len(read) < sum(len(tiny_llama_draft.tokenize(m["content"]).ids) + 2 for m in big_system[1:]) + 8
    )


def test_segment_longer_than_a_window_uses_windowed_scoring(tiny_llama_draft: DraftModel) -> None:
    """One tool output past the window is still compressed (windows of its own), not passed through."""
    pc = PromptCompressor(tiny_llama_draft, target=words, config=CompressionConfig(min_tokens=50, window_tokens=256))
    msgs = [SYSTEM, {"role": "user", "content": "q?"}, {"role": "tool", "content": make_text(900, seed=9)}]
    turn = pc.session().compress_messages(msgs)
    assert turn.stats.fallback_reason is None and 2 in turn.results
    assert turn.results[2].compressed_tokens <= turn.results[2].budget_tokens


def test_concurrent_sessions_equal_serial(tiny_llama_draft: DraftModel) -> None:
    """32 sessions on one compressor from threads and from asyncio tasks give the serial results."""
    pc = PromptCompressor(tiny_llama_draft, target=words, config=CompressionConfig(min_tokens=50))
    traces = [trace(2, seed=i, tool_words=150) for i in range(32)]

    def run(t: list[list[dict[str, Any]]]) -> list[list[dict[str, Any]]]:
        s = pc.session()
        return [s.compress_messages(m).messages for m in t]

    serial = [run(t) for t in traces]
    fresh = PromptCompressor(tiny_llama_draft, target=words, config=CompressionConfig(min_tokens=50))
    barrier = threading.Barrier(8)

    def threaded(t: list[list[dict[str, Any]]]) -> list[list[dict[str, Any]]]:
        barrier.wait(timeout=60)  # eight sessions start together
        s = fresh.session()
        return [s.compress_messages(m).messages for m in t]

    with ThreadPoolExecutor(8) as ex:
        assert list(ex.map(threaded, traces)) == serial

    fresh2 = PromptCompressor(tiny_llama_draft, target=words, config=CompressionConfig(min_tokens=50))

    async def one(t: list[list[dict[str, Any]]]) -> list[list[dict[str, Any]]]:
        s = fresh2.session()
        return [(await s.acompress_messages(m)).messages for m in t]

    async def all_of() -> list[list[list[dict[str, Any]]]]:
        return list(await asyncio.gather(*(one(t) for t in traces)))

    assert asyncio.run(all_of()) == serial


def test_bad_input_is_refused(tiny_llama_draft: DraftModel) -> None:
    """Messages of the wrong shape and bad session options fail with messages that say what is wrong."""
    pc = PromptCompressor(tiny_llama_draft, target=words)
    s = pc.session()
    with pytest.raises(TypeError, match="list of"):
        s.compress_messages("hello")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="'role' and a 'content'"):
        s.compress_messages([{"content": "x"}])
    with pytest.raises(TypeError, match="role"):
        s.compress_messages([{"role": 1, "content": "x"}])
    with pytest.raises(ValueError, match="recompress"):
        pc.session(recompress="always")
    with pytest.raises(ValueError, match="system"):
        SessionConfig(compress_roles=("system",))
    with pytest.raises(TypeError, match="not both"):
        pc.session(SessionConfig(), max_tokens=3)
    with pytest.raises(ValueError, match="kv_cache_bytes"):
        PromptCompressor(tiny_llama_draft, kv_cache_bytes=-1)
    with pytest.raises(TypeError, match="MemoStore"):
        PromptCompressor(tiny_llama_draft, memo={})  # type: ignore[arg-type]


def test_empty_messages_are_no_segments_even_with_min_tokens_zero(tiny_llama_draft: DraftModel) -> None:
    """An assistant turn with empty content (it only calls tools) and a blank tool result are not segments: with
    min_tokens=0 the long tool output beside them is still compressed, with no fallback."""
    pc = PromptCompressor(tiny_llama_draft, target=words, config=CompressionConfig(min_tokens=0))
    msgs = [
        SYSTEM,
        {"role": "user", "content": "what is the secret passkey?"},
        {"role": "assistant", "content": "", "tool_calls": [{"id": "c1"}]},
        {"role": "tool", "content": "  \n", "tool_call_id": "c0"},
        {"role": "tool", "content": make_text(400, seed=8), "tool_call_id": "c1"},
    ]
    turn = pc.session().compress_messages(msgs)
    assert turn.stats.fallback_reason is None
    assert turn.stats.segments == 1 and set(turn.results) == {4}
    assert [m["content"] for m in turn.messages[:4]] == [m["content"] for m in msgs[:4]]


def test_draft_tokens_are_memoised_read_only_and_bounded(tiny_llama_draft: DraftModel, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A text tokenized again returns the same read-only arrays; past TOKENIZED_TEXTS the oldest are dropped."""
    from crossprefill_agents.draft import runner

    text = make_text(120, seed=41)
    first = tiny_llama_draft.tokenize(text)
    assert tiny_llama_draft.tokenize(text) is first
    assert not first.ids.flags.writeable and not first.offsets.flags.writeable
    monkeypatch.setattr(runner, "TOKENIZED_TEXTS", 2)
    for seed in (42, 43):  # two more texts push the first one out
        tiny_llama_draft.tokenize(make_text(120, seed=seed))
    again = tiny_llama_draft.tokenize(text)
    assert again is not first
    np.testing.assert_array_equal(again.ids, first.ids)
