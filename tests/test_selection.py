"""Selection: units, spans and budgets, on random inputs."""

from __future__ import annotations

import itertools
import re

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crossprefill_agents.selection import merge_spans, protected_spans, render, select
from crossprefill_agents.units import make_units

VOCAB = ["alpha", "beta", "gamma", "delta", "eps", "zeta", "eta", "theta", "iota", "kappa", "x", "yy", "zzz"]


def words_text(words: list[str], breaks: list[int]) -> tuple[str, np.ndarray]:
    """Text of words separated by spaces/newlines, with whitespace-word 'token' offsets."""
    seps = [" ", "\n", "  ", "\n\n"]
    parts, offs, pos = [], [], 0
    for i, w in enumerate(words):
        if i:
            sep = seps[breaks[i % len(breaks)] % len(seps)]
            parts.append(sep)
            pos += len(sep)
        parts.append(w)
        offs.append((pos, pos + len(w)))
        pos += len(w)
    return "".join(parts), np.array(offs, dtype=np.int64).reshape(-1, 2)


def count_words(t: str) -> int:
    return len(t.split())


text_strategy = st.tuples(
    st.lists(st.sampled_from(VOCAB), min_size=300, max_size=900),
    st.lists(st.integers(0, 3), min_size=1, max_size=20),
    st.integers(0, 2**31 - 1),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text_strategy, st.floats(0.05, 0.9), st.sampled_from([8, 32]))
def test_budget_holds_and_spans_are_valid(inp: tuple, rate: float, chunk: int) -> None:
    """Never above the budget, within 3% below it (+ one delimiter's worth), spans ordered valid slices."""
    words, breaks, seed = inp
    text, offsets = words_text(words, breaks)
    scores = np.random.default_rng(seed).random(len(offsets))
    units = make_units(text, offsets, scores, chunk_size=chunk)
    total = count_words(text)
    budget = max(1, round(rate * total))
    sel = select([text], units, [u.score for u in units], [[]], budget=budget, count=count_words, delimiter=" [...] ")
    spans = sel.spans[0]
    assert sel.tokens[0] == count_words(sel.texts[0]) <= budget
    assert sel.tokens[0] >= budget * 0.97 - 2  # the delimiter " [...] " is one word here
    assert all(0 <= s < e <= len(text) for s, e in spans)
    assert all(a[1] < b[0] for a, b in itertools.pairwise(spans))
    assert sel.texts[0] == render(text, spans, " [...] ")


@settings(max_examples=30, deadline=None)
@given(text_strategy, st.sampled_from([4, 32]), st.booleans())
def test_units_partition_the_text_and_never_cut_words(inp: tuple, chunk: int, snap: bool) -> None:
    """Units tile [0, len) in order; with snapping every edge is a word boundary."""
    words, breaks, seed = inp
    text, offsets = words_text(words, breaks)
    scores = np.random.default_rng(seed).random(len(offsets))
    units = make_units(text, offsets, scores, chunk_size=chunk, snap_to_words=snap)
    assert units[0].start == 0 and units[-1].end == len(text)
    assert all(a.end == b.start for a, b in itertools.pairwise(units))
    for u in units:
        assert u.cuts[-1] == u.end and all(u.start < c <= u.end for c in u.cuts)
        assert list(u.cuts) == sorted(set(u.cuts))
        if snap:
            assert u.start == 0 or text[u.start - 1].isspace() or text[u.start].isspace()  # no cut word


def test_snapping_moves_a_mid_word_chunk_edge_to_a_word_boundary() -> None:
    """A chunk edge that falls inside a word (sub-word tokens) moves to the word's edge."""
    text = "supercalifragilistic expialidocious word"
    offsets = np.array([(0, 5), (5, 10), (10, 20), (21, 27), (27, 35), (36, 40)])
    units = make_units(text, offsets, np.ones(6), chunk_size=2, snap_to_words=True)
    assert [text[u.start : u.end].strip() for u in units] == ["supercalifragilistic", "expialidocious", "word"]


def test_merge_spans_merges_overlaps_and_whitespace_gaps_and_trims() -> None:
    """Overlapping and whitespace-separated spans merge; whitespace at the edges is trimmed."""
    text = "aa bb  cc dd ee"
    assert merge_spans(text, [(6, 9), (0, 3), (2, 5)]) == [(0, 9)]
    assert merge_spans(text, [(0, 2), (10, 12)]) == [(0, 2), (10, 12)]
    assert merge_spans(text, [(2, 3), (5, 7)]) == []


def test_protected_spans_survive_a_tiny_budget() -> None:
    """A protected match is kept whole even when the budget is smaller than it."""
    text = " ".join(["filler"] * 200 + ["ID-12345-XYZ"] + ["filler"] * 200)
    offsets = np.array([(m.start(), m.end()) for m in re.finditer(r"\S+", text)])
    units = make_units(text, offsets, np.zeros(len(offsets)), chunk_size=16)
    prot = protected_spans(text, [re.compile(r"12345")])
    assert text[prot[0][0] : prot[0][1]] == "ID-12345-XYZ"  # widened to the whole word
    sel = select([text], units, [u.score for u in units], [prot], budget=0, count=count_words, delimiter=" [...] ")
    assert "ID-12345-XYZ" in sel.texts[0] and sel.protected_over_budget


def test_shared_budget_across_documents_prefers_the_best_units() -> None:
    """With one budget over two documents, the high-scoring document's units are kept first."""
    a = " ".join(["apple"] * 100)
    b = " ".join(["berry"] * 100)
    oa = np.array([(m.start(), m.end()) for m in re.finditer(r"\S+", a)])
    ob = np.array([(m.start(), m.end()) for m in re.finditer(r"\S+", b)])
    units = make_units(a, oa, np.full(100, 0.1), doc=0, chunk_size=10) + make_units(
        b, ob, np.full(100, 0.9), doc=1, chunk_size=10
    )
    sel = select([a, b], units, [u.score for u in units], [[], []], budget=60, count=count_words, delimiter=" [...] ")
    assert sel.tokens == (0, 60) and sel.texts[0] == ""
