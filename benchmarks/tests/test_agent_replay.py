"""The agent benchmark's replay on a tiny random-init draft: repeated session timings, the fastest kept."""

from __future__ import annotations

import random

import pytest

from benchmarks.agent import replay, totals
from benchmarks.traces import Message, Trace
from crossprefill_agents import CompressionConfig, PromptCompressor
from crossprefill_agents.testing import tiny_draft


def _words(n: int, seed: int) -> str:
    rng = random.Random(seed)
    vocab = "the archive holds a passkey river stone lamp north report figure seven clerk".split()
    return " ".join(rng.choice(vocab) for _ in range(n)) + "."


def _trace(searches: int) -> Trace:
    turn: tuple[Message, ...] = (
        Message("system", "Answer from the tools."),
        Message("user", "What is the passkey of the archive?"),
    )
    turns = [turn]
    for t in range(searches):
        turn = (*turn, Message("assistant", f"search(query='part {t}')"), Message("tool", _words(400, seed=t)))
        turns.append(turn)
    return Trace("tiny/search", tuple(turns), question=turn[1].content)


def test_replay_keeps_the_fastest_of_repeated_session_timings_and_one_passes() -> None:
    pc = PromptCompressor(tiny_draft("llama"), target="cl100k_base", config=CompressionConfig(min_tokens=64))
    out = replay(pc, _trace(3), repeats=2)
    rows = out["turns"]
    worked = [r for r in rows if r["session"]["draft_tokens_prefilled"]]
    assert len(worked) == 3  # every search's output was scored, each once per session
    for r in rows:
        runs = r["session"]["draft_s_runs"]
        assert len(runs) == 2 and r["session"]["draft_s"] == min(runs)
    assert all(r["session"]["draft_s"] > 0 for r in worked)
    one = out["one_pass"]
    assert len(one["draft_s_runs"]) == 2 and one["draft_s"] == min(one["draft_s_runs"])
    t = totals(out)
    assert t["session_draft_s"] == pytest.approx(sum(r["session"]["draft_s"] for r in rows))
    assert t["session_min_prefix"] == 1.0  # the session's prompts only grow


def test_replay_refuses_no_repeats() -> None:
    pc = PromptCompressor(tiny_draft("llama"), target="cl100k_base")
    with pytest.raises(ValueError, match="repeats"):
        replay(pc, _trace(1), repeats=0)
