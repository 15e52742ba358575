"""Shared fixtures: the tiny random-init drafts of crossprefill_agents.testing, and a throwaway redis-server."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest

from crossprefill_agents import testing
from crossprefill_agents.draft import DraftModel


@pytest.fixture(scope="session")
def tiny_tokenizer():  # type: ignore[no-untyped-def]
    return testing.tiny_tokenizer()


@pytest.fixture(scope="session")
def tiny_llama_draft() -> DraftModel:
    return testing.tiny_draft("llama")


@pytest.fixture(scope="session")
def tiny_gemma_draft() -> DraftModel:
    return testing.tiny_draft("gemma3")


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
