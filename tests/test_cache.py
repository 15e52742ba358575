"""The stores that survive between agent turns: ByteLRU and the memo stores (memory, SQLite, Redis)."""

from __future__ import annotations

import hashlib
import json
import logging
import random
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from crossprefill_agents.stores import ByteLRU, InMemoryMemoStore, MemoStore, RedisMemoStore, SQLiteMemoStore

PAYLOAD: dict[str, Any] = {
    "text": "Käse 漢字 😀 [...] tail",
    "kept_spans": [[0, 4], [10, 22]],
    "original_tokens": 1200,
    "keep_rate": 0.25,
    "fallback_reason": None,
    "nested": {"ok": True, "scores": [0.5, -1.25e-3]},
}


def _run_threads(n: int, target: Callable[[int], None]) -> None:
    """Run ``target(i)`` on ``n`` threads with a tiny switch interval (many interleavings); re-raise failures."""
    errors: list[BaseException] = []

    def wrapped(i: int) -> None:
        try:
            target(i)
        except BaseException as e:  # surfaced in the main thread below
            errors.append(e)

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        threads = [threading.Thread(target=wrapped, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(old)
    if errors:
        raise errors[0]


# --- ByteLRU ---


def test_lru_evicts_least_recently_used_to_stay_within_bytes() -> None:
    """A put that overflows evicts the least recently used entries; a get makes an entry recent."""
    lru: ByteLRU[str, bytes] = ByteLRU(10, sizeof=len)
    lru.put("a", b"aaaa")
    lru.put("b", b"bbbb")
    assert lru.get("a") == b"aaaa"  # now b is the least recently used
    lru.put("c", b"cccc")
    assert "b" not in lru and "a" in lru and "c" in lru
    assert lru.nbytes == 8 and len(lru) == 2 and lru.evictions == 1
    lru.put("d", b"dddddddd")  # needs 8 bytes: both older entries go
    assert list(k for k in "abcd" if k in lru) == ["d"]
    assert lru.nbytes == 8 and lru.evictions == 3
    assert lru.get("zz") is None
    assert (lru.hits, lru.misses) == (1, 1)


def test_lru_replacing_a_key_counts_its_new_size_only() -> None:
    """Putting under an existing key replaces its bytes rather than adding to them."""
    lru: ByteLRU[str, bytes] = ByteLRU(10, sizeof=len)
    lru.put("a", b"aaaaaaaa")
    lru.put("a", b"aa")
    lru.put("b", b"bbbbbbbb")
    assert lru.nbytes == 10 and lru.get("a") == b"aa" and lru.evictions == 0


def test_lru_value_larger_than_the_bound_is_not_stored_and_drops_the_old_entry() -> None:
    """An oversize value is refused without evicting others, and the key's previous value is gone."""
    lru: ByteLRU[str, bytes] = ByteLRU(5, sizeof=len)
    lru.put("a", b"aa")
    lru.put("b", b"bb")
    lru.put("a", b"x" * 6)
    assert "a" not in lru and lru.get("b") == b"bb"
    assert lru.nbytes == 2 and lru.evictions == 0


def test_lru_max_bytes_zero_stores_nothing() -> None:
    """max_bytes=0 is valid and drops every put, even of zero-sized values."""
    lru: ByteLRU[str, bytes] = ByteLRU(0, sizeof=len)
    lru.put("a", b"a")
    lru.put("empty", b"")
    assert len(lru) == 0 and lru.nbytes == 0 and lru.get("empty") is None


def test_lru_pop_and_clear() -> None:
    """pop returns and removes one value; clear empties the map; neither counts as a hit or miss."""
    lru: ByteLRU[str, bytes] = ByteLRU(100, sizeof=len)
    lru.put("a", b"aaa")
    lru.put("b", b"bb")
    assert lru.pop("a") == b"aaa" and lru.pop("a") is None
    assert lru.nbytes == 2
    lru.clear()
    assert len(lru) == 0 and lru.nbytes == 0 and (lru.hits, lru.misses) == (0, 0)


def test_lru_rejects_bad_bounds_and_sizes() -> None:
    """A negative (or bool) bound and a negative or non-int size are caller errors with a clear message."""
    with pytest.raises(ValueError, match="max_bytes"):
        ByteLRU(-1, sizeof=len)
    with pytest.raises(ValueError, match="max_bytes"):
        ByteLRU(True, sizeof=len)
    with pytest.raises(ValueError, match=">= 0"):
        ByteLRU[str, bytes](10, sizeof=lambda v: -1).put("a", b"")
    with pytest.raises(TypeError, match="int"):
        ByteLRU[str, bytes](10, sizeof=lambda v: 1.5).put("a", b"")  # type: ignore[arg-type, return-value]


def test_lru_thread_safety_smoke() -> None:
    """Many threads putting, getting and popping keep the byte bound, the byte count and the hit/miss counters
    exact: every get is counted once, as a hit or a miss."""
    lru: ByteLRU[int, bytes] = ByteLRU(500, sizeof=len)
    gets = [0] * 8

    def work(seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(3000):
            key = rng.randrange(64)
            op = rng.random()
            if op < 0.5:
                lru.put(key, bytes(rng.randrange(1, 60)))
            elif op < 0.9:
                lru.get(key)
                gets[seed] += 1
            else:
                lru.pop(key)
            assert lru.nbytes <= 500

    _run_threads(8, work)
    held = [v for k in range(64) if (v := lru.pop(k)) is not None]
    assert lru.nbytes == 0 and len(lru) == 0
    assert sum(map(len, held)) <= 500
    assert lru.hits + lru.misses == sum(gets) and lru.hits > 0 and lru.misses > 0


# --- memo stores: shared behaviour ---


@pytest.fixture(params=["memory", "sqlite", "redis"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MemoStore]:
    """Each memo store, empty."""
    if request.param == "memory":
        yield InMemoryMemoStore()
    elif request.param == "sqlite":
        with SQLiteMemoStore(tmp_path / "memo" / "memo.sqlite") as s:
            yield s
    else:
        client = request.getfixturevalue("redis_client")
        yield RedisMemoStore(client=client, prefix="test:memo:")


def test_memo_json_round_trip(store: Any) -> None:
    """Every store returns an equal dict (unicode, nesting, floats, None), counts hits and misses, and deletes."""
    assert store.get("k") is None
    store.put("k", PAYLOAD)
    assert store.get("k") == PAYLOAD
    store.put("k", {"v": 2})
    assert store.get("k") == {"v": 2}
    store.delete("k")
    store.delete("never-there")
    assert store.get("k") is None
    assert (store.hits, store.misses, store.corrupt) == (2, 2, 0)
    assert isinstance(store, MemoStore)


def test_memo_clear_removes_everything(store: Any) -> None:
    """clear() empties the store."""
    for i in range(5):
        store.put(f"k{i}", {"i": i})
    store.clear()
    assert all(store.get(f"k{i}") is None for i in range(5))


def test_memo_entries_cannot_be_mutated_through_the_caller(store: Any) -> None:
    """Changing the dict given to put, or one returned by get, does not change the stored entry."""
    value = {"spans": [[0, 1]]}
    store.put("k", value)
    value["spans"].append([2, 3])
    got = store.get("k")
    got["spans"].clear()
    assert store.get("k") == {"spans": [[0, 1]]}


def test_memo_rejects_non_json_values_and_non_str_keys(store: Any) -> None:
    """A value that is not a JSON-able dict, or a key that is not a str, is a TypeError saying what to store."""
    with pytest.raises(TypeError, match="dict"):
        store.put("k", [1, 2])
    with pytest.raises(TypeError, match="JSON-able"):
        store.put("k", {"t": object()})
    with pytest.raises(TypeError, match="str"):
        store.put(1, {})
    assert store.get("k") is None


def test_memo_lone_surrogate_round_trips(store: Any) -> None:
    """Text cut mid surrogate pair still stores and comes back unchanged."""
    store.put("k", {"text": "a\ud800b"})
    assert store.get("k") == {"text": "a\ud800b"}


def test_in_memory_memo_is_bounded_by_encoded_bytes() -> None:
    """InMemoryMemoStore evicts the least recently used entries past max_bytes of JSON."""
    one = len(json.dumps({"v": "x" * 20}, separators=(",", ":")).encode())
    store = InMemoryMemoStore(max_bytes=2 * one)
    store.put("a", {"v": "x" * 20})
    store.put("b", {"v": "y" * 20})
    assert store.get("a") is not None
    store.put("c", {"v": "z" * 20})
    assert store.get("b") is None and store.get("a") is not None and store.get("c") is not None
    assert store.nbytes == 2 * one and store.evictions == 1 and len(store) == 2
    nothing = InMemoryMemoStore(max_bytes=0)  # 0 is a valid bound: store nothing
    nothing.put("k", {})
    assert nothing.get("k") is None and len(nothing) == 0
    with pytest.raises(ValueError, match="max_bytes"):
        InMemoryMemoStore(max_bytes=-1)


def test_in_memory_memo_drops_corrupt_entry(caplog: pytest.LogCaptureFixture) -> None:
    """An undecodable in-memory entry is deleted, logged, counted and read as a miss."""
    store = InMemoryMemoStore()
    store.put("k", {"ok": 1})
    store._lru.put("k", b"\xff not json")
    with caplog.at_level(logging.WARNING, logger="crossprefill_agents.cache"):
        assert store.get("k") is None
    assert "corrupt" in caplog.text
    assert store.corrupt == 1 and len(store) == 0


# --- SQLite ---


def test_sqlite_persists_across_instances(tmp_path: Path) -> None:
    """A second store on the same file sees what the first wrote, after the first is closed."""
    path = tmp_path / "a" / "b" / "memo.sqlite"
    with SQLiteMemoStore(path) as first:
        first.put("k", PAYLOAD)
    with SQLiteMemoStore(str(path)) as second:
        assert second.get("k") == PAYLOAD and len(second) == 1


def test_sqlite_is_shared_with_another_process(tmp_path: Path) -> None:
    """A write from another Python process is visible to a store that was open all along (WAL)."""
    path = tmp_path / "memo.sqlite"
    with SQLiteMemoStore(path) as store:
        store.put("mine", {"from": "parent"})
        code = (
            "import sys\n"
            "from crossprefill_agents.stores import SQLiteMemoStore\n"
            "with SQLiteMemoStore(sys.argv[1]) as s:\n"
            "    assert s.get('mine') == {'from': 'parent'}\n"
            "    s.put('theirs', {'from': 'child', 'n': [1, 2]})\n"
        )
        subprocess.run([sys.executable, "-c", code, str(path)], check=True, timeout=60)
        assert store.get("theirs") == {"from": "child", "n": [1, 2]}
    (mode,) = sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()
    assert mode == "wal"


def test_sqlite_byte_bound_evicts_least_recently_used(tmp_path: Path) -> None:
    """With max_bytes, a put evicts the least recently used rows (a get counts as a use)."""
    one = len(json.dumps({"v": "x" * 20}, separators=(",", ":")).encode())
    with SQLiteMemoStore(tmp_path / "memo.sqlite", max_bytes=3 * one) as store:
        for k in "abc":
            store.put(k, {"v": k * 20})
        assert store.get("a") is not None  # b is now the least recently used
        store.put("d", {"v": "d" * 20})
        assert store.get("b") is None
        assert all(store.get(k) is not None for k in "acd")
        assert store.nbytes == 3 * one and store.evictions == 1
        store.put("big", {"v": "q" * 200})  # larger than the bound on its own: not stored, nothing evicted
        store.put("a", {"v": "q" * 200})  # and it removes the old entry under its key
        assert store.get("big") is None and store.get("a") is None and len(store) == 2


def test_sqlite_max_bytes_zero_stores_nothing(tmp_path: Path) -> None:
    """max_bytes=0 drops every put; a negative bound is a ValueError."""
    with SQLiteMemoStore(tmp_path / "memo.sqlite", max_bytes=0) as store:
        store.put("k", {})
        assert store.get("k") is None and len(store) == 0
    with pytest.raises(ValueError, match="max_bytes"):
        SQLiteMemoStore(tmp_path / "x.sqlite", max_bytes=-5)


def test_sqlite_drops_corrupt_rows(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Garbage written straight into the table (bad JSON, bad checksum, wrong shape, wrong type) reads as a miss."""
    path = tmp_path / "memo.sqlite"
    with SQLiteMemoStore(path) as store:
        for k in ("garbage", "checksum", "shape", "type", "good"):
            store.put(k, {"k": k})
        raw = sqlite3.connect(path, isolation_level=None)
        junk = b"\xff not json"
        raw.execute(
            "UPDATE memo SET payload = ?, checksum = ? WHERE key = 'garbage'", (junk, hashlib.sha256(junk).hexdigest())
        )
        raw.execute("UPDATE memo SET checksum = 'deadbeef' WHERE key = 'checksum'")
        lst = b"[1,2]"
        raw.execute(
            "UPDATE memo SET payload = ?, checksum = ? WHERE key = 'shape'", (lst, hashlib.sha256(lst).hexdigest())
        )
        raw.execute("UPDATE memo SET payload = 42 WHERE key = 'type'")
        raw.close()
        with caplog.at_level(logging.WARNING, logger="crossprefill_agents.cache"):
            for k in ("garbage", "checksum", "shape", "type"):
                assert store.get(k) is None
        assert caplog.text.count("corrupt") == 4
        assert store.corrupt == 4 and store.misses == 4
        assert store.get("good") == {"k": "good"} and len(store) == 1  # the corrupt rows are gone
        assert store.get("garbage") is None and store.corrupt == 4  # now a plain miss


def test_sqlite_from_many_threads(tmp_path: Path) -> None:
    """One store used by many threads at once stays consistent and within its bound."""
    with SQLiteMemoStore(tmp_path / "memo.sqlite", max_bytes=2000) as store:

        def work(i: int) -> None:
            for j in range(60):
                store.put(f"{i}-{j % 10}", {"i": i, "j": j})
                got = store.get(f"{i}-{j % 10}")
                assert got is None or got["i"] == i

        _run_threads(6, work)
        assert 0 < store.nbytes <= 2000 and store.corrupt == 0


def test_sqlite_closed_store_raises(tmp_path: Path) -> None:
    """Using a closed store is a ValueError that says to open a new one; closing twice is fine."""
    store = SQLiteMemoStore(tmp_path / "memo.sqlite")
    store.close()
    store.close()
    with pytest.raises(ValueError, match="closed"):
        store.get("k")


# --- Redis ---


def test_redis_store_from_url_round_trips_and_expires(redis_server: str, redis_client: Any) -> None:
    """A store built from a URL writes an envelope under its prefix, with the TTL it was given."""
    with RedisMemoStore(redis_server, prefix="p:", ttl_s=60) as store:
        store.put("k", PAYLOAD)
        assert store.get("k") == PAYLOAD
    envelope = json.loads(redis_client.get("p:k"))
    assert envelope["crossprefill_memo"] == 1 and json.loads(envelope["payload"]) == PAYLOAD
    assert 0 < redis_client.pttl("p:k") <= 60_000
    RedisMemoStore(client=redis_client, prefix="q:").put("k", {})
    assert redis_client.pttl("q:k") == -1  # no ttl_s: no expiry


def test_redis_prefixes_are_isolated_and_clear_leaves_other_keys(redis_client: Any) -> None:
    """Two prefixes do not see each other's keys; clear() deletes only its own, even with glob characters."""
    a = RedisMemoStore(client=redis_client, prefix="a*:")
    b = RedisMemoStore(client=redis_client, prefix="ab:")
    for i in range(1200):  # more than one SCAN batch
        a.put(f"k{i}", {"i": i})
    b.put("k1", {"from": "b"})
    redis_client.set("unrelated", "keep me")
    assert a.get("k1") == {"i": 1} and b.get("k1") == {"from": "b"} and b.get("k2") is None
    a.clear()
    assert a.get("k1") is None and b.get("k1") == {"from": "b"}
    assert redis_client.get("unrelated") == b"keep me"
    assert redis_client.dbsize() == 2


def test_redis_drops_corrupt_entries(redis_client: Any, caplog: pytest.LogCaptureFixture) -> None:
    """Garbage, a bad checksum, a foreign envelope or a non-object payload reads as a miss and is deleted."""
    store = RedisMemoStore(client=redis_client, prefix="c:")
    store.put("checksum", {"ok": True})
    env = json.loads(redis_client.get("c:checksum"))
    env["sha256"] = "0" * 64
    redis_client.set("c:checksum", json.dumps(env))
    redis_client.set("c:garbage", b"\xff\x00 not json")
    redis_client.set("c:shape", json.dumps({"payload": "{}"}))
    lst = "[1,2]"
    redis_client.set(
        "c:list",
        json.dumps({"crossprefill_memo": 1, "sha256": hashlib.sha256(lst.encode()).hexdigest(), "payload": lst}),
    )
    with caplog.at_level(logging.WARNING, logger="crossprefill_agents.cache"):
        for k in ("checksum", "garbage", "shape", "list"):
            assert store.get(k) is None
    assert caplog.text.count("corrupt") == 4
    assert store.corrupt == 4 and store.misses == 4 and store.hits == 0
    assert redis_client.dbsize() == 0


def test_redis_store_rejects_bad_options_and_explains_missing_package(monkeypatch: pytest.MonkeyPatch) -> None:
    """An empty prefix or a bad TTL is a ValueError; without redis installed, the error says how to install it."""
    with pytest.raises(ValueError, match="prefix"):
        RedisMemoStore(client=object(), prefix="")
    with pytest.raises(ValueError, match="ttl_s"):
        RedisMemoStore(client=object(), ttl_s=0)
    monkeypatch.setitem(sys.modules, "redis", None)
    with pytest.raises(ImportError, match=r"pip install 'crossprefill-agents\[redis\]'"):
        RedisMemoStore("redis://127.0.0.1:1/0")
