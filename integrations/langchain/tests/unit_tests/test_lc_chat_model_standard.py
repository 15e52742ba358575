"""langchain-tests' standard unit tests for CompressingChatModel over a scripted tool-calling model."""

from __future__ import annotations

from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_tests.unit_tests import ChatModelUnitTests
from lc_fakes import ScriptedChatModel, tiny_compressor

from langchain_crossprefill import CompressingChatModel

_COMPRESSOR = tiny_compressor()  # one for the class: the fixtures build a model per test


def _hello(_: list[BaseMessage]) -> AIMessage:
    return AIMessage("hello")


class TestCompressingChatModelStandard(ChatModelUnitTests):
    """No standard test is overridden."""

    @property
    def chat_model_class(self) -> type[BaseChatModel]:
        return CompressingChatModel

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {"model": ScriptedChatModel(script=_hello), "compressor": _COMPRESSOR}
