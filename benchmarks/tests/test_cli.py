"""The ablation CLI: where a run's results land, without running a draft."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from benchmarks import ablation


@pytest.fixture
def fake_scorer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, ...]]:
    calls: list[tuple[Any, ...]] = []

    def run_scorer(
        datasets: tuple[str, ...], n: int, length: int, drafts: tuple[str, ...], **kw: Any
    ) -> dict[str, Any]:
        calls.append((datasets, n, length, drafts, kw))
        return {"datasets": list(datasets), "n": n}

    monkeypatch.setattr(ablation, "RESULTS", tmp_path)
    monkeypatch.setattr(ablation, "run_scorer", run_scorer)
    monkeypatch.setattr(ablation, "to_markdown", lambda result: f"report on {','.join(result['datasets'])}\n")
    return calls


def test_name_puts_the_results_beside_the_main_ones(tmp_path: Path, fake_scorer: list[tuple[Any, ...]]) -> None:
    (tmp_path / "ablation-scorer.md").write_text("the main run\n")
    ablation.main(["--scorer", "--datasets", "niah_kv", "--n", "3", "--name", "niah"])
    assert fake_scorer == [(("niah_kv",), 3, 2000, ("smollm2-135m", "gemma3-270m"), {})]
    assert json.loads((tmp_path / "ablation-scorer-niah.json").read_text()) == {"datasets": ["niah_kv"], "n": 3}
    assert (tmp_path / "ablation-scorer-niah.md").read_text() == "report on niah_kv\n"
    assert (tmp_path / "ablation-scorer.md").read_text() == "the main run\n"  # untouched


def test_without_a_name_the_mode_names_the_files(tmp_path: Path, fake_scorer: list[tuple[Any, ...]]) -> None:
    ablation.main(["--scorer", "--datasets", "hotpotqa"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ablation-scorer.json", "ablation-scorer.md"]
    ablation.main(["--scorer", "--report-only"])  # rebuilt from the JSON, no run
    assert len(fake_scorer) == 1
    assert (tmp_path / "ablation-scorer.md").read_text() == "report on hotpotqa\n"


def test_a_dataset_without_low_overlap_evidence_reads_as_a_dash() -> None:
    """A needle shares words with its question: the low-overlap cell says '- (0)', not 'nan (0)'."""
    row = {"dataset": "niah_kv", "answer": True, "evidence": [(True, 3)], "hops": [0]}
    low = {"dataset": "hotpotqa", "answer": False, "evidence": [(True, 0), (False, 1)], "hops": [0, 1]}
    result = {
        "datasets": ["niah_kv", "hotpotqa"],
        "n": 1,
        "length": 2000,
        "seed": 0,
        "rows": {"ours": {str(r): [row, low] for r in ablation.RATES}},
        "ms_per_1k": {"ours": 1000.0},
    }
    (line,) = [x for x in ablation.to_markdown(result).splitlines() if x.startswith("| ours |")]
    assert line.count("| 100.0 / 100.0 / - (0) |") == len(ablation.RATES)
    assert line.count("50.0 / 0.0 / 50.0 (2)") == len(ablation.RATES)
    assert "nan" not in line
