"""Reading weights into transformers objects: a hub id or folder, a GGUF file (dequantised), int8 linear layers."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch

__all__ = ["load_gguf", "load_model", "quantize_int8"]


def load_gguf(path: str | Path, *, dtype: torch.dtype = torch.float32) -> tuple[Any, Any]:
    """Load a GGUF file through transformers, dequantised to ``dtype``, as a plain savable model."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"GGUF file not found: {p}")
    tokenizer = AutoTokenizer.from_pretrained(str(p.parent), gguf_file=p.name)
    model = AutoModelForCausalLM.from_pretrained(str(p.parent), gguf_file=p.name, dtype=dtype)
    # The weights are dequantised in memory; drop the GGUF quantizer marks so the model can be saved.
    model.hf_quantizer = None  # type: ignore[assignment]
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    return model, tokenizer


def load_model(
    source: str | Path,
    *,
    local_files_only: bool = False,
    trust_remote_code: bool = False,
    model_kwargs: dict[str, Any] | None = None,
) -> tuple[Any, Any]:
    """A causal LM and its tokenizer from a ``.gguf`` file, a folder (with a config or a GGUF) or a hub id.

    ``model_kwargs`` go to ``AutoModelForCausalLM.from_pretrained`` (copied, never modified); ``dtype``
    defaults to float32. Remote code runs only with ``trust_remote_code=True``.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs = dict(model_kwargs or {})
    kwargs.setdefault("dtype", torch.float32)
    kwargs["trust_remote_code"] = trust_remote_code
    path = Path(source).expanduser()
    if path.suffix == ".gguf":
        return load_gguf(path, dtype=kwargs["dtype"])
    if path.is_dir() and not (path / "config.json").exists() and list(path.glob("*.gguf")):
        return load_gguf(sorted(path.glob("*.gguf"))[0], dtype=kwargs["dtype"])
    where = str(path) if path.is_dir() else str(source)
    tokenizer = AutoTokenizer.from_pretrained(
        where, local_files_only=local_files_only, trust_remote_code=trust_remote_code
    )
    model = AutoModelForCausalLM.from_pretrained(where, local_files_only=local_files_only, **kwargs)
    return model, tokenizer


def quantize_int8(model: Any) -> Any:
    """Dynamic int8 quantisation of the model's linear layers, for CPU drafts (in place; returns the model).

    Weights are stored in int8 and activations quantised on the fly (``torch.ao`` dynamic
    quantisation); attention stays in float. Roughly 1.2-1.5x faster on x86 CPUs.
    """
    if any(p.device.type != "cpu" for p in model.parameters()):
        raise ValueError("int8 dynamic quantisation runs on CPU only; load the draft without device= or quantize=")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao's deprecation notice points to torchao, not installed here
        return torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8, inplace=True)
