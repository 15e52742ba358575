"""Cross-family speculative prefill for LlamaIndex: a node postprocessor and a compressing LLM for agents.

from llama_index.postprocessor.crossprefill import CompressingLLM, SpeculativePrefillPostprocessor

qe = index.as_query_engine(node_postprocessors=[SpeculativePrefillPostprocessor(target="gpt-4o")])
agent = FunctionAgent(tools=tools, llm=CompressingLLM(OpenAI(model="gpt-4o"), target="gpt-4o"))
"""

from importlib.metadata import PackageNotFoundError, version

from .base import DEFAULT_METADATA_KEY, SpeculativePrefillPostprocessor
from .events import (
    MessageCompressionEndEvent,
    MessageCompressionStartEvent,
    NodeCompressionEndEvent,
    NodeCompressionStartEvent,
)
from .llm import RUN_ID_TAG, SESSION_TAG, CompressingLLM
from .messages import OBSERVATION_PREFIX

try:
    __version__ = version("llama-index-postprocessor-crossprefill")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0"

__all__ = [
    "DEFAULT_METADATA_KEY",
    "OBSERVATION_PREFIX",
    "RUN_ID_TAG",
    "SESSION_TAG",
    "CompressingLLM",
    "MessageCompressionEndEvent",
    "MessageCompressionStartEvent",
    "NodeCompressionEndEvent",
    "NodeCompressionStartEvent",
    "SpeculativePrefillPostprocessor",
    "__version__",
]
