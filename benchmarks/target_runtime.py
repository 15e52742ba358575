"""Which runtime should run the local target? Load, prefill, decode, memory and one agent step, side by side.

    python -m benchmarks target-runtime [--model qwen2.5-coder-1.5b] [--configs ...] [--lengths 1024 4096]

Each configuration runs in its own fresh process, one after the other (so peak RSS and
thread settings are its own), on the same prompts:

- **load s**: ``LocalChatModel.from_pretrained`` from the converted folder plus a one-token
  warm-up forward (transformers maps the safetensors lazily; llama.cpp warms up at load);
  one extra row times transformers reading the GGUF itself (what the conversion saves);
- **prefill tokens/s** at ``--lengths`` prompt tokens of essay text, from an empty cache
  (time to the first generated token); fp32 runs the longer lengths only if its shortest
  one projects them under ``--slow-s``;
- **decode tokens/s** over ``--decode`` greedy tokens after a 256-token prompt;
- **peak RSS** of the process;
- **agent step**: a ~1.5k-token prompt (system, question, one search call and its ~1.3k-token
  result, two tools) answered with a ~40-token tool call, from an empty cache; and the
  **next step** with its ~300 new tokens, reusing the KV prefix (what an agent loop pays).

Results go to ``benchmarks/results/target-runtime.{json,md}`` (``--name N``: ``target-runtime-N``;
``--report-only`` rebuilds the table from the JSON). The machine is shared: the 1-minute load
average before each configuration is reported beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"
ROOT = Path(__file__).resolve().parent.parent

# name -> (backend, dtype, threads)
CONFIGS: dict[str, tuple[str, str, int]] = {
    "transformers-bf16-1t": ("transformers", "bf16", 1),
    "transformers-bf16-2t": ("transformers", "bf16", 2),
    "transformers-fp32-2t": ("transformers", "fp32", 2),
    "transformers-int8-2t": ("transformers", "int8", 2),
    "xllamacpp-1t": ("xllamacpp", "q4_k_m", 1),
    "xllamacpp-2t": ("xllamacpp", "q4_k_m", 2),
}
GGUF_LOAD = "transformers-bf16-from-gguf"  # load-time row only: what the bf16 conversion saves
# int8 (torch dynamic quantisation) is left out by default: on the 0.5B it loaded 6x slower and prefilled and
# decoded slower than bf16 on one thread (a 4-minute check run); pass --configs to include it
DEFAULT_CONFIGS = [c for c in CONFIGS if c != "transformers-int8-2t"] + [GGUF_LOAD]

SEARCH_TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "search",
            "description": "Search the essay collection; returns matching passages.",
            "parameters": {
                "type": "object",
                "properties": {"query": {"type": "string", "description": "what to look for"}},
                "required": ["query"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "final_answer",
            "description": "Give the final answer to the user's question.",
            "parameters": {
                "type": "object",
                "properties": {"answer": {"type": "string"}},
                "required": ["answer"],
            },
        },
    },
]
QUESTION = (
    "What did the author say about how startups should choose what to work on? Search the essays more than once "
    "before answering."
)


def essays_text() -> str:
    from .speed import essays_text as text

    return text()


def _text_of_tokens(tokenizer: Any, text: str, n: int) -> str:
    ids = tokenizer(text[: n * 8], add_special_tokens=False)["input_ids"][:n]
    return str(tokenizer.decode(ids))


def agent_messages(tokenizer: Any, text: str, *, result_tokens: int, step: int) -> list[dict[str, Any]]:
    """The agent trace: system, question, then ``step`` search calls each answered with ``result_tokens`` tokens."""
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": "You are a research agent. Call one tool per turn."},
        {"role": "user", "content": QUESTION},
    ]
    for i in range(step):
        query = ["choosing startup ideas", "what to work on"][i % 2]
        args = json.dumps({"query": query})
        messages.append(
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [
                    {"id": f"call_{i}", "type": "function", "function": {"name": "search", "arguments": args}}
                ],
            }
        )
        offset = 20_000 * (i + 1)
        passage = _text_of_tokens(tokenizer, text[offset:], result_tokens if i == 0 else 300)
        messages.append({"role": "tool", "tool_call_id": f"call_{i}", "name": "search", "content": passage})
    return messages


# ----------------------------------------------------------------------------------------------- one config


def _rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # KiB -> GB


def run_gguf_load(model: str) -> dict[str, Any]:
    import torch

    from crossprefill_agents.draft.weights import load_gguf
    from crossprefill_agents.embedded_targets import GGUF_NAME, embedded_target_dir

    torch.set_num_threads(2)
    t = time.perf_counter()
    lm, tok = load_gguf(embedded_target_dir(model) / GGUF_NAME, dtype=torch.bfloat16)
    with torch.inference_mode():
        lm(input_ids=torch.tensor([[tok.eos_token_id]]), use_cache=False, logits_to_keep=1)
    return {"load_s": time.perf_counter() - t, "peak_rss_gb": _rss_gb()}


def run_config(name: str, model: str, lengths: list[int], n_decode: int, slow_s: float) -> dict[str, Any]:
    if name == GGUF_LOAD:
        return run_gguf_load(model)
    import torch

    from crossprefill_agents.draft.weights import quantize_int8
    from crossprefill_agents.local_chat import LocalChatModel, _TransformersEngine

    backend, dtype, threads = CONFIGS[name]
    torch.set_num_threads(threads)
    t = time.perf_counter()
    torch_dtype = {"bf16": torch.bfloat16, "fp32": torch.float32, "int8": torch.float32}.get(dtype)
    chat = LocalChatModel.from_pretrained(model, backend=backend, threads=threads, dtype=torch_dtype, n_ctx=8192)  # type: ignore[arg-type]
    engine = chat.engine
    if dtype == "int8":
        assert isinstance(engine, _TransformersEngine)
        engine.model = quantize_int8(engine.model)
    tok = chat.tokenizer
    engine.generate([tok.eos_token_id], max_new_tokens=1, stop_ids=frozenset(), stop=())  # warm-up
    row: dict[str, Any] = {"load_s": time.perf_counter() - t}
    text = essays_text()

    prefill: dict[str, Any] = {}
    for k, n in enumerate(sorted(lengths)):
        if k and dtype == "fp32" and prefill[str(min(lengths))]["s"] * n / min(lengths) > slow_s:
            prefill[str(n)] = None  # projected too slow: skipped, as the note says
            continue
        ids = tok(text[k * 50_000 :][: n * 8], add_special_tokens=False)["input_ids"][:n]
        engine.reset()
        t = time.perf_counter()
        gen = engine.generate(ids, max_new_tokens=1, stop_ids=frozenset(), stop=())
        wall = time.perf_counter() - t
        prefill[str(n)] = {"tokens": len(ids), "s": gen.ttft_s, "wall_s": wall, "tokens_per_s": len(ids) / gen.ttft_s}
        print(f"    prefill {len(ids)} tokens: {gen.ttft_s:.1f} s ({len(ids) / gen.ttft_s:.0f} tokens/s)", flush=True)
    row["prefill"] = prefill

    ids = tok(text[300_000:][:4000], add_special_tokens=False)["input_ids"][:256]
    engine.reset()
    t = time.perf_counter()
    gen = engine.generate(ids, max_new_tokens=n_decode, stop_ids=frozenset(), stop=())
    wall = time.perf_counter() - t
    row["decode"] = {"tokens": gen.count, "s": wall - gen.ttft_s, "tokens_per_s": (gen.count - 1) / (wall - gen.ttft_s)}
    print(f"    decode {gen.count} tokens: {row['decode']['tokens_per_s']:.1f} tokens/s", flush=True)

    steps = []
    engine.reset()
    for step in (1, 2):
        messages = agent_messages(tok, text, result_tokens=1300, step=step)
        reply = chat.chat(messages, tools=SEARCH_TOOLS, max_new_tokens=40)
        steps.append(
            {
                "prompt_tokens": reply.prompt_tokens,
                "reused_prompt_tokens": reply.reused_prompt_tokens,
                "completion_tokens": reply.completion_tokens,
                "ttft_s": reply.ttft_s,
                "total_s": reply.total_s,
                "tool_calls": [{"name": c.name, "arguments": c.arguments} for c in reply.tool_calls],
                "invalid_tool_calls": len(reply.invalid_tool_calls),
                "raw_text": reply.raw_text[:300],
            }
        )
        print(
            f"    agent step {step}: {reply.prompt_tokens} prompt tokens ({reply.reused_prompt_tokens} reused), "
            f"{reply.completion_tokens} out, ttft {reply.ttft_s:.1f} s, total {reply.total_s:.1f} s, "
            f"calls {[c.name for c in reply.tool_calls]}",
            flush=True,
        )
    row["agent_steps"] = steps
    row["peak_rss_gb"] = _rss_gb()
    return row


def run_in_subprocess(name: str, args: argparse.Namespace) -> dict[str, Any]:
    out = RESULTS / f".target-runtime-{name}.json"
    cmd = [sys.executable, "-m", "benchmarks.target_runtime", "--worker", name, "--out", str(out)]
    cmd += ["--model", args.model, "--decode", str(args.decode), "--slow-s", str(args.slow_s)]
    cmd += ["--lengths", *map(str, args.lengths)]
    load = os.getloadavg()[0]
    t = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, stdout=sys.stdout, stderr=subprocess.PIPE, text=True)
    row: dict[str, Any]
    if proc.returncode == 0 and out.is_file():
        row = json.loads(out.read_text())
        out.unlink()
    else:
        tail = proc.stderr.strip().splitlines()[-3:]
        row = {"error": " | ".join(tail) or f"exit status {proc.returncode}"}
        print(f"    failed: {row['error']}", flush=True)
    row.update(config=name, load_avg_1m=load, wall_s=time.perf_counter() - t)
    return row


# ----------------------------------------------------------------------------------------------- report


def _size(n: int) -> str:
    return f"{round(n / 1000)}k" if n >= 1000 else str(n)


def _fmt(value: float | None, spec: str = ".1f") -> str:
    return "-" if value is None else format(value, spec)


STEP_OUT = 40  # the typical tool-call answer the modelled step columns assume


def step_seconds(row: dict[str, Any]) -> tuple[float, float, float]:
    """(seconds per decoded token in the cold agent step, cold step and next step at STEP_OUT tokens out).

    The models stop where they like (16-17 tokens for the 1.5B's call, 0-1 on the next step), so the steps are
    also put on one footing: each step's measured prefill (ttft) plus STEP_OUT tokens at the per-token decode
    time measured inside the cold step itself (same process, same moment, so the same machine load).
    """
    s1, s2 = row["agent_steps"]
    per_token = (s1["total_s"] - s1["ttft_s"]) / max(1, s1["completion_tokens"])
    return per_token, s1["ttft_s"] + STEP_OUT * per_token, s2["ttft_s"] + STEP_OUT * per_token


def to_markdown(result: dict[str, Any]) -> str:
    lengths = [str(n) for n in sorted(result["lengths"])]
    head = ["config", "load s"] + [f"prefill {_size(int(n))} tok/s" for n in lengths]
    head += [
        "decode tok/s (64 tokens; in the step)",
        "peak RSS GB",
        "agent step measured: ttft + decode = s",
        "next step measured (reused tokens): s",
        f"cold step at {STEP_OUT} out: s",
        f"next step at {STEP_OUT} out: s",
        "load avg",
    ]
    lines = [
        f"### Local target runtime: {result['model']} ({result['machine']})",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for r in result["rows"]:
        if "error" in r:
            lines.append(f"| {r['config']} | failed: {r['error'][:120]} |" + " |" * (len(head) - 2))
            continue
        if "prefill" not in r:  # the GGUF load row
            cells = [r["config"], _fmt(r["load_s"])] + ["-"] * len(lengths)
            cells += ["-", _fmt(r["peak_rss_gb"]), "-", "-", "-", "-", _fmt(r["load_avg_1m"])]
            lines.append("| " + " | ".join(cells) + " |")
            continue
        pre = [r["prefill"].get(n) for n in lengths]
        cells = [r["config"], _fmt(r["load_s"])] + [_fmt(p["tokens_per_s"], ".0f") if p else "skipped" for p in pre]
        s1, s2 = r["agent_steps"]
        per_token, cold, warm = step_seconds(r)
        cells += [
            f"{_fmt(r['decode']['tokens_per_s'])}; {1 / per_token:.1f}",
            _fmt(r["peak_rss_gb"]),
            f"{s1['ttft_s']:.1f} + {s1['total_s'] - s1['ttft_s']:.1f} = {s1['total_s']:.1f} "
            f"({s1['prompt_tokens']} in, {s1['completion_tokens']} out)",
            f"{s2['total_s']:.1f} ({s2['reused_prompt_tokens']}/{s2['prompt_tokens']}, {s2['completion_tokens']} out)",
            f"**{cold:.1f}**",
            f"**{warm:.1f}**",
            _fmt(r["load_avg_1m"]),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    ok = [r for r in result["rows"] if "agent_steps" in r]
    if ok:
        cold_best = min(ok, key=lambda r: step_seconds(r)[1])
        warm_best = min(ok, key=lambda r: step_seconds(r)[2])
        lines += [
            "",
            f"Fastest cold agent step at {STEP_OUT} tokens out: **{cold_best['config']}**; fastest next step "
            f"(KV prefix reused): **{warm_best['config']}**.",
        ]
    lines += [
        "",
        "Prefill: from an empty cache, time to the first token. Decode: greedy, 64 tokens after a 256-token prompt; "
        "after the semicolon, the per-token rate inside the cold agent step. Agent step: a search agent's prompt with "
        "two tools and one ~1.3k-token search result, answered with a tool call (max 40 tokens), from an empty "
        "cache; next step: the same conversation plus that call and a ~300-token result, reusing the KV prefix. "
        f"The two 'at {STEP_OUT} out' columns put every row on one footing: the step's measured prefill plus "
        f"{STEP_OUT} tokens at the decode rate measured in the cold step. Each configuration in a fresh process; "
        "load avg = the machine's 1-minute load average before it started (2 cores, shared with other jobs).",
    ]
    for r in ok:
        calls = [c["name"] for s in r["agent_steps"] for c in s["tool_calls"]]
        lines.append(f"- {r['config']}: tool calls {calls}; first reply `{r['agent_steps'][0]['raw_text'][:100]!r}`")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks target-runtime", description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="qwen2.5-coder-1.5b")
    ap.add_argument("--configs", nargs="+", default=DEFAULT_CONFIGS, choices=[*CONFIGS, GGUF_LOAD])
    ap.add_argument("--lengths", nargs="+", type=int, default=[1024, 4096])
    ap.add_argument("--decode", type=int, default=64)
    ap.add_argument("--slow-s", type=float, default=150.0, help="fp32 skips a length projected slower than this")
    ap.add_argument("--name", default=None, help="write target-runtime-NAME.{json,md} beside the main results")
    ap.add_argument("--report-only", action="store_true", help="rebuild the .md from the stored .json")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        row = run_config(args.worker, args.model, args.lengths, args.decode, args.slow_s)
        Path(args.out).write_text(json.dumps(row) + "\n")
        return
    stem = "target-runtime" + (f"-{args.name}" if args.name else "")
    if args.report_only:
        md = to_markdown(json.loads((RESULTS / f"{stem}.json").read_text()))
        (RESULTS / f"{stem}.md").write_text(md)
        print(md)
        return
    import torch

    try:
        import xllamacpp

        xllama = f"xllamacpp {xllamacpp.__version__}"
    except ImportError:
        xllama = "xllamacpp not installed"
    RESULTS.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in args.configs:
        print(f"  {name}:", flush=True)
        rows.append(run_in_subprocess(name, args))
    result = {
        "model": args.model,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, {xllama}",
        "lengths": args.lengths,
        "decode_tokens": args.decode,
        "rows": rows,
    }
    (RESULTS / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
    md = to_markdown(result)
    (RESULTS / f"{stem}.md").write_text(md)
    print()
    print(md)


if __name__ == "__main__":
    main()
