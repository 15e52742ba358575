"""Choosing the heads that vote: retrieval heads, found once per draft, training-free.

Many attention heads of a small draft attend by position (the last tokens, the first
token) rather than by content. Retrieval heads are the ones that, asked about a fact,
look at where the fact is. :func:`find_retrieval_heads` plants a fact ("The access code
of the blue depot is 4821.") at a random depth in filler text, asks for it, and ranks
every (layer, head) by the attention mass the question's tokens put on the fact. The
filler is synthetic by default (:func:`synthetic_texts`: short encyclopedic sentences
about made-up people and places, written from templates here), so a draft can be
calibrated anywhere, offline, with nothing but its own weights.

:func:`calibrate` runs that once for a draft, stores the heads in
``<models home>/heads/<draft>.json`` and sets ``draft.retrieval_heads``, which
``heads="auto"`` (the default) lets vote. :func:`crossprefill_agents.draft.load_draft`
reads the stored heads, and calibrates the embedded drafts on first use.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..config import CompressionConfig, ExperimentalOptions
from .embedded import models_home
from .runner import DraftModel

__all__ = [
    "DEFAULT_TOP",
    "calibrate",
    "find_retrieval_heads",
    "head_needle_mass",
    "heads_path",
    "load_retrieval_heads",
    "needle_masses",
    "rank_heads",
    "synthetic_texts",
]

logger = logging.getLogger(__name__)

DEFAULT_TOP = 8  # heads that vote after calibration (the count the scorer ablation kept)
_FORMAT = 1

_COLOURS = ("blue", "amber", "green", "silver", "crimson", "violet", "grey", "golden")
_PLACES = ("depot", "harbour", "archive", "tower", "garden", "station", "library", "foundry")

_FIRST = (
    "Ada Bruno Celia Dario Elin Farid Greta Hugo Ilse Jonas Kaya Luca Mira Nils Oona Pavel Rhea Sami Tove Ugo"
).split()
_LAST = (
    "Varga Lindqvist Okafor Moreau Tanaka Brennan Castell Duarte Halloran Iversen Kowal Marchetti Novak Reyes"
).split()
_TOWNS = "Aldmere Brookhollow Carran Dunvale Eastwick Fallowby Greyport Hollin Ivesham Kestrel Lowmarsh Norbury".split()
_JOBS = "cartographer clockmaker surveyor botanist printer glassblower archivist engineer stonemason teacher".split()
_THINGS = "rivers tides bridges orchards lighthouses canals railways salt marshes bells looms".split()
_TEMPLATES = (
    "{p} was born in {t} in {y} and worked as a {j} for most of {h} life.",
    "The old bridge at {t} was finished in {y}, after {n} years of work by local {j}s.",
    "In {y} the council of {t} voted to move its weekly market to the square by the mill.",
    "{p} wrote {n} books about {x}; the best known describes the winter of {y}.",
    "Most of the apples grown around {t} are sold in {t2}, a day's walk to the north.",
    "A small museum in {t} keeps the tools of {p}, a {j} who lived there until {y}.",
    "The road from {t} to {t2} was paved in {y} and widened again some {n} decades later.",
    "Visitors to {t} often ask about its {x}, which appear on maps drawn as early as {y}.",
    "{p} taught at the school in {t2} and kept careful notes on the {x} of the valley.",
    "After the flood of {y}, {p} helped rebuild the granary of {t} with {n} neighbours.",
    "The library of {t} holds {n} letters that {p} sent to a {j} in {t2}.",
    "Every spring since {y} the people of {t} have held a fair in honour of their {x}.",
)


def synthetic_texts(n: int = 8, *, chars: int = 6000, seed: int = 0) -> list[str]:
    """``n`` paragraphs of made-up encyclopedic prose of about ``chars`` characters each.

    Many names, places and years, no access codes: filler in which a planted fact stands
    out by its content only, never by its form.
    """
    rng = random.Random(f"crossprefill-filler/{seed}")
    out = []
    for _ in range(n):
        sentences: list[str] = []
        size = 0
        while size < chars:
            first, last = rng.choice(_FIRST), rng.choice(_LAST)
            town, town2 = rng.sample(_TOWNS, 2)
            s = rng.choice(_TEMPLATES).format(
                p=f"{first} {last}",
                t=town,
                t2=town2,
                y=rng.randint(1780, 1990),
                n=rng.randint(2, 40),
                j=rng.choice(_JOBS),
                x=rng.choice(_THINGS),
                h=rng.choice(("her", "his")),
            )
            sentences.append(s)
            size += len(s) + 1
        out.append(" ".join(sentences))
    return out


def _plant(text: str, rng: random.Random) -> tuple[str, str, tuple[int, int]]:
    """``text`` with a fact sentence at a random sentence boundary, its question, and its character span."""
    name = f"the {rng.choice(_COLOURS)} {rng.choice(_PLACES)}"
    fact = f"The access code of {name} is {rng.randint(1000, 9999)}. "
    cuts = [i + 2 for i in range(len(text) - 2) if text[i] == "." and text[i + 1] == " "]
    at = rng.choice(cuts[len(cuts) // 10 : -max(1, len(cuts) // 10)] or cuts or [0])
    return text[:at] + fact + text[at:], f"What is the access code of {name}?", (at, at + len(fact) - 1)


def head_needle_mass(
    draft: DraftModel, context: str, question: str, span: tuple[int, int], config: CompressionConfig
) -> np.ndarray:
    """``(layers, heads)``: each head's attention mass on ``context[span]``, averaged over the queries.

    The queries are the question's tokens (``scorer="question"``) or the look-ahead steps.
    """
    scores = draft.head_scores([context], question, config=config)  # (queries, layers, heads, n_ctx)
    offsets = draft.tokenize(context).offsets
    inside = (offsets[:, 1] > span[0]) & (offsets[:, 0] < span[1])
    return scores[..., inside].sum(axis=-1).mean(axis=0) / scores.sum(axis=-1).mean(axis=0).clip(min=1e-12)


def needle_masses(
    draft: DraftModel,
    texts: Sequence[str] | None = None,
    *,
    seed: int = 0,
    config: CompressionConfig | None = None,
) -> np.ndarray:
    """``(layers, heads)``: each head's attention mass on a planted fact, averaged over ``texts``.

    ``texts`` are stretches of prose that each fit one draft window (a few hundred to a few
    thousand tokens; 8 or more give a stable ranking); default: :func:`synthetic_texts`.
    Scoring uses ``config``'s scorer and pooling (default: :class:`CompressionConfig`).
    """
    if texts is None:
        texts = synthetic_texts(seed=seed)
    if not texts:
        raise ValueError("finding retrieval heads needs at least one text to plant facts in")
    cfg = config or CompressionConfig()
    rng = random.Random(seed)
    masses = []
    for text in texts:
        context, question, span = _plant(text, rng)
        masses.append(head_needle_mass(draft, context, question, span, cfg))
    return np.mean(masses, axis=0)  # (layers, heads)


def rank_heads(
    mass: np.ndarray, *, top: int = DEFAULT_TOP, depth_tolerance: float = 0.0
) -> tuple[tuple[int, int], ...]:
    """The ``top`` (layer, head) pairs of ``mass`` ``(layers, heads)``, best first, from as few first layers as do.

    The scorer runs the draft only up to the deepest voting layer, so shallow heads are
    cheaper. With ``depth_tolerance`` t, the heads come from the first D layers for the
    smallest D whose ``top`` heads hold at least (1 - t) of the mass of the best ``top``
    heads of all layers (t = 0: the best heads wherever they are).
    """
    if top < 1:
        raise ValueError(f"top must be >= 1, got {top}")
    if not 0.0 <= depth_tolerance < 1.0:
        raise ValueError(f"depth_tolerance must be in [0, 1), got {depth_tolerance}")
    layers, heads = mass.shape
    flat = mass.reshape(-1)  # (layers*heads,): index = layer * heads + head
    best = np.sort(flat)[::-1][:top].sum()
    for depth in range(1, layers + 1):
        shallow = flat[: depth * heads]
        order = np.argsort(-shallow, kind="stable")[:top]
        if len(order) == min(top, len(flat)) and shallow[order].sum() >= (1.0 - depth_tolerance) * best:
            return tuple((int(i // heads), int(i % heads)) for i in order)
    raise AssertionError("unreachable: all layers hold the best heads")


def find_retrieval_heads(
    draft: DraftModel,
    texts: Sequence[str] | None = None,
    *,
    top: int = DEFAULT_TOP,
    seed: int = 0,
    config: CompressionConfig | None = None,
    depth_tolerance: float = 0.0,
) -> tuple[tuple[int, int], ...]:
    """The ``top`` (layer, head) pairs that put the most attention on a planted fact, best first.

    :func:`needle_masses` over ``texts``, ranked by :func:`rank_heads`.
    """
    if top < 1:
        raise ValueError(f"top must be >= 1, got {top}")
    mass = needle_masses(draft, texts, seed=seed, config=config)
    return rank_heads(mass, top=top, depth_tolerance=depth_tolerance)


def heads_path(draft_name: str) -> Path:
    """Where the calibrated heads of the draft called ``draft_name`` are stored."""
    base = draft_name.split("+", 1)[0]  # an int8 draft uses the heads of its float weights
    slug = re.sub(r"[^A-Za-z0-9._-]+", "--", base).strip("-") or "draft"
    return models_home() / "heads" / f"{slug}.json"


def load_retrieval_heads(
    draft_name: str, depth_tolerance: float | None = None, *, shape: tuple[int, int] | None = None
) -> tuple[tuple[int, int], ...] | None:
    """The stored heads of ``draft_name``; None when it was never calibrated or its file is refused.

    A file is refused, with one warning naming it and why, when it is unreadable or not a heads
    record (bad JSON, garbage bytes, another format), holds no heads or something other than
    ``[layer, head]`` pairs of ints >= 0, holds a head outside ``shape`` (the draft's
    ``(layers, heads per layer)``), or (with ``depth_tolerance``) was calibrated under another
    tolerance. The draft then votes with every head; nothing is recalibrated unless asked
    (:func:`calibrate`, or delete the file and load an embedded draft again).
    """
    path = heads_path(draft_name)
    raw: bytes | OSError
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as e:
        raw = e
    try:
        return _parse_heads(raw, depth_tolerance, shape)
    except ValueError as e:
        logger.warning(
            "ignoring the calibrated heads at %s: %s; every head votes (to recalibrate, call "
            "crossprefill_agents.draft.calibrate(draft), or delete the file and load the embedded draft again)",
            path,
            e,
        )
        return None


def _parse_heads(
    raw: bytes | OSError, depth_tolerance: float | None, shape: tuple[int, int] | None
) -> tuple[tuple[int, int], ...]:
    """The heads a heads file's bytes hold; ``ValueError`` saying why they are refused."""
    if isinstance(raw, OSError):
        raise ValueError(f"it cannot be read ({raw})")
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise ValueError(f"it is not JSON ({e})") from None
    if not isinstance(data, dict):
        raise ValueError(f"it holds a JSON {type(data).__name__}, not a heads record")
    if data.get("format") != _FORMAT:
        raise ValueError(f"its format is {data.get('format')!r}, this library reads {_FORMAT}")
    stored_tolerance = data.get("depth_tolerance", 0.0)
    if isinstance(stored_tolerance, bool) or not isinstance(stored_tolerance, (int, float)):
        raise ValueError(f"its depth_tolerance is {stored_tolerance!r}, not a number")
    if depth_tolerance is not None and float(stored_tolerance) != depth_tolerance:
        raise ValueError(f"it was calibrated with depth_tolerance={stored_tolerance}, not {depth_tolerance}")
    pairs = data.get("heads")
    if not isinstance(pairs, list) or not pairs:
        raise ValueError(f"its heads are {pairs!r}, not a non-empty list of [layer, head] pairs")
    heads: list[tuple[int, int]] = []
    for pair in pairs:
        ok = isinstance(pair, list) and len(pair) == 2
        ok = ok and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in pair)
        if not ok:
            raise ValueError(f"{pair!r} is not a [layer, head] pair of ints >= 0")
        layer, head = pair
        if shape is not None and not (layer < shape[0] and head < shape[1]):
            raise ValueError(f"head {pair!r} is outside the draft's {shape[0]} layers of {shape[1]} heads each")
        if (layer, head) not in heads:
            heads.append((layer, head))
    return tuple(heads)


def calibrate(
    draft: DraftModel,
    *,
    top: int = DEFAULT_TOP,
    texts: Sequence[str] | None = None,
    save: bool = True,
    depth_tolerance: float = 0.0,
) -> tuple[tuple[int, int], ...]:
    """Find ``draft``'s retrieval heads for the question scorer, set ``draft.retrieval_heads``, and store them.

    About 8 draft passes over ~1.5k tokens (20-40 s for a 135M draft on two CPU cores).
    ``depth_tolerance``: see :func:`rank_heads` (0 = the best heads wherever they are).
    """
    t0 = time.perf_counter()
    heads = find_retrieval_heads(
        draft,
        texts,
        top=top,
        config=CompressionConfig(experimental=ExperimentalOptions(scorer="question", heads=())),
        depth_tolerance=depth_tolerance,
    )
    draft.retrieval_heads = heads
    if save:
        record = {
            "format": _FORMAT,
            "draft": draft.name,
            "heads": [list(p) for p in heads],
            "texts": "synthetic" if texts is None else f"{len(texts)} given",
            "depth_tolerance": depth_tolerance,
            "seconds": round(time.perf_counter() - t0, 1),
        }
        path = heads_path(draft.name)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
            with os.fdopen(fd, "w") as f:
                f.write(json.dumps(record) + "\n")
            os.replace(tmp, path)
        except OSError as e:  # a read-only home must not break loading: the heads stay on the draft
            logger.warning("could not store the calibrated heads at %s (%s); they apply to this process only", path, e)
    logger.info("calibrated %d retrieval heads for %s in %.1f s", len(heads), draft.name, time.perf_counter() - t0)
    return heads
