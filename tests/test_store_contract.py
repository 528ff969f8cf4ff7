"""The ``MemoryStore`` contract (``store.base``), one suite over every backend (``store_target``:
SQLite and PostgreSQL), with the fast offline ``HashEmbedder``.

Each test opens a fresh, empty store; the owner-isolation property test at the end drives
random interleavings of several owners' calls and checks that no owner-scoped call ever
returns or changes another owner's memory.
"""

from __future__ import annotations

import threading
import time
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from memory_r1.errors import ConfigError, NotFoundError, StoreError
from memory_r1.store import STORES, MemoryStore, open_store
from memory_r1.store.embedders import HashEmbedder
from memory_r1.types import Op, OpKind

BANK = "conv-1"


@pytest.fixture
def store(store_target):
    kind, target = store_target
    with open_store(target, HashEmbedder(), kind=kind) as s:
        yield s


def reopen(store_target, embedder=None):
    kind, target = store_target
    return open_store(target, embedder or HashEmbedder(), kind=kind)


def events(store, bank=BANK, memory_id=None):
    return [row.event for row in store.history(bank, memory_id)]


def test_protocol_and_kind_inferred_from_the_target(store, store_target):
    kind, target = store_target
    assert isinstance(store, MemoryStore)
    with open_store(target, HashEmbedder()) as inferred:  # no kind: the target says which
        assert type(inferred).__name__ == type(store).__name__
        assert f"{type(store).__module__}:{type(store).__name__}" == STORES[kind]


def test_add_and_add_many_record_history(store):
    before = time.time()
    mem = store.add(
        BANK, "Alice likes green tea", "Alice", timestamp="8 May", metadata={"d": "D1:3", "n": 1.5}
    )
    assert (mem.owner, mem.timestamp, mem.metadata, mem.deleted) == (
        "Alice",
        "8 May",
        {"d": "D1:3", "n": 1.5},
        False,
    )
    assert before <= mem.created_at == mem.updated_at <= time.time()
    assert store.get(BANK, mem.id) == mem
    (row,) = store.history(BANK)
    assert (row.event, row.memory_id, row.old_text, row.new_text, row.owner, row.detail) == (
        OpKind.ADD,
        mem.id,
        None,
        "Alice likes green tea",
        "Alice",
        {},
    )
    many = store.add_many(BANK, [{"text": f"memory {i}", "owner": "Bob", "timestamp": "t"} for i in range(5)])
    assert [m.text for m in many] == [f"memory {i}" for i in range(5)] and store.add_many(BANK, []) == []
    assert store.list(BANK) == [mem, *many] and events(store) == [OpKind.ADD] * 6
    for bad in ("", "   "):
        with pytest.raises(StoreError):
            store.add(BANK, bad, owner="Alice")
    with pytest.raises(StoreError):  # all or nothing
        store.add_many(BANK, [{"text": "fine", "owner": "A"}, {"text": " ", "owner": "A"}])
    assert store.count(BANK) == 6


def test_update_replaces_text_and_vector(store):
    mem = store.add(BANK, "Alice likes green tea", owner="Alice", timestamp="t1")
    new = store.update(BANK, mem.id, "Alice prefers black coffee")
    assert (new.id, new.text, new.timestamp, new.created_at) == (
        mem.id,
        "Alice prefers black coffee",
        "t1",
        mem.created_at,
    )
    assert new.updated_at >= mem.updated_at and store.get(BANK, mem.id) == new
    row = store.history(BANK, mem.id)[-1]
    assert (row.event, row.old_text, row.new_text) == (
        OpKind.UPDATE,
        "Alice likes green tea",
        "Alice prefers black coffee",
    )
    hit = store.search(BANK, "Alice prefers black coffee", owner="Alice")[0]
    assert hit.memory.id == mem.id and hit.score == pytest.approx(1.0, abs=1e-5)
    assert store.update(BANK, mem.id, "Alice drinks water", timestamp="t2").timestamp == "t2"
    with pytest.raises(StoreError):
        store.update(BANK, mem.id, "  ")
    with pytest.raises(NotFoundError):
        store.update(BANK, "no-such-id", "x")


def test_soft_delete_keeps_the_row_and_hides_it(store):
    keep = store.add(BANK, "Bob plays the violin", owner="Bob")
    gone = store.add(BANK, "Bob has a cat named Tom", owner="Bob")
    deleted = store.delete(BANK, gone.id)
    assert deleted.deleted and deleted.text == gone.text and store.get(BANK, gone.id).deleted
    assert [m.id for m in store.list(BANK)] == [keep.id]
    assert [m.id for m in store.list(BANK, include_deleted=True)] == [keep.id, gone.id]
    assert all(h.memory.id != gone.id for h in store.search(BANK, "Bob has a cat named Tom"))
    assert store.count(BANK) == 1 and store.count(BANK, owner="Bob") == 1
    row = store.history(BANK, gone.id)[-1]
    assert (row.event, row.old_text, row.new_text) == (OpKind.DELETE, gone.text, None)
    for call in (lambda: store.delete(BANK, gone.id), lambda: store.update(BANK, gone.id, "two cats")):
        with pytest.raises(NotFoundError):
            call()


def test_apply_each_kind_appends_exactly_one_row(store):
    add = store.apply(
        BANK, Op(OpKind.ADD, "Alice runs marathons"), "Alice", timestamp="t1", metadata={"d": "D1:1"}
    )
    mid = add.memory_id
    assert add.event is OpKind.ADD and add.detail == {"metadata": {"d": "D1:1"}}
    assert store.get(BANK, mid).metadata == {"d": "D1:1"} and store.get(BANK, mid).timestamp == "t1"
    upd = store.apply(BANK, Op(OpKind.UPDATE, "Alice runs ultras", memory_id=mid), "Alice", timestamp="t2")
    assert (upd.event, upd.old_text, upd.new_text) == (
        OpKind.UPDATE,
        "Alice runs marathons",
        "Alice runs ultras",
    )
    assert store.get(BANK, mid).timestamp == "t2"
    noop = store.apply(BANK, Op(OpKind.NOOP, "Alice is a runner", memory_id=mid), "Alice")
    noop_none = store.apply(BANK, Op(OpKind.NOOP), "Alice")
    assert noop.event is noop_none.event is OpKind.NOOP and noop_none.memory_id is None
    bad = store.apply(BANK, Op(OpKind.INVALID, error="no JSON", raw="ADD|UPDATE"), "Alice")
    assert bad.event is OpKind.INVALID and bad.detail == {"error": "no JSON", "raw": "ADD|UPDATE"}
    dele = store.apply(BANK, Op(OpKind.DELETE, memory_id=mid), "Alice")
    assert dele.event is OpKind.DELETE and store.count(BANK) == 0
    assert store.history(BANK) == [add, upd, noop, noop_none, bad, dele]  # returned == stored


@pytest.mark.parametrize("kind", [OpKind.UPDATE, OpKind.DELETE])
def test_bad_ops_become_invalid_rows_and_change_nothing(store, kind):
    store.add(BANK, "Alice likes tea", owner="Alice")
    gone = store.add(BANK, "Alice had a dog", owner="Alice")
    bobs = store.add(BANK, "Bob likes jazz", owner="Bob")
    store.delete(BANK, gone.id)
    before = store.list(BANK, include_deleted=True)
    for bad_id in ("hallucinated-id", gone.id, None):
        row = store.apply(BANK, Op(kind, "Alice likes coffee", memory_id=bad_id, raw="r"), owner="Alice")
        assert row.event is OpKind.INVALID and row.memory_id == bad_id
        assert row.detail["rejected"] == kind.value and row.detail["raw"] == "r"
        assert "unknown or deleted" in row.detail["error"]
    row = store.apply(BANK, Op(kind, "Bob likes rock", memory_id=bobs.id), owner="Alice")  # another's id
    assert row.event is OpKind.INVALID and "owned by 'Bob'" in row.detail["error"]
    for empty in (Op(OpKind.ADD, ""), Op(OpKind.UPDATE, " ", memory_id=bobs.id)):
        assert store.apply(BANK, empty, owner="Bob").event is OpKind.INVALID
    assert store.list(BANK, include_deleted=True) == before
    assert events(store)[-6:] == [OpKind.INVALID] * 6


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
    assert store.apply_turn(BANK, [], owner="Alice", marker="D1:2") == []  # an empty turn is done too
    assert store.markers(BANK) == {"D1:1", "D1:2"}
    store.apply_turn("conv-2", [Op(OpKind.NOOP)], owner="Alice", marker="D1:1")  # markers are per bank


def test_apply_turn_rolls_back_on_failure(store):
    store.apply_turn(BANK, [Op(OpKind.ADD, "Alice likes tea")], owner="Alice", marker="m1")
    before = (store.list(BANK, include_deleted=True), store.history(BANK))

    def failing_note(*args, **kwargs):
        raise RuntimeError("boom")

    store._note = failing_note  # the NOOP after the ADD fails mid-transaction
    with pytest.raises(RuntimeError, match="boom"):
        store.apply_turn(BANK, [Op(OpKind.ADD, "Alice likes cake"), Op(OpKind.NOOP)], "Alice", marker="m2")
    del store._note
    assert (store.list(BANK, include_deleted=True), store.history(BANK)) == before
    assert store.markers(BANK) == {"m1"}
    assert [h.memory.text for h in store.search(BANK, "Alice likes cake", k=5)] == ["Alice likes tea"]


def test_persistence_across_reopen_and_embedder_mismatch(store, store_target):
    a = store.add(BANK, "Alice likes green tea", owner="Alice", metadata={"n": 1.5, "x": None, "l": [1]})
    b = store.add(BANK, "Alice moved to Paris", owner="Alice")
    store.update(BANK, a.id, "Alice likes oolong tea")
    store.delete(BANK, b.id)
    store.apply_turn(BANK, [Op(OpKind.NOOP)], owner="Alice", marker="turn-1")
    memories, history = store.list(BANK, include_deleted=True), store.history(BANK)
    hits = store.search(BANK, "oolong tea", owner="Alice")
    store.close()
    with reopen(store_target) as again:
        assert again.list(BANK, include_deleted=True) == memories and again.history(BANK) == history
        assert again.markers(BANK) == {"turn-1"} and again.search(BANK, "oolong tea", owner="Alice") == hits
    with pytest.raises(ConfigError, match=r"dim 64.*dim 32"):
        reopen(store_target, HashEmbedder(dim=32))

    class Other(HashEmbedder):
        name = "other"

    with pytest.raises(ConfigError, match=r"'hash'.*'other'"):
        reopen(store_target, Other())


def test_owner_and_bank_isolation(store):
    store.add(BANK, "Bob loves hiking in the mountains", owner="Bob")  # the exact query text
    store.add(BANK, "Alice collects stamps", owner="Alice")
    hits = store.search(BANK, "Bob loves hiking in the mountains", owner="Alice", k=10)
    assert [h.memory.owner for h in hits] == ["Alice"]
    both = store.search(BANK, "Bob loves hiking in the mountains", k=10)
    assert [h.memory.owner for h in both] == ["Bob", "Alice"]
    assert [m.owner for m in store.list(BANK, owner="Alice")] == ["Alice"] and store.count(BANK, "Bob") == 1
    store.add("conv-2", "Alice likes tea", owner="Alice")
    store.apply_turn("conv-2", [Op(OpKind.ADD, "Alice likes coffee")], owner="Alice", marker="m")
    assert len(store.search(BANK, "Alice likes tea", k=10)) == 2 and store.count("conv-2") == 2
    assert store.banks() == ["conv-1", "conv-2"] and len(store.history(BANK)) == 2
    assert store.delete_bank("conv-2") == 2 and store.delete_bank("conv-3") == 0
    assert store.banks() == ["conv-1"] and store.search("conv-2", "tea") == []
    assert store.markers("conv-2") == set() and store.history("conv-2") == [] and store.count(BANK) == 2


def test_scores_are_cosines_highest_first(store):
    texts = ["Alice likes green tea", "Alice went to Paris", "Bob fixes old cars", "green tea is healthy"]
    store.add_many(BANK, [{"text": t, "owner": "Alice"} for t in texts])
    hits = store.search(BANK, "Alice likes green tea", k=10)
    assert hits[0].memory.text == "Alice likes green tea" and hits[0].score == pytest.approx(1.0, abs=1e-5)
    scores = [h.score for h in hits]
    assert len(hits) == 4 and scores == sorted(scores, reverse=True) and all(-1 <= s <= 1 for s in scores)
    assert hits[-1].memory.text == "Bob fixes old cars"  # shares no word with the query
    assert len(store.search(BANK, "tea", k=2)) == 2 and store.search(BANK, "tea", k=0) == []
    assert store.search("empty-bank", "tea") == [] and store.search(BANK, "tea", owner="nobody") == []


def test_search_many_matches_search(store):
    store.add_many(BANK, [{"text": f"fact number {i} about topic {i % 7}", "owner": "A"} for i in range(50)])
    queries = ["topic 3", "fact number 10", "unrelated words"]
    assert store.search_many(BANK, queries, owner="A", k=5) == [
        store.search(BANK, q, owner="A", k=5) for q in queries
    ]
    assert store.search_many(BANK, [], k=5) == [] and store.search_many(BANK, ["x"], k=0) == [[]]
    with pytest.raises(TypeError):
        store.search_many(BANK, "topic 3")


def test_owner_scope_on_single_memory_calls(store):
    a = store.add("b", "Alice lives in Paris", "alice")
    store.add("b", "Bob likes tea", "bob")
    store.add("b", "Alice has a cat", "alice")
    assert store.get("b", a.id, owner="bob") is None and store.get("b", a.id, owner="alice") == a
    assert store.get("other-bank", a.id) is None
    for call in (
        lambda: store.update("b", a.id, "x", owner="bob"),
        lambda: store.delete("b", a.id, owner="bob"),
    ):
        with pytest.raises(NotFoundError, match="for owner 'bob'"):
            call()
    assert store.get("b", a.id).text == "Alice lives in Paris" and store.history("b", a.id, owner="bob") == []
    assert store.owners("b") == ["alice", "bob"] and store.owners("nope") == []
    assert (
        store.delete_owner("b", "alice") == 2
        and store.count("b", "alice") == 0
        and store.count("b", "bob") == 1
    )
    assert [r.event.value for r in store.history("b", owner="alice")] == ["ADD", "ADD", "DELETE", "DELETE"]
    assert store.delete_owner("b", "alice") == 0 and store.owners("b") == ["alice", "bob"]
    with pytest.raises(NotFoundError):
        store.delete("b", a.id, owner="alice")  # deleted is gone for everyone


def test_copy_to_memory_is_independent(store):
    a = store.add(BANK, "Alice likes tea", owner="Alice")
    store.apply_turn("conv-2", [Op(OpKind.ADD, "Bob likes tea")], owner="Bob", marker="m0")
    store.search(BANK, "tea")  # a warm cache (where there is one) must not leak into the copy
    copy = store.copy_to_memory()
    assert copy.banks() == store.banks() and copy.markers("conv-2") == {"m0"}
    for bank in store.banks():
        assert copy.list(bank, include_deleted=True) == store.list(bank, include_deleted=True)
        assert copy.history(bank) == store.history(bank)
        ranked = [[(h.memory, round(h.score, 5)) for h in s.search(bank, "tea")] for s in (copy, store)]
        assert ranked[0] == ranked[1]  # float32 (SQLite) vs float64 (pgvector) cosines
    copy.apply_turn(BANK, [Op(OpKind.DELETE, memory_id=a.id)], owner="Alice", marker="m")
    copy.add(BANK, "Alice likes coffee", owner="Alice")
    assert [h.memory.text for h in copy.search(BANK, "likes")] == ["Alice likes coffee"]
    assert [h.memory.text for h in store.search(BANK, "likes")] == ["Alice likes tea"]
    assert store.markers(BANK) == set() and len(store.history(BANK)) == 1 and len(copy.history(BANK)) == 3
    store.add(BANK, "Alice likes juice", owner="Alice")
    assert copy.count(BANK) == 1
    copy.close()


def test_closed_store_raises(store_target):
    s = reopen(store_target)
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


# -- owner isolation, as a property ---------------------------------------------------------

OWNERS = ["ann", "bob", "cy"]
WORDS = ["tea", "coffee", "paris", "rome", "cat", "dog", "jazz"]
ACTION = st.tuples(
    st.sampled_from(["add", "update", "delete", "apply_update", "apply_delete", "search", "get"]),
    st.sampled_from(OWNERS),  # who acts
    st.integers(0, 30),  # which existing memory (any owner's), modulo how many there are
    st.lists(st.sampled_from(WORDS), min_size=1, max_size=3),
)


def _record(model, memory_id, value):
    if value is None:
        del model[memory_id]
    else:
        model[memory_id] = value


def _act(store, bank, model, action):
    """Run one owner-scoped call; check it saw and changed only ``who``'s memories."""
    name, who, pick, words = action
    text = f"{who} " + " ".join(words)
    target = list(model)[pick % len(model)] if model else "none"
    foreign = model.get(target, (who,))[0] != who
    if name == "add":
        model[store.add(bank, text, owner=who).id] = (who, text)
    elif name in ("update", "delete"):
        call = store.update if name == "update" else store.delete
        args = (bank, target, text) if name == "update" else (bank, target)
        try:
            changed = call(*args, owner=who)
        except NotFoundError:
            assert foreign or target not in model
        else:
            assert not foreign and changed.owner == who
            _record(model, target, None if name == "delete" else (who, text))
    elif name.startswith("apply_"):
        kind = OpKind.UPDATE if name == "apply_update" else OpKind.DELETE
        row = store.apply(bank, Op(kind, text, memory_id=target), owner=who)
        assert row.owner == who and (row.event is OpKind.INVALID) == (foreign or target not in model)
        if row.event is kind:
            _record(model, target, None if kind is OpKind.DELETE else (who, text))
    elif name == "search":
        assert {h.memory.owner for h in store.search(bank, text, owner=who, k=50)} <= {who}
    else:
        got = store.get(bank, target, owner=who)
        assert got is None if foreign or target not in model else got.text == model[target][1]


@settings(
    max_examples=25, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(actions=st.lists(ACTION, min_size=1, max_size=30))
def test_no_owner_scoped_call_touches_another_owner(store, actions):
    bank, model = f"prop-{uuid.uuid4().hex}", {}  # a fresh bank per example, same store
    for action in actions:
        _act(store, bank, model, action)
    for who in OWNERS:
        assert {m.id: (m.owner, m.text) for m in store.list(bank, owner=who)} == {
            i: v for i, v in model.items() if v[0] == who
        }
        assert {r.owner for r in store.history(bank, owner=who)} <= {who}
        assert store.count(bank, owner=who) == sum(v[0] == who for v in model.values())
