"""Fuzz and fault suite on the tiny drafts: whatever the input, every result keeps its promises.

Inputs: random Unicode (lone surrogates, NUL, RTL and bidi controls, ZWJ sequences, emoji), random JSON, random
code-like lines, big inputs. On every output: kept spans are ints, ordered, disjoint and inside the input; the
compressed count is the target's own count of the text and within the budget; protected matches are kept verbatim;
a pass-through is byte-identical; JSON stays JSON. Faults: the draft raising mid-forward. The number of cases run
is printed at the end of the module (``fuzz cases checked: N``).
"""

from __future__ import annotations

import itertools
import json
import re
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crossprefill_agents import CompressionConfig, CompressionResult, PromptCompressor
from crossprefill_agents.selection import layout_for, protected_spans, render_layout
from crossprefill_agents.targets import resolve_target
from crossprefill_agents.testing import filler_text, tiny_draft

CASES: Counter[str] = Counter()
COUNT = resolve_target("cl100k_base").count
PROTECT = r"\b\d{5}\b"  # planted five-digit keys must survive
FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)


@pytest.fixture(scope="module", autouse=True)
def report_cases(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    line = f"fuzz cases checked: {sum(CASES.values())} ({', '.join(f'{k} {v}' for k, v in sorted(CASES.items()))})"
    if reporter is not None:
        reporter.write_line(line)


CONFIG = CompressionConfig(min_tokens=0, protect=(PROTECT,))


@pytest.fixture(scope="module")
def compressors() -> dict[str, PromptCompressor]:
    return {
        arch: PromptCompressor(tiny_draft(arch), target="cl100k_base", config=CONFIG) for arch in ("llama", "gemma3")
    }


def check(kind: str, r: CompressionResult, text: str, *, budget: int | None = None) -> None:
    """Every promise a result makes about ``text``."""
    CASES[kind] += 1
    spans = r.kept_spans
    assert all(type(s) is int and type(e) is int and 0 <= s < e <= len(text) for s, e in spans), spans
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(spans)), spans
    assert r.compressed_tokens == (COUNT(r.text) if r.text else 0)
    assert r.original_tokens == (COUNT(text) if text else 0)
    if r.fallback_reason is not None or (spans == ((0, len(text)),) and r.text == text):
        assert r.text == text  # a pass-through is byte-identical
        return
    for m in re.finditer(PROTECT, text):
        assert m.group() in r.text, m.group()
    cap = r.budget_tokens if budget is None else budget
    assert r.compressed_tokens <= max(cap, _floor(text)), (r.compressed_tokens, cap)
    for s, e in spans:  # every kept span's text is in the output (JSON may re-join members, not edit them)
        assert text[s:e].strip() == "" or _in_output(text[s:e], r.text)


def _floor(text: str) -> int:
    """Target tokens of what is kept whatever the budget: the protected matches and the layout's required spans
    (a table's header, JSON's skeleton around them), rendered."""
    layout = layout_for(text, CONFIG)
    fixed = [*protected_spans(text, CONFIG.protect_patterns), *layout.required]
    rendered = render_layout(text, fixed, layout, CONFIG.delimiter).text
    return COUNT(rendered) if rendered else 0


def _in_output(piece: str, out: str) -> bool:
    return piece in out or all(part in out for part in piece.split("\n") if part.strip())


# --------------------------------------------------------------------------- inputs
NASTY = [
    "\x00",
    "\ud800",
    "\udfff",
    "\udc80",
    "\u202e",
    "\u200f",
    "\u2066",
    "\u200d",
    "\ufeff",
    "👩\u200d👩\u200d👧",
    "🏳️\u200d🌈",
    "\u0645\u0631\u062d\u0628\u0627",
    "e\u0301",
    "\r\n",
    "\t",
    "\u2028",
    "漢字",
]
words = st.sampled_from(filler_text(300, seed=1).split() + NASTY + ["12345", "67890"])
unicode_text = st.lists(
    st.one_of(words, st.text(st.characters(codec=None, categories=None), max_size=6)), min_size=0, max_size=500
).map(" ".join)
rates = st.sampled_from([0.05, 0.2, 0.5, 0.9])


@FUZZ
@given(text=unicode_text, rate=rates, arch=st.sampled_from(["llama", "gemma3"]), query=st.sampled_from(["", "key?"]))
def test_random_unicode(
    compressors: dict[str, PromptCompressor], text: str, rate: float, arch: str, query: str
) -> None:
    """Any Unicode, lone surrogates and NUL included, compresses without raising and keeps every promise."""
    r = compressors[arch].compress(text, query, keep_rate=rate)
    check("unicode", r, text)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**6), 10**6) | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda kids: st.lists(kids, max_size=8) | st.dictionaries(st.text(max_size=8), kids, max_size=6),
    max_leaves=60,
)


@FUZZ
@given(value=json_values, indent=st.sampled_from([None, 1, 2]), rate=rates)
def test_random_json_stays_json(
    compressors: dict[str, PromptCompressor], value: Any, indent: int | None, rate: float
) -> None:
    """JSON of any shape comes back as JSON (structure='auto'), whatever the rate."""
    text = json.dumps({"records": value, "key": 12345}, indent=indent, ensure_ascii=False)
    r = compressors["llama"].compress(text, "key", keep_rate=rate)
    check("json", r, text)
    json.loads(r.text)


code_line = st.builds(
    lambda indent, name, n, op, s: f"{' ' * indent}{name}_{n} = call({name!r}, {n}) {op} {s!r}",
    st.sampled_from([0, 4, 8, 12]),
    st.sampled_from(["value", "request", "x", "self.cache", "résumé", "变量"]),
    st.integers(0, 99999),
    st.sampled_from(["+", "or", "//", "->", "==", "#"]),
    st.text(max_size=12),
)


@FUZZ
@given(lines=st.lists(code_line, min_size=1, max_size=80), rate=rates, crlf=st.booleans())
def test_random_code_keeps_whole_lines(
    compressors: dict[str, PromptCompressor], lines: list[str], rate: float, crlf: bool
) -> None:
    """Code-like lines: in a line layout every output line is a whole input line, a gap marker or a cut overlong
    line, with the input's line ending style."""
    newline = "\r\n" if crlf else "\n"
    text = newline.join(lines)
    r = compressors["gemma3"].compress(text, "value", keep_rate=rate)
    check("code", r, text)
    if r.text != text and r.fallback_reason is None and layout_for(text, CONFIG).kind == "lines":
        originals = set(text.split(newline))
        assert crlf or "\r" not in r.text
        for line in r.text.split(newline):
            assert not line or line in originals or "[...]" in line, line  # a gap marker, or a cut overlong line


@settings(max_examples=3, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
@given(n_words=st.sampled_from([8000, 16000]), seed=st.integers(0, 100), rate=rates)
def test_big_inputs(compressors: dict[str, PromptCompressor], n_words: int, seed: int, rate: float) -> None:
    """Contexts of 8k-16k words (several draft windows) with planted keys keep the promises and the keys."""
    parts = filler_text(n_words, seed=seed).split(". ")
    parts.insert(len(parts) // 3, "the key is 54321")
    text = ". ".join(parts)
    r = compressors["llama"].compress(text, "what is the key?", keep_rate=rate)
    check("big", r, text)
    assert "54321" in r.text


@FUZZ
@given(docs=st.lists(unicode_text, min_size=1, max_size=4), rate=rates)
def test_documents_share_one_budget(compressors: dict[str, PromptCompressor], docs: list[str], rate: float) -> None:
    """compress_documents: each result keeps its promises; together they stay within the shared budget."""
    rs = compressors["llama"].compress_documents(docs, "key?", keep_rate=rate)
    for r, d in zip(rs, docs, strict=True):
        check("documents", r, d, budget=10**9)
    if all(r.fallback_reason is None for r in rs):
        text_tokens = sum(r.original_tokens for r, d in zip(rs, docs, strict=True) if d.strip())
        kept = sum(r.compressed_tokens for r in rs)
        assert kept <= max(round(rate * text_tokens), sum(_floor(d) for d in docs)) or kept == text_tokens


# --------------------------------------------------------------------------- faults
@settings(max_examples=15, deadline=None, derandomize=True)
@given(fail_at=st.integers(0, 12), text=unicode_text)
def test_the_draft_raising_mid_forward_fails_open(fail_at: int, text: str) -> None:
    """The draft raising at its k-th forward (prefill or query pass): the input comes back unchanged with the
    error as the reason."""
    draft = tiny_draft("llama")
    calls = {"n": 0}
    real = draft._forward

    def flaky(ids: list[int], cache: Any, *, attentions: bool = False, **extra: Any) -> Any:
        calls["n"] += 1
        if calls["n"] > fail_at:
            raise RuntimeError("injected forward failure")
        return real(ids, cache, attentions=attentions, **extra)

    draft._forward = flaky  # type: ignore[method-assign]
    pc = PromptCompressor(draft, target="cl100k_base", config=CompressionConfig(min_tokens=0, prefill_chunk_tokens=16))
    text = text + " " + filler_text(400, seed=fail_at)
    r = pc.compress(text, "key?", keep_rate=0.2)
    check("faults", r, text)
    assert r.text == text and r.fallback_reason is not None and "injected" in r.fallback_reason


def test_python_json_with_nan_and_infinity_stays_parseable(compressors: dict[str, PromptCompressor]) -> None:
    """Found by this suite: `json.dumps` writes NaN / Infinity, which the located-JSON parser refused, so such a tool
    output was cut as lines and came back unparseable. It is now read as JSON and stays loadable by `json.loads`."""
    text = json.dumps([{"id": i, "score": [float("inf"), float("nan"), -float("inf"), i][i % 4]} for i in range(80)])
    r = compressors["llama"].compress(text, "id 7", keep_rate=0.2)
    check("json", r, text)
    assert r.fallback_reason is None and r.text != text
    assert isinstance(json.loads(r.text), list)
