"""Small text helpers shared by the benchmark data, metrics and baselines.

Everything here works on character offsets into the original string, so spans found by
one module (a supporting sentence, a kept unit) can be compared with spans of another.
The splitters are deliberately simple and deterministic: regular expressions, a short
abbreviation list and a crude suffix stripper, enough for English Wikipedia and essays.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable

from crossprefill_agents.selection import trim_spans

__all__ = [
    "STOPWORDS",
    "Span",
    "content_stems",
    "overlap_words",
    "sentence_spans",
    "stem",
    "word_spans",
    "words",
]

Span = tuple[int, int]

# Function words, question words and auxiliaries: they say nothing about which sentence answers.
STOPWORDS: frozenset[str] = frozenset(
    """
    a about above after again against all also am an and any are aren't as at be because been before being
    below between both but by can can't cannot could couldn't did didn't do does doesn't doing don't down
    during each few for from further had hadn't has hasn't have haven't having he he'd he'll he's her here
    here's hers herself him himself his how how's i i'd i'll i'm i've if in into is isn't it it's its itself
    let's me more most mustn't my myself no nor not of off on once only or other ought our ours ourselves out
    over own same shan't she she'd she'll she's should shouldn't so some such than that that's the their
    theirs them themselves then there there's these they they'd they'll they're they've this those through
    to too under until up very was wasn't we we'd we'll we're we've were weren't what what's when when's
    where where's which while who who's whom why why's with won't would wouldn't you you'd you'll you're
    you've your yours yourself yourselves s t will just may might must shall one many much name named
    """.split()
)

_WORD = re.compile(r"\w+(?:['’]\w+)*")
# A sentence ends at . ! ? (closing quotes or brackets may follow) before whitespace, or at a blank line.
_SENT_END = re.compile(r"[.!?]+[\"'”’)\]]*(?=\s)|\n[ \t]*\n")
_ABBREV = frozenset(
    "mr mrs ms dr prof st jr sr vs etc inc ltd co corp no vol fig e.g i.e u.s u.k a.m p.m mt ft gen col lt sgt".split()
)
_SUFFIXES = ("ingly", "edly", "ings", "ing", "ies", "ied", "ed", "es", "ly", "s")


def word_spans(text: str) -> list[Span]:
    """Character spans of the words (runs of letters and digits, inner apostrophes kept) of ``text``."""
    return [m.span() for m in _WORD.finditer(text)]


def words(text: str) -> list[str]:
    """The lowercased words of ``text``."""
    return [m.group().lower() for m in _WORD.finditer(text)]


def stem(word: str) -> str:
    """A crude suffix stripper: lowercased, possessive dropped, one common suffix removed.

    It matches "films" with "film" and "played" with "playing" (not "director" with
    "directed"): the benchmark needs a suffix-insensitive match, not a linguistic one.
    """
    w = word.lower().replace("’", "'")
    if w.endswith("'s"):
        w = w[:-2]
    for suf in _SUFFIXES:
        if w.endswith(suf) and len(w) - len(suf) >= 3:
            base = w[: -len(suf)]
            return base + "y" if suf in ("ies", "ied") else base
    return w


def content_stems(text: str) -> set[str]:
    """Stems of the words of ``text`` that are not stopwords."""
    return {stem(w) for w in words(text) if w not in STOPWORDS and w.replace("'", "") not in STOPWORDS}


def overlap_words(sentence: str, question: str) -> int:
    """How many distinct content words of ``question`` the ``sentence`` contains (suffix-insensitive)."""
    return len(content_stems(sentence) & content_stems(question))


def _is_abbreviation(text: str, end: int) -> bool:
    """True when the period ending at ``end`` closes an abbreviation or an initial, not a sentence."""
    if text[end - 1] != ".":
        return False
    start = end - 1
    while start > 0 and not text[start - 1].isspace() and text[start - 1] not in "(\"'“":
        start -= 1
    token = text[start : end - 1].lower()
    return token in _ABBREV or (len(token) == 1 and token.isalpha())


def sentence_spans(text: str, *, start: int = 0, end: int | None = None) -> list[Span]:
    """Sentences of ``text[start:end]`` as whitespace-trimmed spans of ``text``, in order.

    A sentence ends at ``.``, ``!`` or ``?`` (closing quotes and brackets included) followed by
    whitespace, or at a blank line; a period after a known abbreviation or a single-letter
    initial does not end one. Text without such boundaries comes back as one span.
    """
    end = len(text) if end is None else end
    cuts = [start]
    for m in _SENT_END.finditer(text, start, end):
        if m.group().startswith("\n"):
            cuts.append(m.start())
            cuts.append(m.end())
        elif not _is_abbreviation(text, m.end()):
            cuts.append(m.end())
    cuts.append(end)
    return _trimmed(text, itertools.pairwise(cuts))


def _trimmed(text: str, spans: Iterable[Span]) -> list[Span]:
    return trim_spans(text, spans)
