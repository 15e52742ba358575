"""Beyond the paper: sentence units, idf query-word overlap fused with the draft, global-attention layers."""

from __future__ import annotations

import re

import numpy as np
import pytest
from helpers import make_text

from crossprefill_agents import CompressionConfig, DraftModel, PromptCompressor
from crossprefill_agents._text import sentence_starts
from crossprefill_agents.lexical import content_words, fuse, lexical_scores, percentile_ranks
from crossprefill_agents.selection import make_units


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


def test_percentile_ranks_and_fusion() -> None:
    """Ranks are in [0, 1] with shared ties; fusion at weight 0 is the draft alone, at 1 the lexical order."""
    assert percentile_ranks(np.array([3.0, 1.0, 2.0])).tolist() == [1.0, 0.0, 0.5]
    assert percentile_ranks(np.array([1.0, 1.0, 5.0])).tolist() == [0.25, 0.25, 1.0]
    draft = np.array([0.9, 0.1, 0.5])
    lex = np.array([0.0, 2.0, 1.0])
    assert np.array_equal(fuse(draft, lex, 0.0), draft)
    assert np.argmax(fuse(draft, lex, 1.0)) == 1
    assert np.array_equal(fuse(draft, np.zeros(3), 0.5), draft)  # no overlap at all: the draft decides


def test_config_validates_the_new_knobs() -> None:
    """unit, lexical_weight and attention_layers are checked like every other knob."""
    with pytest.raises(ValueError, match="unit"):
        CompressionConfig(unit="word")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="lexical_weight"):
        CompressionConfig(lexical_weight=1.5)
    with pytest.raises(ValueError, match="attention_layers"):
        CompressionConfig(attention_layers="sliding")  # type: ignore[arg-type]


def test_global_layers_are_the_full_attention_layers(tiny_gemma_draft: DraftModel, tiny_llama_draft) -> None:  # type: ignore[no-untyped-def]
    """Gemma-3's full-attention layers are found from its config; a model without sliding layers has none apart."""
    assert tiny_gemma_draft.global_layers == (2,)
    assert tiny_llama_draft.global_layers is None
    context = make_text(600, seed=40)
    all_layers = tiny_gemma_draft.score([context], "q", config=CompressionConfig())
    glob = tiny_gemma_draft.score([context], "q", config=CompressionConfig(attention_layers="global"))
    assert not np.allclose(all_layers.scores[0], glob.scores[0])
    # sliding layers (window 16) can only vote for the last tokens: with them gone, the tail loses its pull
    n = len(glob.scores[0])
    assert glob.scores[0][n - 8 :].mean() <= all_layers.scores[0][n - 8 :].mean()


def test_sentence_units_with_lexical_fusion_keep_the_matching_sentence(tiny_llama_draft: DraftModel) -> None:
    """With lexical fusion, a sentence naming the question's rare words survives a small keep rate."""
    needle = "The zanzibar passkey is 55555."
    context = make_text(700, seed=41) + " " + needle + " " + make_text(700, seed=42)
    cfg = CompressionConfig(unit="sentence", lexical_weight=0.5)
    r = PromptCompressor(tiny_llama_draft, target=lambda t: len(t.split()), config=cfg).compress(
        context, "What is the zanzibar passkey?", keep_rate=0.05
    )
    assert "zanzibar passkey is 55555" in r.text
    assert r.compressed_tokens <= r.budget_tokens
