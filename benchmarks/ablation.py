"""Scoring levers, one at a time, on the same contexts: which ones move evidence recall.

    python -m benchmarks ablation [--n 12] [--length 2000]
    python -m benchmarks ablation --levers [--n 12] [--length 2000]

Default mode: each draft scores each context once per attention-layer setting (all
layers; for Gemma-3 also its full-attention layers only); every selection variant (units
x lexical fusion weight) then reuses that pass through ``compress_scored``, so the
variants differ in nothing else. Results go to ``benchmarks/results/ablation.{json,md}``.

``--prior``: a position prior calibrated per draft on essay text that answers none of the
questions, divided out of the scores (``ablation-prior``). ``--heads``: retrieval heads
ranked on facts planted in essay text, only the top k voting (``ablation-heads``).

``--scorer``: the default question scorer (every question token reads the context, minus
a null query's attention, on the draft's calibrated retrieval heads) read with and
without lexical fusion and the paragraph prior, and the faithful paper preset as the
reference row, each its own timed pass, next to BM25 / idf overlap / MiniLM on the
benchmark's sentences. Defaults to held-out
questions (``--seed 0``; the levers were chosen on ``--seed 1``). Results go to
``benchmarks/results/ablation-scorer.{json,md}``.

``--subsets``: head subsets (the calibrated 8, the top 4 / 12 / 16 by needle mass, every
head, full-attention layers only) x reading weights for the question scorer, on a
selection draw (``--seed 1`` by default, held-out questions left out), from one capture of
every head per question (``ablation-subsets``).

``--levers``: the draft-side levers that need their own pass (look-ahead steps, the query
read before the context too, int8 dynamic quantisation), each timed in the same run and
read with the default selection (sentence units, lexical weight 0.7) and with the draft
alone (lexical weight 0). Results go to ``benchmarks/results/ablation-levers.{json,md}``.
Non-LLM rows on the same units are printed alongside in both modes.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from collections import defaultdict
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from crossprefill_agents import CompressionConfig, PromptCompressor
from crossprefill_agents.draft import DraftModel, load_draft

from .baselines import compress_baseline
from .data import Example, load_examples
from .metrics import answer_kept, evidence_recall

RESULTS = Path(__file__).parent / "results"
TARGET = "cl100k_base"
RATES = (0.25, 0.5)
WEIGHTS = (0.0, 0.3, 0.5, 0.7, 1.0)
LOW_OVERLAP = 1


def _row(ex: Example, spans: Any, text: str) -> dict[str, Any]:
    kept = evidence_recall(spans, ex.context, [(e.start, e.end) for e in ex.evidence])
    return {
        "answer": answer_kept(text, ex.answers),
        "evidence": [(bool(k), e.overlap_words) for k, e in zip(kept, ex.evidence, strict=True)],
        "hops": [e.hop for e in ex.evidence],
    }


def run(datasets: tuple[str, ...], n: int, length: int, drafts: tuple[str, ...]) -> dict[str, Any]:
    from tqdm import tqdm

    examples = [ex for ds in datasets for ex in load_examples(ds, n=n, context_tokens=length)]
    rows: dict[str, dict[float, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    seconds: dict[str, float] = defaultdict(float)
    for draft in drafts:
        base = PromptCompressor.from_pretrained(draft, target=TARGET)
        layer_settings = ["all"] + (["global"] if base.draft.global_layers is not None else [])
        for layers in layer_settings:
            score_cfg = CompressionConfig().with_experimental(attention_layers=layers)
            variants = {
                f"{draft} layers={layers} unit={unit} lexical={w}": PromptCompressor(
                    base.draft,
                    target=base.target,
                    config=CompressionConfig(lexical_weight=w).with_experimental(attention_layers=layers, unit=unit),
                )
                for unit in ("chunk", "sentence")
                for w in WEIGHTS
                if not (w == 1.0 and layers != "all")
            }
            variants[f"{draft} paper preset"] = PromptCompressor(
                base.draft, target=base.target, config=CompressionConfig.paper()
            )
            for ex in tqdm(examples, desc=f"{draft} layers={layers}", unit="ctx"):
                t = time.perf_counter()
                scored = base.draft.score([ex.context], ex.question, config=score_cfg)
                seconds[f"{draft} layers={layers}"] += time.perf_counter() - t
                for name, pc in variants.items():
                    if name.endswith("paper preset") and layers != "all":
                        continue
                    for rate in RATES:
                        (r,) = pc.compress_scored([ex.context], scored, keep_rate=rate)
                        rows[name][rate].append({"dataset": ex.dataset, **_row(ex, r.kept_spans, r.text)})
    _baseline_rows(examples, rows)
    return _result(datasets, n, length, examples, rows, seconds)


LEVERS: dict[str, tuple[bool, dict[str, Any]]] = {  # name -> (int8 draft, experimental options)
    "look-ahead 8": (False, {"lookahead": 8}),
    "look-ahead 2": (False, {"lookahead": 2}),
    "look-ahead 0": (False, {"lookahead": 0}),
    "query before and after": (False, {"lookahead": 8, "query_position": "both"}),
    "int8, look-ahead 8": (True, {"lookahead": 8}),
    "int8, look-ahead 2": (True, {"lookahead": 2}),
}


def run_levers(datasets: tuple[str, ...], n: int, length: int, drafts: tuple[str, ...]) -> dict[str, Any]:
    """One draft pass per (draft, lever); each pass read with lexical weight 0.7 (default) and 0 (draft only)."""

    examples = [ex for ds in datasets for ex in load_examples(ds, n=n, context_tokens=length)]
    rows: dict[str, dict[float, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    seconds: dict[str, float] = defaultdict(float)
    for draft in drafts:
        plain = load_draft(draft)
        int8 = load_draft(draft, quantize="int8")
        for lever, (quantized, fields) in LEVERS.items():
            model = int8 if quantized else plain
            score_cfg = CompressionConfig().with_experimental(**fields)
            readers = _lexical_readers(model, (0.7, 0.0), **fields)
            _timed_pass(model, f"{draft} {lever}", examples, score_cfg, readers, rows, seconds)
        del plain, int8
    _baseline_rows(examples, rows)
    return _result(datasets, n, length, examples, rows, seconds)


PRIOR_BINS = 20


def position_profile(scores: np.ndarray, bins: int = PRIOR_BINS) -> np.ndarray:
    """Mean score per relative-position bin of one context, scores first scaled to mean 1: ``(bins,)``."""
    x = np.asarray(scores, dtype=np.float64)
    x = x / x.mean() if x.size and x.mean() > 0 else np.ones_like(x)
    edges = np.linspace(0, len(x), bins + 1).astype(int)
    return np.array([x[a:b].mean() if b > a else 1.0 for a, b in itertools.pairwise(edges)])


def apply_prior(scores: np.ndarray, prior: np.ndarray) -> np.ndarray:
    """Divide each token's score by the prior of its relative-position bin."""
    n = len(scores)
    where = np.minimum((np.arange(n) * len(prior)) // max(n, 1), len(prior) - 1)
    return np.asarray(scores) / prior[where]


def run_prior(datasets: tuple[str, ...], n: int, length: int, drafts: tuple[str, ...]) -> dict[str, Any]:
    """A per-draft position prior, calibrated on essay text that answers none of the questions, divided out."""
    from tqdm import tqdm

    from .speed import essays_text

    examples = [ex for ds in datasets for ex in load_examples(ds, n=n, context_tokens=length)]
    calib_questions = [ex.question for ex in load_examples("hotpotqa", n=8, context_tokens=length, seed=1)]
    essays = essays_text()
    rows: dict[str, dict[float, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    priors: dict[str, list[float]] = {}
    for draft in drafts:
        model = load_draft(draft)
        cfg = CompressionConfig()
        profiles = []
        for i, q in enumerate(tqdm(calib_questions, desc=f"{draft} calibration", unit="ctx")):
            start = 40_000 + i * 12_000
            text = essays[start : start + 9_000]
            profiles.append(position_profile(model.score([text], q, config=cfg).scores[0]))
        prior = np.mean(profiles, axis=0)
        priors[draft] = prior.tolist()
        readers = _lexical_readers(model, (0.7, 0.0))
        for ex in tqdm(examples, desc=draft, unit="ctx"):
            scored = model.score([ex.context], ex.question, config=cfg)
            adjusted = replace(scored, scores=(apply_prior(scored.scores[0], prior),))
            for label, sc in (("", scored), (" + position prior", adjusted)):
                _read(rows, f"{draft}{label}", ex, sc, readers)
    _baseline_rows(examples, rows)
    result = _result(datasets, n, length, examples, rows, {})
    result["priors"] = priors
    return result


HEAD_COUNTS = (4, 8, 16, 32)


def run_heads(datasets: tuple[str, ...], n: int, length: int, drafts: tuple[str, ...]) -> dict[str, Any]:
    """Retrieval heads: rank heads on planted facts in essay text, then let only the top k vote.

    One pass per context records every head's pooled attention; each head subset's vote is
    computed from it (exactly what ``CompressionConfig().with_experimental(heads=...)`` would score).
    """
    from tqdm import tqdm

    from crossprefill_agents import DraftScores
    from crossprefill_agents.draft.heads import find_retrieval_heads

    from .speed import essays_text

    examples = [ex for ds in datasets for ex in load_examples(ds, n=n, context_tokens=length)]
    essays = essays_text()
    calib = [essays[200_000 + i * 10_000 : 200_000 + i * 10_000 + 6_000] for i in range(8)]
    rows: dict[str, dict[float, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    chosen: dict[str, list[list[int]]] = {}
    for draft in drafts:
        model = load_draft(draft)
        cfg = CompressionConfig()
        ranked = find_retrieval_heads(model, calib, top=max(HEAD_COUNTS))
        chosen[draft] = [list(p) for p in ranked]
        readers = _lexical_readers(model, (0.7, 0.0))
        for ex in tqdm(examples, desc=f"{draft} heads", unit="ctx"):
            per_head = model.head_scores([ex.context], ex.question, config=cfg)  # (steps, layers, heads, n)
            tok = model.tokenize(ex.context)
            subsets: dict[str, np.ndarray] = {"all heads": per_head.reshape(per_head.shape[0], -1, per_head.shape[-1])}
            for k in HEAD_COUNTS:
                idx = tuple(zip(*ranked[:k], strict=True))
                subsets[f"top {k} retrieval heads"] = per_head[:, idx[0], idx[1], :]
            for label, rows_ in subsets.items():
                vote = rows_.max(axis=1).mean(axis=0).astype(np.float64)  # (n,)
                sc = DraftScores(ex.question, (tok,), (vote,), 0, 1, 0.0, 0.0)
                _read(rows, f"{draft} {label}", ex, sc, readers)
    _baseline_rows(examples, rows)
    result = _result(datasets, n, length, examples, rows, {})
    result["heads"] = chosen
    return result


def _lexical_readers(model: DraftModel, weights: tuple[float, ...], **levers: Any) -> dict[str, PromptCompressor]:
    """Readers at several fusion weights, without the paragraph prior (the modes recorded before it existed);
    ``levers`` are experimental options of the pass."""
    return {
        f"lexical {w}": PromptCompressor(
            model,
            target=TARGET,
            config=CompressionConfig(lexical_weight=w, paragraph_weight=0.0).with_experimental(**levers),
        )
        for w in weights
    }


# A reading of one pass: (lexical_weight, paragraph_weight, paragraph_score)
Reading = tuple[float, float, str]

# name -> (the config of the pass, readings of it); "best_unit" was the paragraph score before "mean"
SCORERS: dict[str, tuple[CompressionConfig, tuple[Reading, ...]]] = {
    "question scorer, retrieval heads (default)": (
        CompressionConfig(),
        ((0.3, 2.0, "mean"), (0.3, 2.0, "best_unit"), (0.3, 0.0, "mean"), (0.0, 2.0, "mean"), (0.0, 0.0, "mean")),
    ),
    "paper preset (reference)": (CompressionConfig.paper(), ((0.0, 0.0, "mean"),)),
}


def _reading_label(reading: Reading) -> str:
    w, g, how = reading
    return f"lexical {w} paragraph {g}" + (" (best unit)" if g > 0 and how == "best_unit" else "")


def _readers(
    model: DraftModel, config: CompressionConfig, readings: tuple[Reading, ...]
) -> dict[str, PromptCompressor]:
    """One compressor per reading of a pass's scores (selection only, no draft pass of their own)."""
    return {
        _reading_label(r): PromptCompressor(
            model,
            target=TARGET,
            config=replace(config, lexical_weight=r[0], paragraph_weight=r[1]).with_experimental(paragraph_score=r[2]),
        )
        for r in readings
    }


def run_scorer(
    datasets: tuple[str, ...], n: int, length: int, drafts: tuple[str, ...], seed: int = 0
) -> dict[str, Any]:
    """One timed draft pass per (draft, scorer); each read at its fusion weights (selection only)."""

    examples = [ex for ds in datasets for ex in load_examples(ds, n=n, context_tokens=length, seed=seed)]
    rows: dict[str, dict[float, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    seconds: dict[str, float] = defaultdict(float)
    heads: dict[str, list[list[int]]] = {}
    for draft in drafts:
        model = load_draft(draft)
        heads[draft] = [list(p) for p in model.retrieval_heads or ()]
        for label, (score_cfg, readings) in SCORERS.items():
            readers = _readers(model, score_cfg, readings)
            _timed_pass(model, f"{draft} {label}", examples, score_cfg, readers, rows, seconds)
        del model
    _baseline_rows(examples, rows, methods=(("bm25", "sentence"), ("idf_overlap", "sentence"), ("minilm", "sentence")))
    result = _result(datasets, n, length, examples, rows, seconds)
    result["heads"] = heads
    result["seed"] = seed
    return result


SUBSET_READINGS: tuple[Reading, ...] = (
    (0.3, 2.0, "mean"),
    (0.0, 2.0, "mean"),
    (0.5, 2.0, "mean"),
    (0.3, 1.0, "mean"),
    (0.3, 3.0, "mean"),
)


def _selection_examples(datasets: tuple[str, ...], n: int, length: int, seed: int) -> list[Example]:
    """``n`` examples per dataset drawn with ``seed``, leaving out any question of the held-out draw (seed 0, 30)."""
    held = {ex.source_id for ds in datasets for ex in load_examples(ds, n=30, context_tokens=length, seed=0)}
    out: list[Example] = []
    for ds in datasets:
        pool = [ex for ex in load_examples(ds, n=n + 5, context_tokens=length, seed=seed) if ex.source_id not in held]
        out += pool[:n]
    return out


def _head_subsets(model: DraftModel, mass: np.ndarray) -> dict[str, tuple[tuple[int, int], ...]]:
    from crossprefill_agents.draft.heads import rank_heads

    layers, heads = mass.shape
    default = tuple(model.retrieval_heads or rank_heads(mass))
    subsets = {
        "calibrated heads (default)": default,
        **{f"top {k} by needle mass": rank_heads(mass, top=k) for k in (4, 12, 16)},
        "every head": tuple((i, h) for i in range(layers) for h in range(heads)),
    }
    if model.global_layers is not None:
        keep = list(model.global_layers)
        full = np.full_like(mass, -np.inf)
        full[keep] = mass[keep]
        subsets["default heads in full-attention layers only"] = tuple(p for p in default if p[0] in keep)
        subsets["top 8 of the full-attention layers"] = rank_heads(full)
    return subsets


def run_subsets(
    datasets: tuple[str, ...], n: int, length: int, drafts: tuple[str, ...], seed: int = 1
) -> dict[str, Any]:
    """Head subsets x reading weights for the question scorer, on a selection draw (never the held-out one).

    Per question, ``head_scores`` records every head's attention for the question and for
    the null query once; a subset's vote is the max over its heads of the difference (what
    ``CompressionConfig().with_experimental(heads=subset)`` scores), read at each ``SUBSET_READINGS`` weight pair.
    """
    from tqdm import tqdm

    from crossprefill_agents import DraftScores
    from crossprefill_agents.draft.queries import NULL_QUERY

    examples = _selection_examples(datasets, n, length, seed)
    rows: dict[str, dict[float, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    chosen: dict[str, dict[str, list[list[int]]]] = {}
    for draft in drafts:
        model = load_draft(draft)
        cfg = CompressionConfig()
        subsets = _head_subsets(model, _needle_mass(model))
        chosen[draft] = {k: [list(p) for p in v] for k, v in subsets.items()}
        readers = _readers(model, cfg, SUBSET_READINGS)
        for ex in tqdm(examples, desc=f"{draft} head subsets", unit="ctx"):
            asked = model.head_scores([ex.context], ex.question, config=cfg).mean(axis=0)  # (layers, heads, n)
            excess = asked - model.head_scores([ex.context], NULL_QUERY, config=cfg).mean(axis=0)
            tok = model.tokenize(ex.context)
            for label, heads in subsets.items():
                layer_idx, head_idx = zip(*heads, strict=True)
                vote = excess[list(layer_idx), list(head_idx)].max(axis=0).astype(np.float64)
                _read(rows, f"{draft} {label}", ex, DraftScores(ex.question, (tok,), (vote,), 0, 1, 0.0, 0.0), readers)
        del model
    _baseline_rows(examples, rows, methods=(("bm25", "sentence"), ("minilm", "sentence")))
    result = _result(datasets, n, length, examples, rows, {})
    result["subsets"] = chosen
    result["selection_seed"] = seed
    return result


def _needle_mass(model: DraftModel) -> np.ndarray:
    from crossprefill_agents.draft.heads import needle_masses

    return needle_masses(model, config=CompressionConfig().with_experimental(scorer="question", heads=()))


def _timed_pass(
    model: DraftModel,
    name: str,
    examples: list[Example],
    score_cfg: CompressionConfig,
    readers: dict[str, PromptCompressor],
    rows: dict[str, dict[float, list[dict[str, Any]]]],
    seconds: dict[str, float],
) -> None:
    """Score every example once with ``score_cfg`` (timed into ``seconds[name]``) and read it with each reader."""
    from tqdm import tqdm

    for ex in tqdm(examples, desc=name, unit="ctx"):
        t = time.perf_counter()
        scored = model.score([ex.context], ex.question, config=score_cfg)
        seconds[name] += time.perf_counter() - t
        _read(rows, name, ex, scored, readers)


def _read(
    rows: dict[str, dict[float, list[dict[str, Any]]]],
    name: str,
    ex: Example,
    scored: Any,
    readers: dict[str, PromptCompressor],
) -> None:
    """Select from one scoring pass with each reader at each rate, as rows ``name | reader label``."""
    for label, pc in readers.items():
        for rate in RATES:
            (r,) = pc.compress_scored([ex.context], scored, keep_rate=rate)
            rows[f"{name} | {label}"][rate].append({"dataset": ex.dataset, **_row(ex, r.kept_spans, r.text)})


def _result(
    datasets: tuple[str, ...],
    n: int,
    length: int,
    examples: list[Example],
    rows: dict[str, dict[float, list[dict[str, Any]]]],
    seconds: dict[str, float],
) -> dict[str, Any]:
    tokens = sum(ex.context_tokens for ex in examples)
    return {
        "datasets": datasets,
        "n": n,
        "length": length,
        "rows": {k: {str(r): v for r, v in d.items()} for k, d in rows.items()},
        "ms_per_1k": {k: 1000 * s / (tokens / 1000) for k, s in seconds.items()},
    }


BASELINES = (("idf_overlap", "sentence"), ("bm25", "sentence"), ("idf_overlap", "window"))


def _baseline_rows(
    examples: list[Example],
    rows: dict[str, dict[float, list[dict[str, Any]]]],
    methods: tuple[tuple[str, str], ...] = BASELINES,
) -> None:
    for method, unit in methods:
        for ex in examples:
            for rate in RATES:
                b = compress_baseline(method, unit, ex.context, ex.question, keep_rate=rate, counter=TARGET)
                rows[f"baseline {method}/{unit}"][rate].append(
                    {"dataset": ex.dataset, **_row(ex, b.kept_spans, b.text)}
                )


def _stats(items: list[dict[str, Any]]) -> tuple[float, float, float, int]:
    ev = [e for it in items for e in it["evidence"]]
    low = [e for e in ev if e[1] <= LOW_OVERLAP]
    mean = lambda xs: 100 * sum(xs) / len(xs) if xs else float("nan")  # noqa: E731
    return mean([it["answer"] for it in items]), mean([e[0] for e in ev]), mean([e[0] for e in low]), len(low)


def to_markdown(result: dict[str, Any]) -> str:
    if "selection_seed" in result:
        passes = (
            f"Selection questions (seed {result['selection_seed']}, none of the held-out seed-0 draw). One capture "
            "of every head's attention per question serves every head subset and reading weight."
        )
    elif "seed" in result:
        passes = (
            f"Held-out questions (seed {result['seed']}; the defaults were chosen on seed 1). Each scorer is its "
            "own timed draft pass, read at several fusion weights."
        )
    elif "heads" in result:
        passes = "One pass per context records every head; each head subset's vote is computed from it."
    elif "priors" in result:
        passes = "One pass per context, read with and without the calibrated position prior."
    elif any("look-ahead" in k for k in result["ms_per_1k"]):
        passes = "Each lever is its own draft pass, timed in this run."
    else:
        passes = "One draft pass per (draft, layers) serves every selection variant."
    datasets = list(result["datasets"])
    head = " | ".join(f"{ds} @{r}: recall / answer / low-overlap recall" for r in RATES for ds in datasets)
    lines = [
        f"## Scoring ablation: {', '.join(datasets)}, {result['n']} examples each, {result['length']} {TARGET} tokens",
        "",
        "Recall: supporting sentences with >= 80% of their words kept (%). Low overlap: evidence sharing "
        f"<= 1 content word with the question. {passes}",
        "",
        f"| variant | {head} |",
        "|---|" + "---|" * (len(RATES) * len(datasets)),
    ]
    for name, by_rate in result["rows"].items():
        cells = []
        for r in RATES:
            for ds in datasets:
                a, rec, low, n_low = _stats([it for it in by_rate[str(r)] if it["dataset"] == ds])
                cells.append(f"{rec:.1f} / {a:.1f} / " + (f"{low:.1f} ({n_low})" if n_low else "- (0)"))
        label = name.replace(" | ", ", ")  # a "|" inside a cell would split the markdown row
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Draft scoring cost, ms per 1k context tokens: "
        + ", ".join(f"{k}: {v:.0f}" for k, v in result["ms_per_1k"].items()),
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks ablation", description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=12)
    ap.add_argument("--length", type=int, default=2000)
    ap.add_argument("--datasets", nargs="+", default=["hotpotqa", "squad"])
    ap.add_argument("--drafts", nargs="+", default=["smollm2-135m", "gemma3-270m"])
    ap.add_argument("--levers", action="store_true", help="the draft-side levers (own pass each), timed")
    ap.add_argument("--prior", action="store_true", help="a calibrated position prior divided out of the scores")
    ap.add_argument("--heads", action="store_true", help="only calibrated retrieval heads vote")
    ap.add_argument(
        "--scorer",
        action="store_true",
        help="the default question scorer, its readings and the paper preset, held out, timed",
    )
    ap.add_argument("--subsets", action="store_true", help="head subsets x reading weights on a selection draw")
    ap.add_argument("--seed", type=int, default=None, help="question draw (--scorer: 0, held out; --subsets: 1)")
    ap.add_argument(
        "--name",
        default=None,
        help="suffix of the results files (ablation-scorer-NAME.md), so a run on other data "
        "sits beside the main one instead of replacing it",
    )
    ap.add_argument("--report-only", action="store_true")
    args = ap.parse_args(argv)
    RESULTS.mkdir(parents=True, exist_ok=True)
    modes = {"levers": run_levers, "prior": run_prior, "heads": run_heads, "scorer": run_scorer, "subsets": run_subsets}
    mode = next((m for m in modes if getattr(args, m)), None)
    stem = f"ablation-{mode}" if mode else "ablation"
    if args.name:
        stem += f"-{args.name}"
    path = RESULTS / f"{stem}.json"
    if args.report_only:
        result = json.loads(path.read_text())
    else:
        runner = modes[mode] if mode else run
        extra = {"seed": args.seed} if mode in ("scorer", "subsets") and args.seed is not None else {}
        result = runner(tuple(args.datasets), args.n, args.length, tuple(args.drafts), **extra)
        path.write_text(json.dumps(result) + "\n")
    md = to_markdown(result)
    (RESULTS / f"{stem}.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
