"""Text helpers shared by the unit tests (a plain module: conftest.py files are not importable by name)."""

from __future__ import annotations

from crossprefill_agents.testing import filler_text as make_text

__all__ = ["make_text"]
