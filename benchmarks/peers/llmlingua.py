"""The LLMLingua and LongLLMLingua peers, driven from the main environment.

llmlingua 0.2.2 needs transformers 4.x and this project needs 5.x, so the peers run in
their own virtualenv (``.venv-llmlingua``, built by ``benchmarks/peers/setup_llmlingua.sh``)
as ``benchmarks/peers/llmlingua_worker.py``; :class:`LLMLinguaPeer` starts that worker
once (the draft loads once), sends it one example at a time over a pipe as a JSON line and
reads one JSON line back. The context goes over as its list of documents (paragraphs),
which LLMLingua's coarse, document-level stage ranks.

The compressed prompt is mapped back to character spans of the original context by
:func:`benchmarks.peers.align.align_compressed` (word anchors, then greedy placement of
word fragments; see that module), and its size is counted with the same target counter
as every other method, so budgets and evidence recall compare across methods. LLMLingua
is handed ``keep_rate x`` the context's *draft* tokens as its budget; what it actually
keeps in target tokens is in :attr:`PeerResult.compressed_tokens`.

Versions run: llmlingua 0.2.2, transformers 4.45.2, torch 2.13.0+cpu, draft
SmolLM2-135M-Instruct (re-saved for transformers 4.45 by ``convert_draft_tf445.py``).
Gemma-3-270M is not available to these peers: transformers 4.45.2 predates Gemma-3.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from benchmarks.peers.align import align_compressed

__all__ = [
    "METHODS",
    "LLMLinguaPeer",
    "PeerError",
    "PeerRequest",
    "PeerResult",
    "default_model_dir",
    "default_python",
]

logger = logging.getLogger(__name__)

Span = tuple[int, int]
METHODS = ("llmlingua", "longllmlingua")
_ROOT = Path(__file__).resolve().parents[2]
_WORKER = Path(__file__).with_name("llmlingua_worker.py")


class PeerError(RuntimeError):
    """The worker could not be started, died, or could not compress one request."""


def default_python() -> Path:
    """The interpreter of ``.venv-llmlingua`` at the repository root."""
    return _ROOT / ".venv-llmlingua" / "bin" / "python"


def default_model_dir() -> Path:
    """SmolLM2-135M-Instruct re-saved for transformers 4.45 (``convert_draft_tf445.py`` writes it)."""
    home = Path(os.environ.get("CROSSPREFILL_HOME") or Path.home() / ".cache" / "crossprefill")
    return home / "models" / "smollm2-135m-tf445"


@dataclass(frozen=True)
class PeerRequest:
    """One context to compress: its documents in order, as character spans of ``context``."""

    id: str
    context: str
    question: str
    keep_rate: float
    method: str  # "llmlingua" or "longllmlingua"
    documents: tuple[Span, ...] = ()  # empty: the whole context is one document

    def contexts(self) -> list[str]:
        """The documents' texts, the list LLMLingua compresses."""
        if not self.documents:
            return [self.context]
        return [self.context[s:e] for s, e in self.documents]


@dataclass(frozen=True)
class PeerResult:
    """One compressed context, mapped back onto the original."""

    id: str
    method: str
    text: str  # the compressed prompt as LLMLingua returned it (context only, no question)
    kept_spans: tuple[Span, ...]  # aligned character spans of the original context, merged and ordered
    aligned_fraction: float  # share of ``text``'s non-space characters that the spans account for
    origin_tokens: int  # target tokens of the original context
    compressed_tokens: int  # target tokens of ``text``
    seconds: float  # wall time of LLMLingua's compress_prompt in the worker
    draft_budget: int  # the budget handed to LLMLingua, in draft tokens


class LLMLinguaPeer:
    """A running LLMLingua worker; use as a context manager, or call :meth:`close`.

    ``count`` counts target tokens (default: cl100k_base through crossprefill's
    ``resolve_target``); ``threads`` caps the worker's torch CPU threads.
    """

    def __init__(
        self,
        *,
        python: str | Path | None = None,
        model: str | Path | None = None,
        device: str = "cpu",
        threads: int | None = None,
        count: Callable[[str], int] | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        from crossprefill_agents.targets import ensure_tiktoken_files, resolve_target

        self.python = Path(python) if python is not None else default_python()
        self.model = Path(model) if model is not None else default_model_dir()
        if not self.python.exists():
            raise PeerError(f"{self.python} is missing: build it with `bash benchmarks/peers/setup_llmlingua.sh`")
        if not (self.model / "config.json").is_file():
            raise PeerError(
                f"{self.model} is missing: run `crossprefill download smollm2-135m`, then "
                "`python benchmarks/peers/convert_draft_tf445.py`"
            )
        ensure_tiktoken_files("cl100k_base")  # the worker's LLMLingua loads gpt-3.5-turbo's encoding, offline
        self.count = count or resolve_target("cl100k_base").count
        child_env = {**os.environ, **(env or {})}
        child_env.setdefault("HF_HUB_OFFLINE", "1")
        child_env.setdefault("TRANSFORMERS_OFFLINE", "1")
        child_env.setdefault("TOKENIZERS_PARALLELISM", "false")
        cmd = [str(self.python), str(_WORKER), "--model", str(self.model), "--device", device]
        if threads:
            cmd += ["--threads", str(threads)]
        self._stderr: IO[bytes] = tempfile.TemporaryFile()
        t0 = time.perf_counter()
        self._proc = subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            env=child_env,
            text=True,
            encoding="utf-8",
        )
        ready = self._read()
        if not ready.get("ready"):
            self.close()
            raise PeerError(f"the worker did not report ready: {ready}")
        self.versions: dict[str, str] = dict(ready.get("versions", {}))
        self.load_seconds = time.perf_counter() - t0
        logger.info("LLMLingua worker ready in %.1f s: %s", self.load_seconds, self.versions)

    # ------------------------------------------------------------------ protocol
    def _stderr_tail(self, n: int = 2000) -> str:
        self._stderr.seek(0, os.SEEK_END)
        size = self._stderr.tell()
        self._stderr.seek(max(0, size - n))
        return self._stderr.read().decode("utf-8", "replace")

    def _read(self) -> dict[str, Any]:
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline()
        if not line:
            code = self._proc.poll()
            raise PeerError(f"the LLMLingua worker exited (code {code}); its stderr ends:\n{self._stderr_tail()}")
        data: dict[str, Any] = json.loads(line)
        return data

    def _send(self, payload: dict[str, Any]) -> None:
        assert self._proc.stdin is not None
        try:
            self._proc.stdin.write(json.dumps(payload, ensure_ascii=False) + "\n")
            self._proc.stdin.flush()
        except BrokenPipeError as e:
            raise PeerError(f"the LLMLingua worker is gone; its stderr ends:\n{self._stderr_tail()}") from e

    # ------------------------------------------------------------------ public
    def compress_request(self, request: PeerRequest) -> PeerResult:
        """Compress one request in the worker and map the result back onto the context."""
        if request.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {request.method!r}")
        if not 0.0 < request.keep_rate <= 1.0:
            raise ValueError(f"keep_rate must be in (0, 1], got {request.keep_rate}")
        self._send(
            {
                "id": request.id,
                "contexts": request.contexts(),
                "question": request.question,
                "keep_rate": request.keep_rate,
                "method": request.method,
            }
        )
        answer = self._read()
        if "error" in answer:
            raise PeerError(f"{request.method} failed on {request.id}: {answer['error']}")
        text = str(answer["compressed_prompt"])
        alignment = align_compressed(request.context, text)
        return PeerResult(
            id=request.id,
            method=request.method,
            text=text,
            kept_spans=alignment.spans,
            aligned_fraction=alignment.aligned_fraction,
            origin_tokens=self.count(request.context),
            compressed_tokens=self.count(text) if text else 0,
            seconds=float(answer["seconds"]),
            draft_budget=int(answer["target_draft_tokens"]),
        )

    def compress(
        self,
        context: str,
        question: str,
        *,
        keep_rate: float,
        method: str = "longllmlingua",
        documents: Sequence[Span] = (),
        id: str = "",
    ) -> PeerResult:
        """Compress ``context`` (cut into ``documents``, character spans, if given) for ``question``."""
        return self.compress_request(PeerRequest(id, context, question, keep_rate, method, tuple(documents)))

    def compress_many(self, requests: Iterable[PeerRequest]) -> Iterator[PeerResult]:
        """Compress requests one after the other, yielding each result as it comes back."""
        for r in requests:
            yield self.compress_request(r)

    def close(self) -> None:
        """Stop the worker (end of input, then a terminate after 10 s) and release its files."""
        if self._proc.poll() is None:
            try:
                if self._proc.stdin is not None:
                    self._proc.stdin.close()
                self._proc.wait(timeout=10)
            except (subprocess.TimeoutExpired, BrokenPipeError):
                self._proc.terminate()
                self._proc.wait(timeout=10)
        if self._proc.stdout is not None:
            self._proc.stdout.close()
        self._stderr.close()

    def __enter__(self) -> LLMLinguaPeer:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
