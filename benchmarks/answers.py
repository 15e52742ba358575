"""Answer quality retained: a real 1.5B cross-family target answers from the full and from each compressed prompt.

    python -m benchmarks answers [--lengths 2000 4000 8000] [--n 20 20 10] [--datasets ...] [--methods ...]
                                 [--rates 0.25 0.5]
    python -m benchmarks answers --report-only

The target is Qwen2.5-Coder-1.5B-Instruct (``LocalChatModel``, transformers bf16, greedy, at most
24 new tokens; 48 for the key-value needle, whose UUID answer takes 33), a third family beside both
drafts, with its own tokenizer; budgets are counted in its tokens. On the held-out draw (seed 0) of
HotpotQA, paraphrased SQuAD and the two needle sets, each case is compressed once per method (ours:
one draft pass per draft serves both rates) and the target answers every prompt. Every answer is
appended to ``benchmarks/results/answers.jsonl`` as it is computed, so an interrupted run resumes
where it stopped.

Methods: the full prompt; ours with SmolLM2-135M and Gemma-3-270M at keep 0.25 and 0.5;
LongLLMLingua (llmlingua 0.2.2, SmolLM2 draft) at 0.25 and 0.5; the best non-LLM baseline of the
scorer ablation (MiniLM on sentences) at 0.25 and 0.5; the paper's scorer (SmolLM2) and random
chunks at 0.25. Metrics: normalised exact match, F1, answer contained (a gold answer inside the
prediction), and F1 retained (method / full prompt) with a paired bootstrap 95% interval over the
cases. Results: ``benchmarks/results/answers.{jsonl,md}``.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from crossprefill_agents import CompressionConfig, PromptCompressor

from .baselines import compress_baseline
from .data import Example, load_examples
from .metrics import exact_match, f1, normalize_answer

RESULTS = Path(__file__).parent / "results"
TARGET = "qwen2.5-coder-1.5b"
DATASETS = ("hotpotqa", "squad_paraphrase", "niah_passkey", "niah_kv")
INSTRUCTION = "Answer the question using the context. Reply with only the answer, a few words."
MAX_NEW_TOKENS = 24
# Datasets whose gold answers outgrow that cap: the key-value needle's UUID takes 33 target tokens.
ANSWER_TOKENS = {"niah_kv": 48}
# method name -> keep rates it runs at ("full" runs once, at 1.0)
METHODS: dict[str, tuple[float, ...]] = {
    "full": (1.0,),
    "ours/smollm2-135m": (0.25, 0.5),
    "ours/gemma3-270m": (0.25, 0.5),
    "longllmlingua/smollm2-135m": (0.25, 0.5),
    "minilm/sentence": (0.25, 0.5),
    "paper/smollm2-135m": (0.25,),
    "random/window": (0.25,),
}


@dataclass(frozen=True)
class Prompt:
    """One context the target reads: a case's full or compressed context."""

    case: str
    method: str
    rate: float
    context: str
    context_tokens: int  # target tokens of ``context``
    compress_s: float
    draft: str = ""  # the draft model that scored it, with its precision (``smollm2-135m+bf16``); "" = none


def answer_contained(prediction: str, answers: Iterable[str]) -> bool:
    """A gold answer appears, normalised, inside the normalised prediction."""
    pred = f" {normalize_answer(prediction)} "
    return any(f" {normalize_answer(a)} " in pred for a in answers if normalize_answer(a))


def cases(datasets: Iterable[str], lengths: Iterable[int], ns: Iterable[int], seed: int = 0) -> list[Example]:
    """The held-out draw: ``n`` examples of each dataset at each length (one n per length)."""
    counter = _target_counter()
    return [
        ex
        for length, n in zip(lengths, ns, strict=True)
        for ds in datasets
        for ex in load_examples(ds, n=n, context_tokens=length, seed=seed, count=counter)
    ]


def _target_counter() -> Any:
    from crossprefill_agents.targets import resolve_target

    return resolve_target(TARGET).count


def compress_all(examples: list[Example], methods: dict[str, tuple[float, ...]], done: set[str]) -> Iterable[Prompt]:
    """Every (case, method, rate) prompt not in ``done`` (keys ``case|method|rate``), method by method."""
    from tqdm import tqdm

    def todo(method: str) -> list[Example]:
        return [ex for ex in examples if any(_key(ex.id, method, r) not in done for r in methods[method])]

    count = _target_counter()
    for ex in todo("full") if "full" in methods else []:
        yield Prompt(ex.id, "full", 1.0, ex.context, count(ex.context), 0.0)
    for method in (m for m in methods if m.startswith(("ours/", "paper/"))):
        kind, draft = method.split("/")
        pc = PromptCompressor.shared(draft, target=TARGET)
        if kind == "paper":
            pc = pc.with_config(CompressionConfig.paper())
        for ex in tqdm(todo(method), desc=method, unit="case"):
            t0 = time.perf_counter()
            scored = pc.draft.score([ex.context], ex.question, config=pc.config)
            score_s = time.perf_counter() - t0
            for rate in methods[method]:
                (r,) = pc.compress_scored([ex.context], scored, keep_rate=rate)
                yield Prompt(
                    ex.id, method, rate, r.text, r.compressed_tokens, score_s + r.timings.selection_s, pc.draft.name
                )
    for method in (m for m in methods if m in ("minilm/sentence", "random/window")):
        name, unit = method.split("/")
        for ex in todo(method):
            for rate in methods[method]:
                b = compress_baseline(name, unit, ex.context, ex.question, keep_rate=rate, counter=count)
                yield Prompt(ex.id, method, rate, b.text, b.compressed_tokens, b.seconds)
    if "longllmlingua/smollm2-135m" in methods:
        yield from _peer_prompts(todo("longllmlingua/smollm2-135m"), methods["longllmlingua/smollm2-135m"], count)


def _peer_prompts(examples: list[Example], rates: tuple[float, ...], count: Any) -> Iterable[Prompt]:
    from .peers.llmlingua import LLMLinguaPeer

    with LLMLinguaPeer() as peer:
        for ex in examples:
            for rate in rates:
                p = peer.compress(
                    ex.context, ex.question, keep_rate=rate, method="longllmlingua", documents=ex.documents, id=ex.id
                )
                yield Prompt(
                    ex.id, "longllmlingua/smollm2-135m", rate, p.text, count(p.text), p.seconds, "smollm2-135m"
                )


def _key(case: str, method: str, rate: float) -> str:
    return f"{case}|{method}|{rate}"


def load_store(path: Path) -> dict[str, dict[str, Any]]:
    """Answers stored so far, by ``case|method|rate`` (a torn last line from an interrupted run is skipped)."""
    out: dict[str, dict[str, Any]] = {}
    if not path.exists():
        return out
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        out[_key(row["case"], row["method"], row["rate"])] = row
    return out


def run(examples: list[Example], methods: dict[str, tuple[float, ...]], store: Path) -> None:
    """Answer every prompt not yet in ``store``, appending each answer as soon as it is computed."""
    from crossprefill_agents.local_chat import LocalChatModel

    done = set(load_store(store))
    by_id = {ex.id: ex for ex in examples}
    target: LocalChatModel | None = None
    with store.open("a", encoding="utf-8") as out:
        for p in compress_all(examples, methods, done):
            if _key(p.case, p.method, p.rate) in done:
                continue
            target = target or LocalChatModel.from_pretrained(TARGET)
            ex = by_id[p.case]
            target.reset_cache()  # every prompt from an empty cache: no reuse across methods
            reply = target.chat(
                [
                    {"role": "system", "content": INSTRUCTION},
                    {"role": "user", "content": f"Context:\n{p.context}\n\nQuestion: {ex.question}"},
                ],
                max_new_tokens=ANSWER_TOKENS.get(ex.dataset, MAX_NEW_TOKENS),
            )
            row = {
                "case": p.case,
                "dataset": ex.dataset,
                "length": ex.id.rsplit("/", 1)[1],
                "method": p.method,
                "rate": p.rate,
                "answer": reply.text,
                "gold": list(ex.answers),
                "em": exact_match(reply.text, ex.answers),
                "f1": f1(reply.text, ex.answers),
                "contained": answer_contained(reply.text, ex.answers),
                "context_tokens": p.context_tokens,
                "prompt_tokens": reply.prompt_tokens,
                "compress_s": p.compress_s,
                "draft": p.draft,
                "ttft_s": reply.ttft_s,
            }
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
            out.flush()
            done.add(_key(p.case, p.method, p.rate))


def paired_bootstrap(
    method: list[float], full: list[float], *, rounds: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """95% interval of sum(method) / sum(full) over cases resampled in pairs."""
    rng = random.Random(seed)
    n = len(method)
    ratios = []
    for _ in range(rounds):
        idx = [rng.randrange(n) for _ in range(n)]
        den = sum(full[i] for i in idx)
        if den > 0:
            ratios.append(sum(method[i] for i in idx) / den)
    if not ratios:
        return float("nan"), float("nan")
    ratios.sort()
    return ratios[int(0.025 * len(ratios))], ratios[min(len(ratios) - 1, int(0.975 * len(ratios)))]


def summarize(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (dataset, length, method, rate): n, EM, F1, contained, F1 retained with its interval; only cases
    the full prompt was answered on count."""
    by: dict[tuple[str, str], dict[tuple[str, str, float], dict[str, dict[str, Any]]]] = defaultdict(
        lambda: defaultdict(dict)
    )
    for r in rows:
        by[(r["dataset"], r["length"])][(r["method"], r.get("draft", ""), r["rate"])][r["case"]] = r
    out = []
    for (ds, length), methods in sorted(by.items()):
        full = methods.get(("full", "", 1.0), {})
        for (method, draft, rate), got in sorted(methods.items(), key=lambda kv: (_order(kv[0][0]), kv[0][1:])):
            common = [c for c in got if c in full]
            if not common:
                continue
            f_m = [got[c]["f1"] for c in common]
            f_f = [full[c]["f1"] for c in common]
            lo, hi = paired_bootstrap(f_m, f_f)
            out.append(
                {
                    "dataset": ds,
                    "length": int(length),
                    "method": method,
                    "draft": draft,
                    "rate": rate,
                    "n": len(common),
                    "em": 100 * sum(got[c]["em"] for c in common) / len(common),
                    "f1": 100 * sum(f_m) / len(common),
                    "contained": 100 * sum(got[c]["contained"] for c in common) / len(common),
                    "retained": sum(f_m) / sum(f_f) if sum(f_f) else float("nan"),
                    "retained_ci": (lo, hi),
                    "context_tokens": sum(got[c]["context_tokens"] for c in common) / len(common),
                }
            )
    return out


def _order(method: str) -> int:
    return list(METHODS).index(method) if method in METHODS else len(METHODS)


def report(summary: list[dict[str, Any]]) -> str:
    lines = [
        f"### Answer quality retained ({TARGET} target, greedy, {MAX_NEW_TOKENS} new tokens at most, "
        f"{ANSWER_TOKENS['niah_kv']} on niah_kv)",
        "",
        "EM / F1 / answer contained, %; F1 retained = method / full prompt on the same cases, with its paired",
        "bootstrap 95% interval. Draft: the model that scored the context, `+bf16` where it ran in bfloat16.",
        "",
        "| dataset | tokens | method | draft | keep | n | EM | F1 | contained | F1 retained (95% CI) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in summary:
        lo, hi = s["retained_ci"]
        lines.append(
            f"| {s['dataset']} | {s['length']} | {s['method']} | {s['draft'] or '-'} | {s['rate']} | {s['n']} | "
            f"{s['em']:.1f} | "
            f"{s['f1']:.1f} | {s['contained']:.1f} | {s['retained']:.2f} ({lo:.2f}-{hi:.2f}) |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks answers", description=__doc__.split("\n\n")[0])
    ap.add_argument("--lengths", nargs="+", type=int, default=[2000, 4000, 8000])
    ap.add_argument("--n", nargs="+", type=int, default=[20, 20, 10], help="examples per dataset, one per length")
    ap.add_argument("--datasets", nargs="+", default=list(DATASETS))
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    ap.add_argument(
        "--rates", nargs="+", type=float, help="run only these keep rates of each method (the full prompt always)"
    )
    ap.add_argument("--report-only", action="store_true", help="rebuild the markdown from the stored answers")
    args = ap.parse_args(argv)
    if len(args.n) != len(args.lengths):
        ap.error("--n takes one count per --lengths entry")
    RESULTS.mkdir(exist_ok=True)
    store = RESULTS / "answers.jsonl"
    if not args.report_only:
        examples = cases(args.datasets, args.lengths, args.n)
        plan = {
            m: METHODS[m] if m == "full" or not args.rates else tuple(r for r in METHODS[m] if r in args.rates)
            for m in args.methods
        }
        if not all(plan.values()):
            ap.error(f"--rates {args.rates} leaves no rate for {[m for m, r in plan.items() if not r]}")
        run(examples, plan, store)
    md = report(summarize(load_store(store).values()))
    (RESULTS / "answers.md").write_text(md, encoding="utf-8")
    print(md)
