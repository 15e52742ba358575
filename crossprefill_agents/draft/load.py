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

__all__ = ["load_draft"]

logger = logging.getLogger(__name__)


def load_draft(
    name: str | Path,
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    local_files_only: bool = False,
    trust_remote_code: bool = False,
    quantize: Literal["int8"] | None = None,
    model_kwargs: dict[str, Any] | None = None,
    calibrate_heads: bool = True,
) -> DraftModel:
    """Load a draft from an embedded alias, a ``.gguf`` file, a local folder or a hub id.

    Embedded aliases (``smollm2-135m``, ``gemma3-270m``) load from the converted folder
    that ``crossprefill download`` writes. ``quantize="int8"`` applies dynamic int8
    quantisation to the linear layers (CPU only; see :func:`quantize_int8`).
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
    kwargs.setdefault("dtype", dtype or torch.float32)
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
    tolerance = EMBEDDED_MODELS[source].depth_tolerance if source in EMBEDDED_MODELS else None
    shape = (int(model.config.num_hidden_layers), int(model.config.num_attention_heads))
    heads = load_retrieval_heads(source, tolerance, shape=shape)  # a refused file: warned, every head votes
    draft = DraftModel(model, tokenizer, name=source, retrieval_heads=heads)
    if heads is None and tolerance is not None and calibrate_heads and not heads_path(source).exists():
        logger.info("calibrating the retrieval heads of %s once (stored under the models home)", source)
        calibrate(draft, depth_tolerance=tolerance)
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
