"""Small text helpers shared by the draft, the selection and the target counters."""

from __future__ import annotations

import re

__all__ = ["is_word_boundary", "sanitize"]

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


def sentence_starts(text: str) -> list[int]:
    """Character positions where a sentence or a line starts (after ``.!?`` + space, or a newline)."""
    return [m.end() for m in _SENTENCE_END.finditer(text) if 0 < m.end() < len(text)]
