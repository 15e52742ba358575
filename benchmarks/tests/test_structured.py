"""The structured-outputs benchmark's cases and metrics (no model involved)."""

from __future__ import annotations

import json

from benchmarks.structured import (
    flights_cases,
    gold_whole,
    python_module_cases,
    report,
    search_json_cases,
    service_log_cases,
    valid,
)


def test_cases_are_deterministic_and_hold_their_gold_once() -> None:
    """The same seed builds the same cases; each gold record or line sits in its output exactly once."""
    for build in (search_json_cases, flights_cases, service_log_cases, python_module_cases):
        a, b = build(3), build(3)
        assert [c.output for c in a] == [c.output for c in b]
        for c in a:
            assert c.gold is not None and valid(c, c.output) and gold_whole(c, c.output)
            if not c.is_json:
                assert c.output.count(c.gold) == 1


def test_validity_and_gold_follow_the_output() -> None:
    """Broken JSON is invalid; a JSON output keeps the gold only as a whole record; lines glued by a delimiter
    are not input lines."""
    (flights,) = flights_cases(1)
    doc = json.loads(flights.output)
    gold = json.loads(flights.gold or "")
    assert not valid(flights, flights.output[:-5])
    assert gold_whole(flights, json.dumps({"flights": [gold]})) is True
    assert gold_whole(flights, json.dumps({"flights": [dict(gold, gate="Z99")]})) is False
    assert gold_whole(flights, json.dumps(doc)) is True
    (log,) = service_log_cases(1)
    first, second = log.output.splitlines()[:2]
    assert valid(log, f"{first}\n[...]\n{second}") and not valid(log, f"{first} [...] {second}")


def test_report_has_a_row_per_method_and_rate() -> None:
    """The markdown has one row per (draft, method, rate), each with a cell per kind."""
    row = {"kind": "service_log", "valid": True, "gold_whole": False, "answer": True, "keep": 0.25}
    result = {
        "machine": "test",
        "cases": {"service_log": 1},
        "rows": {"d | ours | 0.25": [row], "d | ours, text mode | 0.25": [row]},
    }
    md = report(result)
    assert md.count("| d |") == 2 and "100 / 0 / 100" in md
