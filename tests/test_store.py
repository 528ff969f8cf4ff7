"""SQLiteStore against the MemoryStore contract, with the fast HashEmbedder."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from memory_r1.errors import ConfigError, StoreError, UnknownModelError
from memory_r1.store import MemoryStore, create_embedder, create_store, open_store
from memory_r1.store.embedders import HashEmbedder
from memory_r1.store.sqlite import SQLiteStore
from memory_r1.types import Op, OpKind

BANK = "conv-1"


@pytest.fixture
def path(tmp_path):
    return tmp_path / "memories.db"


@pytest.fixture
def store(path):
    with SQLiteStore(path, HashEmbedder()) as s:
        yield s


def events(store, bank=BANK, memory_id=None):
    return [row.event for row in store.history(bank, memory_id)]


def test_satisfies_protocol_and_registry(path):
    with create_store("sqlite", path=path, embedder=create_embedder("hash")) as s:
        assert isinstance(s, MemoryStore)
    with pytest.raises(UnknownModelError, match="sqlite"):
        create_store("qdrant")


def test_wal_mode_and_migrations(store, path):
    assert store._db().execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    names = [r[0] for r in store._db().execute("SELECT name FROM _migrations")]
    assert names == ["m001_initial", "m002_markers", "m003_change_seq", "m004_normalised_text"]
    store.close()
    with open_store(path, HashEmbedder()) as again:  # reopening re-applies nothing
        assert [r[0] for r in again._db().execute("SELECT name FROM _migrations")] == names


def test_add_records_history(store):
    before = time.time()
    mem = store.add(
        BANK,
        "Alice likes green tea",
        owner="Alice",
        timestamp="8 May 2023",
        metadata={"dia_id": "D1:3", "tags": ["food"]},
    )
    assert mem.owner == "Alice" and mem.timestamp == "8 May 2023" and not mem.deleted
    assert before <= mem.created_at == mem.updated_at <= time.time()
    assert store.get(BANK, mem.id) == mem
    (row,) = store.history(BANK)
    assert (row.event, row.memory_id, row.old_text, row.new_text, row.owner) == (
        OpKind.ADD,
        mem.id,
        None,
        "Alice likes green tea",
        "Alice",
    )
    with pytest.raises(StoreError):
        store.add(BANK, "   ", owner="Alice")


def test_update_records_old_and_new_text(store):
    mem = store.add(BANK, "Alice likes green tea", owner="Alice", timestamp="t1")
    new = store.update(BANK, mem.id, "Alice prefers black coffee")
    assert new.text == "Alice prefers black coffee" and new.timestamp == "t1"
    assert new.created_at == mem.created_at and new.updated_at >= mem.updated_at
    assert store.get(BANK, mem.id) == new
    row = store.history(BANK, mem.id)[-1]
    assert (row.event, row.old_text, row.new_text) == (
        OpKind.UPDATE,
        "Alice likes green tea",
        "Alice prefers black coffee",
    )
    # the embedding was replaced too: the new text now ranks itself first with score ~1
    hit = store.search(BANK, "Alice prefers black coffee", owner="Alice")[0]
    assert hit.memory.id == mem.id and hit.score == pytest.approx(1.0, abs=1e-5)


def test_soft_delete(store):
    keep = store.add(BANK, "Bob plays the violin", owner="Bob")
    gone = store.add(BANK, "Bob has a cat named Tom", owner="Bob")
    deleted = store.delete(BANK, gone.id)
    assert deleted.deleted and deleted.text == gone.text
    assert [m.id for m in store.list(BANK)] == [keep.id]
    assert [m.id for m in store.list(BANK, include_deleted=True)] == [keep.id, gone.id]
    assert store.get(BANK, gone.id).deleted
    assert all(h.memory.id != gone.id for h in store.search(BANK, "Bob has a cat named Tom"))
    assert store.count(BANK) == 1
    row = store.history(BANK, gone.id)[-1]
    assert (row.event, row.old_text, row.new_text) == (OpKind.DELETE, gone.text, None)
    with pytest.raises(StoreError):  # a deleted id cannot be deleted or updated again
        store.delete(BANK, gone.id)
    with pytest.raises(StoreError):
        store.update(BANK, gone.id, "Bob has two cats")
    with pytest.raises(StoreError):
        store.update(BANK, "no-such-id", "x")


def test_apply_each_kind_appends_exactly_one_row(store):
    add = store.apply(
        BANK,
        Op(OpKind.ADD, "Alice runs marathons"),
        owner="Alice",
        timestamp="t1",
        metadata={"dia_id": "D1:1"},
    )
    mid = add.memory_id
    assert add.event is OpKind.ADD and store.get(BANK, mid).metadata == {"dia_id": "D1:1"}
    assert add.detail == {"metadata": {"dia_id": "D1:1"}}
    upd = store.apply(
        BANK, Op(OpKind.UPDATE, "Alice runs ultramarathons", memory_id=mid), owner="Alice", timestamp="t2"
    )
    assert (upd.event, upd.old_text, upd.new_text) == (
        OpKind.UPDATE,
        "Alice runs marathons",
        "Alice runs ultramarathons",
    )
    assert store.get(BANK, mid).timestamp == "t2"
    noop = store.apply(BANK, Op(OpKind.NOOP, "Alice is a runner", memory_id=mid), owner="Alice")
    noop_none = store.apply(BANK, Op(OpKind.NOOP), owner="Alice")
    assert noop.event is noop_none.event is OpKind.NOOP and noop_none.memory_id is None
    bad = store.apply(BANK, Op(OpKind.INVALID, error="no JSON", raw="ADD|UPDATE"), owner="Alice")
    assert bad.event is OpKind.INVALID and bad.detail == {"error": "no JSON", "raw": "ADD|UPDATE"}
    dele = store.apply(BANK, Op(OpKind.DELETE, memory_id=mid), owner="Alice")
    assert dele.event is OpKind.DELETE and store.count(BANK) == 0
    assert events(store) == [
        OpKind.ADD,
        OpKind.UPDATE,
        OpKind.NOOP,
        OpKind.NOOP,
        OpKind.INVALID,
        OpKind.DELETE,
    ]
    assert store.history(BANK) == [add, upd, noop, noop_none, bad, dele]  # returned == stored


@pytest.mark.parametrize("kind", [OpKind.UPDATE, OpKind.DELETE])
def test_apply_unknown_or_deleted_id_becomes_invalid(store, kind):
    mem = store.add(BANK, "Alice likes tea", owner="Alice")
    gone = store.add(BANK, "Alice had a dog", owner="Alice")
    store.delete(BANK, gone.id)
    before = store.list(BANK, include_deleted=True)
    for bad_id in ("hallucinated-id", gone.id, None):
        row = store.apply(BANK, Op(kind, "Alice likes coffee", memory_id=bad_id, raw="r"), owner="Alice")
        assert row.event is OpKind.INVALID and row.memory_id == bad_id
        assert row.detail["rejected"] == kind.value and row.detail["raw"] == "r"
        assert "unknown or deleted" in row.detail["error"]
    assert store.list(BANK, include_deleted=True) == before  # bank unchanged
    assert events(store)[-3:] == [OpKind.INVALID] * 3
    assert store.get(BANK, mem.id).text == "Alice likes tea"


def test_apply_rejects_other_owner_and_empty_text(store):
    bobs = store.add(BANK, "Bob likes jazz", owner="Bob")
    row = store.apply(BANK, Op(OpKind.DELETE, memory_id=bobs.id), owner="Alice")
    assert row.event is OpKind.INVALID and "owned by 'Bob'" in row.detail["error"]
    row = store.apply(BANK, Op(OpKind.UPDATE, " ", memory_id=bobs.id), owner="Bob")
    assert row.event is OpKind.INVALID
    row = store.apply(BANK, Op(OpKind.ADD, ""), owner="Bob")
    assert row.event is OpKind.INVALID
    assert [m.text for m in store.list(BANK, include_deleted=True)] == ["Bob likes jazz"]


def test_apply_turn_is_one_transaction_with_its_marker(store):
    a = store.add(BANK, "Alice likes tea", owner="Alice")
    ops = [
        Op(OpKind.ADD, "Alice moved to Paris"),
        Op(OpKind.DELETE, memory_id=a.id),
        Op(OpKind.UPDATE, "Alice likes coffee", memory_id=a.id),  # deleted just before
        Op(OpKind.NOOP),
    ]
    rows = store.apply_turn(BANK, ops, owner="Alice", timestamp="t", marker="D1:1")
    assert [r.event for r in rows] == [OpKind.ADD, OpKind.DELETE, OpKind.INVALID, OpKind.NOOP]
    assert store.markers(BANK) == {"D1:1"} and store.markers("other") == set()
    assert [m.text for m in store.list(BANK)] == ["Alice moved to Paris"]
    with pytest.raises(StoreError, match="already recorded"):  # applied at most once
        store.apply_turn(BANK, [Op(OpKind.ADD, "Alice moved again")], owner="Alice", marker="D1:1")
    assert store.count(BANK) == 1 and len(store.history(BANK)) == 5
    assert store.apply_turn(BANK, [], owner="Alice", marker="D1:2") == []  # empty turn: done
    assert store.markers(BANK) == {"D1:1", "D1:2"}


def test_apply_turn_rolls_back_on_failure(store):
    class Boom(Exception):
        pass

    store.apply_turn(BANK, [Op(OpKind.ADD, "Alice likes tea")], owner="Alice", marker="m1")
    store.search(BANK, "tea")
    before = (store.list(BANK, include_deleted=True), store.history(BANK))
    original = store._note

    def failing_note(*args, **kwargs):
        raise Boom()

    store._note = failing_note  # the NOOP after the ADD fails mid-transaction
    with pytest.raises(Boom):
        store.apply_turn(
            BANK, [Op(OpKind.ADD, "Alice likes cake"), Op(OpKind.NOOP)], owner="Alice", marker="m2"
        )
    store._note = original
    assert (store.list(BANK, include_deleted=True), store.history(BANK)) == before
    assert store.markers(BANK) == {"m1"}
    assert [h.memory.text for h in store.search(BANK, "Alice likes cake", k=5)] == ["Alice likes tea"]


def test_persistence_across_reopen(path):
    with SQLiteStore(path, HashEmbedder()) as s:
        a = s.add(BANK, "Alice likes green tea", owner="Alice", metadata={"n": 1.5, "x": None})
        b = s.add(BANK, "Alice moved to Paris", owner="Alice")
        s.update(BANK, a.id, "Alice likes oolong tea")
        s.delete(BANK, b.id)
        s.apply_turn(BANK, [Op(OpKind.NOOP)], owner="Alice", marker="turn-1")
        memories, history = s.list(BANK, include_deleted=True), s.history(BANK)
        hits = s.search(BANK, "oolong tea", owner="Alice")
    with SQLiteStore(path, HashEmbedder()) as s:
        assert s.list(BANK, include_deleted=True) == memories
        assert s.history(BANK) == history and s.markers(BANK) == {"turn-1"}
        assert s.get(BANK, a.id).metadata == {"n": 1.5, "x": None}
        assert s.search(BANK, "oolong tea", owner="Alice") == hits
        stored = np.frombuffer(
            s._db().execute("SELECT embedding FROM memories WHERE id = ?", (a.id,)).fetchone()[0], dtype="<f4"
        )
        assert np.allclose(stored, HashEmbedder().embed(["Alice likes oolong tea"])[0])


def test_embedder_mismatch_on_reopen(path):
    SQLiteStore(path, HashEmbedder(dim=64)).close()
    with pytest.raises(ConfigError, match=r"dim 64.*dim 32"):
        SQLiteStore(path, HashEmbedder(dim=32))

    class Other(HashEmbedder):
        name = "other"

    with pytest.raises(ConfigError, match=r"'hash'.*'other'"):
        SQLiteStore(path, Other(dim=64))


def test_owner_isolation(store):
    store.add(BANK, "Bob loves hiking in the mountains", owner="Bob")  # the exact query text
    store.add(BANK, "Alice collects stamps", owner="Alice")
    hits = store.search(BANK, "Bob loves hiking in the mountains", owner="Alice", k=10)
    assert [h.memory.owner for h in hits] == ["Alice"]
    both = store.search(BANK, "Bob loves hiking in the mountains", k=10)
    assert [h.memory.owner for h in both] == ["Bob", "Alice"]
    assert [m.owner for m in store.list(BANK, owner="Alice")] == ["Alice"]
    assert store.count(BANK, owner="Bob") == 1


def test_bank_isolation(store):
    store.add("conv-1", "Alice likes tea", owner="Alice")
    store.add("conv-2", "Alice likes tea", owner="Alice")
    store.apply_turn("conv-2", [Op(OpKind.ADD, "Alice likes coffee")], owner="Alice", marker="m")
    assert len(store.search("conv-1", "Alice likes tea", k=10)) == 1
    assert store.count("conv-2") == 2 and len(store.history("conv-1")) == 1
    assert store.banks() == ["conv-1", "conv-2"]
    assert store.delete_bank("conv-2") == 2
    assert store.banks() == ["conv-1"] and store.search("conv-2", "tea") == []
    assert store.markers("conv-2") == set() and store.history("conv-2") == []


def test_score_direction_and_order(store):
    texts = [
        "Alice likes green tea",
        "Alice went to Paris in May",
        "Bob fixes old cars",
        "green tea is healthy",
        "Alice and Bob met at a tea shop",
    ]
    store.add_many(BANK, [{"text": t, "owner": "Alice"} for t in texts])
    hits = store.search(BANK, "Alice likes green tea", k=5)
    assert hits[0].memory.text == "Alice likes green tea"
    assert hits[0].score == pytest.approx(1.0, abs=1e-5)
    scores = [h.score for h in hits]
    assert scores == sorted(scores, reverse=True) and all(-1 <= s <= 1 for s in scores)
    assert hits[-1].memory.text == "Bob fixes old cars"  # shares no word with the query
    assert len(store.search(BANK, "tea", k=2)) == 2 and store.search(BANK, "tea", k=0) == []


def test_search_many_matches_search(store):
    store.add_many(
        BANK,
        [
            {"text": f"fact number {i} about topic {i % 7}", "owner": "A", "metadata": {"i": i}}
            for i in range(50)
        ],
    )
    queries = ["topic 3", "fact number 10", "unrelated words"]
    assert store.search_many(BANK, queries, owner="A", k=5) == [
        store.search(BANK, q, owner="A", k=5) for q in queries
    ]
    assert store.search_many(BANK, [], k=5) == []


def test_add_many_embeds_once(path):
    class Counting(HashEmbedder):
        calls = 0

        def embed(self, texts):
            Counting.calls += 1
            return super().embed(texts)

    with SQLiteStore(path, Counting()) as s:
        mems = s.add_many(BANK, [{"text": f"memory {i}", "owner": "A", "timestamp": "t"} for i in range(20)])
        assert Counting.calls == 1 and [m.text for m in mems] == [f"memory {i}" for i in range(20)]
        assert len(s.history(BANK)) == 20
        s.search_many(BANK, ["memory 1", "memory 2", "memory 3"])
        assert Counting.calls == 2


def test_search_cache_invalidated_on_write(store):
    a = store.add(BANK, "Alice likes tea", owner="Alice")
    assert len(store.search(BANK, "tea")) == 1
    store.add(BANK, "Alice likes iced tea", owner="Alice")
    assert len(store.search(BANK, "tea")) == 2
    store.update(BANK, a.id, "Alice likes coffee")
    assert store.search(BANK, "Alice likes coffee")[0].memory.text == "Alice likes coffee"
    store.delete(BANK, a.id)
    assert [h.memory.text for h in store.search(BANK, "coffee")] == ["Alice likes iced tea"]


def test_copy_to_memory_is_independent(store):
    a = store.add(BANK, "Alice likes tea", owner="Alice")
    store.search(BANK, "tea")  # warm the cache that the copy shares
    copy = store.copy_to_memory()
    assert copy.path == ":memory:" and copy.list(BANK) == store.list(BANK)
    assert copy.history(BANK) == store.history(BANK)
    copy.apply_turn(BANK, [Op(OpKind.DELETE, memory_id=a.id)], owner="Alice", marker="m")
    assert copy.markers(BANK) == {"m"} and store.markers(BANK) == set()
    copy.add(BANK, "Alice likes coffee", owner="Alice")
    assert [h.memory.text for h in copy.search(BANK, "likes")] == ["Alice likes coffee"]
    assert [h.memory.text for h in store.search(BANK, "likes")] == ["Alice likes tea"]
    assert len(store.history(BANK)) == 1 and len(copy.history(BANK)) == 3
    store.add(BANK, "Alice likes juice", owner="Alice")
    assert copy.count(BANK) == 1
    copy.close()


def test_closed_store_raises(path):
    s = SQLiteStore(path, HashEmbedder())
    s.close()
    s.close()  # idempotent
    with pytest.raises(StoreError, match="closed"):
        s.list(BANK)


def test_concurrent_applies_from_threads(store):
    def work(owner):
        for i in range(25):
            store.apply(BANK, Op(OpKind.ADD, f"{owner} fact {i}"), owner=owner)
            store.search(BANK, f"{owner} fact", owner=owner, k=3)

    threads = [threading.Thread(target=work, args=(o,)) for o in ("A", "B", "C")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert store.count(BANK) == 75 and len(store.history(BANK)) == 75


def test_search_is_fast_on_600_memories(store):
    store.add_many(
        BANK, [{"text": f"memory {i} about subject {i % 37} and {i % 11}", "owner": "A"} for i in range(600)]
    )
    store.search(BANK, "subject 5", owner="A")  # warm-up: builds the cached matrix
    start = time.perf_counter()
    for _ in range(50):
        store.search(BANK, "subject 5", owner="A", k=30)
    per_search = (time.perf_counter() - start) / 50
    assert per_search < 5e-3, f"search took {per_search * 1e3:.2f} ms"


def test_owner_scope_on_single_memory_calls(tmp_path) -> None:
    from memory_r1.errors import NotFoundError

    with SQLiteStore(tmp_path / "s.sqlite", HashEmbedder()) as s:
        a = s.add("b", "Alice lives in Paris", "alice")
        s.add("b", "Bob likes tea", "bob")
        s.add("b", "Alice has a cat", "alice")
        assert s.get("b", a.id, owner="bob") is None and s.get("b", a.id, owner="alice") == a
        for call in (lambda: s.update("b", a.id, "x", owner="bob"), lambda: s.delete("b", a.id, owner="bob")):
            with pytest.raises(NotFoundError, match="for owner 'bob'"):
                call()
        assert s.get("b", a.id).text == "Alice lives in Paris"  # nothing changed
        assert s.owners("b") == ["alice", "bob"]
        assert s.delete_owner("b", "alice") == 2 and s.count("b", "alice") == 0 and s.count("b", "bob") == 1
        assert [r.event.value for r in s.history("b", owner="alice")] == ["ADD", "ADD", "DELETE", "DELETE"]
        with pytest.raises(NotFoundError):
            s.delete("b", a.id, owner="alice")  # deleted is gone for everyone
