"""A draft by name: an embedded alias, a ``.gguf`` file, a local folder or a hub id -> a :class:`DraftModel`."""

from __future__ import annotations

import difflib
import logging
from pathlib import Path
from typing import Any, Literal

import torch

from ..results import ModelNotAvailableError
from .embedded import EMBEDDED_MODELS, embedded_model_dir
from .heads import calibrate, heads_path, load_retrieval_heads
from .runner import DraftModel
from .weights import load_model, quantize_int8

__all__ = ["DTYPES", "load_draft", "native_bf16", "resolve_dtype"]

logger = logging.getLogger(__name__)

# dtype names a caller may pass (and the CLI's --dtype choices), besides torch dtypes and "auto".
DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# What a non-float32 draft's name carries, so that memo keys and draft caches never mix precisions.
_NAME_TAGS = {torch.bfloat16: "bf16", torch.float16: "fp16"}


def native_bf16(device: str | torch.device | None = None) -> bool:
    """Whether ``device`` (``None`` = the CPU) computes bfloat16 natively: a CUDA GPU that supports it, or a
    CPU with AVX-512 BF16 (or AMX). Elsewhere bfloat16 matmuls are emulated and slower than float32."""
    kind = torch.device(device).type if device is not None else "cpu"
    if kind == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if kind != "cpu":
        return False
    probe = getattr(torch.cpu, "_is_avx512_bf16_supported", None)
    amx = getattr(torch.cpu, "_is_amx_tile_supported", None)
    try:
        return bool((probe is not None and probe()) or (amx is not None and amx()))
    except RuntimeError:
        return False


def resolve_dtype(dtype: torch.dtype | str | None, device: str | torch.device | None = None) -> torch.dtype:
    """The draft's weights dtype: ``None`` or ``"auto"`` = bfloat16 where ``device`` computes it natively
    (:func:`native_bf16`), else float32; a name from :data:`DTYPES` or a floating torch dtype as given."""
    if dtype is None or dtype == "auto":
        return torch.bfloat16 if native_bf16(device) else torch.float32
    if isinstance(dtype, str):
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be 'auto', one of {sorted(DTYPES)} or a torch dtype, got {dtype!r}")
        return DTYPES[dtype]
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be 'auto', a dtype name or a floating torch dtype, got {dtype!r}")
    return dtype


def load_draft(
    name: str | Path,
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype | str | None = None,
    local_files_only: bool = False,
    trust_remote_code: bool = False,
    quantize: Literal["int8"] | None = None,
    model_kwargs: dict[str, Any] | None = None,
    calibrate_heads: bool = True,
) -> DraftModel:
    """Load a draft from an embedded alias, a ``.gguf`` file, a local folder or a hub id.

    Embedded aliases (``smollm2-135m``, ``gemma3-270m``) load from the converted folder
    that ``crossprefill download`` writes. ``dtype`` (see :func:`resolve_dtype`): by default
    bfloat16 where the device computes it natively (faster at about the same recall: see
    ``benchmarks/README.md``, "Draft precision"), else float32; a draft that is
    not float32 is named so (``smollm2-135m+bf16``), so that memo entries and draft caches of
    two precisions never mix. ``quantize="int8"`` applies dynamic int8 quantisation to the
    linear layers of float32 weights (CPU only; see :func:`quantize_int8`).
    Retrieval heads stored by :func:`~crossprefill_agents.draft.heads.calibrate` for this
    name are loaded into ``retrieval_heads``; an embedded draft with no heads file is
    calibrated once here (20-40 s on CPU) unless ``calibrate_heads=False``. A heads file
    that is refused (see :func:`~crossprefill_agents.draft.heads.load_retrieval_heads`) is
    warned about and never recalibrated here: the draft votes with every head. Other drafts
    vote with every head until calibrated. ``model_kwargs`` are passed to
    ``AutoModelForCausalLM.from_pretrained`` (copied, never modified).
    """
    if quantize not in (None, "int8"):
        raise ValueError(f"quantize must be None or 'int8', got {quantize!r}")
    source = str(name)
    kwargs = dict(model_kwargs or {})
    asked = kwargs.pop("dtype", dtype)
    if quantize == "int8":
        if asked not in (None, "auto") and resolve_dtype(asked, device) != torch.float32:
            raise ValueError(f"quantize='int8' quantises float32 weights; got dtype={asked!r} (pass float32 or None)")
        wanted = torch.float32
    else:
        wanted = resolve_dtype(asked, device)
    tolerance = EMBEDDED_MODELS[source].depth_tolerance if source in EMBEDDED_MODELS else None
    # Retrieval heads are always calibrated on float32 weights (the stored heads do not depend on the precision
    # the draft later runs in): a draft that will calibrate here loads in float32 and is cast afterwards.
    will_calibrate = tolerance is not None and calibrate_heads and not heads_path(source).exists()
    kwargs["dtype"] = torch.float32 if will_calibrate else wanted
    where: str | Path = embedded_model_dir(source) if source in EMBEDDED_MODELS else _checked_source(source)
    try:
        model, tokenizer = load_model(
            where, local_files_only=local_files_only, trust_remote_code=trust_remote_code, model_kwargs=kwargs
        )
    except (OSError, ValueError) as e:
        if source in EMBEDDED_MODELS or Path(source).expanduser().exists():
            raise
        raise ModelNotAvailableError(
            f"{source!r} is not an embedded draft ({_aliases()}), a local file or folder, or a model the hub "
            f"could serve here ({type(e).__name__}: {e}). Install an embedded draft with `crossprefill download NAME`"
        ) from e
    if device is not None:
        model = model.to(device)
    shape = (int(model.config.num_hidden_layers), int(model.config.num_attention_heads))
    heads = load_retrieval_heads(source, tolerance, shape=shape)  # a refused file: warned, every head votes
    draft = DraftModel(model, tokenizer, name=source, retrieval_heads=heads)
    if will_calibrate and tolerance is not None:  # no heads file, so ``heads`` is None
        logger.info("calibrating the retrieval heads of %s once (stored under the models home)", source)
        calibrate(draft, depth_tolerance=tolerance)
    if draft.model.dtype != wanted:
        draft.model = draft.model.to(wanted)
    if wanted in _NAME_TAGS:
        draft.name = f"{source}+{_NAME_TAGS[wanted]}"
    if quantize == "int8":
        draft.model = quantize_int8(draft.model)
        draft.name = f"{source}+{quantize}"
    return draft


def _aliases() -> str:
    return ", ".join(sorted(EMBEDDED_MODELS))


def _checked_source(source: str) -> str:
    """``source`` if it can name a draft: an existing path, or a hub id (``owner/name``, or a bare name the
    local hub cache holds). Anything else (a typo of an alias, an unknown name) fails at once, before a
    hub lookup that would take tens of seconds to say no."""
    if Path(source).expanduser().exists() or "/" in source or _in_hub_cache(source):
        return source
    close = difflib.get_close_matches(source, list(EMBEDDED_MODELS), n=1, cutoff=0.8)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ModelNotAvailableError(
        f"unknown draft {source!r}{hint}: the embedded drafts are {_aliases()}; else pass an existing file or "
        "folder, or a hub id (owner/name). Install an embedded draft with `crossprefill download NAME`"
    )


def _in_hub_cache(repo_id: str) -> bool:
    """Whether the local hub cache holds ``repo_id`` (a bare legacy id such as ``gpt2`` loads from there)."""
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)
    except Exception:  # an id the hub library refuses is not in its cache
        return False
