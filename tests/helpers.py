"""Text helpers shared by the unit tests (a plain module: conftest.py files are not importable by name)."""

from __future__ import annotations

import random

WORDS = (
    "the of and to in is was for on that with as by at from his her are an which be this had not were "
    "river city passkey number secret remember value key answer question paper model draft target token "
    "attention chunk budget context prompt agent tool output search result essay founder startup money "
    "program language design user research company year people work time idea think good thing"
).split()


def make_text(n_words: int, seed: int = 0) -> str:
    """Deterministic English-looking filler with sentence and paragraph breaks."""
    rng = random.Random(seed)
    out = []
    for i in range(n_words):
        w = rng.choice(WORDS)
        out.append(w.capitalize() if i == 0 or out[-1].endswith(".") else w)
        if rng.random() < 0.08:
            out[-1] += "."
        if rng.random() < 0.01:
            out[-1] += "\n\n"
    return " ".join(out).replace("\n\n ", "\n\n")
