"""Tiny random-init drafts and filler text for offline tests (this project's, the integrations', yours).

Nothing here downloads anything: the tokenizer is a 400-token byte-level BPE trained on
the filler text in a fraction of a second, and the models are random-init transformers
models a few kilobytes large. Their scores are meaningless, but every code path of the
draft (block prefill, question passes, sliding-window caches, incremental reuse) runs.

    from crossprefill_agents import PromptCompressor
    from crossprefill_agents.testing import tiny_draft

    pc = PromptCompressor(tiny_draft(), target=len)  # budget counted in characters
"""

from __future__ import annotations

import functools
import random
from typing import Any, Literal

__all__ = ["filler_text", "tiny_draft", "tiny_tokenizer"]

_WORDS = (
    "the of and to in is was for on that with as by at from his her are an which be this had not were "
    "river city passkey number secret remember value key answer question paper model draft target token "
    "attention chunk budget context prompt agent tool output search result essay founder startup money "
    "program language design user research company year people work time idea think good thing"
).split()


def filler_text(n_words: int, seed: int = 0) -> str:
    """Deterministic English-looking filler of ``n_words`` words with sentence and paragraph breaks."""
    rng = random.Random(seed)
    out: list[str] = []
    for i in range(n_words):
        w = rng.choice(_WORDS)
        out.append(w.capitalize() if i == 0 or out[-1].endswith(".") else w)
        if rng.random() < 0.08:
            out[-1] += "."
        if rng.random() < 0.01:
            out[-1] += "\n\n"
    return " ".join(out).replace("\n\n ", "\n\n")


@functools.cache
def tiny_tokenizer() -> Any:
    """A 400-token byte-level BPE fast tokenizer with ``<bos>`` (prepended) and ``<eos>``; built once per process."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<bos>", "<eos>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    corpus = [filler_text(200, seed=s) for s in range(20)] + ["漢字 かな 😀 é ñ ü \t\n 12345 {}[]():;,.!?"]
    tok.train_from_iterator(corpus, trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(  # a BOS in front, as most drafts have
        single="<bos> $A", special_tokens=[("<bos>", tok.token_to_id("<bos>"))]
    )
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>")


def tiny_model(arch: Literal["llama", "gemma3"] = "llama", *, vocab: int | None = None, seed: int = 0) -> Any:
    """A random-init causal LM: a 2-layer llama (grouped-query attention) or a 3-layer Gemma-3 whose first two
    layers attend over a 16-token sliding window."""
    import torch
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig, LlamaConfig, LlamaForCausalLM

    n_vocab = vocab if vocab is not None else len(tiny_tokenizer())
    torch.manual_seed(seed)
    if arch == "llama":
        return LlamaForCausalLM(
            LlamaConfig(
                vocab_size=n_vocab,
                hidden_size=32,
                intermediate_size=64,
                num_hidden_layers=2,
                num_attention_heads=4,
                num_key_value_heads=2,
                max_position_embeddings=2048,
                bos_token_id=0,
                eos_token_id=1,
            )
        ).eval()
    if arch == "gemma3":
        return Gemma3ForCausalLM(
            Gemma3TextConfig(
                vocab_size=n_vocab,
                hidden_size=32,
                intermediate_size=64,
                num_hidden_layers=3,
                num_attention_heads=2,
                num_key_value_heads=1,
                head_dim=16,
                sliding_window=16,  # far shorter than test contexts: sliding layers see only the tail
                layer_types=["sliding_attention", "sliding_attention", "full_attention"],
                max_position_embeddings=2048,
                bos_token_id=0,
                eos_token_id=1,
                pad_token_id=1,
            )
        ).eval()
    raise ValueError(f"arch must be 'llama' or 'gemma3', got {arch!r}")


def tiny_draft(arch: Literal["llama", "gemma3"] = "llama", *, seed: int = 0) -> Any:
    """A :class:`~crossprefill_agents.draft.DraftModel` over :func:`tiny_model` and :func:`tiny_tokenizer`,
    named ``tiny-llama`` or ``tiny-gemma3``; every head votes (it has no calibrated heads)."""
    from .draft import DraftModel

    return DraftModel(tiny_model(arch, seed=seed), tiny_tokenizer(), name=f"tiny-{arch}")
