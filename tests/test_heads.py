"""Per-head scores and head selection: the raw material for retrieval heads, and the ``heads`` config."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import make_text

from crossprefill_agents import CompressionConfig, DraftError
from crossprefill_agents.config import ExperimentalOptions
from crossprefill_agents.draft import DraftModel, DraftPrefix, load_draft
from crossprefill_agents.draft.heads import (
    calibrate,
    find_retrieval_heads,
    head_needle_mass,
    heads_path,
    load_retrieval_heads,
    rank_heads,
    synthetic_texts,
)
from crossprefill_agents.draft.queries import QUERY_BLOCK
from crossprefill_agents.scoring import pick_heads

LOOKAHEAD = CompressionConfig().with_experimental(scorer="lookahead", heads=())


def test_all_heads_lookahead_vote_equals_score(tiny_draft: DraftModel) -> None:
    """Look-ahead scorer: max over every head of head_scores, averaged over steps, is score() (up to its scale n)."""
    context, q = make_text(200, seed=3), "where did they go?"
    per_head = tiny_draft.head_scores([context], q, config=LOOKAHEAD)
    n = len(tiny_draft.tokenize(context).ids)
    layers = tiny_draft.model.config.num_hidden_layers
    heads = tiny_draft.model.config.num_attention_heads
    assert per_head.shape[1:] == (layers, heads, n) and 1 <= per_head.shape[0] <= LOOKAHEAD.experimental.lookahead + 1
    assert np.isfinite(per_head).all() and (per_head >= 0).all()
    vote = per_head.reshape(per_head.shape[0], -1, n).max(axis=1).mean(axis=0)
    np.testing.assert_allclose(
        vote * n, tiny_draft.score([context], q, config=LOOKAHEAD).scores[0], rtol=1e-5, atol=1e-6
    )


def _question_vote(draft: DraftModel, context: str, q: str, heads: list[tuple[int, int]] | None = None) -> np.ndarray:
    """By hand: per head, mean attention of the question's tokens minus that of the null query; max over heads."""
    cfg = CompressionConfig().with_experimental(heads=())
    asked = draft.head_scores([context], q, config=cfg).mean(axis=0)  # (layers, heads, n)
    null = draft.head_scores([context], "N/A", config=cfg).mean(axis=0)
    excess = asked - null
    rows = excess.reshape(-1, excess.shape[-1]) if heads is None else np.stack([excess[a, b] for a, b in heads])
    return rows.max(axis=0) * excess.shape[-1]


def test_all_heads_question_vote_equals_score(tiny_draft: DraftModel) -> None:
    """Question scorer: one row per question token; the score is the heads' max of (question - null query) means."""
    context, q = make_text(200, seed=3), "where did they go?"
    per_head = tiny_draft.head_scores([context], q, config=CompressionConfig())
    q_tokens = len(tiny_draft.tokenize("\n\n" + q).ids) - len(tiny_draft.tokenize("\n\n").ids)
    assert per_head.shape[0] == q_tokens and (per_head >= 0).all()
    unpooled = tiny_draft.head_scores([context], q, config=CompressionConfig().with_experimental(pool_kernel=1))
    np.testing.assert_allclose(unpooled.sum(axis=-1), 1.0, atol=1e-4)  # each row renormalised over the context
    got = tiny_draft.score([context], q, config=CompressionConfig().with_experimental(heads=())).scores[0]
    np.testing.assert_allclose(got, _question_vote(tiny_draft, context, q), rtol=1e-4, atol=1e-4)


def test_heads_config_votes_with_the_chosen_heads_only(tiny_llama_draft: DraftModel) -> None:
    """CompressionConfig().with_experimental(heads=...) scores with the max over those heads alone, in either scorer."""
    context, q = make_text(200, seed=4), "what happened?"
    pairs = ((0, 1), (1, 3))
    per_head = tiny_llama_draft.head_scores([context], q, config=LOOKAHEAD)
    n = per_head.shape[-1]
    expected = np.stack([per_head[:, 0, 1], per_head[:, 1, 3]], axis=1).max(axis=1).mean(axis=0) * n
    got = tiny_llama_draft.score([context], q, config=LOOKAHEAD.with_experimental(heads=pairs)).scores[0]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    got = tiny_llama_draft.score([context], q, config=CompressionConfig().with_experimental(heads=pairs)).scores[0]
    np.testing.assert_allclose(got, _question_vote(tiny_llama_draft, context, q, list(pairs)), rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="exist in this draft"):
        tiny_llama_draft.score([context], q, config=LOOKAHEAD.with_experimental(heads=((7, 0),)))


def test_question_scorer_stops_after_the_deepest_voting_layer(tiny_llama_draft: DraftModel, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Heads only in layer 0: the forward runs one decoder layer, and the scores equal the full-depth ones."""
    context, q = make_text(200, seed=5), "what happened?"
    layers = tiny_llama_draft.model.model.layers
    calls = {i: 0 for i in range(len(layers))}
    for i, layer in enumerate(layers):
        layer.register_forward_hook(lambda *_, i=i: calls.__setitem__(i, calls[i] + 1))
    cfg = CompressionConfig().with_experimental(heads=((0, 1), (0, 2)))
    shallow = tiny_llama_draft.score([context], q, config=cfg).scores[0]
    assert calls[0] > 0 and all(c == 0 for i, c in calls.items() if i > 0)
    assert tiny_llama_draft.model.config.num_hidden_layers == len(layers)  # restored
    np.testing.assert_allclose(shallow, _question_vote(tiny_llama_draft, context, q, [(0, 1), (0, 2)]), atol=1e-4)


@pytest.mark.parametrize("fixture", ["tiny_llama_draft", "tiny_gemma_draft"])
def test_question_scorer_never_runs_the_lm_head(fixture: str, request) -> None:  # type: ignore[no-untyped-def]
    """The question scorer reads attention only: its prefill and query forwards skip the vocabulary-sized LM
    head (merged on llama, in separate passes on gemma3); the look-ahead scorer still runs it for its next
    tokens."""
    draft: DraftModel = request.getfixturevalue(fixture)
    head = draft.model.get_output_embeddings()
    calls = []
    hook = head.register_forward_hook(lambda *_: calls.append(1))
    try:
        context, q = make_text(300, seed=5), "what happened there?"
        draft.score([context], q, config=CompressionConfig())
        draft.score_incremental([context], q, config=CompressionConfig(), state=DraftPrefix(draft.name))
        assert calls == []
        lookahead = CompressionConfig().with_experimental(scorer="lookahead", heads=())
        draft.score([context], q, config=lookahead)
        assert len(calls) == lookahead.experimental.lookahead + 1  # one per query step
    finally:
        hook.remove()


def test_auto_heads_use_the_drafts_retrieval_heads(tiny_llama_draft: DraftModel, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """heads="auto": the draft's retrieval heads in the question scorer, every head otherwise or when it has none."""
    context, q = make_text(200, seed=6), "what happened?"
    auto = CompressionConfig()
    assert tiny_llama_draft.voting_heads(auto) == ()
    every = tiny_llama_draft.score([context], q, config=auto).scores[0]
    np.testing.assert_allclose(
        every, tiny_llama_draft.score([context], q, config=CompressionConfig().with_experimental(heads=())).scores[0]
    )
    monkeypatch.setattr(tiny_llama_draft, "retrieval_heads", ((1, 0), (0, 3)))
    assert tiny_llama_draft.voting_heads(auto) == ((1, 0), (0, 3))
    assert tiny_llama_draft.voting_heads(auto.with_experimental(scorer="lookahead")) == ()
    chosen = tiny_llama_draft.score([context], q, config=auto).scores[0]
    np.testing.assert_allclose(chosen, _question_vote(tiny_llama_draft, context, q, [(1, 0), (0, 3)]), atol=1e-4)


def test_heads_outside_the_global_layers(tiny_gemma_draft: DraftModel) -> None:
    """Heads only in sliding-window layers with attention_layers='global' leave nobody to vote: a DraftError."""
    cfg = CompressionConfig().with_experimental(heads=((0, 0),), attention_layers="global")
    with pytest.raises(DraftError, match="no head"):
        tiny_gemma_draft.score([make_text(100, seed=1)], "q", config=cfg)


def test_pick_heads_and_validation() -> None:
    """pick_heads keeps the named rows per layer; bad pairs are refused by the config."""
    rows = [torch.arange(6.0).reshape(3, 2), torch.arange(6.0, 12.0).reshape(3, 2)]
    kept = pick_heads(rows, [(1, 2), (0, 0), (1, 0)])
    assert [r.tolist() for r in kept] == [[[0.0, 1.0]], [[6.0, 7.0], [10.0, 11.0]]]
    assert pick_heads(rows, [(1, 1)])[0].shape == (0, 2)  # layers stay aligned
    assert pick_heads(rows, []) == rows
    for bad in (((0,),), ((-1, 0),), ((0, 1.5),)):
        with pytest.raises(ValueError, match="heads"):
            CompressionConfig().with_experimental(heads=bad)  # type: ignore[arg-type]


def test_find_retrieval_heads_ranks_real_pairs(tiny_llama_draft: DraftModel) -> None:
    """The ranking returns ``top`` distinct, valid (layer, head) pairs, best needle mass first, reproducibly."""
    texts = [make_text(150, seed=s) for s in range(3)]
    top = find_retrieval_heads(tiny_llama_draft, texts, top=5)
    assert len(set(top)) == 5 and top == find_retrieval_heads(tiny_llama_draft, texts, top=5)
    cfg = tiny_llama_draft.model.config
    assert all(0 <= layer < cfg.num_hidden_layers and 0 <= h < cfg.num_attention_heads for layer, h in top)
    context = texts[0][:200] + "The access code of the blue depot is 4821. " + texts[0][200:]
    mass = head_needle_mass(tiny_llama_draft, context, "What is the access code?", (200, 242), CompressionConfig())
    assert mass.shape == (cfg.num_hidden_layers, cfg.num_attention_heads) and ((mass >= 0) & (mass <= 1)).all()
    with pytest.raises(ValueError, match="top"):
        find_retrieval_heads(tiny_llama_draft, texts, top=0)


def test_rank_heads_prefers_shallow_layers_within_the_tolerance() -> None:
    """Best heads first; a tolerance trades a little needle mass for a shallower cut of the draft."""
    mass = np.array(
        [
            [0.50, 0.10, 0.00],  # layer 0
            [0.40, 0.05, 0.00],  # layer 1
            [0.60, 0.45, 0.00],  # layer 2: the two best heads
        ]
    )
    assert rank_heads(mass, top=2) == ((2, 0), (0, 0))  # 1.10 of mass, needs all 3 layers
    # the first two layers hold 0.90 = 82% of it; layer 0 alone 0.60 = 55%
    assert rank_heads(mass, top=2, depth_tolerance=0.1) == ((2, 0), (0, 0))
    assert rank_heads(mass, top=2, depth_tolerance=0.2) == ((0, 0), (1, 0))
    assert rank_heads(mass, top=2, depth_tolerance=0.5) == ((0, 0), (0, 1))
    assert rank_heads(mass, top=9) == tuple(
        (i // 3, i % 3) for i in np.argsort(-mass.reshape(-1), kind="stable")
    )  # every head, best first
    with pytest.raises(ValueError, match="depth_tolerance"):
        rank_heads(mass, depth_tolerance=1.0)
    with pytest.raises(ValueError, match="top"):
        rank_heads(mass, top=0)


def test_synthetic_texts_are_reproducible_filler() -> None:
    """The default calibration filler: n texts of about the asked size, the same for a seed, no planted form in it."""
    texts = synthetic_texts(3, chars=2000, seed=1)
    assert len(texts) == 3 and all(2000 <= len(t) < 2300 for t in texts)
    assert texts == synthetic_texts(3, chars=2000, seed=1) and texts != synthetic_texts(3, chars=2000, seed=2)
    assert not any("access code" in t for t in texts)


def test_calibrate_stores_heads_that_from_pretrained_loads(
    tiny_llama_draft: DraftModel,
    tmp_path: Path,
    monkeypatch,
    caplog,  # type: ignore[no-untyped-def]
) -> None:
    """calibrate() sets and stores the heads; a later load of the same draft (float or int8) gets them back."""
    monkeypatch.setenv("CROSSPREFILL_HOME", str(tmp_path / "home"))
    folder = tmp_path / "tiny"
    tiny_llama_draft.model.save_pretrained(folder)
    tiny_llama_draft.tokenizer.save_pretrained(folder)
    draft = load_draft(folder)
    assert draft.retrieval_heads is None and load_retrieval_heads(draft.name) is None  # not embedded: no calibration
    heads = calibrate(draft, top=3, texts=[make_text(150, seed=s) for s in range(2)])
    assert draft.retrieval_heads == heads and len(set(heads)) == 3
    assert heads_path(draft.name).is_file() and load_retrieval_heads(draft.name) == heads
    assert load_draft(folder).retrieval_heads == heads
    assert load_draft(folder, quantize="int8").retrieval_heads == heads
    assert load_retrieval_heads(draft.name, 0.0) == heads  # stored with the default tolerance
    assert load_retrieval_heads(draft.name, 0.15) is None  # asked for another: refused (every head votes)
    shallow = calibrate(draft, top=3, texts=[make_text(150, seed=s) for s in range(2)], depth_tolerance=0.9)
    assert load_retrieval_heads(draft.name, 0.9) == shallow and load_retrieval_heads(draft.name, 0.0) is None
    assert max(layer for layer, _ in shallow) <= max(layer for layer, _ in heads)
    heads_path(draft.name).write_text("{not json")
    with caplog.at_level("WARNING"):
        assert load_retrieval_heads(draft.name) is None
    assert "ignoring the calibrated heads" in caplog.text and "not JSON" in caplog.text


def test_empty_query_falls_back_to_the_lookahead_queries(tiny_llama_draft: DraftModel) -> None:
    """With no question to read the context, the question scorer uses the last prompt token and look-ahead."""
    context = make_text(200, seed=7)
    got = tiny_llama_draft.score([context], "", config=CompressionConfig()).scores[0]
    ref = tiny_llama_draft.score(
        [context], "", config=CompressionConfig().with_experimental(scorer="lookahead", heads=())
    ).scores[0]
    np.testing.assert_allclose(got, ref, rtol=1e-6)


def test_calibrate_keeps_the_heads_when_they_cannot_be_stored(
    tiny_llama_draft: DraftModel,
    tmp_path: Path,
    monkeypatch,
    caplog,  # type: ignore[no-untyped-def]
) -> None:
    """An unwritable models home: a warning, and the heads still apply to this draft."""
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("CROSSPREFILL_HOME", str(blocker))  # the heads folder would have to live under a file
    monkeypatch.setattr(tiny_llama_draft, "retrieval_heads", None)
    with caplog.at_level("WARNING"):
        heads = calibrate(tiny_llama_draft, top=2, texts=[make_text(120, seed=1)])
    assert tiny_llama_draft.retrieval_heads == heads and len(heads) == 2
    assert "could not store" in caplog.text


BAD_HEADS_FILES = {
    "a list": b"[1, 2]",
    "null": b"null",
    "garbage": b"\xff\xfe\x00garbage\x80",
    "empty list": b"[]",
    "no heads": b'{"format": 1, "heads": []}',
    "triples": b'{"format": 1, "heads": [[0, 1, 2], [1, 0, 3]]}',
    "bools": b'{"format": 1, "heads": [[true, 0]]}',
    "out of range": b'{"format": 1, "heads": [[7, 0], [0, 9]]}',
    "another format": b'{"format": 99, "heads": [[0, 1]]}',
}


@pytest.fixture
def embedded_tiny(tiny_llama_draft: DraftModel, tmp_path: Path, monkeypatch):  # type: ignore[no-untyped-def]
    """The tiny llama saved as if it were an embedded draft ``tiny-embedded`` (which calibrates on first load);
    ``calls`` records every calibration load_draft starts."""
    from types import SimpleNamespace

    import crossprefill_agents.draft.load as load

    monkeypatch.setenv("CROSSPREFILL_HOME", str(tmp_path / "home"))
    folder = tmp_path / "tiny-embedded"
    tiny_llama_draft.model.save_pretrained(folder)
    tiny_llama_draft.tokenizer.save_pretrained(folder)
    monkeypatch.setattr(load, "EMBEDDED_MODELS", {"tiny-embedded": SimpleNamespace(depth_tolerance=0.0)})
    monkeypatch.setattr(load, "embedded_model_dir", lambda name: folder)
    calls: list[str] = []

    def fake_calibrate(draft: DraftModel, **kwargs: object) -> tuple[tuple[int, int], ...]:
        calls.append(draft.name)
        draft.retrieval_heads = ((0, 1),)
        return draft.retrieval_heads

    monkeypatch.setattr(load, "calibrate", fake_calibrate)
    return calls


@pytest.mark.parametrize("content", list(BAD_HEADS_FILES), ids=list(BAD_HEADS_FILES))
def test_bad_heads_file_is_refused_clearly_and_every_head_votes(
    embedded_tiny: list[str],
    content: str,
    caplog,  # type: ignore[no-untyped-def]
) -> None:
    """A heads file that is not a valid record for this draft never crashes a load, never starts a calibration
    and never makes compressions fall back: one warning names the file and why, and every head votes."""
    from crossprefill_agents import PromptCompressor

    path = heads_path("tiny-embedded")
    path.parent.mkdir(parents=True)
    path.write_bytes(BAD_HEADS_FILES[content])
    with caplog.at_level("WARNING"):
        draft = load_draft("tiny-embedded")
    assert embedded_tiny == [] and draft.retrieval_heads is None
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and str(path) in warnings[0] and "every head votes" in warnings[0]
    r = PromptCompressor(draft, target=len).compress(make_text(300, seed=2), "the passkey?", keep_rate=0.3)
    assert r.fallback_reason is None and r.compressed_tokens < r.original_tokens


def test_missing_heads_file_still_calibrates_once(embedded_tiny: list[str]) -> None:
    """No heads file at all: an embedded draft calibrates on first load, as documented; a valid file is used."""
    assert load_draft("tiny-embedded").retrieval_heads == ((0, 1),) and embedded_tiny == ["tiny-embedded"]
    path = heads_path("tiny-embedded")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text('{"format": 1, "heads": [[1, 3], [0, 2]], "depth_tolerance": 0.0}')
    assert load_draft("tiny-embedded").retrieval_heads == ((1, 3), (0, 2)) and embedded_tiny == ["tiny-embedded"]


class _Forwards:
    """Counts the draft model's forwards (monkeypatched over the decoder's ``forward``, which every forward runs,
    with or without the LM head)."""

    def __init__(self, draft: DraftModel, monkeypatch) -> None:  # type: ignore[no-untyped-def]
        self.n = 0
        decoder = draft.model.base_model
        real = decoder.forward

        def counted(*args, **kwargs):  # type: ignore[no-untyped-def]
            self.n += 1
            return real(*args, **kwargs)

        monkeypatch.setattr(decoder, "forward", counted)

    def take(self) -> int:
        n, self.n = self.n, 0
        return n


def test_null_query_in_the_questions_forward_scores_as_a_second_pass(
    tiny_llama_draft: DraftModel, tiny_gemma_draft: DraftModel, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    """A llama draft reads the null query in the question's last forward, masked off the question's tokens,
    and (merged, the default) the context's last block and the whole question in that same forward: the
    scores equal separate passes, with one forward in all for a context of one prefill block, against one per
    question block after the prefill (fused) and one more for the null query (neither), for questions of one
    block and of several."""
    assert tiny_llama_draft.fuses_null and not tiny_gemma_draft.fuses_null  # gemma3 has sliding-window layers
    context = make_text(300, seed=8)
    forwards = _Forwards(tiny_llama_draft, monkeypatch)
    merges = tiny_llama_draft._merges
    for q in ("where did they go?", make_text(30, seed=9)):
        n_query = len(tiny_llama_draft.tokenize("\n\n" + q).ids)
        blocks = -(-n_query // QUERY_BLOCK)
        scores, calls = [], []
        for fuse, merge in ((True, True), (True, False), (False, False)):
            monkeypatch.setattr(tiny_llama_draft, "fuses_null", fuse)
            monkeypatch.setattr(tiny_llama_draft, "_merges", merges if merge else lambda *a: False)
            scores.append(tiny_llama_draft.score([context], q, config=CompressionConfig()).scores[0])
            calls.append(forwards.take())
        for other in scores[1:]:
            np.testing.assert_allclose(scores[0], other, rtol=1e-5, atol=1e-6)
        assert calls == [1, 1 + blocks, 2 + blocks]
    assert n_query > QUERY_BLOCK  # the second question took several blocks


def test_merged_forward_with_a_past_a_session_and_a_deadline_scores_as_separate_passes(
    tiny_llama_draft: DraftModel, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    """The merged forward after earlier prefill blocks (its body reads a cache), on a session's cache that grows
    turn to turn, and under a deadline (the prefill's blocks all run first; the question and the null query
    still share one forward): the scores equal the unmerged passes', and the cache ends at the context."""
    forwards = _Forwards(tiny_llama_draft, monkeypatch)
    merges = tiny_llama_draft._merges
    docs = [make_text(200, seed=21), make_text(150, seed=22)]
    q = make_text(25, seed=23)
    n_query = len(tiny_llama_draft.tokenize("\n\n" + q).ids)
    for config in (CompressionConfig(prefill_chunk_tokens=64), CompressionConfig(timeout_s=60.0)):
        runs = []
        for merge in (True, False):
            monkeypatch.setattr(tiny_llama_draft, "_merges", merges if merge else lambda *a: False)
            state = DraftPrefix(tiny_llama_draft.name)
            first = tiny_llama_draft.score_incremental(docs[:1], q, config=config, state=state)
            cached = len(state)
            second = tiny_llama_draft.score_incremental(docs, q, config=config, state=state)
            assert second.reused_tokens == cached  # the second turn reads the first's cache and appends a document
            assert state.ids == tiny_llama_draft.prompt_ids(docs, "", config=config)  # the context, no query
            whole = tiny_llama_draft.score(docs, q, config=config)
            runs.append((first, second, whole, forwards.take()))
        for merged, plain in zip(runs[0][:3], runs[1][:3], strict=True):
            for a, b in zip(merged.scores, plain.scores, strict=True):
                np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
        blocks = -(-n_query // QUERY_BLOCK)
        if config.timeout_s is None:  # each of the three passes: its last prefill block and all query blocks in one
            assert runs[1][3] - runs[0][3] == 3 * blocks
        else:  # timed prefill blocks are sized by speed; the query blocks still become one forward per pass
            assert runs[0][3] < runs[1][3]
    assert n_query > QUERY_BLOCK


def test_merged_forward_falls_back_when_the_query_weights_would_be_large(
    tiny_llama_draft: DraftModel, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    """Past MERGED_WEIGHT_CELLS (every head voting over a long question, say) the query runs in blocks after the
    prefill, as it did before merging; the scores are the same."""
    from crossprefill_agents.draft import runner

    context, q = make_text(300, seed=31), make_text(30, seed=32)
    config = CompressionConfig(experimental=ExperimentalOptions(heads=()))  # every head votes
    forwards = _Forwards(tiny_llama_draft, monkeypatch)
    merged = tiny_llama_draft.score([context], q, config=config).scores[0]
    assert forwards.take() == 1
    monkeypatch.setattr(runner, "MERGED_WEIGHT_CELLS", 10)
    blocked = tiny_llama_draft.score([context], q, config=config).scores[0]
    assert forwards.take() > 2
    np.testing.assert_allclose(merged, blocked, rtol=1e-5, atol=1e-6)


def test_head_scores_ignore_the_voting_heads_and_layers(
    tiny_llama_draft: DraftModel, tiny_gemma_draft: DraftModel
) -> None:
    """head_scores returns every head's rows whatever ``heads`` or ``attention_layers`` say: the null query's
    rows are formed for every head too, so the question minus null never mixes head sets."""
    context, q = make_text(200, seed=11), "what happened?"
    every = CompressionConfig().with_experimental(heads=())
    for draft, narrowed in (
        (tiny_llama_draft, CompressionConfig().with_experimental(heads=((0, 1),))),
        (tiny_gemma_draft, CompressionConfig().with_experimental(heads=(), attention_layers="global")),
    ):
        np.testing.assert_array_equal(
            draft.head_scores([context], q, config=narrowed), draft.head_scores([context], q, config=every)
        )
