"""Re-save a draft folder written by transformers 5.x so that transformers 4.45 can read it.

The LLMLingua peers run in ``.venv-llmlingua`` with transformers 4.45.2, which misreads
the folders that ``crossprefill download`` writes with transformers 5.24:

- ``config.json`` keeps RoPE's base in ``rope_parameters.rope_theta``; 4.45 only knows the
  top-level ``rope_theta`` and silently falls back to 10000 (SmolLM2 needs 100000);
- ``tokenizer_config.json`` names ``TokenizersBackend``, a class 4.45 does not have,
  while ``tokenizer.json`` itself is a plain ``tokenizers`` file that
  ``PreTrainedTokenizerFast`` reads.

This script writes ``<dst>`` with a rewritten config and tokenizer config, the same
``tokenizer.json`` and ``generation_config.json``, and the weights hard-linked (copied
across file systems). Only the ``llama`` architecture is handled: Gemma-3 does not exist
in transformers 4.45.2 at all (its ``CONFIG_MAPPING`` stops at ``gemma2``), so the
Gemma-3-270M draft cannot run the LLMLingua peers in that environment.

Standard library only, so any Python runs it::

    python benchmarks/peers/convert_draft_tf445.py ~/.cache/crossprefill/models/smollm2-135m \\
        ~/.cache/crossprefill/models/smollm2-135m-tf445
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
from pathlib import Path
from typing import Any

__all__ = ["convert", "convert_config", "convert_tokenizer_config", "default_paths"]

logger = logging.getLogger(__name__)

TARGET_VERSION = "4.45.2"
_SPECIAL_KEYS = ("bos_token", "eos_token", "unk_token", "pad_token", "model_max_length", "chat_template")


def default_paths(alias: str = "smollm2-135m") -> tuple[Path, Path]:
    """(source, destination) folders for an embedded draft under crossprefill's models home."""
    home = Path(os.environ.get("CROSSPREFILL_HOME") or Path.home() / ".cache" / "crossprefill")
    return home / "models" / alias, home / "models" / f"{alias}-tf445"


def convert_config(config: dict[str, Any]) -> dict[str, Any]:
    """A transformers-4.45 ``config.json`` dict for a 5.x llama config dict (the input is not changed)."""
    if config.get("model_type") != "llama":
        raise ValueError(
            f"only llama drafts can be converted for transformers {TARGET_VERSION}; got {config.get('model_type')!r}"
        )
    out = {k: v for k, v in config.items() if k not in ("rope_parameters", "dtype", "_model_name_or_path")}
    rope = dict(config.get("rope_parameters") or {})
    theta = rope.pop("rope_theta", config.get("rope_theta"))
    if theta is None:
        raise ValueError("the config has no rope_theta (neither top-level nor in rope_parameters)")
    out["rope_theta"] = float(theta)
    rope_type = rope.pop("rope_type", "default")
    out["rope_scaling"] = None if rope_type == "default" else {"rope_type": rope_type, **rope}
    out["torch_dtype"] = config.get("dtype", config.get("torch_dtype", "float32"))
    out["transformers_version"] = TARGET_VERSION
    return out


def convert_tokenizer_config(tok_config: dict[str, Any], chat_template: str | None) -> dict[str, Any]:
    """A tokenizer config that 4.45 loads as ``PreTrainedTokenizerFast`` over the same ``tokenizer.json``."""
    out: dict[str, Any] = {k: tok_config[k] for k in _SPECIAL_KEYS if k in tok_config}
    out["tokenizer_class"] = "PreTrainedTokenizerFast"
    out["clean_up_tokenization_spaces"] = False
    out["model_input_names"] = ["input_ids", "attention_mask"]  # no token_type_ids: llama's forward rejects them
    if chat_template is not None and "chat_template" not in out:
        out["chat_template"] = chat_template
    return out


def _read_json(path: Path) -> dict[str, Any]:
    with open(path, encoding="utf-8") as f:
        data: dict[str, Any] = json.load(f)
    return data


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _link_or_copy(src: Path, dst: Path) -> None:
    if dst.exists():
        if dst.stat().st_size == src.stat().st_size:
            return
        dst.unlink()
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def convert(src: Path, dst: Path) -> Path:
    """Write the transformers-4.45 copy of draft folder ``src`` to ``dst`` (idempotent); return ``dst``."""
    if not (src / "config.json").is_file():
        raise FileNotFoundError(
            f"{src} holds no config.json: run `crossprefill download {src.name}` in the main environment first"
        )
    dst.mkdir(parents=True, exist_ok=True)
    _write_json(dst / "config.json", convert_config(_read_json(src / "config.json")))
    template_file = src / "chat_template.jinja"
    template = template_file.read_text(encoding="utf-8") if template_file.is_file() else None
    tok_config = convert_tokenizer_config(_read_json(src / "tokenizer_config.json"), template)
    _write_json(dst / "tokenizer_config.json", tok_config)
    for name in ("tokenizer.json", "generation_config.json"):
        if (src / name).is_file():
            shutil.copy2(src / name, dst / name)
    weights = sorted(src.glob("*.safetensors")) + sorted(src.glob("*.safetensors.index.json"))
    if not weights:
        raise FileNotFoundError(f"{src} holds no .safetensors weights")
    for w in weights:
        _link_or_copy(w, dst / w.name)
    logger.info("wrote %s", dst)
    return dst


def main(argv: list[str] | None = None) -> int:
    default_src, default_dst = default_paths()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("src", nargs="?", type=Path, default=default_src, help=f"5.x draft folder (default {default_src})")
    p.add_argument("dst", nargs="?", type=Path, default=default_dst, help=f"output folder (default {default_dst})")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        convert(args.src.expanduser(), args.dst.expanduser())
    except (FileNotFoundError, ValueError) as e:
        logger.error("%s", e)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
