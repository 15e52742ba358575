"""LLMLingua / LongLLMLingua as a line-oriented worker process.

Run with the interpreter of ``.venv-llmlingua`` (built by ``setup_llmlingua.sh``), not
the main environment: llmlingua 0.2.2 needs transformers 4.x. Versions this was run with:
llmlingua 0.2.2, transformers 4.45.2, torch 2.13.0+cpu, tiktoken 0.14.0, Python 3.11,
draft SmolLM2-135M-Instruct re-saved for transformers 4.45 by ``convert_draft_tf445.py``
(Gemma-3-270M cannot be used: transformers 4.45.2 has no gemma3 architecture).

Protocol (UTF-8 JSON, one object per line):

- on start, after the model is loaded, one line
  ``{"ready": true, "model": ..., "versions": {...}, "load_seconds": ...}``;
- for each request line ``{"id", "question", "keep_rate", "method", "contexts": [str, ...]}``
  (or ``"context": str`` for a single context), ``method`` one of ``"llmlingua"`` /
  ``"longllmlingua"``, one answer line
  ``{"id", "compressed_prompt", "seconds", "origin_tokens", "compressed_tokens", "target_draft_tokens"}``
  or ``{"id", "error"}``; the worker goes on after an error.

``compressed_prompt`` is the compressed context only (the question is not appended);
``origin_tokens`` / ``compressed_tokens`` are cl100k_base (gpt-3.5-turbo) counts of the
contexts joined by blank lines and of the compressed prompt; ``seconds`` is the wall time
of ``compress_prompt``. The budget handed to LLMLingua is ``target_token = keep_rate x``
the contexts' draft tokens (LLMLingua counts its budget in the draft's tokens).

Everything that llmlingua or transformers print goes to stderr; stdout carries the
protocol only. The tiktoken file for cl100k_base must already be in tiktoken's cache (the
main-side client places it), since this process may have no network.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any, TextIO

logger = logging.getLogger("llmlingua_worker")

METHODS = ("llmlingua", "longllmlingua")
DEFAULT_MODEL = Path.home() / ".cache" / "crossprefill" / "models" / "smollm2-135m-tf445"


def compress_kwargs(method: str, question: str, target_token: int) -> dict[str, Any]:
    """The ``compress_prompt`` keyword arguments for one method.

    LLMLingua: coarse demonstration-level filter ranked by the draft's perplexity, then
    the iterative token-level filter, both question-agnostic. LongLLMLingua, as its README
    recommends for QA: question-aware coarse ranking (``rank_method="longllmlingua"``),
    question-conditioned contrastive perplexity (``condition_in_question="after_condition"``,
    ``condition_compare=True``), dynamic per-document ratios (0.3) and a +100 token slack for
    the coarse stage; documents keep their original order (``reorder_context="original"``)
    so that the compressed text maps back onto the context in order.
    """
    common: dict[str, Any] = {
        "question": question,
        "target_token": target_token,
        "concate_question": False,
        "reorder_context": "original",
    }
    if method == "llmlingua":
        return {**common, "rank_method": "llmlingua", "use_context_level_filter": True}
    if method == "longllmlingua":
        return {
            **common,
            "rank_method": "longllmlingua",
            "use_context_level_filter": True,
            "condition_in_question": "after_condition",
            "condition_compare": True,
            "dynamic_context_compression_ratio": 0.3,
            "context_budget": "+100",
        }
    raise ValueError(f"method must be one of {METHODS}, got {method!r}")


def _versions() -> dict[str, str]:
    out = {"python": sys.version.split()[0]}
    for name in ("llmlingua", "transformers", "torch", "tiktoken"):
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "missing"
    return out


def _answer(compressor: Any, request: dict[str, Any]) -> dict[str, Any]:
    contexts = request.get("contexts")
    if contexts is None:
        contexts = [request["context"]]
    if not isinstance(contexts, list) or not all(isinstance(c, str) for c in contexts):
        raise TypeError("contexts must be a list of str")
    question = str(request.get("question", ""))
    keep_rate = float(request["keep_rate"])
    if not 0.0 < keep_rate <= 1.0:
        raise ValueError(f"keep_rate must be in (0, 1], got {keep_rate}")
    draft_tokens = sum(compressor.get_token_length(c, add_special_tokens=False) for c in contexts)
    target = max(1, round(keep_rate * draft_tokens))
    kwargs = compress_kwargs(str(request["method"]), question, target)
    t0 = time.perf_counter()
    result = compressor.compress_prompt(list(contexts), **kwargs)
    seconds = time.perf_counter() - t0
    prompt = result["compressed_prompt"]
    enc = compressor.oai_tokenizer
    return {
        "id": request.get("id"),
        "compressed_prompt": prompt,
        "seconds": seconds,
        "origin_tokens": len(enc.encode("\n\n".join(contexts), disallowed_special=())),
        "compressed_tokens": len(enc.encode(prompt, disallowed_special=())),
        "target_draft_tokens": target,
    }


def serve(compressor: Any, lines: TextIO, out: TextIO) -> None:
    """Answer each request line of ``lines`` on ``out`` until end of input."""
    for line in lines:
        if not line.strip():
            continue
        request: dict[str, Any] = {}
        try:
            request = json.loads(line)
            answer = _answer(compressor, request)
        except Exception as e:  # one bad request must not end the worker
            logger.exception("request %s failed", request.get("id"))
            answer = {"id": request.get("id"), "error": f"{type(e).__name__}: {e}"}
        out.write(json.dumps(answer, ensure_ascii=False) + "\n")
        out.flush()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="LLMLingua / LongLLMLingua worker: JSON lines in, JSON lines out.")
    p.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="draft folder readable by transformers 4.45")
    p.add_argument("--device", default="cpu", help="torch device map, e.g. cpu or cuda")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="worker %(levelname)s %(message)s")
    protocol = sys.stdout
    with contextlib.redirect_stdout(sys.stderr):  # stray prints of the libraries must not corrupt the protocol
        import torch
        from llmlingua import PromptCompressor

        if args.threads:
            torch.set_num_threads(args.threads)
        t0 = time.perf_counter()
        compressor = PromptCompressor(
            model_name=str(args.model),
            device_map=args.device,
            model_config={"trust_remote_code": False},
        )
        ready = {
            "ready": True,
            "model": str(args.model),
            "versions": _versions(),
            "load_seconds": time.perf_counter() - t0,
        }
        protocol.write(json.dumps(ready) + "\n")
        protocol.flush()
        serve(compressor, sys.stdin, protocol)
    return 0


if __name__ == "__main__":
    # Run as a script, this file's folder is sys.path[0], and its neighbour llmlingua.py (the
    # main-side client) would shadow the real llmlingua package.
    _here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _here]
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
