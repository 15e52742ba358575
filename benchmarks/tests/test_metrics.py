"""Benchmark text helpers and quality metrics: SQuAD answer metrics, evidence recall, sentence splitting."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from benchmarks.data import Evidence
from benchmarks.metrics import (
    answer_kept,
    evidence_recall,
    exact_match,
    f1,
    kept_word_fraction,
    normalize_answer,
)
from benchmarks.text import content_stems, overlap_words, sentence_spans, stem, word_spans, words


# --------------------------------------------------------------------------- SQuAD normalisation and scores
@pytest.mark.parametrize(
    ("raw", "normalised"),
    [
        ("The Eiffel Tower", "eiffel tower"),  # lowercase, article out
        ("  a   man,  a plan! ", "man plan"),  # punctuation out, whitespace collapsed
        ("An apple an hour", "apple hour"),
        ("“Ulysses” — James Joyce…", "ulysses james joyce"),  # typographic punctuation out too
        ("U.S.", "us"),  # punctuation is removed, not replaced by a space (as SQuAD does)
        ("theatre another", "theatre another"),  # articles only as whole words
        ("the", ""),
    ],
)
def test_normalize_answer_follows_squad(raw: str, normalised: str) -> None:
    """Normalisation lowercases, drops punctuation (typographic included) and whole-word articles, collapses spaces."""
    assert normalize_answer(raw) == normalised


def test_exact_match_after_normalisation_against_any_gold() -> None:
    """EM is 1.0 when the normalised prediction equals any normalised gold answer, else 0.0 (and 0.0 for no golds)."""
    assert exact_match("the Beatles!", ["Rolling Stones", "Beatles"]) == 1.0
    assert exact_match("Beatles band", ["Beatles"]) == 0.0
    assert exact_match("Beatles", []) == 0.0


def test_f1_token_overlap_best_gold() -> None:
    """F1 is SQuAD's token F1 (multiset overlap) against the best gold; empty vs empty matches, one empty does not."""
    # prediction {cat, sat}, gold {cat, sat, on, mat}: precision 1, recall 1/2
    assert f1("The cat sat", ["cat sat on the mat"]) == pytest.approx(2 / 3)
    # repeated tokens count once per occurrence: "cat cat cat" vs "cat": precision 1/3, recall 1
    assert f1("cat cat cat", ["cat"]) == pytest.approx(0.5)
    assert f1("dog", ["cat sat on the mat", "a dog"]) == 1.0  # the best gold counts
    assert f1("dog", ["cat"]) == 0.0
    assert f1("the", ["a"]) == 1.0  # both normalise to nothing: a SQuAD v2 no-answer match
    assert f1("the", ["cat"]) == 0.0
    assert f1("cat", []) == 0.0


# --------------------------------------------------------------------------- answer_kept
@pytest.mark.parametrize(
    ("compressed", "answers", "kept"),
    [
        ("He was born in 1987, in Paris.", ["1987"], True),
        ("He was born in 19876.", ["1987"], False),  # no match inside a longer number
        ("The artist lived here.", ["art"], False),  # no match inside a longer word
        ("The Paris [...] of France", ["paris"], True),  # case and the delimiter's brackets do not matter
        ("New York, the city", ["New York City", "new york"], True),  # any gold answer counts
        ("in New, York", ["New York"], True),  # punctuation between the words is normalised away
        ("the end", ["The"], False),  # answers that normalise to nothing are ignored
        ("anything", [], False),
    ],
)
def test_answer_kept_matches_whole_words_after_normalisation(compressed: str, answers: list[str], kept: bool) -> None:
    """A gold answer counts as kept only as a run of whole normalised words of the compressed text."""
    assert answer_kept(compressed, answers) is kept


# --------------------------------------------------------------------------- evidence recall
def _numbered_sentence(n_words: int) -> tuple[str, list[tuple[int, int]]]:
    text = " ".join(f"w{i}" for i in range(n_words)) + "."
    return text, word_spans(text)


@pytest.mark.parametrize(("n_kept", "kept"), [(79, False), (80, True), (81, True)])
def test_evidence_recall_needs_80_percent_of_words(n_kept: int, kept: bool) -> None:
    """A 100-word sentence counts as kept at the default threshold with 80 or more of its words inside, not 79."""
    text, spans = _numbered_sentence(100)
    kept_spans = [(0, spans[n_kept - 1][1])]  # exactly the first n_kept words
    assert kept_word_fraction(kept_spans, text, (0, len(text))) == pytest.approx(n_kept / 100)
    assert evidence_recall(kept_spans, text, [(0, len(text))]) == (kept,)


def test_evidence_recall_counts_only_whole_words() -> None:
    """A word cut by the end of a kept span is not inside; pieces of it kept by touching spans add up to inside."""
    text = "alpha beta gamma delta epsilon"  # 5 words
    beta_s, beta_e = word_spans(text)[1]
    assert kept_word_fraction([(0, beta_e - 1)], text, (0, len(text))) == pytest.approx(1 / 5)
    assert kept_word_fraction([(0, beta_s + 2), (beta_s + 2, beta_e)], text, (0, len(text))) == pytest.approx(2 / 5)
    assert kept_word_fraction([(beta_s + 2, beta_e), (0, beta_s + 2)], text, (0, len(text))) == pytest.approx(2 / 5)
    assert kept_word_fraction([], text, (0, 0)) == 1.0  # a span without words is trivially kept


def test_evidence_recall_one_flag_per_evidence_and_threshold_checked() -> None:
    """Each piece of evidence (a data.Evidence: start, end, overlap, hop) gets its own flag, extra fields ignored;
    the threshold is validated and applied."""
    text = "One two three four. Five six seven eight."
    first, second = sentence_spans(text)
    kept = [(0, first[1]), (second[0], second[0] + len("Five six"))]  # all of sentence 1, half of sentence 2
    evidence = [Evidence(*first, 3, None), Evidence(*second, 0, 2)]
    assert evidence_recall(kept, text, evidence) == (True, False)
    assert evidence_recall(kept, text, evidence, threshold=0.5) == (True, True)
    assert evidence_recall(iter(kept), text, iter(evidence)) == (True, False)  # one-shot iterables are fine
    for bad in (0.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="threshold"):
            evidence_recall(kept, text, evidence, threshold=bad)


_SMALL_TEXT = st.text(alphabet="ab '’.\n", max_size=40)


@settings(max_examples=150, deadline=None)
@given(data=st.data(), text=_SMALL_TEXT)
def test_kept_word_fraction_matches_character_coverage(data: st.DataObject, text: str) -> None:
    """The kept fraction equals a brute-force count of the words all of whose characters some kept span covers."""
    pos = st.integers(0, len(text))
    kept = data.draw(st.lists(st.tuples(pos, pos), max_size=6))
    s0, e0 = sorted(data.draw(st.tuples(pos, pos)))
    covered = {i for s, e in kept for i in range(s, e)}
    spans = [(s0 + s, s0 + e) for s, e in word_spans(text[s0:e0])]
    expected = sum(all(i in covered for i in range(s, e)) for s, e in spans) / len(spans) if spans else 1.0
    assert kept_word_fraction(kept, text, (s0, e0)) == pytest.approx(expected)


# --------------------------------------------------------------------------- words and stems
def test_words_keep_inner_apostrophes_and_spans_index_the_text() -> None:
    """Words are runs of letters and digits with inner apostrophes kept; their spans slice the original text."""
    text = "Einstein’s theory (1905) isn't 'new'."
    assert words(text) == ["einstein’s", "theory", "1905", "isn't", "new"]
    assert [text[s:e].lower() for s, e in word_spans(text)] == words(text)


def test_stem_is_suffix_insensitive_not_linguistic() -> None:
    """The stemmer matches plural and tense variants and drops possessives, but leaves short words alone."""
    assert stem("films") == stem("film") == "film"
    assert stem("played") == stem("playing") == stem("plays") == "play"
    assert stem("studies") == "study"
    assert stem("Einstein's") == stem("Einstein’s") == "einstein"
    assert stem("directed") != stem("director")
    assert stem("bus") == "bus"  # stripping "s" would leave fewer than 3 letters


def test_overlap_words_counts_distinct_content_stems() -> None:
    """Only distinct non-stopword question words count, after stemming; question words and auxiliaries do not."""
    question = "Which films did the director direct in 1999?"
    assert content_stems(question) == {"film", "director", "direct", "1999"}
    assert overlap_words("The film was directed in 1999; films, films, films.", question) == 3
    assert overlap_words("What did they do there and why?", question) == 0


# --------------------------------------------------------------------------- sentences
def test_sentence_spans_split_sentences_not_abbreviations() -> None:
    """Sentences end at . ! ? (closing quotes kept) or a blank line; abbreviations and initials do not end one."""
    text = (
        'Dr. Smith met J. K. Rowling in the U.S. last year. "Was it fun?" she asked! '
        "Prices rose 5. Then fell\n\nA new paragraph without a stop"
    )
    got = [text[s:e] for s, e in sentence_spans(text)]
    assert got == [
        "Dr. Smith met J. K. Rowling in the U.S. last year.",
        '"Was it fun?"',
        "she asked!",
        "Prices rose 5.",
        "Then fell",
        "A new paragraph without a stop",
    ]


def test_sentence_spans_of_a_range_stay_in_it() -> None:
    """With start and end, only that stretch is split, and the spans still index the whole text."""
    text = "Skip this. First one. Second one. Skip that."
    start, end = text.index("First"), text.index(" Skip that")
    assert [text[s:e] for s, e in sentence_spans(text, start=start, end=end)] == ["First one.", "Second one."]
    assert sentence_spans("  no boundary here  ") == [(2, 18)]
    assert sentence_spans(" \n\n ") == []


_SENTENCE_PIECES = st.sampled_from(
    ["word", "Dr.", "J.", "e.g.", "U.S.", "end.", "why?", "wow!", '."', ".)", "5.", "x", "é"]
)
_SEPARATORS = st.sampled_from([" ", "  ", "\n", "\n\n", " \n \n", "\t"])


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(_SENTENCE_PIECES, _SEPARATORS), max_size=30),
    st.data(),
)
def test_sentence_spans_are_ordered_trimmed_and_cover_all_text(
    pieces: list[tuple[str, str]], data: st.DataObject
) -> None:
    """Sentence spans are non-empty, trimmed, ordered, disjoint, inside the range, and cover all its non-space."""
    text = "".join(p + sep for p, sep in pieces)
    start, end = sorted(data.draw(st.tuples(st.integers(0, len(text)), st.integers(0, len(text)))))
    spans = sentence_spans(text, start=start, end=end)
    for s, e in spans:
        assert start <= s < e <= end
        assert not text[s].isspace() and not text[e - 1].isspace()
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(spans))
    covered = {i for s, e in spans for i in range(s, e)}
    assert all(i in covered for i in range(start, end) if not text[i].isspace())
