"""The `crossprefill` command's contract with a shell: exit status 2 and one line on stderr for anything it refuses,
bytes in = bytes out (CRLF, non-UTF-8), and --json that is valid UTF-8. Runs main() in-process on a tiny saved draft."""

from __future__ import annotations

import io
import json
import sys
import time
from pathlib import Path

import pytest
from helpers import make_text

from crossprefill_agents.cli import main


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory, tiny_llama_draft) -> Path:  # type: ignore[no-untyped-def]
    d = tmp_path_factory.mktemp("tiny-llama-cli")
    tiny_llama_draft.model.save_pretrained(d)
    tiny_llama_draft.tokenizer.save_pretrained(d)
    return Path(d)


@pytest.fixture
def no_model_load(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if the CLI gets as far as loading weights."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the CLI loaded a model before refusing the command line")

    monkeypatch.setattr("crossprefill_agents.draft.load.load_model", refuse)


def _exit_code(argv: list[str]) -> int:
    """main()'s status, whether it returns it or argparse raises SystemExit with it."""
    try:
        return main(argv)
    except SystemExit as e:
        return int(e.code or 0)


def _one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, lines
    assert "Traceback" not in err
    return lines[0]


@pytest.mark.parametrize(
    "argv, says",
    [
        (["compress", "--keep-rate", "abc"], "invalid float value"),
        (["compress", "--keep-rate", "0.5", "--max-tokens", "3"], "not allowed with"),
        (["compress", "--quantize", "int4"], "invalid choice"),
        (["bogus"], "invalid choice"),
        ([], "required"),
        (["compress", "--keep-rate", "1.5"], "(0, 1]"),
        (["compress", "--max-tokens", "-3"], ">= 0"),
        (["compress", "--protect", "("], "not a valid regular expression"),
        (["compress", "--timeout", "0"], "timeout_s"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(argv, says, capsys, no_model_load) -> None:  # type: ignore[no-untyped-def]
    """Every refused command line exits 2 with one line on stderr naming the problem, before any model loads."""
    assert _exit_code(argv) == 2
    out, err = capsys.readouterr()
    assert says in _one_error_line(err) and out == ""


def test_a_missing_file_or_a_directory_is_one_line_before_the_model_loads(tmp_path, capsys, no_model_load) -> None:  # type: ignore[no-untyped-def]
    """A missing file and a directory exit 2 with one line naming the path; the draft is never loaded."""
    assert main(["compress", str(tmp_path / "missing.txt")]) == 2
    assert "no such file" in _one_error_line(capsys.readouterr().err)
    assert main(["compress", str(tmp_path)]) == 2
    assert "is a directory" in _one_error_line(capsys.readouterr().err)


@pytest.mark.parametrize("name", ["smollm2-135", "foo-bar", "gemma"])
def test_an_unknown_draft_name_fails_at_once(name, capsys, no_model_load) -> None:  # type: ignore[no-untyped-def]
    """An unknown draft name exits 2 at once (no hub lookup) with one line listing the aliases and the download
    command; a near miss also names the alias meant."""
    t0 = time.monotonic()
    assert main(["compress", "-", "--draft", name]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert time.monotonic() - t0 < 5
    assert "smollm2-135m" in line and "gemma3-270m" in line and "crossprefill download" in line
    if name == "smollm2-135":
        assert "did you mean 'smollm2-135m'" in line


def test_an_unknown_target_name_fails_before_the_draft_loads(capsys, no_model_load) -> None:  # type: ignore[no-untyped-def]
    """`--target cl100k` (a typo) exits 2 with one line listing the tiktoken encodings, without a hub lookup."""
    assert main(["compress", "-", "--target", "cl100k"]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "cl100k_base" in line and "crossprefill download" in line


def test_a_short_file_comes_back_byte_identical(tiny_dir, tmp_path, capsysbinary) -> None:  # type: ignore[no-untyped-def]
    """A file under min_tokens passes through: stdout holds exactly its bytes (CRLF and a Latin-1 byte kept)."""
    data = b"first line\r\nsecond line caf\xe9\r\n\r\nlast\r\n"
    src = tmp_path / "short.txt"
    src.write_bytes(data)
    assert main(["compress", str(src), "--draft", str(tiny_dir)]) == 0
    assert capsysbinary.readouterr().out == data


def _crlf_log(n: int) -> bytes:
    words = [" ".join(make_text(12, seed=i).split()) for i in range(n)]  # one line each: no paragraph breaks
    lines = [f"2024-05-{1 + i % 28:02d} INFO worker-{i % 7} {w}" for i, w in enumerate(words)]
    return ("\r\n".join(lines) + "\r\n").encode()


def test_crlf_stays_crlf_from_a_file_and_from_stdin(tiny_dir, tmp_path, monkeypatch, capsysbinary) -> None:  # type: ignore[no-untyped-def]
    """A compressed CRLF log keeps CRLF line ends (no bare LF) whether it comes from a file or from stdin."""
    data = _crlf_log(120)
    src = tmp_path / "log.txt"
    src.write_bytes(data)
    assert main(["compress", str(src), "--keep-rate", "0.3", "--draft", str(tiny_dir)]) == 0
    from_file = capsysbinary.readouterr().out
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))
    assert main(["compress", "-", "--keep-rate", "0.3", "--draft", str(tiny_dir)]) == 0
    from_stdin = capsysbinary.readouterr().out
    for out in (from_file, from_stdin):
        assert 0 < len(out) < len(data)
        assert out.count(b"\n") == out.count(b"\r\n") > 3
    assert from_file == from_stdin


def test_json_output_is_valid_utf8_for_non_utf8_input(tiny_dir, tmp_path, capsysbinary) -> None:  # type: ignore[no-untyped-def]
    """--json of a file with bytes that are not UTF-8 is strict UTF-8; each such byte is one U+FFFD, so kept_spans
    still index the input decoded with one character per byte."""
    raw = make_text(1500, seed=3).encode()
    data = raw[:2000] + b"\xff\xfe bad \xe9 bytes " + raw[2000:]
    src = tmp_path / "latin.txt"
    src.write_bytes(data)
    args = ["compress", str(src), "--keep-rate", "0.3", "--json", "--protect", "bad . bytes"]  # keeps a bad byte
    assert main([*args, "--draft", str(tiny_dir)]) == 0
    d = json.loads(capsysbinary.readouterr().out.decode("utf-8"))  # strict: raises on invalid UTF-8
    context = data.decode("utf-8", errors="surrogateescape").translate({c: "\ufffd" for c in range(0xDC80, 0xDD00)})
    assert d["text"] == " [...] ".join(context[s:e] for s, e in d["kept_spans"])
    assert d["original_tokens"] > d["compressed_tokens"] > 0 and "bad \ufffd bytes" in d["text"]
