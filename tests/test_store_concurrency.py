"""Every reader sees every committed write; concurrent writers (threads, processes) never lose
or double an operation; a SIGKILL mid-write leaves whole operations only.

The tests taking ``store_target`` run on every store backend; the SQLite-only ones below them
check the mechanism (``PRAGMA data_version``, incremental refresh, in-place upgrade). Writer
processes are real interpreters (``sys.executable -c CHILD``) on a real file.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from memory_r1.store import open_store
from memory_r1.store.embedders import HashEmbedder
from memory_r1.store.migrations import MIGRATIONS
from memory_r1.store.sqlite import SQLiteStore
from memory_r1.types import Op, OpKind

BANK = "conv-1"
DIM = 256

# One child process: opens the store, says "ready", waits for the go file, then writes.
CHILD = r"""
import json, os, sys, time
from memory_r1.store import open_store
from memory_r1.store.embedders import HashEmbedder
from memory_r1.types import Op, OpKind

job = json.loads(sys.argv[1])
bank, tag, n = job["bank"], job["tag"], job["n"]
with open_store(job["target"], HashEmbedder(job["dim"]), kind=job["kind"]) as store:
    print("ready", flush=True)
    while job.get("go") and not os.path.exists(job["go"]):
        time.sleep(0.001)
    if job["mode"] == "adds":  # one add, one transaction
        for i in range(n):
            store.add(bank, f"{tag} fact {i}", owner=tag)
    elif job["mode"] == "dups":  # the same facts as the other child, spelled differently
        for i in range(n):
            text = f"Alice fact {i} is true" if tag == "a" else f"  alice FACT {i}\tis TRUE "
            store.search(bank, text, owner="alice", k=1)
            store.apply_turn(bank, [Op(OpKind.ADD, text)], owner="alice")
    else:  # "turns": a marked turn of 3 ADDs, then a raw add; resumable
        done, texts = store.markers(bank), {m.text for m in store.list(bank)}
        for i in range(n):
            marker = f"m{i}"
            if marker not in done:
                ops = [Op(OpKind.ADD, f"turn {i} op {j}") for j in range(3)]
                store.apply_turn(bank, ops, owner="A", metadata={"marker": marker}, marker=marker)
            if f"raw {i}" not in texts:
                store.add(bank, f"raw {i}", owner="A")
            print("done", i, flush=True)
"""


def _child(store_target, mode: str, tag: str, n: int, go: Path | None = None) -> subprocess.Popen[str]:
    kind, target = store_target
    job = {"kind": kind, "target": target, "bank": BANK, "tag": tag, "n": n, "dim": DIM, "mode": mode}
    job["go"] = str(go) if go else ""
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, json.dumps(job)], stdout=subprocess.PIPE, text=True, bufsize=1
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc


def _run_together(procs: list[subprocess.Popen[str]], go: Path) -> None:
    go.touch()  # every child is open and waiting: they start writing at the same moment
    for proc in procs:
        out, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, out


def _open(store_target):
    kind, target = store_target
    return open_store(target, HashEmbedder(DIM), kind=kind)


def _texts(hits):
    return [h.memory.text for h in hits]


# -- any store -------------------------------------------------------------------------------


def test_second_instance_sees_delete_and_add_of_the_first(store_target) -> None:
    with _open(store_target) as a, _open(store_target) as b:
        berlin = a.add(BANK, "Alice moved to Berlin", owner="Alice")
        assert _texts(b.search(BANK, "Where did Alice move?", owner="Alice")) == ["Alice moved to Berlin"]
        assert _texts(b.search(BANK, "Where did Alice move?")) == ["Alice moved to Berlin"]
        a.delete(BANK, berlin.id)
        a.add(BANK, "Alice moved to Paris", owner="Alice")
        for owner in ("Alice", None):  # the owner's scope and the whole-bank scope
            assert _texts(b.search(BANK, "Where did Alice move?", owner=owner)) == ["Alice moved to Paris"]
        paris = b.list(BANK)[0]
        a.update(BANK, paris.id, "Alice moved to Rome")
        assert _texts(b.search(BANK, "Alice moved", owner="Alice")) == ["Alice moved to Rome"]
        a.delete_bank(BANK)
        assert b.search(BANK, "Alice moved") == [] and b.count(BANK) == 0
        a.add(BANK, "Alice moved to Oslo", owner="Alice")
        assert _texts(b.search(BANK, "Alice moved")) == ["Alice moved to Oslo"]


def test_apply_turn_add_of_a_live_duplicate_is_a_noop(store_target) -> None:
    with _open(store_target) as s:
        first = s.add(BANK, "Alice moved to Paris", owner="Alice")
        rows = s.apply_turn(BANK, [Op(OpKind.ADD, " alice  MOVED to paris")], owner="Alice", marker="t1")
        assert [r.event for r in rows] == [OpKind.NOOP] and rows[0].detail["duplicate_of"] == first.id
        rows = s.apply_turn(BANK, [Op(OpKind.ADD, "Alice moved to Paris")], owner="Bob")  # another owner
        assert rows[0].event is OpKind.ADD
        s.add(BANK, "Alice moved to Paris", owner="Alice")  # raw adds store what they are given
        assert s.count(BANK, owner="Alice") == 2
        s.delete_owner(BANK, "Alice")
        rows = s.apply_turn(BANK, [Op(OpKind.ADD, "Alice moved to Paris")] * 2, owner="Alice")
        assert [r.event for r in rows] == [OpKind.ADD, OpKind.NOOP]  # a deleted one is no duplicate
        assert rows[1].detail["duplicate_of"] == rows[0].memory_id and s.count(BANK, owner="Alice") == 1


def test_writer_processes_lose_and_double_nothing(store_target, tmp_path) -> None:
    _open(store_target).close()  # create the schema once, before the writers race
    go, n_procs, n_adds = tmp_path / "go", 8, 1000
    procs = [_child(store_target, "adds", f"p{i}", n_adds, go) for i in range(n_procs)]
    _run_together(procs, go)
    with _open(store_target) as s:
        memories, history = s.list(BANK), s.history(BANK)
        assert s.count(BANK) == len(memories) == n_procs * n_adds
        adds = [r for r in history if r.event is OpKind.ADD]
        assert len(adds) == len(history) == n_procs * n_adds
        assert len({m.id for m in memories}) == n_procs * n_adds
        assert {r.memory_id for r in adds} == {m.id for m in memories}
        assert len({m.text for m in memories}) == n_procs * n_adds
        # in the top 5, not necessarily first: HashEmbedder's buckets can make "999" tie "991"
        assert "p3 fact 999" in _texts(s.search(BANK, "p3 fact 999", owner="p3", k=5))


def test_threads_sharing_and_not_sharing_an_instance(store_target) -> None:
    errors: list[BaseException] = []
    with _open(store_target) as shared:
        own = [_open(store_target) for _ in range(3)]
        stores = [shared, shared, shared, *own]

        def work(t: int) -> None:
            try:
                for i in range(40):
                    m = stores[t].add(BANK, f"t{t} fact {i}", owner=f"t{t}")
                    # read-your-writes through the shared instance, whoever wrote it
                    hits = shared.search(BANK, f"t{t} fact {i}", owner=f"t{t}", k=5)
                    assert m.id in [h.memory.id for h in hits], (t, i)
                    stores[t].search(BANK, "fact", k=3)
            except BaseException as exc:  # surfaced in the main thread below
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(t,)) for t in range(len(stores))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for s in own:
            s.close()
        assert not errors, errors
        assert shared.count(BANK) == 40 * len(stores) == len(shared.history(BANK))
        assert len({m.id for m in shared.list(BANK)}) == 40 * len(stores)
        assert len(shared.search(BANK, "fact", k=1000)) == 40 * len(stores)


def _check_whole(s) -> None:
    """No partial operation: memories and ADD rows match one to one, and each recorded marker
    has exactly its three ADDs (and no ADD names an unrecorded marker)."""
    adds = [r for r in s.history(BANK) if r.event is OpKind.ADD]
    assert sorted(r.memory_id for r in adds) == sorted(m.id for m in s.list(BANK, include_deleted=True))
    per_marker = Counter(r.detail.get("metadata", {}).get("marker") for r in adds)
    per_marker.pop(None, None)  # raw adds
    assert set(per_marker) == s.markers(BANK) and set(per_marker.values()) <= {3}
    texts = [m.text for m in s.list(BANK)]
    assert len(texts) == len(set(texts))


def test_sigkill_mid_write_leaves_whole_operations(store_target) -> None:
    _open(store_target).close()
    n, rng = 60, random.Random(7)
    for _ in range(6):  # kill, check, and kill again further on
        proc = _child(store_target, "turns", "k", n)
        assert proc.stdout is not None
        for _ in range(rng.randint(1, 6)):
            proc.stdout.readline()
        time.sleep(rng.uniform(0.0, 0.02))  # a line is printed between writes: land within one
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate()
        with _open(store_target) as s:
            _check_whole(s)
    proc = _child(store_target, "turns", "k", n)  # resume the same markers to the end
    proc.communicate(timeout=120)
    assert proc.returncode == 0
    with _open(store_target) as s:
        _check_whole(s)
        assert s.markers(BANK) == {f"m{i}" for i in range(n)} and s.count(BANK) == 4 * n


def test_concurrent_duplicate_adds_via_apply_turn_store_one(store_target, tmp_path) -> None:
    _open(store_target).close()
    go, n = tmp_path / "go", 40
    _run_together([_child(store_target, "dups", tag, n, go) for tag in ("a", "b")], go)
    with _open(store_target) as s:
        events = Counter(r.event for r in s.history(BANK))
        assert s.count(BANK) == n and events == {OpKind.ADD: n, OpKind.NOOP: n}
        live = {m.id for m in s.list(BANK)}
        assert {r.detail["duplicate_of"] for r in s.history(BANK) if r.event is OpKind.NOOP} == live


# -- SQLite only: the mechanism ---------------------------------------------------------------


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "m.sqlite"


def _traced(store: SQLiteStore) -> list[str]:
    statements: list[str] = []
    store._db().set_trace_callback(statements.append)
    return statements


def test_unchanged_file_costs_one_pragma_and_a_change_reads_only_changed_rows(db) -> None:
    with SQLiteStore(db, HashEmbedder(DIM)) as a, SQLiteStore(db, HashEmbedder(DIM)) as b:
        a.add_many(BANK, [{"text": f"memory {i}", "owner": "A"} for i in range(500)])
        b.search(BANK, "memory 7", owner="A")
        scope = b._scopes.get(BANK, "A")
        statements = _traced(b)
        b.search(BANK, "memory 7", owner="A")
        assert statements == ["PRAGMA data_version"] * 2  # nothing committed: no table read
        first = a.list(BANK)[0]
        a.update(BANK, first.id, "memory seven")
        a.add(BANK, "memory 500", owner="A")
        statements.clear()
        assert _texts(b.search(BANK, "memory seven", owner="A", k=1)) == ["memory seven"]
        reads = [q for q in statements if "FROM memories" in q]
        assert len(reads) == 1 and "seq >" in reads[0]  # incremental, not a re-read of 500 rows
        assert b._scopes.get(BANK, "A") is scope and len(scope) == 501
        b.add(BANK, "memory 501", owner="A")  # own writes leave data_version alone
        assert _texts(b.search(BANK, "memory 501", owner="A", k=1)) == ["memory 501"]
        b._db().set_trace_callback(None)


def test_other_process_commit_is_seen(db) -> None:
    with SQLiteStore(db, HashEmbedder(DIM)) as s:
        s.add(BANK, "Alice moved to Berlin", owner="Alice")
        assert _texts(s.search(BANK, "Alice moved")) == ["Alice moved to Berlin"]
        proc = _child(("sqlite", str(db)), "adds", "Alice", 1)
        proc.communicate(timeout=60)
        assert proc.returncode == 0
        assert _texts(s.search(BANK, "Alice fact 0", k=1)) == ["Alice fact 0"]
        assert s._db().execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_old_file_upgrades_in_place(db) -> None:
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("CREATE TABLE _migrations (name TEXT PRIMARY KEY, applied_at REAL NOT NULL)")
    for fn in MIGRATIONS[:2]:  # the file as the released m001 + m002 left it
        fn(conn)
        conn.execute("INSERT INTO _migrations VALUES (?, 0)", (fn.__name__,))
    conn.executemany(
        "INSERT INTO meta VALUES (?, ?)", [("embedder_name", "hash"), ("embedder_dim", str(DIM))]
    )
    vectors = HashEmbedder(DIM).embed(["Alice moved to Berlin", "Bob likes tea"])
    for i, (text, vec) in enumerate(zip(["Alice moved to Berlin", "Bob likes tea"], vectors)):
        conn.execute(
            "INSERT INTO memories (id, bank, owner, text, created_at, updated_at, embedding, dim)"
            " VALUES (?, ?, ?, ?, 0, 0, ?, ?)",
            (f"old{i}", BANK, text.split()[0], text, vec.astype("<f4").tobytes(), DIM),
        )
    conn.close()
    with SQLiteStore(db, HashEmbedder(DIM)) as s, SQLiteStore(db, HashEmbedder(DIM)) as other:
        seqs = [r[0] for r in s._db().execute("SELECT seq FROM memories ORDER BY rowid")]
        assert seqs == [1, 2]  # backfilled
        assert _texts(s.search(BANK, "Alice moved", owner="Alice")) == ["Alice moved to Berlin"]
        row = s.apply(BANK, Op(OpKind.ADD, "alice moved to  BERLIN"), owner="Alice")
        assert row.event is OpKind.NOOP and row.detail["duplicate_of"] == "old0"  # norm backfilled
        other.delete(BANK, "old0")
        other.add(BANK, "Alice moved to Paris", owner="Alice")
        assert _texts(s.search(BANK, "Alice moved", owner="Alice")) == ["Alice moved to Paris"]
        assert s._db().execute("SELECT MIN(seq) FROM memories WHERE id != 'old1'").fetchone()[0] > 2
