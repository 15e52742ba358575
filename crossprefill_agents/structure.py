"""What kind of text a context is, cheaply: JSON, line-oriented text (code, logs, tables, JSON lines) or prose.

Pure functions on strings. Tool outputs are mostly not prose: a JSON document must stay valid
JSON, and code or logs must keep whole lines. :func:`detect` says which layout a context
gets; :func:`parse_json` locates every value of a JSON document (character spans, keys,
paths), which the units and the JSON rendering build on.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Literal

from .results import Span

__all__ = [
    "PROSE",
    "JSONNode",
    "Kind",
    "Layout",
    "detect",
    "json_units",
    "layout_of",
    "line_spans",
    "parse_json",
    "table_header",
]

Kind = Literal["prose", "lines", "json"]

_MAX_DEPTH = 200  # deeper JSON is read as lines (the parser recurses once per level)
_FENCE = re.compile(r"^[ \t]*(```|~~~)", re.M)
_LOG_LINE = re.compile(
    r"^\s*(\[?\d{4}-\d\d-\d\d[T ]\d\d:\d\d|\[?\d\d:\d\d:\d\d|\[?(TRACE|DEBUG|INFO|WARN|WARNING|ERROR|FATAL|CRITICAL)\b)"
)
_CODE_LINE = re.compile(
    r"^\s*(def |class |import |from \S+ import |return\b|if .*:$|elif |else:|for .*:$|while .*:$|try:|except\b|"
    r"function\b|const |let |var |#include|public |private |package |fn |func |\}|\{|//|/\*|\*/|@\w+)"
    r"|[;{}]\s*$"
)
_TABLE_RULE = re.compile(r"^\s*\|?\s*:?-{3,}:?\s*(\|\s*:?-{3,}:?\s*)*\|?\s*$")


@dataclass(frozen=True)
class JSONNode:
    """One JSON value located in its text: ``[start, end)``, and for a member its key's span."""

    kind: Literal["object", "array", "scalar"]
    start: int
    end: int
    path: str  # "$", "$.flights[3].code" (keys that are not identifiers are quoted: $["a b"])
    key: Span | None = None  # the member's key string, quotes included (None for elements and the root)
    children: tuple[JSONNode, ...] = ()

    @property
    def member_start(self) -> int:
        """Where the member starts: its key for an object member, the value otherwise."""
        return self.key[0] if self.key is not None else self.start


@dataclass(frozen=True)
class Layout:
    """How one context is cut into units and rendered back: its kind and what that kind needs."""

    kind: Kind
    tree: JSONNode | None = None  # "json": the located document
    leaves: tuple[JSONNode, ...] = ()  # "json": the values kept or dropped whole (see json_units)
    required: tuple[Span, ...] = ()  # spans always kept: a table's header, the fence lines of code blocks


PROSE = Layout("prose")


def layout_of(text: str, *, structure: str = "auto", max_unit_chars: int = 1024) -> Layout:
    """The layout of ``text``: with ``structure="text"`` always prose (sentences, spans joined by the delimiter);
    with ``"auto"`` what :func:`detect` finds. A JSON value is one unit when it is at most ``max_unit_chars``
    characters long and at most an eighth of the document (so even a small document has several units to
    choose from; :func:`json_units`)."""
    if structure == "text":
        return PROSE
    kind = detect(text)
    if kind == "json":
        tree = parse_json(text)
        if tree is None:  # nested deeper than the parser reads
            return Layout("lines", required=_fence_lines(text))
        limit = min(max_unit_chars, max(len(text) // 8, 80))
        return Layout("json", tree=tree, leaves=json_units(tree, limit))
    if kind == "lines":
        header = table_header(text)
        return Layout("lines", required=((header,) if header else ()) + _fence_lines(text))
    return PROSE


def json_units(tree: JSONNode, max_chars: int) -> tuple[JSONNode, ...]:
    """The values kept or dropped whole, in document order: a scalar, an empty container, or a container of
    at most ``max_chars`` characters (key included) other than the root is one; a larger container is read
    member by member."""
    out: list[JSONNode] = []
    stack = [tree]
    while stack:
        node = stack.pop()
        small = node is not tree and node.end - node.member_start <= max_chars
        if node.kind == "scalar" or not node.children or small:
            out.append(node)
        else:
            stack.extend(reversed(node.children))
    return tuple(out)


def _fence_lines(text: str) -> tuple[Span, ...]:
    return tuple((s, e) for s, e in line_spans(text) if _FENCE.match(text, s))


def detect(text: str) -> Kind:
    """The layout ``text`` needs: ``"json"`` (one JSON object or array), ``"lines"`` (code, logs, CSV or
    markdown tables, JSON lines, or text with fenced blocks) or ``"prose"``."""
    stripped = text.strip()
    if stripped[:1] in ("{", "[") and _is_json(stripped):
        return "json"
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if len(lines) < 3:
        return "prose"
    if _FENCE.search(text):
        return "lines"
    n = len(lines)
    if sum(1 for ln in lines if _LOG_LINE.match(ln)) >= 0.6 * n:
        return "lines"
    if sum(1 for ln in lines if _CODE_LINE.search(ln)) >= 0.3 * n and _mostly_short(lines):
        return "lines"
    if table_header(text) is not None or _is_csv(lines) or _is_json_lines(lines):
        return "lines"
    return "prose"


def line_spans(text: str) -> list[Span]:
    """Every line's span, without its line break (``\\n``, ``\\r\\n``)."""
    spans = []
    pos = 0
    for line in text.splitlines(keepends=True):
        body = line.rstrip("\r\n")
        spans.append((pos, pos + len(body)))
        pos += len(line)
    return spans


def table_header(text: str) -> Span | None:
    """The header of a markdown table (its first row and the rule under it) or a CSV/TSV file (its first
    line), as one span; None when the text starts with neither."""
    spans = [(s, e) for s, e in line_spans(text) if text[s:e].strip()]
    if len(spans) >= 2 and "|" in text[spans[0][0] : spans[0][1]] and _TABLE_RULE.match(text[slice(*spans[1])]):
        return (spans[0][0], spans[1][1])
    lines = [text[s:e] for s, e in spans]
    if len(spans) >= 3 and _is_csv(lines):
        return spans[0]
    return None


def parse_json(text: str) -> JSONNode | None:
    """The located tree of the JSON value ``text`` holds (whitespace around it allowed), or None when ``text``
    is not one JSON value or nests deeper than the parser reads."""
    if not _is_json(text.strip()):
        return None
    try:
        node, end = _Parser(text).value(_skip(text, 0), "$", None, 0)
    except (ValueError, IndexError, RecursionError):
        return None
    return node if not text[end:].strip() else None


def _is_json(text: str) -> bool:
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        return False
    return isinstance(value, dict | list)


def _mostly_short(lines: list[str]) -> bool:
    return sum(1 for ln in lines if len(ln) <= 160) >= 0.8 * len(lines)


def _is_csv(lines: list[str]) -> bool:
    """Three or more lines with the same number (>= 1) of commas or tabs, short enough to be rows."""
    if not _mostly_short(lines):
        return False
    for sep in (",", "\t"):
        counts = [ln.count(sep) for ln in lines]
        if counts[0] >= 1 and sum(1 for c in counts if c == counts[0]) >= 0.9 * len(counts):
            return True
    return False


def _is_json_lines(lines: list[str]) -> bool:
    return all(ln.strip()[:1] in ("{", "[") and _is_json(ln.strip()) for ln in lines)


_WS = " \t\n\r"
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.S)
# NaN and Infinity are not JSON, but Python's json module writes and reads them: such a tool output stays one
_SCALAR = re.compile(r"-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?|true|false|null|NaN|-?Infinity")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _skip(text: str, i: int) -> int:
    while i < len(text) and text[i] in _WS:
        i += 1
    return i


class _Parser:
    """A recursive-descent reader of valid JSON that records where each value sits."""

    def __init__(self, text: str) -> None:
        self.text = text

    def value(self, i: int, path: str, key: Span | None, depth: int) -> tuple[JSONNode, int]:
        if depth > _MAX_DEPTH:
            raise ValueError("nested too deep")
        c = self.text[i]
        if c == "{":
            return self._object(i, path, key, depth)
        if c == "[":
            return self._array(i, path, key, depth)
        m = (_STRING if c == '"' else _SCALAR).match(self.text, i)
        if m is None:
            raise ValueError(f"no JSON value at {i}")
        return JSONNode("scalar", i, m.end(), path, key), m.end()

    def _object(self, i: int, path: str, key: Span | None, depth: int) -> tuple[JSONNode, int]:
        children: list[JSONNode] = []
        j = _skip(self.text, i + 1)
        while self.text[j] != "}":
            m = _STRING.match(self.text, j)
            if m is None:
                raise ValueError(f"no key at {j}")
            name = json.loads(m.group())
            j = _skip(self.text, m.end())
            if self.text[j] != ":":
                raise ValueError(f"no ':' at {j}")
            sub = f"{path}.{name}" if _IDENT.fullmatch(name) else f"{path}[{json.dumps(name)}]"
            child, j = self.value(_skip(self.text, j + 1), sub, (m.start(), m.end()), depth + 1)
            children.append(child)
            j = _skip(self.text, j)
            if self.text[j] == ",":
                j = _skip(self.text, j + 1)
        return JSONNode("object", i, j + 1, path, key, tuple(children)), j + 1

    def _array(self, i: int, path: str, key: Span | None, depth: int) -> tuple[JSONNode, int]:
        children: list[JSONNode] = []
        j = _skip(self.text, i + 1)
        while self.text[j] != "]":
            child, j = self.value(j, f"{path}[{len(children)}]", None, depth + 1)
            children.append(child)
            j = _skip(self.text, j)
            if self.text[j] == ",":
                j = _skip(self.text, j + 1)
        return JSONNode("array", i, j + 1, path, key, tuple(children)), j + 1
