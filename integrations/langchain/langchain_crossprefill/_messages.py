"""LangChain messages to the core's message dicts and back, structurally.

Every core dict comes from one message (or one text block of a message whose content is a
list of blocks) and is recorded in a :class:`Slot`; what the session compressed is put back
by slot, into a copy of the message (``model_copy``), so ids, tool_call_id, name,
additional_kwargs and tool_calls are kept. A message the session left alone is returned as
the very same object.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from crossprefill_agents import CompressionResult, SessionTurn
from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    ChatMessage,
    FunctionMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)

from ._options import METADATA_KEY
from ._sessions import SessionMap

SYSTEM_APART = -1  # Slot.message of a system message given apart from the list (an agent's system_message)

_CHAT_ROLES = {"human": "user", "user": "user", "ai": "assistant", "assistant": "assistant", "developer": "system"}


@dataclass(frozen=True)
class Slot:
    """Where a core message dict came from: a message index and, for list content, a block index."""

    message: int
    block: int | None = None


def role_of(message: BaseMessage) -> str:
    """The core role of a LangChain message, from its type."""
    if isinstance(message, SystemMessage):
        return "system"
    if isinstance(message, HumanMessage):
        return "user"
    if isinstance(message, AIMessage):
        return "assistant"
    if isinstance(message, ToolMessage):
        return "tool"
    if isinstance(message, FunctionMessage):
        return "function"
    if isinstance(message, ChatMessage):
        return _CHAT_ROLES.get(message.role, message.role)
    if isinstance(message, BaseMessage):
        return str(message.type)
    raise TypeError(f"expected a langchain_core BaseMessage, got {type(message).__name__}")


def _text_block(block: object) -> str | None:
    """The text of a content block that is plain text (a str, or a {"type": "text", "text": str} block)."""
    if isinstance(block, str):
        return block
    if isinstance(block, dict) and block.get("type") == "text" and isinstance(block.get("text"), str):
        return str(block["text"])
    return None


def to_core(
    messages: Sequence[BaseMessage], system: SystemMessage | None = None
) -> tuple[list[dict[str, Any]], list[Slot]]:
    """Core message dicts for ``messages`` (``system``, given apart, goes first) and the slot of each.

    Content that is a list of blocks: human and system messages become one dict holding their text
    (never compressed: it is read as context and, for the latest human message, as the question);
    other messages become one dict per text block, so each block can be compressed and put back in
    place; a message with no text block passes through as it is.
    """
    core: list[dict[str, Any]] = []
    slots: list[Slot] = []
    items: list[tuple[int, BaseMessage]] = [(SYSTEM_APART, system)] if system is not None else []
    items += list(enumerate(messages))
    for i, message in items:
        role = role_of(message)
        content = message.content
        if isinstance(content, str):
            core.append(_core_dict(role, content))
            slots.append(Slot(i))
            continue
        blocks = [(k, t) for k, b in enumerate(content) if (t := _text_block(b)) is not None]
        if role in ("user", "system"):
            core.append({"role": role, "content": "\n".join(t for _, t in blocks), "compress": False})
            slots.append(Slot(i))
        elif blocks:
            for k, text in blocks:
                core.append(_core_dict(role, text))
                slots.append(Slot(i, k))
        else:
            core.append({"role": role, "content": content})  # non-text content passes through the session
            slots.append(Slot(i))
    return core, slots


def _core_dict(role: str, text: str) -> dict[str, Any]:
    if text.strip():
        return {"role": role, "content": text}
    # Nothing to compress. Marked so explicitly: with min_tokens=0 the core would take an empty message
    # for a segment that its draft does not read, and fail the whole turn over to pass-through.
    return {"role": role, "content": text, "compress": False}


def from_core(
    messages: Sequence[BaseMessage],
    core: Sequence[dict[str, Any]],
    slots: Sequence[Slot],
    turn: SessionTurn,
    *,
    annotate: bool = False,
) -> tuple[list[BaseMessage], list[int]]:
    """``messages`` with what ``turn`` compressed put back; and the indices of the messages that changed.

    ``annotate``: also record each changed message's compression (token counts, kept spans into the
    original content) in its ``response_metadata[METADATA_KEY]``, and the reason on each message passed
    through after a draft failure (a copy with the same content).
    """
    changed: dict[int, dict[int | None, CompressionResult]] = {}
    failed: dict[int, dict[int | None, CompressionResult]] = {}  # passed through after a draft failure
    for j, res in sorted(turn.results.items()):
        slot = slots[j]
        if slot.message == SYSTEM_APART:
            continue
        if res.text != core[j]["content"]:
            changed.setdefault(slot.message, {})[slot.block] = res
        elif annotate and res.fallback_reason is not None:
            failed.setdefault(slot.message, {})[slot.block] = res
    out = list(messages)
    for i, parts in failed.items():
        if i not in changed:
            message = messages[i]
            record = {**message.response_metadata, METADATA_KEY: _result_record(parts)}
            out[i] = message.model_copy(update={"response_metadata": record})
    for i, parts in changed.items():
        message = messages[i]
        content: str | list[str | dict[Any, Any]]
        if None in parts:
            content = parts[None].text
        else:
            content = list(message.content)
            for k, res in parts.items():
                assert k is not None
                block = content[k]
                content[k] = res.text if isinstance(block, str) else {**block, "text": res.text}
        update: dict[str, Any] = {"content": content}
        if annotate:
            update["response_metadata"] = {**message.response_metadata, METADATA_KEY: _result_record(parts)}
        out[i] = message.model_copy(update=update)
    return out, sorted(changed)


def _result_record(parts: dict[int | None, CompressionResult]) -> dict[str, Any]:
    records = {}
    for block, res in parts.items():
        d = res.to_dict()
        d.pop("text")
        records[block] = d
    if list(records) == [None]:
        return records[None]
    return {"blocks": {str(k): v for k, v in records.items()}}


def turn_stats(turn: SessionTurn, messages: Sequence[BaseMessage], changed: Sequence[int]) -> dict[str, Any]:
    """The JSON-ready stats of one compressed call, for a response's metadata."""
    stats = turn.stats.to_dict()
    stats["draft_read"] = list(stats["draft_read"])
    stats["compressed_ids"] = [messages[i].id for i in changed]
    return stats


@dataclass(frozen=True)
class Compressed:
    """One call's messages as they go to the model, and what it took."""

    messages: list[BaseMessage]
    stats: dict[str, Any]  # turn_stats(): the session's TurnStats plus compressed_ids
    changed: list[int]  # indices of the messages whose content was replaced


def compress_messages(
    sessions: SessionMap,
    key: str | None,
    messages: Sequence[BaseMessage],
    system: SystemMessage | None = None,
    *,
    annotate: bool = False,
) -> Compressed:
    """Compress ``messages`` in the session of conversation ``key`` (``system`` is read, never changed)."""
    core, slots = to_core(messages, system)
    with sessions.use(key) as session:
        turn = session.compress_messages(core)
    out, changed = from_core(messages, core, slots, turn, annotate=annotate)
    return Compressed(out, turn_stats(turn, messages, changed), changed)


async def acompress_messages(
    sessions: SessionMap,
    key: str | None,
    messages: Sequence[BaseMessage],
    system: SystemMessage | None = None,
    *,
    annotate: bool = False,
) -> Compressed:
    """:func:`compress_messages` through the session's native async method."""
    core, slots = to_core(messages, system)
    with sessions.use(key) as session:
        turn = await session.acompress_messages(core)
    out, changed = from_core(messages, core, slots, turn, annotate=annotate)
    return Compressed(out, turn_stats(turn, messages, changed), changed)
