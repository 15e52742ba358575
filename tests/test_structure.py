"""Structure-aware compression: JSON stays valid JSON, code/logs/tables keep whole lines, prose is unchanged."""

from __future__ import annotations

import itertools
import json
import re
from typing import Any

import pytest
from helpers import make_text

from crossprefill_agents import CompressionConfig, PromptCompressor
from crossprefill_agents.draft import DraftModel
from crossprefill_agents.selection import render_spans
from crossprefill_agents.structure import detect, json_units, layout_of, line_spans, parse_json, table_header


def tokens(text: str) -> int:
    return len(re.findall(r"\w+|[^\w\s]", text))


def flights(n: int = 100) -> str:
    rows = [
        {"id": i, "code": f"BA{100 + i}", "departure": f"{6 + i % 14:02d}:{(i * 7) % 60:02d}", "to": "LHR"}
        for i in range(n)
    ]
    return json.dumps({"flights": rows, "count": n}, indent=2)


def code(n: int = 60) -> str:
    return "\n".join(
        f"def handler_{i}(request):\n    value = request.get('field_{i}', {i}) * 20\n    return value\n"
        for i in range(n)
    )


@pytest.fixture
def pc(tiny_llama_draft: DraftModel) -> PromptCompressor:
    return PromptCompressor(tiny_llama_draft, target=tokens, config=CompressionConfig(min_tokens=0))


def test_detect_tells_json_lines_and_prose_apart() -> None:
    """One JSON value is json; code, logs, CSV, markdown tables, JSON lines and fenced text are lines; prose
    (title lines and paragraphs included) is prose."""
    assert detect(flights(3)) == "json" and detect("  [1, 2, 3]\n") == "json"
    assert detect('"just a string"') == "prose" and detect("{not json") == "prose"
    assert detect(code(3)) == "lines"
    assert detect("\n".join(f"2024-05-01 10:00:0{i} INFO job {i} done" for i in range(5))) == "lines"
    assert detect("name,age,city\nAda,36,London\nAlan,41,Wilmslow\nGrace,85,Arlington\n") == "lines"
    assert detect("| a | b |\n|---|---|\n| 1 | 2 |\n| 3 | 4 |\n") == "lines"
    assert detect('{"a": 1}\n{"a": 2}\n{"a": 3}\n') == "lines"
    assert detect("Intro line.\n```python\nx = 1\n```\nOutro line.\n") == "lines"
    prose = "Paris\nParis is the capital of France, with 2.1 million residents.\n\n" + make_text(300, seed=1)
    assert detect(prose) == "prose"


def test_parse_json_locates_every_value_with_its_key_and_path() -> None:
    """Each node's span is its value's text; members carry their key's span; paths name them."""
    text = '{"a b": [1, {"x": "y\\"z"}], "n": null}'
    tree = parse_json(text)
    assert tree is not None and tree.kind == "object" and (tree.start, tree.end) == (0, len(text))
    arr, n = tree.children
    assert text[arr.start : arr.end] == '[1, {"x": "y\\"z"}]' and arr.path == '$["a b"]'
    assert arr.key is not None and text[arr.key[0] : arr.key[1]] == '"a b"'
    assert [c.path for c in arr.children] == ['$["a b"][0]', '$["a b"][1]']
    assert arr.children[1].children[0].path == '$["a b"][1].x' and n.path == "$.n"
    assert parse_json("[1] trailing") is None and parse_json("[" * 500 + "]" * 500) is None


def test_json_units_are_whole_values_below_the_size_limit() -> None:
    """A container of at most max_chars (key included) is one unit; the root and larger containers split."""
    tree = parse_json(flights(5))
    assert tree is not None
    leaves = json_units(tree, 200)
    assert [leaf.path for leaf in leaves] == [*(f"$.flights[{i}]" for i in range(5)), "$.count"]
    assert [leaf.path for leaf in json_units(tree, 20)][:4] == [
        "$.flights[0].id",
        "$.flights[0].code",
        "$.flights[0].departure",
        "$.flights[0].to",
    ]


@pytest.mark.parametrize("rate", [0.05, 0.1, 0.25, 0.5, 0.9])
def test_json_output_is_valid_json_and_a_structural_subset(pc: PromptCompressor, rate: float) -> None:
    """At every keep rate the output parses; each kept record is one of the input's, whole; dropped array
    elements are counted in one marker; the budget holds; kept_paths name the kept values."""
    doc = flights()
    source = json.loads(doc)
    r = pc.compress(doc, "Which flights leave before 9am?", keep_rate=rate)
    out = json.loads(r.text)
    assert r.compressed_tokens <= r.budget_tokens and r.fallback_reason is None
    kept = [f for f in out.get("flights", []) if isinstance(f, dict)]
    markers = [f for f in out.get("flights", []) if isinstance(f, str)]
    assert kept and all(f in source["flights"] for f in kept)
    assert markers == [f"... {100 - len(kept)} more items"]
    assert r.kept_paths and all(p.startswith("$.flights[") or p == "$.count" for p in r.kept_paths)
    assert [source["flights"][int(p[10:-1])] for p in r.kept_paths if p.startswith("$.flights[")] == kept


def test_json_text_mode_is_todays_prose_selection(pc: PromptCompressor) -> None:
    """structure="text" reads JSON as prose (the output need not parse) and reports no paths."""
    r = pc.with_config(CompressionConfig(min_tokens=0, structure="text")).compress(flights(), "before 9am?")
    assert r.kept_paths == () and " [...] " in r.text


def test_a_protected_value_inside_json_keeps_its_whole_record(pc: PromptCompressor) -> None:
    """A protect pattern matching inside a record keeps that record, whatever the budget."""
    cfg = CompressionConfig(min_tokens=0, protect=(r"BA177",))
    r = pc.with_config(cfg).compress(flights(), "anything", keep_rate=0.05)
    assert any(f.get("code") == "BA177" for f in json.loads(r.text)["flights"] if isinstance(f, dict))


def test_code_keeps_whole_lines_and_marks_gaps_on_their_own_line(pc: PromptCompressor) -> None:
    """No output line joins two input lines; every kept line is an input line with its indentation; runs of
    dropped lines are one '[...]' line."""
    src = code()
    lines = set(src.splitlines())
    r = pc.compress(src, "what does handler_3 return?", keep_rate=0.25)
    out = r.text.splitlines()
    assert r.compressed_tokens <= r.budget_tokens
    assert all(line in lines or line == "[...]" for line in out)
    assert not any(a == b == "[...]" for a, b in itertools.pairwise(out))
    assert any(line.startswith("    ") for line in out)


def test_an_overlong_line_is_cut_inside_and_says_so(pc: PromptCompressor) -> None:
    """A line longer than max_sentence_tokens draft tokens may be kept in part; the cut is marked with the
    delimiter, and the line still stands on its own line."""
    long_line = " ".join(f"item{i}=value{i};" for i in range(600))
    src = "\n".join(["import os", "x = 1;", long_line, "print(x);", "y = 2;"])
    r = pc.compress(src, "item7", keep_rate=0.3)
    cut = [line for line in r.text.splitlines() if line.startswith("item") or ("[...]" in line and "item" in line)]
    assert cut and all("[...]" in line for line in cut)


def test_a_table_keeps_its_header(pc: PromptCompressor) -> None:
    """CSV and markdown tables keep their header row (and the rule under it) at any budget."""
    csv = "id,name,city\n" + "\n".join(f"{i},person{i},town{i % 7}" for i in range(200))
    assert table_header(csv) == (0, 12)
    r = pc.compress(csv, "who lives in town3?", keep_rate=0.1)
    assert r.text.splitlines()[0] == "id,name,city"
    md = "| id | name |\n|---|---|\n" + "\n".join(f"| {i} | person{i} |" for i in range(200))
    r = pc.compress(md, "person42", keep_rate=0.1)
    assert r.text.splitlines()[:2] == ["| id | name |", "|---|---|"]


def test_crlf_lines_come_back_crlf(pc: PromptCompressor) -> None:
    """Line-oriented text with CRLF breaks is rendered with CRLF breaks."""
    src = code(30).replace("\n", "\r\n")
    r = pc.compress(src, "handler_3", keep_rate=0.3)
    assert "\r\n" in r.text and "\n" not in r.text.replace("\r\n", "")


def test_render_spans_reproduces_what_compress_sends(pc: PromptCompressor) -> None:
    """render_spans(text, kept_spans, config) is the text a result carries, for JSON, lines and prose alike."""
    for doc in (flights(40), code(30), make_text(800, seed=3)):
        r = pc.compress(doc, "before 9am handler_3 passkey", keep_rate=0.3)
        assert render_spans(doc, r.kept_spans, pc.config) == r.text


def test_prose_layout_is_unchanged_by_auto(pc: PromptCompressor) -> None:
    """For prose, structure="auto" selects and renders exactly what "text" does."""
    doc = make_text(900, seed=4)
    auto = pc.compress(doc, "the secret passkey", keep_rate=0.3)
    text = pc.with_config(CompressionConfig(min_tokens=0, structure="text")).compress(
        doc, "the secret passkey", keep_rate=0.3
    )
    assert (auto.text, auto.kept_spans) == (text.text, text.kept_spans)


def test_layout_of_and_line_spans_edge_cases() -> None:
    """Empty text is prose; line spans exclude the line breaks; a JSON too deep to parse is read as lines."""
    assert layout_of("").kind == "prose" and layout_of(flights(2), structure="text").kind == "prose"
    assert line_spans("a\r\nbc\n\nd") == [(0, 1), (3, 5), (6, 6), (7, 8)]
    deep = "[" * 300 + "1" + "]" * 300
    assert layout_of(deep).kind == "lines"


def _leaves(value: Any) -> int:
    if isinstance(value, dict):
        return sum(_leaves(v) for v in value.values())
    if isinstance(value, list):
        return sum(_leaves(v) for v in value)
    return 1


def test_a_small_json_document_is_still_cut_member_by_member(pc: PromptCompressor) -> None:
    """A document of a few hundred characters is split into more than one unit, so a budget keeps part of it."""
    doc = json.dumps(
        {
            "user": {"name": "Ada", "email": "ada@example.org", "bio": make_text(60, seed=5)},
            "orders": [{"id": i, "total": i * 3} for i in range(6)],
        }
    )
    r = pc.compress(doc, "what is the user's email?", keep_rate=0.4)
    out = json.loads(r.text)
    assert 0 < _leaves(out) < _leaves(json.loads(doc)) + 1 and r.compressed_tokens <= r.budget_tokens
