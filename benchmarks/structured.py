"""Tool outputs as they really are: JSON, logs and code, compressed with and without structure-aware units.

    python -m benchmarks structured [--n 20] [--drafts smollm2-135m] [--rates 0.1 0.25 0.5]

Cases (each a tool output and a question whose answer sits in one record or line):

- ``search_json``: a search tool's JSON result list over the paragraphs of a SQuAD dev context
  (``{"query", "results": [{"rank", "title", "text"}]}``), the SQuAD question; the gold record
  is the paragraph that holds the answer;
- ``flights_json``: 100 made-up flight records; "When does flight BA1234 depart, and from which
  gate?"; the gold record is that flight;
- ``service_log``: 300 lines of a made-up service log; "Why did job 4821 fail?"; the gold line is
  the job's ERROR line;
- ``python_module``: 80 functions of a made-up client module; "What timeout does fetch_invoice
  use?"; the gold is that function's lines from its ``def`` down to its ``timeout = ...`` line;
- ``bfcl_json``: the real JSON tool outputs of BFCL v4 long-context multi-turn traces, with the
  trace's user requests as the question (no gold: validity only).

Methods, all on one draft pass per case (``compress_scored``): ours (``structure="auto"``, the
default), ours in text mode (``structure="text"``: every context read as prose), and the lexical
baseline on the same structure-aware units (idf query-word overlap alone: ``lexical_weight=1``,
no paragraph prior). Metrics: output valid (JSON parses; lines: every output line is an input
line or a gap marker), gold record/line kept whole (its exact text is in the output), answer
string kept, achieved keep rate. Results: ``benchmarks/results/structured.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from crossprefill_agents import CompressionConfig, PromptCompressor

from .data import load_examples
from .metrics import answer_kept
from .traces import bfcl_traces

RESULTS = Path(__file__).parent / "results"
TARGET = "cl100k_base"
KINDS = ("search_json", "flights_json", "service_log", "python_module", "bfcl_json")
METHODS = {
    "ours": CompressionConfig(),
    "ours, text mode": CompressionConfig(structure="text"),
    "lexical, same units": CompressionConfig(lexical_weight=1.0, paragraph_weight=0.0),
}


@dataclass(frozen=True)
class Case:
    """One tool output, its question, and the text that answers it (a record's or a line's exact text)."""

    kind: str
    name: str
    output: str
    question: str
    answers: tuple[str, ...]  # answer strings (empty: no gold)
    gold: str | None  # the exact text of the record or line that answers (None: no gold)
    is_json: bool


def search_json_cases(n: int, seed: int = 0) -> list[Case]:
    """SQuAD dev contexts as a search tool's JSON results, one record per paragraph."""
    cases = []
    for ex in load_examples("squad", n=n, context_tokens=2000, seed=seed):
        records = []
        gold_rank = None
        for rank, (s, e) in enumerate(ex.documents):
            title, _, text = ex.context[s:e].partition("\n")
            records.append({"rank": rank + 1, "title": title.strip(), "text": text.strip()})
            if any(s <= ev.start < e for ev in ex.evidence):
                gold_rank = rank
        doc = {"query": ex.question, "results": records}
        output = json.dumps(doc, indent=2, ensure_ascii=False)
        gold = json.dumps(records[gold_rank], indent=2, ensure_ascii=False) if gold_rank is not None else None
        cases.append(Case("search_json", ex.id, output, ex.question, ex.answers, _as_nested(gold), True))
    return cases


def _as_nested(record_json: str | None) -> str | None:
    """A record as json.dumps(indent=2) writes it inside the results array (two levels deeper)."""
    if record_json is None:
        return None
    return "\n".join(("    " + line if i else line) for i, line in enumerate(record_json.splitlines()))


def flights_cases(n: int, seed: int = 0) -> list[Case]:
    """100 made-up flights per case; the question names one flight."""
    cases = []
    for k in range(n):
        rng = random.Random(f"flights/{seed}/{k}")
        codes = rng.sample(range(100, 9999), 100)
        rows = [
            {
                "flight": f"{rng.choice(['BA', 'LH', 'AF', 'KL', 'IB'])}{code}",
                "from": rng.choice(["LHR", "FRA", "CDG", "AMS", "MAD"]),
                "to": rng.choice(["JFK", "SFO", "NRT", "DXB", "GRU", "SYD"]),
                "departure": f"{rng.randrange(24):02d}:{rng.randrange(0, 60, 5):02d}",
                "gate": f"{rng.choice('ABCDE')}{rng.randrange(1, 40)}",
                "status": rng.choice(["on time", "delayed", "boarding", "cancelled"]),
            }
            for code in codes
        ]
        pick = rows[rng.randrange(100)]
        output = json.dumps({"airport": "multiple", "flights": rows}, indent=2)
        gold = _as_nested(json.dumps(pick, indent=2))
        question = f"When does flight {pick['flight']} depart, and from which gate?"
        cases.append(Case("flights_json", f"flights/{seed}-{k}", output, question, (pick["gate"],), gold, True))
    return cases


def service_log_cases(n: int, seed: int = 0) -> list[Case]:
    """300 log lines per case; one job failed, and its ERROR line says why."""
    causes = [
        "disk quota exceeded on /var/data",
        "upstream timeout after 30s from billing-api",
        "permission denied writing /etc/app/config.yaml",
        "out of memory while loading model shard 3",
        "TLS handshake failed: certificate expired",
    ]
    cases = []
    for k in range(n):
        rng = random.Random(f"log/{seed}/{k}")
        jobs = rng.sample(range(1000, 9999), 60)
        failed = rng.choice(jobs)
        cause = rng.choice(causes)
        lines = []
        for i in range(300):
            t = f"2026-03-{1 + i // 100:02d}T{8 + (i // 12) % 12:02d}:{(i * 7) % 60:02d}:{(i * 13) % 60:02d}Z"
            job = rng.choice(jobs)
            svc = rng.choice(["scheduler", "worker-1", "worker-2", "api", "cache"])
            msg = rng.choice(
                [
                    f"INFO  {svc} job {job} started (attempt {rng.randrange(1, 4)})",
                    f"INFO  {svc} job {job} finished in {rng.randrange(1, 900)}ms",
                    f"DEBUG {svc} heartbeat ok, queue depth {rng.randrange(0, 50)}",
                    f"WARN  {svc} job {job} retrying: transient network error",
                ]
            )
            lines.append(f"{t} {msg}")
        at = rng.randrange(30, 270)
        gold = f"{lines[at][:20]} ERROR worker-2 job {failed} failed: {cause}"
        lines.insert(at, gold)
        cases.append(
            Case(
                "service_log", f"log/{seed}-{k}", "\n".join(lines), f"Why did job {failed} fail?", (cause,), gold, False
            )
        )
    return cases


def python_module_cases(n: int, seed: int = 0) -> list[Case]:
    """80 functions of a client module per case; the question asks one function's timeout."""
    nouns = "invoice order customer product refund payment shipment account report ticket".split()
    verbs = "fetch create update delete list archive export sync".split()
    cases = []
    for k in range(n):
        rng = random.Random(f"code/{seed}/{k}")
        names = rng.sample([f"{v}_{noun}" for v in verbs for noun in nouns], 80)
        parts = ['"""Client for the billing service."""', "", "import json", "", ""]
        timeouts = {}
        for name in names:
            timeouts[name] = rng.randrange(2, 120)
            verb, noun = name.split("_")
            parts += [
                f"def {name}(client, {noun}_id, *, retries={rng.randrange(1, 6)}):",
                f'    """{verb.capitalize()} one {noun} by id."""',
                f"    timeout = {timeouts[name]}",
                f'    path = "/{noun}s/" + str({noun}_id)',
                f"    return client.request({verb!r}, path, timeout=timeout, retries=retries)",
                "",
                "",
            ]
        pick = rng.choice(names)
        output = "\n".join(parts)
        start = output.index(f"def {pick}(")
        gold = output[
            start : output.index(f"    timeout = {timeouts[pick]}", start) + len(f"    timeout = {timeouts[pick]}")
        ]
        question = f"What timeout does {pick} use?"  # the gold: its def line down to its timeout line, whole
        cases.append(Case("python_module", f"code/{seed}-{k}", output, question, (), gold, False))
    return cases


def bfcl_cases(n: int, seed: int = 0) -> list[Case]:
    """Distinct real JSON tool outputs (at least 1,000 characters) of BFCL long-context traces, the trace's
    requests as the question."""
    cases: dict[str, Case] = {}  # by output: traces replaying the same calls share outputs
    for trace in bfcl_traces(max(n, 1) * 4, seed=seed):
        for i, m in enumerate(trace.turns[-1]):
            if m.role == "tool" and len(m.content) >= 1000 and _parses(m.content) and m.content not in cases:
                cases[m.content] = Case("bfcl_json", f"{trace.name}/{i}", m.content, trace.question, (), None, True)
    return list(cases.values())[:n]


def _parses(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def valid(case: Case, text: str) -> bool:
    """JSON: the output parses. Lines: every output line is one of the input's lines or a gap marker."""
    if case.is_json:
        return _parses(text)
    lines = set(case.output.splitlines())
    return all(line in lines or line == "[...]" for line in text.splitlines())


def gold_whole(case: Case, text: str) -> bool | None:
    """Whether the record or line that answers is in the output whole (JSON: as a parsed record)."""
    if case.gold is None:
        return None
    if case.is_json:
        record = json.loads(case.gold)
        try:
            out = json.loads(text)
        except ValueError:
            return case.gold in text
        return _contains(out, record)
    return case.gold in text


def _contains(value: Any, record: Any) -> bool:
    if value == record:
        return True
    if isinstance(value, dict):
        return any(_contains(v, record) for v in value.values())
    if isinstance(value, list):
        return any(_contains(v, record) for v in value)
    return False


def load_cases(n: int, seed: int = 0) -> list[Case]:
    return [
        *search_json_cases(n, seed),
        *flights_cases(n, seed),
        *service_log_cases(n, seed),
        *python_module_cases(n, seed),
        *bfcl_cases(n, seed),
    ]


def run(n: int, drafts: tuple[str, ...], rates: tuple[float, ...]) -> dict[str, Any]:
    from tqdm import tqdm

    cases = load_cases(n)
    rows: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for draft in drafts:
        base = PromptCompressor.from_pretrained(draft, target=TARGET)
        readers = {name: base.with_config(cfg) for name, cfg in METHODS.items()}
        for case in tqdm(cases, desc=draft, unit="case"):
            t = time.perf_counter()
            scored = base.draft.score([case.output], case.question, config=base.config)
            draft_s = time.perf_counter() - t
            for name, pc in readers.items():
                for rate in rates:
                    (r,) = pc.compress_scored([case.output], scored, keep_rate=rate)
                    rows[f"{draft} | {name} | {rate}"].append(
                        {
                            "kind": case.kind,
                            "case": case.name,
                            "valid": valid(case, r.text),
                            "gold_whole": gold_whole(case, r.text),
                            "answer": answer_kept(r.text, case.answers) if case.answers else None,
                            "keep": r.keep_rate,
                            "tokens": r.original_tokens,
                            "draft_s": draft_s,
                        }
                    )
    return {
        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}",
        "n": n,
        "rates": list(rates),
        "drafts": list(drafts),
        "cases": {k: sum(c.kind == k for c in cases) for k in KINDS},
        "rows": rows,
    }


def _pct(values: list[Any]) -> str:
    vals = [v for v in values if v is not None]
    return f"{100 * sum(vals) / len(vals):.0f}" if vals else "-"


def report(result: dict[str, Any]) -> str:
    out = [
        f"### Structured tool outputs ({result['machine']}; {TARGET} target)",
        "",
        "Cases per kind: " + ", ".join(f"{k} {v}" for k, v in result["cases"].items()) + ".",
        "Each cell: output valid / gold record or line kept whole / answer string kept, % of cases.",
        "",
        "| draft | method | keep | " + " | ".join(KINDS) + " | achieved keep |",
        "|---|---|---|" + "---|" * len(KINDS) + "---|",
    ]
    for key, rows in result["rows"].items():
        draft, method, rate = key.split(" | ")
        cells = []
        for kind in KINDS:
            mine = [r for r in rows if r["kind"] == kind]
            if not mine:
                cells.append("-")
                continue
            cells.append(
                f"{_pct([r['valid'] for r in mine])} / {_pct([r['gold_whole'] for r in mine])} / "
                f"{_pct([r['answer'] for r in mine])}"
            )
        keep = sum(r["keep"] for r in rows) / len(rows)
        out.append(f"| {draft} | {method} | {rate} | " + " | ".join(cells) + f" | {keep:.3f} |")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks structured", description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=20, help="cases per kind")
    ap.add_argument("--drafts", nargs="+", default=["smollm2-135m"])
    ap.add_argument("--rates", nargs="+", type=float, default=[0.1, 0.25, 0.5])
    ap.add_argument("--report-only", action="store_true", help="rebuild the markdown from the JSON")
    args = ap.parse_args(argv)
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / "structured.json"
    if args.report_only:
        result = json.loads(path.read_text())
    else:
        result = run(args.n, tuple(args.drafts), tuple(args.rates))
        path.write_text(json.dumps(result, indent=1) + "\n")
    md = report(result)
    (RESULTS / "structured.md").write_text(md)
    print(md)
