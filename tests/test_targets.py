"""Target token counters: tiktoken offline, OpenAI model names, HF tokenizers, callables."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys

import pytest

from crossprefill_agents.targets import ensure_tiktoken_files, resolve_target

SAMPLE = "Hello world, 漢字 and 😀 emoji: cross-family speculative prefill."


@pytest.mark.parametrize("name", ["cl100k_base", "o200k_base"])
def test_tiktoken_files_are_placed_offline(tmp_path, monkeypatch, name: str) -> None:  # type: ignore[no-untyped-def]
    """The BPE file lands in tiktoken's cache under the sha1 of its official address, byte-identical."""
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    ensure_tiktoken_files(name)
    files = list(tmp_path.iterdir())
    assert len(files) == 1 and len(files[0].name) == 40
    expected = {  # sha256 of the official files, as tiktoken checks them
        "cl100k_base": "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
        "o200k_base": "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
    }[name]
    assert hashlib.sha256(files[0].read_bytes()).hexdigest() == expected


def test_tiktoken_counts_without_network(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """In a fresh process with an empty cache and no network, cl100k/o200k counts work."""
    code = (
        "from crossprefill_agents.targets import resolve_target\n"
        "import tiktoken.load\n"
        "def no_net(*a, **k): raise AssertionError('network used')\n"
        "tiktoken.load.read_file = no_net\n"
        f"print(resolve_target('cl100k_base').count({SAMPLE!r}), resolve_target('gpt-4o').name)\n"
    )
    env = {**os.environ, "TIKTOKEN_CACHE_DIR": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    n, enc = out.stdout.split()
    assert int(n) > 10 and enc == "o200k_base"


def test_counts_match_tiktoken() -> None:
    """A tiktoken target counts exactly what tiktoken encodes."""
    import tiktoken

    c = resolve_target("cl100k_base")
    assert c.count(SAMPLE) == len(tiktoken.get_encoding("cl100k_base").encode(SAMPLE))
    assert c.count("") == 0
    assert c.count("<|endoftext|>") > 1  # special-token text is counted as plain text, not rejected
    assert c.count("lone \ud800 surrogate") > 0


def test_openai_model_names_map_to_their_encoding() -> None:
    """OpenAI model names resolve to the encoding tiktoken assigns them."""
    assert resolve_target("gpt-4o").name == "o200k_base"
    assert resolve_target("gpt-4").name == "cl100k_base"


def test_hf_tokenizer_and_callable_targets(tiny_tokenizer) -> None:  # type: ignore[no-untyped-def]
    """A transformers tokenizer counts without special tokens; a callable is used as is and checked."""
    c = resolve_target(tiny_tokenizer)
    assert c.count(SAMPLE) == len(tiny_tokenizer(SAMPLE, add_special_tokens=False)["input_ids"])
    assert resolve_target(lambda t: len(t) // 4).count("x" * 40) == 10
    with pytest.raises(TypeError, match="int"):
        resolve_target(lambda t: "many").count("x")


def test_hf_tokenizer_from_a_local_folder(tiny_tokenizer, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A path to a saved tokenizer is loaded with transformers."""
    tiny_tokenizer.save_pretrained(tmp_path)
    assert resolve_target(str(tmp_path)).count(SAMPLE) == resolve_target(tiny_tokenizer).count(SAMPLE)


def test_unknown_targets_are_clear_errors(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A name that is nothing loadable, or an object of the wrong type, says what is accepted."""
    with pytest.raises(ValueError, match="tiktoken encoding"):
        resolve_target(str(tmp_path / "no-such-tokenizer"), local_files_only=True)
    with pytest.raises(TypeError, match="callable"):
        resolve_target(42)
