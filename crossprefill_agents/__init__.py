"""crossprefill-agents: cross-family speculative prefill as prompt-compression middleware.

A small draft model reads a long context with the question, its attention says which
parts matter, and the context is cut down to a budget counted in the *target* model's
tokens, whatever family the target belongs to.

    from crossprefill_agents import PromptCompressor

    pc = PromptCompressor.from_pretrained("smollm2-135m", target="gpt-4o")
    result = pc.compress(long_tool_output, query="Which flights leave before 9am?", keep_rate=0.25)

The layers below the facade (``draft``, ``units``, ``ranking``, ``selection``, ``stores``,
``targets``) are importable for recipes and research; this module's names are the stable API.
"""

from importlib.metadata import PackageNotFoundError, version

from .compressor import PromptCompressor
from .config import CompressionConfig, SessionConfig
from .results import (
    CompressionResult,
    DraftError,
    DraftScores,
    ModelNotAvailableError,
    SessionTurn,
    Timings,
    TurnStats,
)
from .session import CompressionSession
from .stores import InMemoryMemoStore, MemoStore, RedisMemoStore, SQLiteMemoStore

try:
    __version__ = version("crossprefill-agents")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0"

__all__ = [
    "CompressionConfig",
    "CompressionResult",
    "CompressionSession",
    "DraftError",
    "DraftScores",
    "InMemoryMemoStore",
    "MemoStore",
    "ModelNotAvailableError",
    "PromptCompressor",
    "RedisMemoStore",
    "SQLiteMemoStore",
    "SessionConfig",
    "SessionTurn",
    "Timings",
    "TurnStats",
    "__version__",
]
