"""The LangChain examples end to end on the embedded models, as a user runs them: examples/langchain_agent.py
(create_agent with SpeculativePrefillMiddleware, fixed tool plan) and examples/langchain_rag.py (BM25 retriever,
SpeculativePrefillDocumentCompressor, local target), each in a subprocess on the 0.5B target with few questions.
They assert on the exit status and the JSON the scripts write, never on what the model wrote."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from crossprefill_agents import ModelNotAvailableError
from crossprefill_agents.embedded_targets import embedded_target_dir
from crossprefill_agents.targets import resolve_target

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[4]
EXAMPLES = ROOT / "examples"
TARGET = "qwen2.5-coder-0.5b"
DRAFT = "smollm2-135m"
# HotpotQA dev questions whose two supporting pages and gold answer BM25 retrieves in its top 8
RAG_IDS = "5abd94525542992ac4f382d2,5ae6050f55429929b0807a5e"  # -> "YG Entertainment", "Sonic"


@pytest.fixture(scope="module", autouse=True)
def _target() -> None:
    """Skip without the 0.5B target, except in CI."""
    try:
        embedded_target_dir(TARGET)
    except ModelNotAvailableError as e:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the example tests: {e}")
        pytest.skip(str(e))


def run_example(
    script: str, args: list[str], tmp_path: Path, **env: str
) -> tuple[subprocess.CompletedProcess[str], Any]:
    """Run examples/<script> with --json; its completed process and the JSON it wrote."""
    out = tmp_path / f"{script}.json"
    path = os.pathsep.join([str(ROOT), str(ROOT / "integrations/langchain"), os.environ.get("PYTHONPATH", "")])
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / script), *args, "--json", str(out)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": path, "COLUMNS": "150", **env},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc, json.loads(out.read_text(encoding="utf-8"))


def test_agent_example_compresses_each_tool_result_once_and_keeps_every_earlier_byte(tmp_path: Path) -> None:
    """The demo agent with its fixed plan (search, read_page x2, answer) on the 0.5B target, run with an OpenAI key
    set but no langchain-openai (so it says which package is missing and runs locally): exit status 0; four model
    calls through the middleware, three planned; each tool result is cut to about a quarter of its target tokens at
    the call after it and replayed (frozen) at later calls, the draft reusing its cache for what it read before;
    each request starts with every byte of the one before; the model read under 40% of the tool tokens, the gold
    answer among them; the local target answered the last call."""
    openai_installed = importlib.util.find_spec("langchain_openai") is not None
    args = ["--target", TARGET, "--draft", DRAFT] + (["--local"] if openai_installed else [])
    proc, run = run_example("langchain_agent.py", args, tmp_path, OPENAI_API_KEY="sk-not-used")
    if not openai_installed:
        assert "pip install langchain-openai" in proc.stdout
    assert "fixed plan" in proc.stdout
    assert run["plan"] == "fixed" and run["target"] == TARGET and run["draft"] == DRAFT
    steps = run["steps"]
    assert [s["planned"] for s in steps] == [True, True, True, False]
    assert steps[0]["reply"].startswith("search(") and all(s["reply"].startswith("read_page(") for s in steps[1:3])
    assert steps[3]["target"]["prompt_tokens"] > 0
    for s in steps:
        assert s["fallback_reason"] is None
    assert [s["compressed_now"] for s in steps] == [0, 1, 1, 1]
    assert [s["frozen_hits"] for s in steps] == [0, 0, 1, 2]
    assert steps[2]["draft_tokens_reused"] > 0 and steps[3]["draft_tokens_reused"] > steps[2]["draft_tokens_reused"]
    for k in (1, 2, 3):  # the tool result new at call k+1 (the AI message that asked for it has no text)
        added = steps[k]["target_tokens_before"] - steps[k - 1]["target_tokens_before"]
        kept = steps[k]["target_tokens_after"] - steps[k - 1]["target_tokens_after"]
        assert added >= 64 and 0 < kept <= round(0.25 * added) + 1
    assert steps[1]["target_tokens_before"] - steps[0]["target_tokens_before"] > 500  # the search result
    for s in steps[1:]:
        assert s["prefix_unchanged"] == s["previous_bytes"] > 0
    assert run["tool_tokens_sent"] < 0.4 * run["tool_tokens_whole"]
    assert run["gold_in_tool_results"]
    assert isinstance(run["answer"], str) and 0.0 <= run["f1"] <= 1.0


def test_rag_example_keeps_document_identity_and_the_gold_answer(tmp_path: Path) -> None:
    """Two HotpotQA questions through the retriever | document compressor | local target chain: exit status 0; the 8
    retrieved pages are cut together to at most the shared budget (30% of their target tokens); the pages the target
    read are retrieved ones in retrieval order, each with its own stats whose kept spans are pieces of that page
    found in order in its compressed text; the target's prompt is shorter than the retrieved text; and the gold
    answer, retrieved for both, survives compression for at least one."""
    _, result = run_example(
        "langchain_rag.py", ["--target", TARGET, "--draft", DRAFT, "--ids", RAG_IDS, "--keep-rate", "0.3"], tmp_path
    )
    sys.path.insert(0, str(EXAMPLES))
    try:
        from wiki_corpus import WikiCorpus, load_hotpotqa

        corpus = WikiCorpus.from_questions(load_hotpotqa(1000))
    finally:
        sys.path.remove(str(EXAMPLES))
    count = resolve_target(TARGET).count
    rows = result["rows"]
    assert [r["question_id"] for r in rows] == RAG_IDS.split(",")
    for r in rows:
        assert r["fallback_reason"] is None
        assert len(r["retrieved"]) == 8 and r["supporting_retrieved"] == 2 and r["gold_retrieved"]
        assert r["tokens_before"] == sum(count(corpus.pages[t]) for t in r["retrieved"]) > 500
        assert 0 < r["tokens_after"] <= r["budget"] + 2
        assert r["target_prompt_tokens"] < r["tokens_before"]
        kept_ids = [d["id"] for d in r["kept"]]
        assert kept_ids and kept_ids == [t for t in r["retrieved"] if t in kept_ids]
        for doc in r["kept"]:
            original, stats = corpus.pages[doc["id"]], doc["stats"]
            assert stats["original_tokens"] == count(original)
            assert stats["compressed_tokens"] == count(doc["text"]) <= stats["original_tokens"]
            at = 0
            for start, end in stats["kept_spans"]:
                piece = original[start:end].strip()
                at = doc["text"].index(piece, at) + len(piece)
    assert sum(r["gold_kept"] for r in rows) >= 1
