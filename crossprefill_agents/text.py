"""Plain-text helpers: safe strings for tokenizers, word boundaries, sentence starts, content words.

Pure functions on strings; every layer above uses them.
"""

from __future__ import annotations

import re

__all__ = ["content_words", "is_word_boundary", "is_word_start", "sanitize", "sentence_starts"]

_SURROGATE = re.compile("[\ud800-\udfff]")


def sanitize(text: str) -> str:
    """Replace lone surrogates by U+FFFD, one character for one, so character offsets stay valid.

    Tokenizers written in Rust cannot take a Python string that holds a lone surrogate.
    """
    return _SURROGATE.sub("\ufffd", text)


def is_word_boundary(text: str, pos: int) -> bool:
    """True when cutting ``text`` at ``pos`` splits no word (an end, or whitespace on one side)."""
    return pos <= 0 or pos >= len(text) or text[pos - 1].isspace() or text[pos].isspace()


def is_word_start(text: str, pos: int) -> bool:
    """True at a word's first character (whitespace before, none at ``pos``), or at either end of ``text``.

    Cutting a text into pieces at word starts leaves the whitespace with the piece before it.
    """
    return pos <= 0 or pos >= len(text) or (text[pos - 1].isspace() and not text[pos].isspace())


_SENTENCE_END = re.compile(r"(?<=[.!?。！？])[\"'”’)\]]*\s+|\n\s*")
_WORD_BEFORE = re.compile(r"(\w+)\.$")
# Words that end with a period without ending a sentence (initials are handled apart).
_ABBREVIATIONS = frozenset(
    """mr mrs ms dr st jr sr prof rev gen col lt sgt capt cmdr adm gov sen rep mt ft no vs etc al inc ltd co corp
    dept univ jan feb mar apr jun jul aug sep sept oct nov dec approx est fig vol ed eds pp""".split()
)


def _ends_sentence(text: str, punct_end: int, next_start: int) -> bool:
    """Whether the punctuation ending at ``punct_end`` closes the sentence before ``next_start``."""
    if text[next_start].islower():  # a sentence does not start in lower case: "approx. five", "e.g. this"
        return False
    if text[punct_end - 1] != ".":
        return True
    m = _WORD_BEFORE.search(text, max(0, punct_end - 40), punct_end)
    if m is None:
        return True
    word = m.group(1)
    if len(word) == 1 and word.isalpha() and word.isupper():  # an initial: "J. K. Rowling"
        return False
    return word.lower() not in _ABBREVIATIONS


def _is_heading(line: str) -> bool:
    """A short line without closing punctuation, such as a title: it belongs with the line after it."""
    stripped = line.strip()
    return 0 < len(stripped.split()) <= 12 and stripped[-1] not in ".!?:;,。！？"


def sentence_starts(text: str) -> list[int]:
    """Character positions where a sentence or a line starts.

    A sentence ends at ``.!?`` (then closing quotes or brackets) followed by whitespace,
    except after an initial or a common abbreviation, or before a lower-case word. A line
    break ends one too, except after a heading-like line (short, no closing punctuation)
    followed directly by the next line: a title stays with the sentence it introduces.
    """
    starts = []
    for m in _SENTENCE_END.finditer(text):
        p = m.end()
        if not 0 < p < len(text):
            continue
        if "\n" in m.group():
            line = text[text.rfind("\n", 0, m.start()) + 1 : m.start()]
            if m.group().count("\n") == 1 and _is_heading(line):
                continue
            starts.append(p)
        elif _ends_sentence(text, m.start(), p):
            starts.append(p)
    return starts


_WORD = re.compile(r"\w+", re.UNICODE)
_STOP = frozenset(
    """a an the and or but if then else of in on at to for from by with about as into over under after before
    between through during without within is are was were be been being am do does did doing have has had having
    it its this that these those there here what which who whom whose when where why how i you he she we they
    me him her us them my your his our their not no nor so than too very can could will would shall should may
    might must just also only any all each some such own same other more most few both one many much""".split()
)


def _stem(word: str) -> str:
    for suffix in ("ies", "es", "s", "ing", "ed"):
        if len(word) > len(suffix) + 3 and word.endswith(suffix):
            return word[: -len(suffix)]
    return word


def content_words(text: str) -> set[str]:
    """Lower-cased, crudely stemmed words of ``text`` that are not stopwords."""
    return {_stem(w) for w in (m.group().lower() for m in _WORD.finditer(text)) if w not in _STOP}
