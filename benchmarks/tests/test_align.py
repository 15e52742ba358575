"""Mapping a token-dropped copy of a text back onto character spans of the original (LLMLingua's output).

Ground truth comes from dropping words (or sub-word pieces) ourselves, so we know which characters survived.
The LLMLingua worker itself runs in another virtualenv and is not exercised here.
"""

from __future__ import annotations

import itertools
import random
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from benchmarks.peers.align import Alignment, align_compressed
from benchmarks.peers.llmlingua import LLMLinguaPeer, PeerError, PeerRequest, default_model_dir

_FUNCTION_WORDS = "the of and a to in was his that for on with as by from at which an were also their".split()


def _content_words() -> list[str]:
    """About 400 made-up words of 2-4 shared syllables: many near-duplicates, as in real text."""
    rng = random.Random(0)
    syllables = "ba ko ri stan mel vor den tha qui lo mar sen pel ra gu fen dor lis".split()
    return sorted({"".join(rng.choice(syllables) for _ in range(rng.randint(2, 4))) for _ in range(400)})


_CONTENT_WORDS = _content_words()


def _text(n_words: int, seed: int) -> str:
    """Text with function words 40% of the time (so short runs repeat), stops and the odd paragraph break."""
    rng = random.Random(seed)
    out = []
    for _ in range(n_words):
        word = rng.choice(_FUNCTION_WORDS) if rng.random() < 0.4 else rng.choice(_CONTENT_WORDS)
        out.append(word + ("." if rng.random() < 0.1 else ""))
        out.append("\n\n" if rng.random() < 0.02 else " ")
    return "".join(out).strip()


def _drop_words(text: str, keep: float, seed: int) -> tuple[str, set[int]]:
    """Keep each word with probability ``keep``; the compressed text and the kept characters of ``text``."""
    rng = random.Random(seed)
    kept = [m for m in re.finditer(r"\S+", text) if rng.random() < keep]
    return " ".join(m.group() for m in kept), {i for m in kept for i in range(*m.span())}


def _drop_pieces(text: str, keep: float, seed: int) -> tuple[str, set[int]]:
    """Cut each word into sub-word pieces of 2-4 characters (the first carries the space before it, as BPE tokens
    do) and keep each piece with probability ``keep``, gluing the kept pieces together as a decoder would."""
    rng = random.Random(seed)
    pieces = []
    for m in re.finditer(r"\s*\S+", text):
        s, e = m.span()
        p = s + len(m.group()) - len(m.group().lstrip())
        cuts = [s]
        while e - p > 4:
            p += rng.randint(2, 4)
            cuts.append(min(p, e))
        cuts.append(e)
        pieces += [(a, b) for a, b in itertools.pairwise(sorted(set(cuts)))]
    kept = [(a, b) for a, b in pieces if rng.random() < keep]
    truth = {i for a, b in kept for i in range(a, b) if not text[i].isspace()}
    return "".join(text[a:b] for a, b in kept), truth


def _chars(text: str, spans: tuple[tuple[int, int], ...]) -> set[int]:
    return {i for s, e in spans for i in range(s, e) if not text[i].isspace()}


def _check_structure(original: str, compressed: str, a: Alignment) -> None:
    assert all(0 <= s < e <= len(original) for s, e in a.spans)
    for (_, e1), (s2, _) in itertools.pairwise(a.spans):
        assert e1 < s2 and original[e1:s2].strip()  # ordered, and merged across whitespace-only gaps
    assert a.compressed_chars == sum(not c.isspace() for c in compressed)
    assert 0 <= a.aligned_chars <= a.compressed_chars
    assert 0.0 <= a.aligned_fraction <= 1.0


# --------------------------------------------------------------------------- against ground truth
@pytest.mark.parametrize(("keep", "floor"), [(0.8, 0.97), (0.6, 0.95), (0.3, 0.9)])
@pytest.mark.parametrize("seed", range(3))
def test_word_drops_map_back_to_the_kept_words(keep: float, floor: float, seed: int) -> None:
    """With whole words dropped, the spans are valid and ordered, nearly all their characters are kept words'
    (precision) and nearly all kept words' characters are in them (recall); the harsher the drop, the lower the bar."""
    original = _text(400, seed)
    compressed, truth = _drop_words(original, keep, seed + 100)
    a = align_compressed(original, compressed)
    _check_structure(original, compressed, a)
    got = _chars(original, a.spans)
    assert len(got & truth) / len(got) >= floor
    assert len(got & truth) / len(truth) >= floor
    assert a.aligned_fraction >= floor


@pytest.mark.parametrize(("keep", "floor"), [(0.9, 0.97), (0.6, 0.9)])
def test_subword_drops_map_back_to_the_kept_fragments(keep: float, floor: float) -> None:
    """With sub-word pieces dropped and glued, most mapped characters are right and most kept ones are found."""
    original = _text(400, 5)
    compressed, truth = _drop_pieces(original, keep, 6)
    a = align_compressed(original, compressed)
    _check_structure(original, compressed, a)
    got = _chars(original, a.spans)
    assert len(got & truth) / len(got) >= floor
    assert len(got & truth) / len(truth) >= floor


def test_word_fragments_keep_only_their_characters() -> None:
    """A word cut to a prefix maps to that prefix only; a word glued from two ("Patriciaon") maps to both pieces."""
    original = "Alice met Bob Harrington at the old station near the river yesterday morning before the train left."
    compressed = "Alice met Bob Harr at the old station near river yesterday morning before the train"
    a = align_compressed(original, compressed)
    kept = [original[s:e] for s, e in a.spans]
    assert kept[0] == "Alice met Bob Harr"  # "ington" is not claimed
    assert "ington" not in "".join(kept) and "left" not in "".join(kept)
    assert a.aligned_fraction == 1.0

    original = "The actress Patricia Heaton played Debra Barone opposite Ray Romano for nine seasons on the network."
    compressed = "The actress Patriciaon played Debra Barone opposite Ray Romano for nine seasons"
    a = align_compressed(original, compressed)
    heaton = original.index("Heaton")
    covered = _chars(original, a.spans)
    assert set(range(original.index("Patricia"), original.index("Patricia") + 8)) <= covered
    assert {heaton + 4, heaton + 5} <= covered and heaton not in covered  # "on" of "Heaton", not "Heat"
    assert a.aligned_fraction == 1.0


def test_identity_and_empty() -> None:
    """The text itself maps to one span of all of it; an empty compressed text maps to nothing, fully aligned."""
    original = "  Some text.\n\nWith a second paragraph here.  "
    a = align_compressed(original, original)
    assert a.spans == ((2, len(original) - 2),)
    assert a.aligned_chars == a.compressed_chars == sum(not c.isspace() for c in original)
    empty = align_compressed(original, "")
    assert (empty.spans, empty.aligned_chars, empty.compressed_chars, empty.aligned_fraction) == ((), 0, 0, 1.0)
    assert align_compressed("", "words that are not there").spans == ()


def test_unrelated_text_is_not_aligned() -> None:
    """Compressed text that shares nothing with the original maps to no spans and an aligned fraction of zero."""
    a = align_compressed("alpha beta gamma delta", "xyz qqq")
    assert a.spans == () and a.aligned_fraction == 0.0


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.sampled_from(["ab", "abc", "b", "the", "é", "漢字", ".", "\n", "  "]), max_size=40),
    st.lists(st.sampled_from(["ab", "abc", "b", "the", "é", "x", " ", "\n"]), max_size=25),
)
def test_any_input_gives_well_formed_spans(original_parts: list[str], compressed_parts: list[str]) -> None:
    """Whatever the two texts (even one that is no subsequence of the other), the alignment is well formed."""
    original = " ".join(original_parts)
    compressed = " ".join(compressed_parts)
    _check_structure(original, compressed, align_compressed(original, compressed))


# --------------------------------------------------------------------------- the peer's pure parts
def test_peer_request_contexts_are_its_documents() -> None:
    """A request's contexts are its documents' texts, or the whole context when it names none."""
    context = "Title: A\nFirst.\n\nTitle: B\nSecond."
    docs = ((0, 15), (17, len(context)))
    assert PeerRequest("x", context, "q", 0.5, "llmlingua", docs).contexts() == [
        "Title: A\nFirst.",
        "Title: B\nSecond.",
    ]
    assert PeerRequest("x", context, "q", 0.5, "longllmlingua").contexts() == [context]


def test_peer_reports_a_missing_environment_or_model(tmp_path: Path) -> None:
    """Without its interpreter or its converted model, the peer raises PeerError saying how to build it
    (before starting any worker)."""
    with pytest.raises(PeerError, match=r"setup_llmlingua\.sh"):
        LLMLinguaPeer(python=tmp_path / "no-python", model=tmp_path)
    python = tmp_path / "python"
    python.touch()
    with pytest.raises(PeerError, match=r"convert_draft_tf445\.py"):
        LLMLinguaPeer(python=python, model=tmp_path / "no-model")


def test_default_model_dir_follows_crossprefill_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The converted draft lives under $CROSSPREFILL_HOME/models when that is set."""
    monkeypatch.setenv("CROSSPREFILL_HOME", str(tmp_path))
    assert default_model_dir() == tmp_path / "models" / "smollm2-135m-tf445"
