"""Draft-side options: the query read before the context too, and int8 dynamic quantisation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import make_text

from crossprefill_agents import CompressionConfig, PromptCompressor
from crossprefill_agents.draft import DraftModel, DraftPrefix, load_draft
from crossprefill_agents.draft.weights import quantize_int8


def test_query_before_and_after_changes_the_prompt_not_the_shape(tiny_draft: DraftModel) -> None:
    """query_position='both' reads the query twice: same token count per document, other scores, more tokens run."""
    docs = [make_text(120, seed=1), make_text(80, seed=2)]
    after = tiny_draft.score(docs, "which river?", config=CompressionConfig())
    both = tiny_draft.score(docs, "which river?", config=CompressionConfig().with_experimental(query_position="both"))
    assert [len(s) for s in both.scores] == [len(s) for s in after.scores]
    assert both.prefilled_tokens > after.prefilled_tokens
    assert not np.allclose(np.concatenate(both.scores), np.concatenate(after.scores))
    none = tiny_draft.score(
        docs, "", config=CompressionConfig().with_experimental(query_position="both")
    )  # no query: nothing to repeat
    assert none.prefilled_tokens == tiny_draft.score(docs, "", config=CompressionConfig()).prefilled_tokens


def test_query_before_and_after_incremental_equals_fresh(tiny_draft: DraftModel) -> None:
    """With the query in front, a kept cache is reused while the query stays, and scores still match a fresh pass."""
    cfg = CompressionConfig().with_experimental(query_position="both")
    docs = [make_text(60, seed=i) for i in range(3)]
    state = DraftPrefix(tiny_draft.name)
    tiny_draft.score_incremental(docs[:2], "q one", config=cfg, state=state)
    same_q = tiny_draft.score_incremental(docs, "q one", config=cfg, state=state)
    ref = tiny_draft.score(docs, "q one", config=cfg)
    assert same_q.reused_tokens > len(tiny_draft.tokenize(docs[0]).ids)
    assert max(float(np.abs(a - b).max()) for a, b in zip(same_q.scores, ref.scores, strict=True)) < 1e-4
    new_q = tiny_draft.score_incremental(docs, "another question", config=cfg, state=state)
    assert new_q.reused_tokens <= len(tiny_draft.prefix_ids) + 1  # the context now follows a different query


def test_context_room_accounts_for_the_query_in_front(tiny_llama_draft: DraftModel) -> None:
    """The room left for context shrinks by the repeated query's tokens."""
    q = "what is the name of the river that runs through the old town?"
    after = tiny_llama_draft.context_room(q, CompressionConfig())
    both = tiny_llama_draft.context_room(q, CompressionConfig().with_experimental(query_position="both"))
    assert after - both == len(tiny_llama_draft.tokenize(q + "\n\n").ids)
    with pytest.raises(ValueError, match="query_position"):
        CompressionConfig().with_experimental(query_position="before")  # type: ignore[arg-type]


def test_int8_draft_from_a_folder(tiny_llama_draft: DraftModel, tmp_path: Path) -> None:
    """quantize='int8' swaps every linear layer for a dynamic int8 one, names the draft so, and still compresses."""
    folder = tmp_path / "tiny"
    tiny_llama_draft.model.save_pretrained(folder)
    tiny_llama_draft.tokenizer.save_pretrained(folder)
    draft = load_draft(folder, quantize="int8")
    assert draft.name.endswith("+int8")
    assert not any(type(m) is torch.nn.Linear for m in draft.model.modules())
    context = make_text(600, seed=4)
    r = PromptCompressor(draft, config=CompressionConfig(min_tokens=10)).compress(context, "a question?", keep_rate=0.3)
    assert r.fallback_reason is None and r.compressed_tokens <= r.budget_tokens
    with pytest.raises(ValueError, match="quantize"):
        load_draft(folder, quantize="int4")  # type: ignore[arg-type]


def test_int8_refuses_non_cpu_models() -> None:
    """Dynamic int8 quantisation is a CPU path; a model elsewhere gets a clear error."""

    class OnMeta(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = torch.nn.Linear(2, 2, device="meta")

    with pytest.raises(ValueError, match="CPU only"):
        quantize_int8(OnMeta())


def test_dtype_names_and_auto(monkeypatch: pytest.MonkeyPatch) -> None:
    """dtype names map to torch dtypes; auto follows the device's native bfloat16; anything else is refused."""
    from crossprefill_agents.draft import load as load_mod

    assert load_mod.resolve_dtype("float32") is torch.float32 and load_mod.resolve_dtype("bfloat16") is torch.bfloat16
    assert load_mod.resolve_dtype(torch.float16) is torch.float16
    monkeypatch.setattr(load_mod, "native_bf16", lambda device=None: True)
    assert load_mod.resolve_dtype(None) is torch.bfloat16 and load_mod.resolve_dtype("auto") is torch.bfloat16
    monkeypatch.setattr(load_mod, "native_bf16", lambda device=None: False)
    assert load_mod.resolve_dtype(None) is torch.float32
    with pytest.raises(ValueError, match="dtype must be"):
        load_mod.resolve_dtype("bf16")
    with pytest.raises(TypeError, match="floating"):
        load_mod.resolve_dtype(torch.int8)
    assert load_mod.native_bf16("meta") is False  # a device with no bfloat16 kernels of its own


def test_bf16_draft_from_a_folder(
    tiny_llama_draft: DraftModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bfloat16 draft is named so (memo keys and caches never mix precisions), scores close to float32, and
    compresses; int8 takes float32 weights whatever auto would pick, and refuses an explicit bfloat16."""
    from crossprefill_agents.draft import load as load_mod

    folder = tmp_path / "tiny"
    tiny_llama_draft.model.save_pretrained(folder)
    tiny_llama_draft.tokenizer.save_pretrained(folder)
    bf16 = load_draft(folder, dtype="bfloat16")
    fp32 = load_draft(folder, dtype=torch.float32)
    assert bf16.model.dtype == torch.bfloat16 and bf16.name == f"{folder}+bf16"
    assert fp32.model.dtype == torch.float32 and fp32.name == str(folder)
    docs = [make_text(300, seed=5)]
    a = np.concatenate(fp32.score(docs, "which river?", config=CompressionConfig()).scores)
    b = np.concatenate(bf16.score(docs, "which river?", config=CompressionConfig()).scores)
    assert np.isfinite(b).all() and np.corrcoef(a, b)[0, 1] > 0.9
    r = PromptCompressor(bf16, config=CompressionConfig(min_tokens=10)).compress(docs[0], "which river?", keep_rate=0.3)
    assert r.fallback_reason is None and r.compressed_tokens <= r.budget_tokens
    monkeypatch.setattr(load_mod, "native_bf16", lambda device=None: True)
    assert load_draft(folder).model.dtype == torch.bfloat16  # auto, on a device with native bfloat16
    assert load_draft(folder, quantize="int8").name == f"{folder}+int8"
    with pytest.raises(ValueError, match="float32 weights"):
        load_draft(folder, quantize="int8", dtype="bfloat16")
    with pytest.raises(ValueError, match="dtype must be"):
        load_draft(folder, dtype="half-ish")
