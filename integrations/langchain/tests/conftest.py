"""Shared fixtures of the langchain-crossprefill tests (helpers live in lc_fakes.py, next to this file)."""

from __future__ import annotations

import pytest
from crossprefill_agents import PromptCompressor
from lc_fakes import tiny_compressor


@pytest.fixture
def compressor() -> PromptCompressor:
    """A fresh tiny-draft compressor (its own memo store), budgets in characters, no minimum length."""
    return tiny_compressor()
