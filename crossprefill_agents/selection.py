"""Units + priority + a budget in target tokens -> kept character spans and the text for the target.

Units are taken in priority order until the budget is met, the last one possibly in part
(up to one of its cuts). The budget is closed on the target's real tokenizer: the rendered
text is counted, not estimated, and the largest selection whose count fits is kept.
Protected spans (matches of the user's patterns) are always kept.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from .config import CompressionConfig, bounded_pattern
from .results import DraftTimeoutError, Span
from .structure import PROSE, JSONNode, Layout, layout_of, line_spans
from .text import is_word_boundary
from .units import Unit

__all__ = [
    "Rendering",
    "Selection",
    "layout_for",
    "merge_spans",
    "protected_spans",
    "render",
    "render_layout",
    "render_spans",
    "select",
    "trim_spans",
]

logger = logging.getLogger(__name__)

# After the longest fitting prefix of the priority order: while more than FILL_SLACK of the budget is unused, up
# to FILL_TRIES of the next FILL_SCAN units are tried whole (whole lines and JSON values cannot be cut to fit).
FILL_SLACK = 0.03
FILL_TRIES = 16
FILL_SCAN = 256


@dataclass(frozen=True)
class Selection:
    """What is kept of each document."""

    spans: tuple[tuple[Span, ...], ...]  # per document: merged, ordered, whitespace-trimmed spans
    texts: tuple[str, ...]  # per document: kept spans joined by the delimiter
    tokens: tuple[int, ...]  # per document: target tokens of ``texts``
    budget: int
    protected_over_budget: bool  # the protected spans alone exceed the budget (they are kept anyway)
    paths: tuple[tuple[str, ...], ...] = ()  # per document: JSON paths of the kept values (empty for text)


def protected_spans(text: str, patterns: Sequence[re.Pattern[str]], *, deadline: float | None = None) -> list[Span]:
    """Spans of every non-empty match of the ``protect`` patterns, widened to whole words.

    ``deadline`` (a ``time.monotonic()``): the matching runs in a worker thread with the `regex` module
    (:func:`~crossprefill_agents.config.bounded_pattern`, which releases the GIL), and
    :class:`~crossprefill_agents.results.DraftTimeoutError` is raised once the deadline passes, whatever a
    pattern's backtracking would have cost. ``None``: matched here with ``re``, unbounded.
    """
    if not patterns:
        return []
    if deadline is None:
        return _widen(text, [m.span() for pat in patterns for m in pat.finditer(text)])
    return _widen(text, _bounded_matches(text, patterns, deadline))


def _bounded_matches(text: str, patterns: Sequence[re.Pattern[str]], deadline: float) -> list[Span]:
    """The matches' spans, or DraftTimeoutError at ``deadline`` (the worker stops by its own CPU-time timeout)."""
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise DraftTimeoutError("no time left for the protect patterns within CompressionConfig.timeout_s")
    found: list[Span] = []
    failed: list[BaseException] = []

    def run() -> None:
        try:
            for pat in patterns:
                compiled = bounded_pattern(pat)
                found.extend(m.span() for m in compiled.finditer(text, timeout=remaining, concurrent=True))
        except BaseException as e:  # TimeoutError from regex, or anything else: reported in the caller's thread
            failed.append(e)

    worker = threading.Thread(target=run, name="crossprefill-protect", daemon=True)
    worker.start()
    worker.join(remaining)
    if worker.is_alive() or (failed and isinstance(failed[0], TimeoutError)):
        raise DraftTimeoutError(
            f"the protect patterns ran past CompressionConfig.timeout_s ({len(text)} characters, "
            f"{len(patterns)} pattern(s))"
        )
    if failed:
        raise failed[0]
    return found


def _widen(text: str, matches: Iterable[Span]) -> list[Span]:
    spans = []
    for s, e in matches:
        if e <= s:
            continue
        while s > 0 and not is_word_boundary(text, s):
            s -= 1
        while e < len(text) and not is_word_boundary(text, e):
            e += 1
        spans.append((s, e))
    return spans


def merge_spans(text: str, spans: Sequence[Span]) -> list[Span]:
    """Sort spans, merge those that overlap or are separated by whitespace only, trim whitespace edges."""
    merged: list[list[int]] = []
    for s, e in sorted(spans):
        if e <= s:
            continue
        if merged and (s <= merged[-1][1] or not text[merged[-1][1] : s].strip()):
            merged[-1][1] = max(merged[-1][1], e)
        else:
            merged.append([s, e])
    return trim_spans(text, [(s, e) for s, e in merged])


def trim_spans(text: str, spans: Iterable[Span]) -> list[Span]:
    """Each span without the whitespace at its edges; spans left empty are dropped."""
    out = []
    for s, e in spans:
        while s < e and text[s].isspace():
            s += 1
        while e > s and text[e - 1].isspace():
            e -= 1
        if e > s:
            out.append((s, e))
    return out


def render(text: str, spans: Sequence[Span], delimiter: str) -> str:
    """The kept text: each span's slice of ``text``, joined by ``delimiter``."""
    return delimiter.join(text[s:e] for s, e in spans)


def select(
    texts: Sequence[str],
    units: Sequence[Unit],
    priority: Sequence[float] | np.ndarray,
    protected: Sequence[Sequence[Span]],
    *,
    budget: int,
    count: Callable[[str], int],
    delimiter: str,
    layouts: Sequence[Layout] | None = None,
) -> Selection:
    """Keep the best units of all documents within ``budget`` target tokens in total.

    ``priority`` ``(units,)`` orders the units (higher first; ties by document, then position).
    Units are added in that order, cut by cut (so the last unit may be kept in part); the
    number of target tokens of the rendered documents is counted with ``count`` and the
    longest prefix of that order whose count fits the budget is kept (binary search). While
    more than 3% of the budget is left, the next units that fit whole are added (:data:`FILL_SLACK`).
    Protected spans (and each layout's required spans) are always kept, even when they alone
    exceed the budget. Each document is rendered as its layout says (:func:`render_layout`;
    prose when ``layouts`` is None).
    """
    if len(priority) != len(units):
        raise ValueError(f"priority has {len(priority)} entries for {len(units)} units")
    rank_of = np.asarray(priority, dtype=np.float64).tolist()
    order = sorted(range(len(units)), key=lambda i: (-rank_of[i], units[i].doc, units[i].start))
    step_unit = np.array([i for i in order for _ in units[i].cuts], dtype=np.int64)  # (steps,)
    step_cut = np.array([c for i in order for c in units[i].cuts], dtype=np.int64)  # (steps,)
    step_rank = np.array([r for r, i in enumerate(order) for _ in units[i].cuts], dtype=np.int64)

    shapes = list(layouts) if layouts is not None else [PROSE] * len(texts)
    fixed = [[*p, *shape.required] for p, shape in zip(protected, shapes, strict=True)]

    def spans_at(s: int) -> list[list[Span]]:
        per_doc: list[list[Span]] = [list(p) for p in fixed]
        if s > 0:
            rank = int(step_rank[s - 1])
            for i in order[:rank]:
                per_doc[units[i].doc].append((units[i].start, units[i].end))
            u = units[int(step_unit[s - 1])]
            per_doc[u.doc].append((u.start, int(step_cut[s - 1])))
        return per_doc

    def build(s: int) -> tuple[list[Rendering], list[int]]:
        per_doc = spans_at(s)
        rendered = [render_layout(t, sp, shape, delimiter) for t, sp, shape in zip(texts, per_doc, shapes, strict=True)]
        return rendered, [count(r.text) if r.text else 0 for r in rendered]

    def fill(s: int, rendered: list[Rendering], tokens: list[int]) -> tuple[list[Rendering], list[int]]:
        """After the longest fitting prefix of the order, the next units that fit whole: a unit that cannot be cut
        (a line, a JSON value) would otherwise leave up to its own size of the budget unused."""
        if s >= len(step_cut) or budget - sum(tokens) <= FILL_SLACK * budget:
            return rendered, tokens
        per_doc = spans_at(s)
        tries = 0
        first = int(step_rank[s - 1]) + 1 if s > 0 else 0
        for i in order[first : first + FILL_SCAN]:
            u, slack = units[i], budget - sum(tokens)
            if count(texts[u.doc][u.start : u.end]) > slack:
                continue  # cannot fit, whatever its rendering: no render needed
            trial = [*per_doc[u.doc], (u.start, u.end)]
            r = render_layout(texts[u.doc], trial, shapes[u.doc], delimiter)
            n = count(r.text) if r.text else 0
            if n - tokens[u.doc] <= slack:
                per_doc[u.doc], rendered[u.doc], tokens[u.doc] = trial, r, n
                if budget - sum(tokens) <= FILL_SLACK * budget:
                    break
            tries += 1
            if tries >= FILL_TRIES:
                break
        return rendered, tokens

    lo_rendered, lo_tokens = build(0)
    over = sum(lo_tokens) > budget
    if over:
        logger.warning(
            "protected spans alone take %d target tokens, over the budget of %d; they are kept anyway",
            sum(lo_tokens),
            budget,
        )
    else:
        lo, hi = 0, len(step_cut)  # invariant: build(lo) fits
        while lo < hi:
            mid = (lo + hi + 1) // 2
            rendered, tokens = build(mid)
            if sum(tokens) <= budget:
                lo, lo_rendered, lo_tokens = mid, rendered, tokens
            else:
                hi = mid - 1
        lo_rendered, lo_tokens = fill(lo, list(lo_rendered), list(lo_tokens))
    return Selection(
        spans=tuple(r.spans for r in lo_rendered),
        texts=tuple(r.text for r in lo_rendered),
        tokens=tuple(lo_tokens),
        budget=budget,
        protected_over_budget=over,
        paths=tuple(r.paths for r in lo_rendered),
    )


@dataclass(frozen=True)
class Rendering:
    """One document's kept spans and the text they render to."""

    spans: tuple[Span, ...]  # merged, ordered; for JSON the kept values (keys included)
    text: str
    paths: tuple[str, ...] = ()  # JSON: the paths of the kept values


def layout_for(text: str, config: CompressionConfig) -> Layout:
    """The layout ``config`` gives ``text`` (``structure``; JSON values up to ~max_sentence_tokens are units)."""
    return layout_of(text, structure=config.structure, max_unit_chars=4 * config.experimental.max_sentence_tokens)


def render_spans(text: str, spans: Sequence[Span], config: CompressionConfig) -> str:
    """What ``spans`` of ``text`` render to under ``config``: the text a compression keeping them sends."""
    return render_layout(text, spans, layout_for(text, config), config.delimiter).text


def render_layout(text: str, spans: Sequence[Span], layout: Layout, delimiter: str) -> Rendering:
    """Render kept ``spans`` of ``text`` the way its layout needs.

    Prose: the merged spans joined by ``delimiter``. Lines: whole lines kept on their own lines (with their
    indentation), each run of dropped lines one line holding the delimiter's text, pieces of a cut line joined
    by ``delimiter``. JSON: valid JSON holding the kept values under their keys, a dropped run of array
    elements counted in one ``"... N more items"`` element at the array's end.
    """
    if layout.kind == "json" and layout.tree is not None:
        return _render_json(text, spans, layout)
    merged = tuple(merge_spans(text, spans))
    if layout.kind == "lines":
        return Rendering(merged, _render_lines(text, merged, delimiter))
    return Rendering(merged, render(text, merged, delimiter))


def _render_lines(text: str, spans: Sequence[Span], delimiter: str) -> str:
    gap_line = delimiter.strip() or "[...]"
    newline = "\r\n" if "\r\n" in text else "\n"
    out: list[str] = []
    gap = blank = False
    k = 0  # first span that may reach the current line
    for ls, le in line_spans(text):
        if not text[ls:le].strip():
            blank = True
            continue
        while k < len(spans) and spans[k][1] <= ls:
            k += 1
        pieces = [(max(s, ls), min(e, le)) for s, e in spans[k:] if s < le and e > ls]
        pieces = trim_spans(text, pieces)
        if not pieces:
            gap, blank = True, False
            continue
        if gap or (not out and _has_text_before(text, ls)):
            out.append(gap_line)
        elif blank and out:
            out.append("")
        gap = blank = False
        indent = text[ls:le][: len(text[ls:le]) - len(text[ls:le].lstrip())]
        line = delimiter.join(text[a:b] for a, b in pieces)
        if pieces[0][0] > ls + len(indent):
            line = delimiter.lstrip() + line
        if pieces[-1][1] < le - (len(text[ls:le]) - len(text[ls:le].rstrip())):
            line += delimiter.rstrip()
        out.append(indent + line)
    if gap and out:
        out.append(gap_line)
    return newline.join(out)


def _has_text_before(text: str, pos: int) -> bool:
    return bool(text[:pos].strip())


def _render_json(text: str, spans: Sequence[Span], layout: Layout) -> Rendering:
    kept_ids = {
        id(leaf) for leaf in layout.leaves if any(s < leaf.end and e > leaf.member_start for s, e in spans if e > s)
    }

    def emit(node: JSONNode) -> str | None:
        if id(node) in kept_ids:
            return text[node.start : node.end]
        if node.kind == "scalar" or not node.children:
            return None
        parts, dropped = [], 0
        for child in node.children:
            body = emit(child)
            if body is None:
                dropped += 1
            elif child.key is not None:
                parts.append(f"{text[child.key[0] : child.key[1]]}: {body}")
            else:
                parts.append(body)
        if not parts:
            return None
        if node.kind == "array" and dropped:
            parts.append(json.dumps(f"... {dropped} more items"))
        return ("{" if node.kind == "object" else "[") + ", ".join(parts) + ("}" if node.kind == "object" else "]")

    tree = layout.tree
    assert tree is not None
    body = emit(tree)
    if body is None:
        empty = tree.kind == "array" and tree.children
        body = (
            f"[{json.dumps(f'... {len(tree.children)} more items')}]"
            if empty
            else ("{}" if tree.kind == "object" else "[]")
        )
    kept = [leaf for leaf in layout.leaves if id(leaf) in kept_ids]
    return Rendering(tuple((leaf.member_start, leaf.end) for leaf in kept), body, tuple(leaf.path for leaf in kept))
