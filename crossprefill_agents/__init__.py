"""crossprefill-agents: cross-family speculative prefill as prompt-compression middleware.

A small draft model reads a long context with the question, its attention says which
parts matter, and the context is cut down to a budget counted in the *target* model's
tokens, whatever family the target belongs to.
"""

from importlib.metadata import PackageNotFoundError, version

from .cache import ByteLRU, InMemoryMemoStore, MemoStore, RedisMemoStore, SQLiteMemoStore
from .compressor import CompressionResult, PromptCompressor, Timings
from .config import CompressionConfig, SessionConfig
from .draft import DraftError, DraftModel, DraftPrefix, DraftTimeoutError
from .embedded import EMBEDDED_MODELS, ModelNotAvailableError
from .session import CompressionSession, SessionTurn, TurnStats
from .targets import TokenCounter, resolve_target

try:
    __version__ = version("crossprefill-agents")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0"

__all__ = [
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
]
