"""PostgreSQL specifics of ``store.postgres``, on the session's local server (``pg_server``):
schema and migrations, the HNSW index and its recall, exact fallbacks, DSN errors, and
transactions across connections and killed clients. The shared contract is in
``test_store_contract.py``."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import threading
import uuid

import numpy as np
import psycopg
import pytest

from memory_r1.errors import ConfigError, StoreError
from memory_r1.store import open_store
from memory_r1.store.embedders import HashEmbedder
from memory_r1.store.pg_migrations import MIGRATIONS, migrate
from memory_r1.store.pglocal import redact, redact_text, with_database
from memory_r1.store.postgres import PostgresStore
from memory_r1.types import Op, OpKind

BANK = "big"
N_VECTORS, N_QUERIES = 3000, 50


class RandomEmbedder:
    """Each text -> a fixed random unit vector (seeded by its hash): no structure to exploit,
    the hard case for an approximate index."""

    name, dim = "random", 32

    def embed(self, texts):
        seeds = [int.from_bytes(hashlib.blake2b(t.encode(), digest_size=8).digest(), "little") for t in texts]
        rows = np.array([np.random.default_rng(s).standard_normal(self.dim) for s in seeds], dtype=np.float32)
        return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def fresh_database(server) -> str:
    return server.database(f"pg_{uuid.uuid4().hex[:12]}")


@pytest.fixture
def dsn(pg_server):
    return fresh_database(pg_server)


@pytest.fixture(scope="module")
def loaded(pg_server):
    """A store with ``N_VECTORS`` random vectors in bank "big" (5 of them owner "rare") and 30
    in bank "small"; index-only search (``exact_below=0``) unless a test says otherwise."""
    with PostgresStore(fresh_database(pg_server), RandomEmbedder(), exact_below=0) as store:
        owners = ["rare" if i % 600 == 0 else "common" for i in range(N_VECTORS)]
        store.drop_index()  # a bulk load: insert, then build the index once
        store.add_many(BANK, [{"text": f"v{i}", "owner": o} for i, o in enumerate(owners)])
        store.build_index()
        store.add_many("small", [{"text": f"s{i}", "owner": "x"} for i in range(30)])  # into the index
        yield store


def _explain(store, owner=None):
    q = store._embed(["q0"])[0]
    with store._tx() as cur:
        cur.execute("SELECT set_config('enable_sort', 'off', true)")  # as an approximate search does
        cur.execute(
            "EXPLAIN SELECT id FROM memories WHERE bank = %s AND NOT deleted"
            + (" AND owner = %s" if owner else "")
            + " ORDER BY embedding <=> %s LIMIT 10",
            (BANK, owner, q) if owner else (BANK, q),
        )
        return "\n".join(r[0] for r in cur.fetchall())


def _recall(store, queries, k=10):
    approx, exact = store.search_many(BANK, queries, k=k), store.search_many(BANK, queries, k=k, exact=True)
    hits = [len({h.memory.id for h in a} & {h.memory.id for h in e}) for a, e in zip(approx, exact)]
    return sum(hits) / (k * len(queries))


def test_schema_hnsw_index_and_vector_column(loaded):
    with loaded._tx() as cur:
        cur.execute("SELECT name FROM _migrations")
        assert sorted(r[0] for r in cur.fetchall()) == sorted(fn.__name__ for fn in MIGRATIONS)
        cur.execute("SELECT indexdef FROM pg_indexes WHERE indexname = 'idx_memories_hnsw'")
        (indexdef,) = cur.fetchone()
        assert "USING hnsw" in indexdef and "vector_cosine_ops" in indexdef
        cur.execute(
            "SELECT format_type(atttypid, atttypmod) FROM pg_attribute"
            " WHERE attrelid = 'memories'::regclass AND attname = 'embedding'"
        )
        assert cur.fetchone()[0] == "vector(32)"
    assert "idx_memories_hnsw" in _explain(loaded)  # a big scope is served from the index


def test_recall_at_10_and_exact_search_is_brute_force(loaded):
    queries = [f"q{i}" for i in range(N_QUERIES)]
    assert _recall(loaded, queries) >= 0.95
    matrix = RandomEmbedder().embed([f"v{i}" for i in range(N_VECTORS)])
    scores = RandomEmbedder().embed(queries) @ matrix.T
    ids = {m.text: m.id for m in loaded.list(BANK)}
    for row, hits in zip(scores, loaded.search_many(BANK, queries, k=10, exact=True)):
        best = np.argsort(-row)[:10]
        assert [h.memory.id for h in hits] == [ids[f"v{i}"] for i in best]
        assert [h.score for h in hits] == pytest.approx(row[best].tolist(), abs=1e-5)


def test_ef_search_trades_recall(loaded):
    queries = [f"q{i}" for i in range(N_QUERIES)]
    try:
        loaded.ef_search = 10
        low = _recall(loaded, queries)
        loaded.ef_search = 400
        high = _recall(loaded, queries)
    finally:
        loaded.ef_search = 100
    assert low < high and high >= 0.98


def test_small_scopes_come_back_whole_and_exact(loaded):
    # The index filters by bank / owner after the scan: a few matching rows among 3000 would
    # come back short, so the store re-ranks those scopes exactly.
    for bank, owner, n in (("small", None, 10), (BANK, "rare", 5)):
        hits = loaded.search(bank, "q1", owner=owner, k=10)
        assert len(hits) == n and hits == loaded.search(bank, "q1", owner=owner, k=10, exact=True)
    try:
        loaded.exact_below = 5_000  # the default: a 3000-entry scope is ranked exactly
        assert loaded.search(BANK, "q2", k=10) == loaded.search(BANK, "q2", k=10, exact=True)
    finally:
        loaded.exact_below = 0


def test_concurrent_first_opens_migrate_exactly_once(pg_server):
    dsn, barrier, applied, errors = fresh_database(pg_server), threading.Barrier(4), [], []

    def open_one() -> None:
        try:
            with psycopg.connect(dsn) as conn:
                barrier.wait()
                applied.append(migrate(conn, HashEmbedder()))
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and sorted(map(len, applied)) == [0, 0, 0, len(MIGRATIONS)]
    with PostgresStore(dsn, HashEmbedder()) as s, psycopg.connect(dsn) as conn:
        assert migrate(conn, HashEmbedder()) == [] and s.count("b") == 0  # reopening applies nothing
        assert conn.execute("SELECT count(*) FROM _migrations").fetchone()[0] == len(MIGRATIONS)


def test_dsn_errors_name_the_dsn_without_the_password(pg_server):
    uri = "postgresql://alice:s3cret@127.0.0.1:1/memories"
    for target, kind, shown in (
        (uri, None, "postgresql://alice:***@127.0.0.1:1/memories"),
        (
            "postgres://alice@127.0.0.1:1/m?password=s3cret",
            None,
            "postgres://alice@127.0.0.1:1/m?password=***",
        ),
        ("host=127.0.0.1 port=1 user=alice password=s3cret dbname=m", "postgres", "password=***"),
        ("host=127.0.0.1 port=1 password='s3 cret' nonsense", "postgres", "password=***"),
    ):
        with pytest.raises(ConfigError) as info:
            open_store(target, HashEmbedder(), kind=kind)
        message = str(info.value)
        assert shown in message and "s3cret" not in message and "s3 cret" not in message, message
        assert info.value.__cause__ is None and info.value.__suppress_context__  # no driver text chained
    missing = with_database(pg_server.dsn, "no_such_database")
    with pytest.raises(ConfigError, match="no_such_database"):
        open_store(missing, HashEmbedder())


def test_dsn_helpers():
    assert redact("postgresql://u:pw@h:5/db?sslmode=require") == "postgresql://u:***@h:5/db?sslmode=require"
    assert redact("postgresql://u@/db?host=/tmp/x") == "postgresql://u@/db?host=/tmp/x"
    assert redact("dbname=x password = 'a b' user=u") == "dbname=x password = *** user=u"
    assert redact_text('failed for "pw"', "postgresql://u:pw@h/db") == 'failed for "***"'
    assert with_database("postgresql://u:@/postgres?host=/tmp/x", "m") == "postgresql://u:@/m?host=/tmp/x"


def test_open_store_infers_postgres_from_either_scheme(dsn):
    with open_store(dsn.replace("postgresql://", "postgres://", 1), HashEmbedder()) as s:
        assert isinstance(s, PostgresStore) and "***" not in repr(s)


def test_concurrent_turns_with_one_marker_land_once(dsn):
    PostgresStore(dsn, HashEmbedder()).close()
    stores = [PostgresStore(dsn, HashEmbedder()) for _ in range(4)]
    barrier, outcomes = threading.Barrier(len(stores)), []

    def turn(i: int) -> None:
        barrier.wait()
        try:
            stores[i].apply_turn("b", [Op(OpKind.ADD, f"fact from writer {i}")], owner="A", marker="t1")
            outcomes.append("applied")
        except StoreError as exc:
            outcomes.append("refused" if "already recorded" in str(exc) else repr(exc))

    threads = [threading.Thread(target=turn, args=(i,)) for i in range(len(stores))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["applied"] + ["refused"] * 3
    assert stores[0].count("b") == 1 and len(stores[0].history("b")) == 1 and stores[0].markers("b") == {"t1"}
    for s in stores:
        s.close()


KILLED_MID_TURN = r"""
import json, os, signal, sys
from memory_r1.store.embedders import HashEmbedder
from memory_r1.store.postgres import PostgresStore
from memory_r1.types import Op, OpKind

store = PostgresStore(sys.argv[1], HashEmbedder())
store._note = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)  # after the two ADDs
ops = [Op(OpKind.ADD, "Alice likes tea"), Op(OpKind.ADD, "Alice likes jazz"), Op(OpKind.NOOP)]
store.apply_turn("b", ops, owner="Alice", marker="m1")
"""


def test_client_killed_mid_transaction_leaves_nothing(dsn):
    PostgresStore(dsn, HashEmbedder()).close()
    done = subprocess.run([sys.executable, "-c", KILLED_MID_TURN, dsn], capture_output=True, timeout=60)
    assert done.returncode == -9, done.stderr.decode()[-2000:]
    with PostgresStore(dsn, HashEmbedder()) as s:
        assert s.list("b", include_deleted=True) == [] and s.history("b") == [] and s.markers("b") == set()
        # the dead backend's locks (advisory, marker) are gone: the same turn now lands at once
        ops = [Op(OpKind.ADD, "Alice likes tea"), Op(OpKind.ADD, "Alice likes jazz"), Op(OpKind.NOOP)]
        rows = s.apply_turn("b", ops, owner="Alice", marker="m1")
        assert [r.event for r in rows] == [OpKind.ADD, OpKind.ADD, OpKind.NOOP] and s.markers("b") == {"m1"}
