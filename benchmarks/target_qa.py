"""A real local target model answers a question from a (compressed or full) context.

The targets are of a different family than the draft that compressed the context:
Gemma-3-270M (base, completion-style prompt) for the SmolLM2 draft, and
SmolLM2-135M-Instruct (its chat template) for the Gemma draft. Time to first token is the
target's prefill of the whole prompt up to its first generated token.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch

from crossprefill_agents.draft import load_draft

__all__ = ["TARGET_FOR_DRAFT", "Answer", "LocalTarget"]

# draft alias -> the cross-family target that answers from its compressed contexts
TARGET_FOR_DRAFT = {"smollm2-135m": "gemma3-270m", "gemma3-270m": "smollm2-135m"}

_INSTRUCTION = "Answer the question using the context. Reply with only the answer, a few words."


@dataclass(frozen=True)
class Answer:
    text: str
    prompt_tokens: int
    ttft_s: float  # prefill of the prompt through the first generated token
    total_s: float


class LocalTarget:
    """Greedy short-answer generation with one of the embedded models used as a target."""

    def __init__(self, name: str, *, max_new_tokens: int = 16) -> None:
        loaded = load_draft(name)  # the same loader; used here as a plain causal LM
        self.name = name
        self.model: Any = loaded.model
        self.tokenizer: Any = loaded.tokenizer
        self.max_new_tokens = max_new_tokens
        self.stop_ids = set(loaded.eos_ids)
        newline = self.tokenizer("\n", add_special_tokens=False)["input_ids"]
        self.stop_ids.update(newline[-1:])
        self.chat = getattr(self.tokenizer, "chat_template", None) is not None

    def prompt_ids(self, context: str, question: str) -> list[int]:
        if self.chat:
            messages = [{"role": "user", "content": f"{_INSTRUCTION}\n\nContext:\n{context}\n\nQuestion: {question}"}]
            ids = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
            if isinstance(ids, dict) or hasattr(ids, "keys"):
                ids = ids["input_ids"]
            return list(ids)
        text = f"{context}\n\n{_INSTRUCTION}\nQuestion: {question}\nAnswer:"
        return list(self.tokenizer(text)["input_ids"])

    def answer(self, context: str, question: str) -> Answer:
        from transformers import DynamicCache

        ids = self.prompt_ids(context, question)
        out_ids: list[int] = []
        with torch.inference_mode():
            cache = DynamicCache(config=self.model.config)
            t0 = time.perf_counter()
            logits = self.model(input_ids=torch.tensor([ids]), cache=cache, use_cache=True, logits_to_keep=1).logits
            token = int(logits[0, -1].argmax())
            ttft = time.perf_counter() - t0
            while token not in self.stop_ids and len(out_ids) < self.max_new_tokens:
                out_ids.append(token)
                logits = self.model(
                    input_ids=torch.tensor([[token]]), cache=cache, use_cache=True, logits_to_keep=1
                ).logits
                token = int(logits[0, -1].argmax())
            total = time.perf_counter() - t0
        text = self.tokenizer.decode(out_ids, skip_special_tokens=True).strip()
        return Answer(text=text, prompt_tokens=len(ids), ttft_s=ttft, total_s=total)
