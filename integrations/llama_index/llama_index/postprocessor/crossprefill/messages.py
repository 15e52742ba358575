"""LlamaIndex ChatMessages <-> the core session's ``{"role", "content"}`` dicts, structurally.

Each text the session may shorten becomes one dict, and a :class:`Part` records where
it came from (message index, block index, a prefix kept verbatim), so the compressed
texts go back into exactly those blocks. Nothing is recovered by parsing the dicts.

- A tool result (``MessageRole.TOOL``) gives one ``"tool"`` dict per ``TextBlock``; its
  other blocks (images, documents, ...) pass through.
- A ReAct observation (a user or tool message whose text starts with ``Observation:``
  and that answers an assistant message holding an ``Action:`` line, as
  ``ReActChatFormatter`` renders an ``ObservationReasoningStep``) is a tool result too:
  the ``Observation:`` prefix and the spaces after it are kept byte-identical and only
  the text after them is compressed. Mapping it to ``"tool"`` also keeps the real user
  question, not the observation, as the text that conditions scoring.
- Every other message is one dict with its role and its text (``ChatMessage.content``);
  one with several text blocks is marked ``"compress": False`` (the session never
  rewrites it), so its blocks are never merged.

Messages the session did not change are returned as the very same objects; changed
ones are copies with new text blocks and a copy of ``additional_kwargs``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from crossprefill_agents import SessionTurn
from llama_index.core.base.llms.types import ChatMessage, MessageRole, TextBlock

__all__ = ["OBSERVATION_PREFIX", "Part", "from_session_turn", "is_react_observation", "to_session_messages"]

OBSERVATION_PREFIX = "Observation:"  # what ObservationReasoningStep.get_content() puts before the tool output


@dataclass(frozen=True)
class Part:
    """Where one session dict's content came from."""

    message: int  # index of the ChatMessage
    block: int | None  # index of its TextBlock; None = the message's joined text, never written back
    prefix: str = ""  # kept verbatim before the (compressed) content


def is_react_observation(messages: Sequence[ChatMessage], i: int) -> bool:
    """Whether ``messages[i]`` is a ReAct observation: ``Observation: ...`` answering an ``Action:`` step."""
    m = messages[i]
    if m.role not in (MessageRole.USER, MessageRole.TOOL) or i == 0:
        return False
    first = next((b for b in m.blocks if isinstance(b, TextBlock)), None)
    if first is None or not first.text.startswith(OBSERVATION_PREFIX):
        return False
    prev = messages[i - 1]
    if prev.role != MessageRole.ASSISTANT:
        return False
    return any(line.startswith("Action:") for line in (prev.content or "").splitlines())


def to_session_messages(
    messages: Sequence[ChatMessage], *, react_observations: bool = True
) -> tuple[list[dict[str, Any]], list[Part]]:
    """The session dicts for ``messages`` and, for each dict, the :class:`Part` it maps back to."""
    if isinstance(messages, (str, ChatMessage)) or not isinstance(messages, Sequence):
        raise TypeError(f"messages must be a list of ChatMessage, got {type(messages).__name__}")
    for i, m in enumerate(messages):
        if not isinstance(m, ChatMessage):
            raise TypeError(f"messages[{i}] must be a llama_index ChatMessage, got {type(m).__name__}")
    dicts: list[dict[str, Any]] = []
    parts: list[Part] = []
    for i, m in enumerate(messages):
        observation = react_observations and is_react_observation(messages, i)
        if m.role == MessageRole.TOOL or observation:
            first = True
            for j, b in enumerate(m.blocks):
                if not isinstance(b, TextBlock):
                    continue
                prefix = _observation_prefix(b.text) if observation and first else ""
                first = False
                dicts.append({"role": "tool", "content": b.text[len(prefix) :]})
                parts.append(Part(i, j, prefix))
            continue
        texts = [j for j, b in enumerate(m.blocks) if isinstance(b, TextBlock)]
        d: dict[str, Any] = {"role": m.role.value, "content": m.content if m.content is not None else ""}
        if len(texts) != 1:
            d["compress"] = False
        dicts.append(d)
        parts.append(Part(i, texts[0] if len(texts) == 1 else None))
    return dicts, parts


def from_session_turn(messages: Sequence[ChatMessage], parts: Sequence[Part], turn: SessionTurn) -> list[ChatMessage]:
    """``messages`` with the texts the session compressed written back into their blocks."""
    new_text: dict[int, dict[int, str]] = {}  # message index -> {block index: text}
    for k, res in turn.results.items():
        part = parts[k]
        if part.block is None:
            continue
        old = messages[part.message].blocks[part.block]
        if not isinstance(old, TextBlock):  # not the messages these parts were made from
            raise ValueError(f"messages[{part.message}].blocks[{part.block}] is not the TextBlock that was compressed")
        text = part.prefix + res.text
        if text != old.text:
            new_text.setdefault(part.message, {})[part.block] = text
    out = list(messages)
    for i, changes in new_text.items():
        m = messages[i]
        blocks = [b.model_copy(update={"text": changes[j]}) if j in changes else b for j, b in enumerate(m.blocks)]
        out[i] = m.model_copy(update={"blocks": blocks, "additional_kwargs": dict(m.additional_kwargs)})
    return out


def _observation_prefix(text: str) -> str:
    """``Observation:`` and the whitespace after it."""
    rest = text[len(OBSERVATION_PREFIX) :]
    return text[: len(text) - len(rest.lstrip())]
