"""The public surface: names, version, typing marker, and no framework imports in the core."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import crossprefill_agents

EXPECTED_ALL = {
    "EMBEDDED_MODELS",
    "ByteLRU",
    "CompressionConfig",
    "CompressionResult",
    "CompressionSession",
    "DraftError",
    "DraftModel",
    "DraftPrefix",
    "DraftTimeoutError",
    "InMemoryMemoStore",
    "MemoStore",
    "ModelNotAvailableError",
    "PromptCompressor",
    "RedisMemoStore",
    "SQLiteMemoStore",
    "SessionConfig",
    "SessionTurn",
    "Timings",
    "TokenCounter",
    "TurnStats",
    "__version__",
    "resolve_target",
}


def test_all_is_pinned() -> None:
    """Adding or removing a public name is a deliberate change to this list."""
    assert set(crossprefill_agents.__all__) == EXPECTED_ALL
    for name in EXPECTED_ALL:
        assert hasattr(crossprefill_agents, name)


def test_version_comes_from_metadata_and_py_typed_ships() -> None:
    """__version__ is the installed distribution's version; py.typed marks the package as typed."""
    from importlib.metadata import version

    assert crossprefill_agents.__version__ == version("crossprefill-agents")
    assert (Path(crossprefill_agents.__file__).parent / "py.typed").exists()


def test_core_import_pulls_in_no_framework_and_no_optional_backend() -> None:
    """Importing the core loads neither LangChain, LlamaIndex, tiktoken, transformers nor redis."""
    code = (
        "import sys, crossprefill_agents\n"
        "bad = [m for m in ('langchain_core', 'langchain', 'llama_index', 'tiktoken', 'transformers', 'redis') "
        "if m in sys.modules]\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
