"""The `crossprefill` command and the embedded-model registry, on a tiny saved draft."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import make_text

from crossprefill_agents import ModelNotAvailableError
from crossprefill_agents.cli import main
from crossprefill_agents.draft import load_draft
from crossprefill_agents.draft.embedded import EMBEDDED_MODELS, embedded_model_dir, models_home


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory, tiny_llama_draft):  # type: ignore[no-untyped-def]
    d = tmp_path_factory.mktemp("tiny-llama")
    tiny_llama_draft.model.save_pretrained(d)
    tiny_llama_draft.tokenizer.save_pretrained(d)
    return d


def test_cli_compress_prints_text_and_summary(tiny_dir, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    """`crossprefill compress FILE` prints the compressed text on stdout and a summary on stderr."""
    src = tmp_path / "ctx.txt"
    context = make_text(1500, seed=11)
    src.write_text(context, encoding="utf-8")
    code = main(["compress", str(src), "--query", "passkey?", "--keep-rate", "0.2", "--draft", str(tiny_dir)])
    out, err = capsys.readouterr()
    assert code == 0
    assert 0 < len(out) < len(context)
    assert "kept" in err and "cl100k_base" in err


def test_cli_json_has_the_whole_result(tiny_dir, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    """--json prints text, kept_spans and token counts that agree with each other."""
    src = tmp_path / "ctx.txt"
    context = make_text(1500, seed=12)
    src.write_text(context, encoding="utf-8")
    assert main(["compress", str(src), "-q", "money", "--max-tokens", "120", "--json", "--draft", str(tiny_dir)]) == 0
    d = json.loads(capsys.readouterr().out)
    assert {"text", "kept_spans", "original_tokens", "compressed_tokens", "timings"} <= set(d)
    assert d["compressed_tokens"] <= 120
    assert d["text"] == " [...] ".join(context[s:e] for s, e in d["kept_spans"])


def test_cli_int8_draft(tiny_dir, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    """--quantize int8 loads the draft with int8 linear layers and still compresses within the budget."""
    src = tmp_path / "ctx.txt"
    src.write_text(make_text(1500, seed=13), encoding="utf-8")
    args = ["compress", str(src), "-q", "money", "--max-tokens", "150", "--json", "--quantize", "int8"]
    assert main([*args, "--draft", str(tiny_dir)]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["fallback_reason"] is None and 0 < d["compressed_tokens"] <= 150


def test_cli_reads_stdin(tiny_dir, monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    """`-` (the default) reads the context from stdin."""
    context = make_text(1200, seed=13)
    monkeypatch.setattr(sys, "stdin", io.StringIO(context))
    assert main(["compress", "-q", "x", "--draft", str(tiny_dir)]) == 0
    out, err = capsys.readouterr()
    assert 0 < len(out) < len(context) and "kept" in err


def test_console_script_is_installed() -> None:
    """The `crossprefill` entry point is installed next to the interpreter and runs the CLI."""
    script = Path(sys.executable).with_name("crossprefill")
    out = subprocess.run([str(script), "--help"], capture_output=True, text=True, check=True)
    assert "compress" in out.stdout and "download" in out.stdout


def test_cli_bad_budget_is_an_error_exit(tiny_dir, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    """An out-of-range keep rate exits with status 2 and a message naming the range."""
    src = tmp_path / "ctx.txt"
    src.write_text(make_text(800), encoding="utf-8")
    assert main(["compress", str(src), "--keep-rate", "1.5", "--draft", str(tiny_dir)]) == 2
    assert "(0, 1]" in capsys.readouterr().err


def test_missing_embedded_model_names_the_download_command(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Without the package, loading an embedded alias says which command installs it."""
    monkeypatch.setenv("CROSSPREFILL_HOME", str(tmp_path))
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    assert models_home() == tmp_path / "models"
    for alias in EMBEDDED_MODELS:
        with pytest.raises(ModelNotAvailableError, match=f"crossprefill download {alias}"):
            embedded_model_dir(alias)
    with pytest.raises(ModelNotAvailableError, match="known"):
        embedded_model_dir("no-such-model")


def test_download_rejects_unknown_names(capsys) -> None:  # type: ignore[no-untyped-def]
    """`crossprefill download` only accepts the embedded aliases (or all)."""
    with pytest.raises(SystemExit):
        main(["download", "gpt-5"])
    assert "invalid choice" in capsys.readouterr().err


def test_a_typo_of_an_embedded_alias_fails_at_once_naming_the_aliases(capsys) -> None:  # type: ignore[no-untyped-def]
    """A near miss of an alias raises before any hub lookup, naming the alias meant and the download command;
    the CLI turns it into one line on stderr and exit status 2."""
    with pytest.raises(ModelNotAvailableError, match=r"did you mean 'smollm2-135m'.*crossprefill download"):
        load_draft("smollm2-135")
    assert main(["compress", "-", "--draft", "gemma3-27m"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "gemma3-270m" in err[0]
