"""The public surface of langchain_crossprefill, pinned."""

from __future__ import annotations

import subprocess
import sys

import langchain_crossprefill

EXPECTED_ALL = [
    "CompressingChatModel",
    "SpeculativePrefillCompressor",
    "SpeculativePrefillDocumentCompressor",
    "SpeculativePrefillMiddleware",
    "__version__",
]


def test_all_imports() -> None:
    """__all__ is exactly the four components and __version__, and every name in it resolves."""
    assert sorted(langchain_crossprefill.__all__) == sorted(EXPECTED_ALL)
    for name in langchain_crossprefill.__all__:
        assert getattr(langchain_crossprefill, name) is not None
    assert isinstance(langchain_crossprefill.__version__, str) and langchain_crossprefill.__version__


def test_langchain_is_imported_only_for_the_middleware() -> None:
    """Importing the package pulls in langchain_core but not langchain (the `agents` extra) until the
    middleware is asked for."""
    code = (
        "import sys, langchain_crossprefill as p; "
        "assert 'langchain_core' in sys.modules; "
        "assert not any(m == 'langchain' or m.startswith('langchain.') for m in sys.modules), 'eager'; "
        "p.SpeculativePrefillMiddleware; "
        "assert 'langchain.agents' in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env=None)


def test_unknown_attribute_is_an_attribute_error() -> None:
    """A misspelt name fails as a normal AttributeError (the lazy import does not swallow it)."""
    try:
        langchain_crossprefill.SpeculativePrefillMiddle  # noqa: B018
    except AttributeError as e:
        assert "SpeculativePrefillMiddle" in str(e)
    else:
        raise AssertionError("expected AttributeError")
