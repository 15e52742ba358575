"""timeout_s bounds a call's wall time: the draft prefill in timed blocks, the lock wait, the query passes and the
protect matching, each failing open at the deadline. Tiny drafts; the prefill and query passes on a fake clock."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from helpers import make_text

from crossprefill_agents import CompressionConfig, PromptCompressor
from crossprefill_agents.draft import queries
from crossprefill_agents.draft.queries import NULL_QUERY
from crossprefill_agents.draft.runner import TIMED_BLOCK_S, DraftModel
from crossprefill_agents.results import DraftTimeoutError
from crossprefill_agents.testing import tiny_draft


def words(text: str) -> int:
    return len(text.split())


class FakeClock:
    """A monotonic clock that only the draft's forwards move: ``per_token`` seconds a token plus ``per_call``."""

    def __init__(self, *, per_token: float, per_call: float) -> None:
        self.t = 1000.0
        self.per_token, self.per_call = per_token, per_call

    def monotonic(self) -> float:
        return self.t


@pytest.fixture
def slow_draft(monkeypatch: pytest.MonkeyPatch) -> tuple[DraftModel, FakeClock, list[int]]:
    """A tiny llama whose forwards cost fake time (1 ms a token + 5 ms a call); the sizes of its forwards."""
    draft = tiny_draft("llama")
    clock = FakeClock(per_token=0.001, per_call=0.005)
    monkeypatch.setattr(queries, "time", clock)  # the clock deadlines are read on (queries.now)
    sizes: list[int] = []
    real = draft._forward

    def forward(ids: list[int], cache: Any, *, attentions: bool = False, **extra: Any) -> Any:
        sizes.append(len(ids))
        clock.t += clock.per_call + clock.per_token * len(ids)
        return real(ids, cache, attentions=attentions, **extra)

    monkeypatch.setattr(draft, "_forward", forward)
    return draft, clock, sizes


def test_without_a_deadline_the_prefill_runs_in_prefill_chunk_tokens_blocks(slow_draft) -> None:  # type: ignore[no-untyped-def]
    """No deadline: the prefill runs exactly as before (blocks of prefill_chunk_tokens), so scores are unchanged;
    on this llama draft the last, shorter block also carries the query and the null query (one merged forward)."""
    draft, _, sizes = slow_draft
    context = make_text(600, seed=1)  # one window
    cfg = CompressionConfig(prefill_chunk_tokens=256)
    scores = draft.score([context], "passkey?", config=cfg)
    assert scores.windows == 1 and draft.fuses_null
    n_query = len(draft._query_ids("passkey?", cfg))
    n_prefill = len(draft.prompt_ids([context], "passkey?", config=cfg)) - n_query
    full, rest = divmod(n_prefill, 256)
    assert sizes == [256] * full + [rest + n_query + len(draft._query_ids(NULL_QUERY, cfg))]


def test_the_prefill_stops_within_one_small_block_of_the_deadline(slow_draft) -> None:  # type: ignore[no-untyped-def]
    """Under a deadline the prefill runs in blocks of about an eighth of the time left (not 2048 tokens) and
    raises DraftTimeoutError at most one such block after the deadline."""
    draft, clock, sizes = slow_draft
    context = make_text(4000, seed=2)  # ~5k tiny-draft tokens: ~5 s of fake prefill
    deadline = clock.t + 0.5
    with pytest.raises(DraftTimeoutError):
        draft.score([context], "passkey?", config=CompressionConfig(), deadline=deadline)
    share = max(TIMED_BLOCK_S[0], 0.5 / 8)
    assert clock.t - deadline <= share * 1.5 + clock.per_call
    assert sizes[0] == 64 and max(sizes) < 200 and len(sizes) > 5


def test_a_long_query_pass_stops_at_the_deadline(slow_draft) -> None:  # type: ignore[no-untyped-def]
    """The question's tokens run in 16-token blocks, the deadline checked before each: a long query cannot
    overrun it by more than one block."""
    draft, clock, sizes = slow_draft
    clock.per_token = 0.02  # the eager query passes are slow; the short context's prefill is not the problem
    context = make_text(200, seed=3)
    query = make_text(400, seed=4)  # ~700 draft tokens: 40-odd blocks of 16
    deadline = clock.t + 2.0
    with pytest.raises(DraftTimeoutError):
        draft.score([context], query, config=CompressionConfig(), deadline=deadline)
    assert clock.t - deadline <= 16 * clock.per_token + clock.per_call + 1e-9
    assert sizes[-1] <= 16


def test_waiting_for_a_busy_draft_is_bounded_by_the_deadline() -> None:
    """A call that finds the draft busy with another call waits for it no longer than its deadline."""
    draft = tiny_draft("llama")
    draft._lock.acquire()
    try:
        t0 = time.monotonic()
        with pytest.raises(DraftTimeoutError, match="busy"):
            draft.score([make_text(300)], "q", config=CompressionConfig(), deadline=time.monotonic() + 0.3)
        assert time.monotonic() - t0 < 1.0
    finally:
        draft._lock.release()


def _catastrophic_context() -> str:
    return make_text(600, seed=5) + "\n" + "a" * 34 + "!\n" + make_text(600, seed=6)


def test_a_catastrophic_protect_pattern_times_out_and_fails_open() -> None:
    """`(a|aa)+$` backtracks exponentially on a run of a's (in `re` and `regex` alike): with timeout_s=1 the call
    returns within 1.5 s, the context unchanged, the reason naming the timeout."""
    cfg = CompressionConfig(protect=(r"(a|aa)+$",), timeout_s=1.0)
    pc = PromptCompressor(tiny_draft("llama"), target=words, config=cfg)
    context = _catastrophic_context()
    t0 = time.monotonic()
    r = pc.compress(context, "passkey?", keep_rate=0.3)
    elapsed = time.monotonic() - t0
    assert elapsed < 1.5, elapsed
    assert r.text == context and r.kept_spans == ((0, len(context)),)
    assert r.fallback_reason is not None and "timeout" in r.fallback_reason


def test_nested_quantifiers_are_bounded_under_a_timeout() -> None:
    """`(a+)+$` (72 s in `re` on such a run) is matched by the bounded engine in well under timeout_s=2: the call
    compresses normally within 2.5 s."""
    context = make_text(600, seed=5) + "\n" + "a" * 40 + "!\n" + make_text(600, seed=6)
    pc = PromptCompressor(
        tiny_draft("llama"), target=words, config=CompressionConfig(protect=(r"(a+)+$",), timeout_s=2)
    )
    t0 = time.monotonic()
    r = pc.compress(context, "passkey?", keep_rate=0.3)
    assert time.monotonic() - t0 < 2.5
    assert r.fallback_reason is None and r.compressed_tokens <= r.budget_tokens


def test_compress_scored_bounds_the_protect_matching_too() -> None:
    """Selecting from earlier scores (what sessions do) matches the protect patterns under timeout_s as well."""
    draft = tiny_draft("llama")
    context = _catastrophic_context()
    scores = draft.score([context], "passkey?", config=CompressionConfig())
    pc = PromptCompressor(draft, target=words, config=CompressionConfig(protect=(r"(a|aa)+$",), timeout_s=0.5))
    t0 = time.monotonic()
    [r] = pc.compress_scored([context], scores, keep_rate=0.3)
    assert time.monotonic() - t0 < 1.0
    assert r.text == context and "timeout" in (r.fallback_reason or "")


def test_without_a_timeout_protect_matches_are_those_of_re() -> None:
    """The bounded engine is used only under timeout_s, and finds the same spans as `re` for ordinary patterns."""
    from crossprefill_agents.selection import protected_spans

    text = make_text(800, seed=7) + " ID-12345 id-999 Key: ABC_def, 2024-05-01T10:00Z"
    cfg = CompressionConfig(protect=(r"(?i)id-\d+", r"\d{4}-\d\d-\d\dT[\d:]+Z", r"(?a)\bKey: \w+", r"passkey"))
    plain = protected_spans(text, cfg.protect_patterns)
    bounded = protected_spans(text, cfg.protect_patterns, deadline=time.monotonic() + 5)
    assert plain == bounded and len(plain) >= 4


def test_a_busy_thread_does_not_stretch_another_calls_timeout() -> None:
    """Two threads share one compressor; the one with timeout_s=0.3 returns within ~0.8 s while the other holds
    the draft for longer."""
    draft = tiny_draft("llama")
    slow = PromptCompressor(draft, target=words)
    fast = slow.with_config(CompressionConfig(timeout_s=0.3))
    release = threading.Event()
    real = draft._forward

    def held(ids: list[int], cache: Any, *, attentions: bool = False, **extra: Any) -> Any:
        release.wait(5)
        return real(ids, cache, attentions=attentions, **extra)

    draft._forward = held  # type: ignore[method-assign]
    worker = threading.Thread(target=lambda: slow.compress(make_text(1500, seed=8), "q"))
    worker.start()
    try:
        time.sleep(0.2)
        t0 = time.monotonic()
        r = fast.compress(make_text(1500, seed=9), "q")
        assert time.monotonic() - t0 < 0.8
        assert "DraftTimeoutError" in (r.fallback_reason or "")
    finally:
        release.set()
        worker.join()


def test_one_forward_that_outlasts_the_deadline_is_abandoned() -> None:
    """A single forward pass cannot be interrupted (on a busy machine one took 4.8 s): the call is answered at the
    deadline anyway, unchanged with a timeout reason, and the abandoned pass stops at its next check."""
    draft = tiny_draft("llama")
    real = draft._forward

    def stuck(ids: list[int], cache: Any, *, attentions: bool = False, **extra: Any) -> Any:
        time.sleep(2.0)
        return real(ids, cache, attentions=attentions, **extra)

    draft._forward = stuck  # type: ignore[method-assign]
    pc = PromptCompressor(draft, target=words, config=CompressionConfig(timeout_s=0.5))
    context = make_text(1500, seed=10)
    t0 = time.monotonic()
    r = pc.compress(context, "passkey?")
    assert time.monotonic() - t0 < 0.5 * 1.2 + 0.2
    assert r.text == context and "timeout" in (r.fallback_reason or "")
    draft._lock.acquire(timeout=5)  # the worker let go of the draft at its next check
    draft._lock.release()
