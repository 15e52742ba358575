"""Instrumentation events, sent through LlamaIndex's dispatcher (``llama_index.core.instrumentation``).

Attach a handler to the root dispatcher to see them::

    from llama_index.core.instrumentation import get_dispatcher
    from llama_index.core.instrumentation.event_handlers import BaseEventHandler

    class Printer(BaseEventHandler):
        def handle(self, event, **kwargs):
            if isinstance(event, NodeCompressionEndEvent):
                print(event.original_tokens, "->", event.compressed_tokens)

    get_dispatcher().add_event_handler(Printer())
"""

from __future__ import annotations

from typing import Any

from llama_index.core.bridge.pydantic import Field
from llama_index.core.instrumentation.events import BaseEvent

__all__ = [
    "MessageCompressionEndEvent",
    "MessageCompressionStartEvent",
    "NodeCompressionEndEvent",
    "NodeCompressionStartEvent",
]


class NodeCompressionStartEvent(BaseEvent):
    """A :class:`SpeculativePrefillPostprocessor` is about to compress retrieved nodes."""

    query: str = Field(description="The text scoring is conditioned on ('' when there was no query bundle).")
    nodes: int = Field(description="Nodes given.")
    text_nodes: int = Field(description="Nodes with text, compressed together under one budget.")
    keep_rate: float | None = Field(description="The per-call keep rate (None: the compressor's config).")
    max_tokens: int | None = Field(description="The per-call budget in target tokens (None: the config's).")

    @classmethod
    def class_name(cls) -> str:
        return "NodeCompressionStartEvent"


class NodeCompressionEndEvent(BaseEvent):
    """A :class:`SpeculativePrefillPostprocessor` compressed retrieved nodes."""

    nodes_in: int = Field(description="Nodes given.")
    nodes_out: int = Field(description="Nodes returned.")
    nodes_dropped: int = Field(description="Nodes removed because all their text was dropped (drop_empty_nodes).")
    original_tokens: int = Field(description="Target tokens of the text nodes as given.")
    compressed_tokens: int = Field(description="Target tokens of the text nodes as returned.")
    draft_s: float = Field(description="Seconds in the draft's forward passes.")
    total_s: float = Field(description="Seconds for the whole compression.")
    fallback_reason: str | None = Field(description="Why the nodes passed through unchanged (draft failure), or None.")

    @classmethod
    def class_name(cls) -> str:
        return "NodeCompressionEndEvent"


class MessageCompressionStartEvent(BaseEvent):
    """A :class:`CompressingLLM` is about to compress the messages of one model call."""

    session_id: str = Field(description="The compression session this call belongs to.")
    messages: int = Field(description="Chat messages given.")

    @classmethod
    def class_name(cls) -> str:
        return "MessageCompressionStartEvent"


class MessageCompressionEndEvent(BaseEvent):
    """A :class:`CompressingLLM` compressed the messages of one model call."""

    session_id: str = Field(description="The compression session this call belongs to.")
    messages: int = Field(description="Chat messages sent to the wrapped LLM.")
    compressed_messages: int = Field(description="Messages whose text was shortened (now or at an earlier step).")
    stats: dict[str, Any] = Field(
        description="The session turn's TurnStats.to_dict(): tokens before/after, draft reuse, frozen hits, "
        "fallback_reason, ..."
    )

    @classmethod
    def class_name(cls) -> str:
        return "MessageCompressionEndEvent"
