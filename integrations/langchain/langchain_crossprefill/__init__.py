"""langchain-crossprefill: cross-family speculative prefill for LangChain.

Four ways in, one for each shape LangChain code takes:

- :class:`SpeculativePrefillMiddleware`: an agent middleware for ``langchain.agents.create_agent``
  (needs ``langchain``: ``pip install 'langchain-crossprefill[agents]'``);
- :class:`SpeculativePrefillCompressor`: a runnable step, ``compressor | chat_model``;
- :class:`CompressingChatModel`: any chat model, wrapped so every call is compressed;
- :class:`SpeculativePrefillDocumentCompressor`: a document compressor for retrieved documents.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

from .chat_models import CompressingChatModel
from .document_compressors import SpeculativePrefillDocumentCompressor
from .runnables import SpeculativePrefillCompressor

if TYPE_CHECKING:
    from .middleware import SpeculativePrefillMiddleware

try:
    __version__ = version("langchain-crossprefill")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0"

__all__ = [
    "CompressingChatModel",
    "SpeculativePrefillCompressor",
    "SpeculativePrefillDocumentCompressor",
    "SpeculativePrefillMiddleware",
    "__version__",
]


def __getattr__(name: str) -> Any:
    # The middleware imports langchain (the optional `agents` extra), so it loads only when asked for.
    if name == "SpeculativePrefillMiddleware":
        from .middleware import SpeculativePrefillMiddleware

        return SpeculativePrefillMiddleware
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
