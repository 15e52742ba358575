"""Map a token-dropping compressor's output back onto character spans of the original text.

LLMLingua and LongLLMLingua return the compressed prompt as text decoded from the draft
tokens they kept, in order (with ``reorder_context="original"``). Dropping sub-word tokens
leaves fragments of words ("Harr" for "Harrington") and sometimes glues the pieces of two
words together ("Patriciaon" from "Patricia Heaton"), so the alignment runs in two passes:

1. **Anchors.** ``difflib.SequenceMatcher`` (no junk heuristic) finds the matching blocks
   between the two whitespace-separated word sequences; runs of at least three identical
   words anchor the alignment. Anchors are monotone, so whatever is wrong in the second
   pass stays between two right anchors.
2. **Gaps.** Between two anchors, the leftover compressed words are matched character by
   character (``SequenceMatcher`` again) against the original text of the same gap; blocks
   of at least two characters are kept. The kept spans are the matched characters only:
   a word LLMLingua cut to "Harr" keeps "Harr" of "Harrington", not the whole word.

Compressed characters that neither pass places are counted as unaligned, so
:attr:`Alignment.aligned_fraction` says how much of the compressed text the spans account
for (1.0 means every non-space character was mapped back).

Measured against ground truth (SmolLM2 tokens of real examples dropped at random, a
harsher pattern than LLMLingua's, plus 40% of the documents dropped whole; 2k-token
contexts, 3 examples each of HotpotQA, SQuAD and key-value needles): keeping 60% of the
tokens, 98-99% of the mapped characters are right and 95-97% of the kept characters are
found; keeping 30%, 92-95% and 79-90%. On real output (LLMLingua and LongLLMLingua, keep
rate 0.3, 2k-token contexts, 3 HotpotQA and 1 key-value example) 95-100% of the compressed
characters were mapped back. Aligning an 8k-token context takes 0.2-0.5 s.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass

__all__ = ["Alignment", "align_compressed"]

Span = tuple[int, int]
_WORD = re.compile(r"\S+")
_MIN_ANCHOR = 3  # runs of identical words shorter than this do not anchor (a lone "the" may be anyone's)
_MIN_BLOCK = 2  # character blocks in a gap shorter than this are not trusted


@dataclass(frozen=True)
class Alignment:
    """Where a compressed text's words came from in the original."""

    spans: tuple[Span, ...]  # merged, ordered character spans of the original that the compressed text kept
    aligned_chars: int  # non-space characters of the compressed text mapped onto the original
    compressed_chars: int  # non-space characters of the compressed text

    @property
    def aligned_fraction(self) -> float:
        """Share of the compressed text's non-space characters that were mapped back (1.0 for an empty text)."""
        return self.aligned_chars / self.compressed_chars if self.compressed_chars else 1.0


def _words(text: str) -> tuple[list[str], list[Span]]:
    matches = list(_WORD.finditer(text))
    return [m.group() for m in matches], [m.span() for m in matches]


def _merge(text: str, spans: list[Span]) -> tuple[Span, ...]:
    out: list[list[int]] = []
    for s, e in sorted(spans):
        if out and (s <= out[-1][1] or not text[out[-1][1] : s].strip()):
            out[-1][1] = max(out[-1][1], e)
        else:
            out.append([s, e])
    return tuple((s, e) for s, e in out)


def _gap_spans(original: str, lo: int, hi: int, leftover: str) -> tuple[list[Span], int]:
    """Character blocks of ``leftover`` found in order in ``original[lo:hi]``, and how many characters they cover."""
    if not leftover.strip() or hi <= lo:
        return [], 0
    matcher = difflib.SequenceMatcher(None, original[lo:hi], leftover, autojunk=False)
    spans, covered = [], 0
    for a, b, size in matcher.get_matching_blocks():
        piece = leftover[b : b + size]
        if size >= _MIN_BLOCK and piece.strip():
            spans.append((lo + a, lo + a + size))
            covered += sum(not c.isspace() for c in piece)
    return spans, covered


def align_compressed(original: str, compressed: str) -> Alignment:
    """Character spans of ``original`` that ``compressed`` (an in-order, token-dropped copy) kept."""
    o_words, o_spans = _words(original)
    c_words, _ = _words(compressed)
    total = sum(len(w) for w in c_words)
    matcher = difflib.SequenceMatcher(None, o_words, c_words, autojunk=False)
    blocks = [b for b in matcher.get_matching_blocks() if b.size >= _MIN_ANCHOR or b.size == 0]
    kept: list[Span] = []
    aligned = 0
    prev_i, prev_j = 0, 0
    for i, j, size in blocks:
        lo = o_spans[prev_i - 1][1] if prev_i else 0
        hi = o_spans[i][0] if i < len(o_spans) else len(original)
        spans, covered = _gap_spans(original, lo, hi, " ".join(c_words[prev_j:j]))
        kept += spans
        aligned += covered
        for k in range(size):
            kept.append(o_spans[i + k])
            aligned += len(c_words[j + k])
        prev_i, prev_j = i + size, j + size
    return Alignment(_merge(original, kept), aligned, total)
