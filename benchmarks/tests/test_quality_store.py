"""The quality grid's resumable store: what is written is read back, once, and a cut line is skipped."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from benchmarks.quality import PEERS_PLAN, Record, Store, _in_plan, main


def _record(example: str, method: str = "ours/smollm2-135m", rate: float = 0.25) -> Record:
    return Record(
        example=example,
        dataset="hotpotqa",
        length=4000,
        method=method,
        rate=rate,
        achieved=0.249,
        answer_kept=True,
        evidence=[(True, 3, 0), (False, 0, None)],
        seconds=1.5,
        context_tokens=4012,
        text="not stored",
    )


def test_records_and_prefill_timings_are_read_back_by_a_new_store(tmp_path: Path) -> None:
    path = tmp_path / "grid.jsonl"
    db = Store(path)
    db.add(_record("hotpotqa/1/4000"))
    db.add(_record("hotpotqa/1/4000", rate=0.5))
    db.add_prefill({"draft": "smollm2-135m", "length": 4000, "scoring_s": 1.0, "plain_prefill_s": 2.0})

    again = Store(path)
    assert again.has("hotpotqa/1/4000", "ours/smollm2-135m", 0.25)
    assert again.has("hotpotqa/1/4000", "ours/smollm2-135m", 0.5)
    assert not again.has("hotpotqa/1/4000", "ours/smollm2-135m", 0.1)
    assert not again.has("hotpotqa/2/4000", "ours/smollm2-135m", 0.25)
    (r, _) = again.records
    assert r.evidence == [(True, 3, 0), (False, 0, None)]
    assert r.text == ""  # texts are not stored
    assert again.prefill_refs == [{"draft": "smollm2-135m", "length": 4000, "scoring_s": 1.0, "plain_prefill_s": 2.0}]


def test_a_record_already_held_is_not_written_twice(tmp_path: Path) -> None:
    path = tmp_path / "grid.jsonl"
    db = Store(path)
    db.add(_record("squad/3/4000"))
    db.add(_record("squad/3/4000"))
    assert len(db.records) == 1
    assert len(path.read_text().splitlines()) == 1


def test_a_line_cut_by_an_interrupted_write_is_skipped(tmp_path: Path) -> None:
    path = tmp_path / "grid.jsonl"
    Store(path).add(_record("squad/3/4000"))
    with path.open("a") as f:
        f.write(json.dumps({"kind": "record", "example": "squad/4/4000"})[:20])
    again = Store(path)
    assert [r.example for r in again.records] == ["squad/3/4000"]


def test_without_a_path_nothing_is_written(tmp_path: Path) -> None:
    db = Store(None)
    db.add(_record("squad/3/4000"))
    assert db.has("squad/3/4000", "ours/smollm2-135m", 0.25)
    assert list(tmp_path.iterdir()) == []


def test_holds_needs_every_method_and_rate(tmp_path: Path) -> None:
    db = Store(tmp_path / "grid.jsonl")
    db.add(_record("squad/3/4000", rate=0.25))
    assert db.holds("squad/3/4000", ["ours/smollm2-135m"], [0.25])
    assert not db.holds("squad/3/4000", ["ours/smollm2-135m"], [0.25, 0.5])
    assert not db.holds("squad/3/4000", ["ours/smollm2-135m", "bm25/sentence"], [0.25])


def test_a_run_reports_only_the_records_its_plan_asks_for() -> None:
    plan = replace(PEERS_PLAN, drafts=("smollm2-135m",), rates=(0.25,), peer_rates=(0.25,), paper=False)
    ids = {"squad/3/4000"}
    assert _in_plan(plan, ids, _record("squad/3/4000"))
    assert not _in_plan(plan, ids, _record("squad/4/4000"))  # another draw
    assert not _in_plan(plan, ids, _record("squad/3/4000", method="ours/gemma3-270m"))  # a draft left out
    assert not _in_plan(plan, ids, _record("squad/3/4000", method="paper/smollm2-135m"))  # the paper preset is off
    assert not _in_plan(plan, ids, _record("squad/3/4000", rate=0.5))
    assert _in_plan(plan, ids, _record("squad/3/4000", method="longllmlingua/smollm2-135m"))
    assert not _in_plan(plan, ids, _record("squad/3/4000", method="llmlingua/smollm2-135m"))
    assert _in_plan(plan, ids, _record("squad/3/4000", method="bm25/sentence"))
    assert not _in_plan(replace(plan, peers=False), ids, _record("squad/3/4000", method="longllmlingua/smollm2-135m"))


def test_peers_run_on_fewer_datasets_still_report_their_stored_records() -> None:
    """``--peer-datasets`` narrows where the peers run; a peer record stored for another dataset of the plan
    is still reported, and a peer dataset outside the plan's datasets is refused before anything runs."""
    plan = replace(PEERS_PLAN, peer_rates=(0.1, 0.25, 0.5), peer_datasets=("hotpotqa",))
    ids = {"squad/3/4000"}
    assert _in_plan(plan, ids, _record("squad/3/4000", method="longllmlingua/smollm2-135m"))
    with pytest.raises(SystemExit):
        main(["--datasets", "hotpotqa", "--peer-datasets", "squad_paraphrase", "--report-only", "--name", "none"])
