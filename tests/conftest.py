"""Shared fixtures: tiny random-init drafts built from configs, and a small offline tokenizer."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest
import torch
from helpers import make_text

from crossprefill_agents import DraftModel


def _train_tokenizer():  # type: ignore[no-untyped-def]
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
    corpus = [make_text(200, seed=s) for s in range(20)] + ["漢字 かな 😀 é ñ ü \t\n 12345 {}[]():;,.!?"]
    tok.train_from_iterator(corpus, trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(  # a BOS in front, as most drafts have
        single="<bos> $A", special_tokens=[("<bos>", tok.token_to_id("<bos>"))]
    )
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>")


@pytest.fixture(scope="session")
def tiny_tokenizer():  # type: ignore[no-untyped-def]
    return _train_tokenizer()


def _tiny_llama(vocab: int):  # type: ignore[no-untyped-def]
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=vocab,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,  # grouped-query attention
        max_position_embeddings=2048,
        bos_token_id=0,
        eos_token_id=1,
    )
    return LlamaForCausalLM(cfg).eval()


def _tiny_gemma3(vocab: int):  # type: ignore[no-untyped-def]
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    torch.manual_seed(0)
    cfg = Gemma3TextConfig(
        vocab_size=vocab,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=3,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=16,
        sliding_window=16,  # far shorter than the test contexts: sliding layers see only the tail
        layer_types=["sliding_attention", "sliding_attention", "full_attention"],
        max_position_embeddings=2048,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
    )
    return Gemma3ForCausalLM(cfg).eval()


@pytest.fixture(scope="session")
def tiny_llama_draft(tiny_tokenizer) -> DraftModel:  # type: ignore[no-untyped-def]
    return DraftModel(_tiny_llama(len(tiny_tokenizer)), tiny_tokenizer, name="tiny-llama")


@pytest.fixture(scope="session")
def tiny_gemma_draft(tiny_tokenizer) -> DraftModel:  # type: ignore[no-untyped-def]
    return DraftModel(_tiny_gemma3(len(tiny_tokenizer)), tiny_tokenizer, name="tiny-gemma3")


@pytest.fixture(params=["llama", "gemma3"])
def tiny_draft(request, tiny_llama_draft, tiny_gemma_draft) -> DraftModel:  # type: ignore[no-untyped-def]
    return tiny_llama_draft if request.param == "llama" else tiny_gemma_draft


# --- a throwaway redis-server for the Redis memo store tests ---


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A throwaway redis-server on a free loopback port; skipped locally, failed in CI, when it is missing."""
    binary = shutil.which("redis-server")
    try:
        import redis
    except ImportError:
        redis = None  # type: ignore[assignment]
    if binary is None or redis is None:
        missing = "the redis-server binary" if binary is None else "the redis package"
        msg = f"{missing} is missing: run scripts/setup.sh (apt-get install redis-server; pip install redis)"
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the Redis tests, but {msg}")
        pytest.skip(msg)
    workdir = tmp_path_factory.mktemp("redis")
    for _attempt in range(3):  # the port can be taken between choosing it and binding it
        port = _free_port()
        proc = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            cwd=workdir,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=1)
        deadline = time.monotonic() + 10
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                if client.ping():
                    break
            except redis.exceptions.ConnectionError:
                time.sleep(0.02)
        else:
            client.close()
            proc.terminate()
            proc.wait(timeout=5)
            continue
        client.close()
        try:
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        return
    pytest.fail("redis-server did not answer PING on a free port in 3 tries")


@pytest.fixture
def redis_client(redis_server: str) -> Iterator[Any]:
    """A client of the throwaway server, on an empty database."""
    import redis

    client = redis.Redis.from_url(redis_server)
    client.flushdb()
    yield client
    client.close()
