"""Multi-turn agent traces to replay: the message list an agent sends the target at each step.

An agent loop calls the target model again and again with a growing, append-only chat
history (``system``, ``user``, ``assistant``, ``tool`` messages). A :class:`Trace` holds
the history as sent at each of those model calls: ``turns[i]`` is a strict prefix of
``turns[i + 1]``, and each turn ends with the message the model reads next (a user
request or a tool output). Assistant tool calls are rendered as Python-call text
(``[cd(folder='document')]``); tool outputs are ``tool`` messages with string content.

Two sources, both offline:

- :func:`bfcl_traces`: the 200 entries of BFCL v4 ``multi_turn_long_context`` (PyPI package
  ``bfcl-eval``). The ground-truth calls of each user turn are executed, one assistant
  message and one tool message per call, by the package's own executor
  (``execute_multi_turn_func_call`` with ``long_context=True``, as BFCL's ground-truth
  conversation script does) against its API classes (``GorillaFileSystem``,
  ``TradingBot``, ...) loaded from the entry's ``initial_config``; so the tool outputs are
  the real, long ones. The system message is BFCL's default prompting system prompt
  (``classic`` style, Python call format, the involved classes' function docs as JSON),
  built from the package's own templates. There is no assistant text reply between one
  user request's last tool output and the next request (the data has none).
- :func:`hotpotqa_search_traces`: a search agent over HotpotQA dev (distractor setting,
  read through :mod:`benchmarks.data`): the question, then ``turns`` ``search(query=...)``
  calls, each answered by 2-3 ``Title: ...`` paragraphs drawn from the question's own
  10 (gold and distractors) padded with other questions' paragraphs, each returned once.
  The trace records every supporting sentence and the turn at which it first arrives.

Everything is drawn from ``random.Random`` instances seeded by strings, so a call is
reproducible.
"""

from __future__ import annotations

import functools
import importlib.resources
import itertools
import json
import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from benchmarks.data import _hotpot_pool, _normalized, _read_json

__all__ = [
    "ROLES",
    "Message",
    "Trace",
    "bfcl_traces",
    "hotpotqa_search_traces",
]

logger = logging.getLogger(__name__)

ROLES = ("system", "user", "assistant", "tool")
_BFCL_CATEGORY = "BFCL_v4_multi_turn_long_context.json"
_SEARCH_SYSTEM = (
    "You are a research assistant. Answer the user's question with facts found through the search tool. "
    "To search, reply with one call and nothing else: search(query='...') with a short query (an entity, a title "
    "or the question). Each result is a paragraph starting with its title line. Keep searching until the results "
    "hold the answer, then reply with a short answer."
)
_PER_SEARCH = (2, 3)  # paragraphs returned by one search call


class Message(NamedTuple):
    """One chat message: ``role`` (one of :data:`ROLES`) and its text."""

    role: str
    content: str

    def to_dict(self) -> dict[str, str]:
        """The ``{"role": ..., "content": ...}`` dict that chat APIs take (a new one per call)."""
        return {"role": self.role, "content": self.content}


@dataclass(frozen=True)
class Trace:
    """The message lists one agent run sends the target, one per model call, append-only.

    ``gold`` and ``gold_turns`` are parallel: ``gold[i]`` (a supporting sentence, for
    HotpotQA) first reaches the model in ``turns[gold_turns[i]]``. Both are empty for BFCL.
    """

    name: str  # "bfcl/<entry id>" or "hotpotqa-search/<question id>"
    turns: tuple[tuple[Message, ...], ...]  # the messages sent at each model call; turns[i] a strict prefix of i+1
    question: str  # the user request(s) the tool outputs serve, newline-joined when several (for reporting)
    answers: tuple[str, ...] = ()  # gold answer strings where the source has them (HotpotQA)
    gold: tuple[str, ...] = ()  # evidence sentences, in the order they arrive
    gold_turns: tuple[int, ...] = field(default=())  # the turn at which each gold sentence first arrives

    def __post_init__(self) -> None:
        if not self.turns:
            raise ValueError(f"trace {self.name!r} has no turns; give at least the first message list")
        for i, turn in enumerate(self.turns):
            for m in turn:
                if m.role not in ROLES or not isinstance(m.content, str):
                    raise ValueError(f"trace {self.name!r} turn {i}: messages need a role in {ROLES} and str content")
            if i and not (len(turn) > len(self.turns[i - 1]) and turn[: len(self.turns[i - 1])] == self.turns[i - 1]):
                raise ValueError(f"trace {self.name!r}: turn {i} does not extend turn {i - 1} (history is append-only)")
        if len(self.gold_turns) != len(self.gold) or any(not 0 <= t < len(self.turns) for t in self.gold_turns):
            raise ValueError(f"trace {self.name!r}: gold_turns needs one valid turn index per gold sentence")

    def messages(self, turn: int = -1) -> list[dict[str, str]]:
        """The message list of ``turns[turn]`` (default: the last) as new plain dicts, ready for a chat API."""
        return [m.to_dict() for m in self.turns[turn]]

    def prompt_chars(self, turn: int = -1) -> int:
        """Characters of message content sent at ``turns[turn]`` (default: the last, the longest prompt)."""
        return sum(len(m.content) for m in self.turns[turn])


def _prefixes(messages: Sequence[Message]) -> tuple[tuple[Message, ...], ...]:
    """The history as sent at each model call: every prefix that ends with a user or tool message."""
    return tuple(tuple(messages[: i + 1]) for i, m in enumerate(messages) if m.role in ("user", "tool"))


def _pick(n: int, seed_key: str, traces: Sequence[Trace]) -> list[Trace]:
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if n > len(traces):
        raise ValueError(f"n must be at most {len(traces)} (the traces there are), got {n}")
    rng = random.Random(seed_key)
    lengths = sorted(t.prompt_chars() for t in traces)
    median = lengths[len(lengths) // 2]
    long = [t for t in traces if t.prompt_chars() >= median]
    short = [t for t in traces if t.prompt_chars() < median]
    rng.shuffle(long)
    rng.shuffle(short)
    return [*long, *short][:n]


# --------------------------------------------------------------------------- BFCL
def _bfcl_data_dir() -> Path:
    try:
        root = importlib.resources.files("bfcl_eval")
    except ModuleNotFoundError as e:
        raise ModuleNotFoundError(
            "the BFCL traces are built from the PyPI package bfcl-eval: pip install --no-deps bfcl-eval"
        ) from e
    return Path(str(root.joinpath("data")))


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    logger.info("reading %s", path)
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _bfcl_system_prompt(involved_classes: Sequence[str]) -> str:
    """BFCL's default prompting system prompt (``DEFAULT_SYSTEM_PROMPT_FORMAT``) for the involved classes.

    Mirrors ``bfcl_eval.model_handler.utils.formulate_system_prompt`` with the default
    format (python calls, no tag, JSON docs, plaintext, classic style); that module
    imports tree-sitter parsers, so the package's templates are assembled here instead.
    """
    from bfcl_eval.constants.default_prompts import (
        OUTPUT_FORMAT_MAPPING,
        PARAM_TYPE_MAPPING,
        PROMPT_STYLE_TEMPLATES,
        PROMPT_TEMPLATE_MAPPING,
    )
    from bfcl_eval.constants.executable_backend_config import MULTI_TURN_FUNC_DOC_FILE_MAPPING

    docs_dir = _bfcl_data_dir() / "multi_turn_func_doc"
    functions = [
        doc for cls in involved_classes for doc in _read_jsonl(docs_dir / MULTI_TURN_FUNC_DOC_FILE_MAPPING[cls])
    ]
    style = PROMPT_STYLE_TEMPLATES["classic"]
    return PROMPT_TEMPLATE_MAPPING["plaintext"].format(
        persona=style["persona"],
        task=style["task"],
        tool_call_format=style["tool_call_no_tag"].format(
            output_format=OUTPUT_FORMAT_MAPPING["python"], param_types=PARAM_TYPE_MAPPING["python"]
        ),
        multiturn_behavior=style["multiturn_behavior"],
        available_tools=style["available_tools"].format(format="json", functions=json.dumps(functions, indent=4)),
    )


_BFCL_RUNS = itertools.count()


def _bfcl_trace(entry: dict[str, Any], ground_truth: Sequence[Sequence[str]]) -> Trace:
    """Replay one entry: each user request, then one assistant call and its real output per ground-truth call."""
    from bfcl_eval.eval_checker.multi_turn_eval import multi_turn_utils

    # The executor keeps one instance per (model name, entry, class) in its module globals so that
    # state carries over between user turns; a fresh name per replay starts from the initial config,
    # and the instances are dropped afterwards so that replays stay independent.
    run = f"crossprefill_traces_{next(_BFCL_RUNS)}"
    messages = [Message("system", _bfcl_system_prompt(entry["involved_classes"]))]
    try:
        for requests, calls in zip(entry["question"], ground_truth, strict=True):
            messages.extend(Message(m["role"], m["content"]) for m in requests)
            outputs, _ = multi_turn_utils.execute_multi_turn_func_call(
                list(calls),
                entry["initial_config"],
                entry["involved_classes"],
                run,
                entry["id"],
                long_context=True,
            )
            for call, output in zip(calls, outputs, strict=True):
                if output.startswith("Error during execution"):
                    logger.info("BFCL %s: ground-truth call %s failed: %s", entry["id"], call, output)
                messages.append(Message("assistant", f"[{call}]"))
                messages.append(Message("tool", output))
    finally:
        module_globals = vars(multi_turn_utils)
        for name in [k for k in module_globals if k.startswith(f"{run}_")]:
            del module_globals[name]
    question = "\n".join(m["content"] for requests in entry["question"] for m in requests)
    return Trace(name=f"bfcl/{entry['id']}", turns=_prefixes(messages), question=question)


@functools.cache
def _all_bfcl_traces() -> tuple[Trace, ...]:
    """Every entry of BFCL v4 multi_turn_long_context replayed, in file order."""
    data = _bfcl_data_dir()
    entries = _read_jsonl(data / _BFCL_CATEGORY)
    answers = {a["id"]: a["ground_truth"] for a in _read_jsonl(data / "possible_answer" / _BFCL_CATEGORY)}
    return tuple(_bfcl_trace(e, answers[e["id"]]) for e in entries)


def bfcl_traces(n: int, *, seed: int = 0) -> list[Trace]:
    """``n`` traces of BFCL v4 ``multi_turn_long_context`` with real, long tool outputs, drawn by ``seed``.

    Long ones first: the entries whose final prompt is at least the median length (in
    characters), in seeded order, then the others in seeded order. All 200 entries are
    replayed once per process (a fraction of a second each) and cached.
    """
    return _pick(n, f"bfcl/{seed}", _all_bfcl_traces())


# --------------------------------------------------------------------------- HotpotQA search agent
def _paragraph_text(title: str, sentences: Sequence[str]) -> str:
    return f"Title: {title}\n" + "".join(sentences).strip()


def _hotpot_search_trace(item: dict[str, Any], *, turns: int, seed: int) -> Trace:
    rng = random.Random(f"hotpotqa-search/{seed}/{item['_id']}/{turns}")
    counts = [rng.choice(_PER_SEARCH) for _ in range(turns)]
    needed = sum(counts)
    own = [(t, tuple(s)) for t, s in item["context"]]
    facts: dict[str, set[int]] = {}
    for title, idx in item["supporting_facts"]:
        facts.setdefault(title, set()).add(int(idx))
    gold = [p for p in own if p[0] in facts]
    others = [p for p in own if p[0] not in facts]
    rng.shuffle(others)
    if len(gold) > needed:
        raise ValueError(f"{len(gold)} gold paragraphs do not fit in {turns} searches")
    chosen = [*gold, *others[: needed - len(gold)]]
    # Padding: other questions' paragraphs, never one with a title already there nor one holding the answer.
    pool = _hotpot_pool()
    titles = {t for t, _ in own}
    answer = _normalized(item["answer"])
    while len(chosen) < needed:
        title, sents = pool[rng.randrange(len(pool))]
        if title in titles or (item["answer"] not in ("yes", "no") and answer in _normalized("".join(sents))):
            continue
        titles.add(title)
        chosen.append((title, sents))
    rng.shuffle(chosen)

    question = item["question"].strip()  # a few questions carry a leading space
    messages = [Message("system", _SEARCH_SYSTEM), Message("user", question)]
    gold_sents: list[str] = []
    gold_turns: list[int] = []
    start = 0
    for step, k in enumerate(counts, start=1):
        results = chosen[start : start + k]
        start += k
        query = question if step == 1 else results[0][0]
        messages.append(Message("assistant", f"search(query={query!r})"))
        messages.append(Message("tool", "\n\n".join(_paragraph_text(t, s) for t, s in results)))
        for title, sents in results:
            for i in sorted(facts.get(title, ())):
                if 0 <= i < len(sents) and sents[i].strip():  # a few supporting facts point past the paragraph
                    gold_sents.append(sents[i].strip())
                    gold_turns.append(step)
    return Trace(
        name=f"hotpotqa-search/{item['_id']}",
        turns=_prefixes(messages),
        question=question,
        answers=(item["answer"],),
        gold=tuple(gold_sents),
        gold_turns=tuple(gold_turns),
    )


def hotpotqa_search_traces(n: int, *, turns: int = 10, seed: int = 0) -> list[Trace]:
    """``n`` search-agent traces over HotpotQA dev questions drawn by ``seed``, each with ``turns`` searches.

    A trace has ``turns + 1`` turns: system prompt and question, then one more after each
    ``search`` call's output. The first query is the question, each later one the title
    of the top paragraph it returns. The 2-3 paragraphs per search are the question's own
    (every gold paragraph, then distractors) padded with other questions' paragraphs
    (never one with a title already there, nor one that contains the answer), in
    seeded order, each returned once. The same ``seed`` draws the same questions for any
    ``turns``; the paragraph order depends on both.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if turns < 1:
        raise ValueError(f"turns must be >= 1 (the number of search calls), got {turns}")
    items = _read_json("hotpotqa.json")
    rng = random.Random(f"hotpotqa-search/{seed}")
    out: list[Trace] = []
    for j in rng.sample(range(len(items)), len(items)):
        if len(out) == n:
            break
        try:
            out.append(_hotpot_search_trace(items[j], turns=turns, seed=seed))
        except ValueError as e:
            logger.info("skipping HotpotQA %s: %s", items[j]["_id"], e)
    return out
