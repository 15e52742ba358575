"""Beyond the paper: sentence units, idf query-word overlap fused with the draft, global-attention layers."""

from __future__ import annotations

import re

import numpy as np
import pytest
from helpers import make_text

from crossprefill_agents import CompressionConfig, PromptCompressor, ranking
from crossprefill_agents.draft import DraftModel
from crossprefill_agents.ranking import coarse_to_fine, fuse, lexical_scores, percentile_ranks
from crossprefill_agents.text import content_words, sentence_starts
from crossprefill_agents.units import Unit, make_units, paragraph_ids, paragraph_spans, span_means


def word_offsets(text: str) -> np.ndarray:
    return np.array([(m.start(), m.end()) for m in re.finditer(r"\S+", text)], dtype=np.int64)


def test_sentence_starts_find_sentences_and_lines() -> None:
    """Sentences start after . ! ? and whitespace, and after newlines."""
    text = "One two. Three four! Five?\nSix seven"
    assert [text[p:].split()[0] for p in sentence_starts(text)] == ["Three", "Five?", "Six"]


def test_sentence_starts_skip_initials_abbreviations_and_lower_case() -> None:
    """No sentence break after an initial or an abbreviation, or before a lower-case word."""
    text = "Dr. Smith met J. K. Rowling in the U.S. in Jan. 2003. She left, e.g. today. Fine."
    assert [text[p:].split()[0] for p in sentence_starts(text)] == ["She", "Fine."]


def test_a_heading_stays_with_the_line_it_introduces() -> None:
    """A short line without closing punctuation joins the next line; a blank line still separates."""
    text = "Title: Foo (band)\nFoo is a band. It plays.\n\n## Notes\n\nText here."
    assert [text[p:].split()[0] for p in sentence_starts(text)] == ["It", "##", "Text"]


def test_sentence_units_follow_sentences_and_cut_long_ones() -> None:
    """Each ordinary sentence is one unit; a sentence over max_sentence_tokens is also chunked."""
    short = "Alpha beta gamma. Delta epsilon zeta eta. Theta iota."
    units = make_units(short, word_offsets(short), np.ones(9), chunk_size=4, unit="sentence")
    assert [short[u.start : u.end].strip() for u in units] == [
        "Alpha beta gamma.",
        "Delta epsilon zeta eta.",
        "Theta iota.",
    ]
    long = " ".join(["word"] * 40) + ". End here."
    units = make_units(long, word_offsets(long), np.ones(43), chunk_size=8, unit="sentence", max_sentence_tokens=16)
    assert len(units) >= 5 and long[units[-1].start :].strip() == "End here."
    whole = make_units(long, word_offsets(long), np.ones(43), chunk_size=8, unit="sentence", max_sentence_tokens=41)
    assert [long[u.start : u.end].strip() for u in whole] == [" ".join(["word"] * 40) + ".", "End here."]
    with pytest.raises(ValueError, match="unit"):
        make_units(short, word_offsets(short), np.ones(9), unit="paragraph")


def test_sentence_unit_scores_are_means_of_their_tokens() -> None:
    """A sentence scores the mean of its tokens, so one strong sentence outranks the rest."""
    text = "A b c. D e f. G h i."
    scores = np.array([0, 0, 0, 3, 3, 3, 0, 0, 0], dtype=float)
    units = make_units(text, word_offsets(text), scores, chunk_size=32, unit="sentence")
    assert [u.score for u in units] == [0.0, 3.0, 0.0]


def test_lexical_scores_weight_rare_query_words() -> None:
    """Units holding the query's rarer content words score higher; stopwords and case do not count."""
    units = ["The river flows north.", "The city of Paris has a river.", "Nothing relevant here at all."]
    s = lexical_scores(units, "Which city has the river?")
    assert s[1] > s[0] > s[2] == 0.0
    assert content_words("The Rivers flowing") == {"river", "flow"}
    assert not lexical_scores(units, "the of and").any()


class _Colliding(str):
    """A word with a fixed hash: a set of them iterates in the order its words came, whatever PYTHONHASHSEED."""

    def __hash__(self) -> int:
        return 0


def test_lexical_scores_do_not_depend_on_set_order(monkeypatch: pytest.MonkeyPatch) -> None:
    """Units holding the same query words score bit-for-bit the same, in whatever order their word sets iterate.

    Summed in set order, equal bags (or bags with equal idfs) split by an ulp, which broke a tie in the
    percentile ranks differently under each PYTHONHASHSEED: the kept spans changed between processes.
    """
    monkeypatch.setattr(ranking, "content_words", lambda t: {_Colliding(w) for w in re.findall(r"\w+", t.lower())})
    words = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot"]
    shaping = [" ".join(words[:k]) for k in range(1, len(words))]  # each word its own document frequency
    s = lexical_scores([*shaping, " ".join(words), " ".join(reversed(words))], " ".join([*words, "golf", "hotel"]))
    assert s[-1] == s[-2]


def test_percentile_ranks_and_fusion() -> None:
    """Ranks are in [0, 1] with shared ties; fusion at weight 0 is the draft alone, at 1 the lexical order."""
    assert percentile_ranks(np.array([3.0, 1.0, 2.0])).tolist() == [1.0, 0.0, 0.5]
    assert percentile_ranks(np.array([1.0, 1.0, 5.0])).tolist() == [0.25, 0.25, 1.0]
    draft = np.array([0.9, 0.1, 0.5])
    lex = np.array([0.0, 2.0, 1.0])
    assert np.array_equal(fuse(draft, lex, 0.0), draft)
    assert np.argmax(fuse(draft, lex, 1.0)) == 1
    assert np.array_equal(fuse(draft, np.zeros(3), 0.5), draft)  # no overlap at all: the draft decides


def test_paragraph_ids_number_blank_line_blocks_across_documents() -> None:
    """Blank lines (spaces allowed on them) separate paragraphs; each document starts a new one."""
    a = "One. Two.\n\nThree.\n  \nFour."
    b = "Five.\nSix."  # no blank line: one paragraph
    starts_a = [0, 5, 11, 21]  # One / Two / Three / Four
    units = [Unit(0, s, s + 1, 0.0, (s + 1,)) for s in starts_a] + [Unit(1, 0, 1, 0.0, (1,)), Unit(1, 6, 7, 0.0, (7,))]
    assert paragraph_ids([a, b], units).tolist() == [0, 0, 1, 2, 3, 3]


def test_coarse_to_fine_lifts_the_neighbours_of_a_paragraphs_best_unit() -> None:
    """A unit in the paragraph of the best unit overtakes a slightly better lone unit elsewhere."""
    scores = np.array([0.9, 0.5, 0.6, 0.1, 0.0])
    groups = np.array([0, 0, 1, 1, 2])
    ranked = coarse_to_fine(scores, groups, 1.0)
    # ranks: 1.0, 0.5, 0.75, 0.25, 0.0; group bests: 1.0, 0.75, 0.0
    assert ranked.tolist() == pytest.approx([2.0, 1.5, 1.5, 1.0, 0.0])
    assert ranked[1] >= ranked[2] and scores[1] < scores[2]
    assert np.array_equal(coarse_to_fine(scores, groups, 0.0), scores)
    assert np.argsort(-coarse_to_fine(scores, np.arange(5), 1.0)).tolist() == np.argsort(-scores).tolist()


def test_coarse_to_fine_ranks_paragraphs_by_their_own_scores() -> None:
    """With paragraph scores, the paragraph that reads best as a whole comes first, not the one with the best unit."""
    scores = np.array([0.9, 0.1, 0.6, 0.5])
    groups = np.array([3, 3, 7, 7])  # ids need not be contiguous
    ranked = coarse_to_fine(scores, groups, 1.0, np.array([0.2, 0.8]))
    # unit ranks: 1, 0, 2/3, 1/3; paragraph ranks: 0 (id 3), 1 (id 7)
    assert ranked.tolist() == pytest.approx([1.0, 0.0, 5 / 3, 4 / 3])
    assert np.argsort(-ranked).tolist() == [2, 3, 0, 1]
    assert np.array_equal(coarse_to_fine(scores, groups, 0.0, np.array([0.2, 0.8])), scores)
    with pytest.raises(ValueError, match="group_scores has 3 entries for 2 groups"):
        coarse_to_fine(scores, groups, 1.0, np.array([0.2, 0.8, 0.1]))


def test_span_means_average_the_tokens_inside_each_span() -> None:
    offsets = np.array([(0, 3), (4, 7), (8, 11)])
    means = span_means(offsets, np.array([1.0, 2.0, 3.0]), [(0, 7), (8, 11), (20, 25), (4, 11)])
    assert means.tolist() == pytest.approx([1.5, 3.0, 0.0, 2.5])  # a span with no token scores 0
    assert span_means(offsets, np.array([1.0, 2.0, 3.0]), []).shape == (0,)
    assert span_means(np.zeros((0, 2)), np.zeros(0), [(0, 4)]).tolist() == [0.0]


def test_paragraph_spans_cover_each_paragraphs_units() -> None:
    units = [Unit(0, 0, 5, 0.0, (5,)), Unit(0, 5, 9, 0.0, (9,)), Unit(0, 11, 20, 0.0, (20,)), Unit(1, 0, 4, 0.0, (4,))]
    assert paragraph_spans(units, np.array([0, 0, 1, 2])) == [(0, 0, 9), (0, 11, 20), (1, 0, 4)]


def test_paragraph_score_mean_prefers_the_paragraph_that_answers_as_a_whole(tiny_llama_draft: DraftModel) -> None:
    """Read as one unit, the paragraph holding every query word beats the paragraph of the single best sentence."""
    whole = "Ships sailed to zanzibar. Its harbour was busy. Fishermen sold eels there. Gulls nested on roofs."
    lone = "The zanzibar harbour museum opened later."
    context = (
        make_text(600, seed=47)
        + "\n\n"
        + whole
        + "\n\n"
        + make_text(40, seed=48).strip().rstrip(".")
        + ". "
        + lone
        + "\n\n"
    )
    context += make_text(600, seed=49)
    q = "zanzibar harbour eels gulls"
    budget = len(whole.split()) + 3

    def run(paragraph_score: str) -> str:
        cfg = CompressionConfig(lexical_weight=1.0).with_experimental(paragraph_score=paragraph_score)  # type: ignore[arg-type]
        r = PromptCompressor(tiny_llama_draft, target=lambda t: len(t.split()), config=cfg).compress(
            context, q, max_tokens=budget
        )
        assert r.compressed_tokens <= r.budget_tokens
        return r.text

    by_mean = run("mean")
    assert whole in by_mean and lone not in by_mean
    assert lone in run("best_unit")  # the best single sentence's paragraph comes first


def test_paragraph_prior_keeps_the_best_paragraph_whole(tiny_llama_draft: DraftModel) -> None:
    """With the paragraph prior the sentences around the matching one come along; without it, they do not."""
    needle = "The zanzibar harbour opened in 1888."
    para = f"Ships came from far away. Fishermen sold eels there. {needle} Gulls nested on its roof."
    context = make_text(900, seed=45) + "\n\n" + para + "\n\n" + make_text(900, seed=46)
    q = "When did the zanzibar harbour open?"  # no word of it in the filler: the other units tie
    budget = len(para.split()) + 20

    def run(weight: float) -> str:
        cfg = CompressionConfig(lexical_weight=1.0, paragraph_weight=weight)  # lexical only: no random draft votes
        r = PromptCompressor(tiny_llama_draft, target=lambda t: len(t.split()), config=cfg).compress(
            context, q, max_tokens=budget
        )
        assert r.compressed_tokens <= r.budget_tokens
        return r.text

    assert para in run(1.0)  # the whole paragraph, not just the needle sentence
    alone = run(0.0)
    assert needle in alone and para not in alone
