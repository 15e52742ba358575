"""Agent sessions: replay multi-turn traces and measure what a turn costs.

    python -m benchmarks agent [--draft smollm2-135m] [--hotpot 3] [--bfcl 2] [--turns 10] [--repeats 3]

Each trace (benchmarks/traces.py: HotpotQA search agents over ``--turns`` searches, BFCL
v4 long-context multi-turn tool use, see :func:`bfcl_fitting`) is replayed three ways, side by side in one run:

- **session**: one ``pc.session()`` for the whole trace (draft cache kept, segments frozen,
  ``recompress="never"``);
- **stateless**: what a compressor without sessions does, every turn a fresh session with
  no draft cache and an empty memo, so the whole history is scored and compressed anew;
- **one pass**: a single draft scoring pass over the context the session's draft read at
  its last turn, the unit the session's total is compared with.

The session replay and the one pass are each timed ``--repeats`` times, a turn's seconds being
the fastest of its repeats (one timing on a shared 2-core machine can take twice as long); the
stateless replay, five times dearer, runs once.

Per turn and in total: draft tokens prefilled, draft seconds, target tokens sent, and the
share of the previous turn's prompt that is a byte-identical prefix of this turn's
(prompts rendered as ``<role>\\ncontent\\n`` per message). Goals: total session draft time
<= 1.1x the one pass; prefix stability 100% under ``recompress="never"``. For HotpotQA,
supporting sentences kept in the final prompt (>= 80% of their words) are reported too.
Results go to ``benchmarks/results/agent.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any

import torch

from crossprefill_agents import CompressionConfig, InMemoryMemoStore, PromptCompressor, SessionTurn
from crossprefill_agents.draft import load_draft

from .metrics import kept_word_fraction
from .traces import Trace, bfcl_traces, hotpotqa_search_traces

RESULTS = Path(__file__).parent / "results"


def render(messages: list[dict[str, Any]]) -> str:
    """A prompt as the target would receive it, up to its chat template: role headers and contents."""
    return "".join(f"<{m['role']}>\n{m['content']}\n" for m in messages)


def prefix_share(previous: str, current: str) -> float:
    """The share of ``previous`` that is a byte-identical prefix of ``current`` (1.0 when it all is)."""
    if not previous:
        return 1.0
    n = 0
    for a, b in zip(previous, current, strict=False):
        if a != b:
            break
        n += 1
    return n / len(previous)


def gold_kept(trace: Trace, turn: SessionTurn) -> tuple[int, int]:
    """(kept, total) supporting sentences of a HotpotQA trace in the final compressed prompt."""
    originals = trace.messages()
    kept = 0
    for sentence in trace.gold:
        best = 0.0
        for i, m in enumerate(originals):
            at = m["content"].find(sentence)
            if at < 0:
                continue
            res = turn.results.get(i)
            spans = res.kept_spans if res is not None else ((0, len(m["content"])),)
            best = max(best, kept_word_fraction(spans, m["content"], (at, at + len(sentence))))
        kept += best >= 0.8
    return kept, len(trace.gold)


def _fresh(pc: PromptCompressor, *, kv_cache: bool) -> PromptCompressor:
    """A compressor on ``pc``'s draft with an empty memo (and, unless ``kv_cache``, no draft cache)."""
    extra: dict[str, Any] = {} if kv_cache else {"kv_cache_bytes": 0}
    return PromptCompressor(pc.draft, target=pc.target, config=pc.config, memo=InMemoryMemoStore(), **extra)


def replay(pc: PromptCompressor, trace: Trace, repeats: int = 1) -> dict[str, Any]:
    """Replay one trace with a session, statelessly, and score the final context once.

    The session replay and the one pass run ``repeats`` times each (a fresh compressor every time) and each
    turn's session draft seconds, like the one pass's, are the fastest of the repeats: on a shared machine a
    single timing can take twice as long. The stateless replay runs once, interleaved with the first session.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    session = _fresh(pc, kv_cache=True).session()
    rows: list[dict[str, Any]] = []
    prev_session = prev_stateless = ""
    last: SessionTurn | None = None
    rendered: list[str] = []
    for k in range(len(trace.turns)):
        msgs = trace.messages(k)
        t0 = time.perf_counter()
        turn = session.compress_messages(msgs)
        s_wall = time.perf_counter() - t0
        t0 = time.perf_counter()
        fresh = _fresh(pc, kv_cache=False).session().compress_messages(msgs)
        f_wall = time.perf_counter() - t0
        a, b = render(turn.messages), render(fresh.messages)
        rendered.append(a)
        rows.append(
            {
                "turn": k,
                "messages": len(msgs),
                "target_tokens_uncompressed": turn.stats.target_tokens_before,
                "session": {
                    **turn.stats.to_dict(),
                    "wall_s": s_wall,
                    "prefix_share": prefix_share(prev_session, a) if k else 1.0,
                    "draft_s_runs": [turn.stats.draft_s],
                },
                "stateless": {
                    **fresh.stats.to_dict(),
                    "wall_s": f_wall,
                    "prefix_share": prefix_share(prev_stateless, b) if k else 1.0,
                },
            }
        )
        prev_session, prev_stateless = a, b
        last = turn
        s, f = rows[-1]["session"], rows[-1]["stateless"]
        print(
            f"  turn {k:2d}: {turn.stats.target_tokens_before:6,} target tokens | session draft "
            f"{s['draft_tokens_prefilled']:5,} tok {s['draft_s']:5.1f}s prefix {s['prefix_share']:.0%} | stateless "
            f"{f['draft_tokens_prefilled']:5,} tok {f['draft_s']:5.1f}s prefix {f['prefix_share']:.0%}",
            flush=True,
        )
    assert last is not None
    for _ in range(repeats - 1):  # the same replay again: the same prompts, timed anew
        again = _fresh(pc, kv_cache=True).session()
        for k, row in enumerate(rows):
            turn = again.compress_messages(trace.messages(k))
            if render(turn.messages) != rendered[k]:
                raise RuntimeError(f"{trace.name} turn {k}: a repeated session replay sent a different prompt")
            row["session"]["draft_s_runs"].append(turn.stats.draft_s)
    for row in rows:
        row["session"]["draft_s"] = min(row["session"]["draft_s_runs"])
    # The reference: one pass over the context the session's draft read at its last run.
    k_last = max((t["turn"] for t in rows if t["session"]["draft_read"]), default=len(rows) - 1)
    msgs = trace.messages(k_last)
    docs = [msgs[i]["content"] for i in rows[k_last]["session"]["draft_read"]]
    query = next((m["content"] for m in reversed(msgs) if m["role"] == "user"), "")
    passes = [pc.draft.score(docs, query, config=pc.config) for _ in range(repeats)]
    seconds = [one.prefill_s + one.query_s for one in passes]
    out: dict[str, Any] = {
        "trace": trace.name,
        "turns": rows,
        "one_pass": {
            "draft_tokens": passes[0].prefilled_tokens,
            "draft_s": min(seconds),
            "draft_s_runs": seconds,
            "windows": passes[0].windows,
        },
    }
    if trace.gold:
        kept, total = gold_kept(trace, last)
        out["gold_kept"] = [kept, total]
    return out


def bfcl_fitting(n: int, *, min_chars: int = 8_000, max_chars: int = 24_000, max_output: int = 12_000) -> list[Trace]:
    """BFCL traces with 8k-24k characters of tool output in all, none over 12k (one draft window).

    The longest BFCL outputs (up to 70k characters, ~30k SmolLM2 tokens in one message) are
    scored in windows whatever the mode, and cost minutes per stateless turn on 2 cores;
    these show the multi-turn effect at a cost a benchmark run can afford.
    """
    fits = []
    for t in bfcl_traces(200):
        sizes = [len(m.content) for m in t.turns[-1] if m.role == "tool"]
        if sizes and min_chars <= sum(sizes) <= max_chars and max(sizes) <= max_output:
            fits.append(t)
    return fits[:n]


def totals(r: dict[str, Any]) -> dict[str, Any]:
    """Sums over a replayed trace's turns, with the ratios to one pass over the final context."""
    rows = r["turns"]
    out: dict[str, Any] = {"trace": r["trace"], "turns": len(rows), "one_pass_s": r["one_pass"]["draft_s"]}
    out["one_pass_tokens"] = r["one_pass"]["draft_tokens"]
    out["uncompressed_target_tokens"] = sum(t["target_tokens_uncompressed"] for t in rows)
    for mode in ("session", "stateless"):
        out[f"{mode}_draft_s"] = sum(t[mode]["draft_s"] for t in rows)
        out[f"{mode}_draft_tokens"] = sum(t[mode]["draft_tokens_prefilled"] for t in rows)
        out[f"{mode}_reused_tokens"] = sum(t[mode]["draft_tokens_reused"] for t in rows)
        out[f"{mode}_target_tokens"] = sum(t[mode]["target_tokens_after"] for t in rows)
        out[f"{mode}_min_prefix"] = min(t[mode]["prefix_share"] for t in rows)
        out[f"{mode}_ratio"] = out[f"{mode}_draft_s"] / out["one_pass_s"] if out["one_pass_s"] else float("nan")
    if "gold_kept" in r:
        out["gold_kept"] = r["gold_kept"]
    return out


def to_markdown(result: dict[str, Any]) -> str:
    lines = [
        f"Draft {result['draft']}, target {result['target']}, keep rate {result['keep_rate']}, "
        f"min_tokens {result['min_tokens']}. Machine: {result['machine']}. Session and one-pass seconds: the "
        f"fastest of {result.get('repeats', 1)} timings each (per turn for the session); stateless: one.",
        "",
        "### Totals per trace (all turns)",
        "",
        "| trace | turns | one pass over the final context: draft s | session: draft s (x one pass) | "
        "stateless: draft s (x one pass) | draft tokens prefilled: session / stateless | "
        "min prefix kept: session / stateless | target tokens sent: uncompressed / session |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for t in result["totals"]:
        lines.append(
            f"| {t['trace']} | {t['turns']} | {t['one_pass_s']:.1f} | {t['session_draft_s']:.1f} "
            f"({t['session_ratio']:.2f}x) | {t['stateless_draft_s']:.1f} ({t['stateless_ratio']:.2f}x) | "
            f"{t['session_draft_tokens']:,} / {t['stateless_draft_tokens']:,} | "
            f"{t['session_min_prefix']:.1%} / {t['stateless_min_prefix']:.1%} | "
            f"{t['uncompressed_target_tokens']:,} / {t['session_target_tokens']:,} |"
        )
    tot = result["totals"]
    if tot:
        s = sum(t["session_draft_s"] for t in tot)
        f = sum(t["stateless_draft_s"] for t in tot)
        o = sum(t["one_pass_s"] for t in tot)
        lines += [
            "",
            f"All traces: session {s:.1f} s = {s / o:.2f}x one pass ({o:.1f} s); stateless {f:.1f} s = "
            f"{f / o:.2f}x. Worst trace: session {max(t['session_ratio'] for t in tot):.2f}x. "
            f"Prefix kept turn to turn, session: min {min(t['session_min_prefix'] for t in tot):.1%}.",
        ]
    gold = [t for t in tot if "gold_kept" in t]
    if gold:
        k = sum(t["gold_kept"][0] for t in gold)
        n = sum(t["gold_kept"][1] for t in gold)
        lines += ["", f"HotpotQA supporting sentences kept in the final session prompt: {k}/{n}."]
    for r in result["traces"][:1] + [x for x in result["traces"] if x["trace"].startswith("bfcl")][:1]:
        lines += [
            "",
            f"### Per turn: {r['trace']}",
            "",
            "| turn | target tokens uncompressed | sent (session) | session draft tokens prefilled / reused | "
            "session draft s | stateless draft tokens | stateless draft s | prefix kept: session / stateless |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for t in r["turns"]:
            s_, f_ = t["session"], t["stateless"]
            lines.append(
                f"| {t['turn']} | {t['target_tokens_uncompressed']:,} | {s_['target_tokens_after']:,} | "
                f"{s_['draft_tokens_prefilled']:,} / {s_['draft_tokens_reused']:,} | {s_['draft_s']:.2f} | "
                f"{f_['draft_tokens_prefilled']:,} | {f_['draft_s']:.2f} | "
                f"{s_['prefix_share']:.1%} / {f_['prefix_share']:.1%} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks agent", description=__doc__.split("\n\n")[0])
    ap.add_argument("--draft", default="smollm2-135m")
    ap.add_argument("--target", default="cl100k_base")
    ap.add_argument("--hotpot", type=int, default=3, help="HotpotQA search traces")
    ap.add_argument("--bfcl", type=int, default=2, help="BFCL long-context traces")
    ap.add_argument("--turns", type=int, default=10, help="searches per HotpotQA trace")
    ap.add_argument("--keep-rate", type=float, default=0.25)
    ap.add_argument("--repeats", type=int, default=3, help="session replays and one passes per trace (fastest kept)")
    ap.add_argument("--out", default="agent", help="results file stem under benchmarks/results/")
    args = ap.parse_args(argv)
    config = CompressionConfig(keep_rate=args.keep_rate)
    pc = PromptCompressor(load_draft(args.draft), target=args.target, config=config)
    traces = hotpotqa_search_traces(args.hotpot, turns=args.turns) + bfcl_fitting(args.bfcl)
    replayed = []
    for tr in traces:
        print(f"{tr.name}: {len(tr.turns)} turns, {tr.prompt_chars():,} characters at the end", flush=True)
        replayed.append(replay(pc, tr, args.repeats))
    result = {
        "draft": args.draft,
        "target": args.target,
        "keep_rate": args.keep_rate,
        "min_tokens": config.min_tokens,
        "repeats": args.repeats,
        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}",
        "traces": replayed,
        "totals": [totals(r) for r in replayed],
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.out}.json").write_text(json.dumps(result, indent=2) + "\n")
    md = to_markdown(result)
    (RESULTS / f"{args.out}.md").write_text(md)
    print()
    print(md)


if __name__ == "__main__":
    main()
