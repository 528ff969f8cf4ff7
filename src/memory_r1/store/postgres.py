"""A ``MemoryStore`` in PostgreSQL with pgvector: the same contract as ``store.sqlite``, shared
by many processes.

Open it with a libpq DSN, ``open_store("postgresql://user:pw@host/db", embedder)`` (the kind
is inferred from the scheme), or ``PostgresStore(dsn, embedder, ef_search=100)``. For a local
throwaway server, ``store.pglocal.start(folder)`` returns one's DSN. Needs the ``postgres``
extra: ``pip install 'memory-r1[postgres]'``.

Contracts beyond ``store.base`` (the same as ``SQLiteStore``'s): soft deletes and one history
row per operation; ``apply``/``apply_turn`` turn a bad op into an ``INVALID`` row (``detail``:
``error``, ``rejected``, ``raw``) and leave the bank unchanged; the embedder's name and dim are
kept in ``meta`` and a mismatch raises ``ConfigError``.

Transactions and concurrency: one connection per store, autocommit off, READ COMMITTED, and an
``RLock`` around it (so one store is safe to share between threads). Every public write is one
transaction: a process killed mid-write leaves nothing of it. Across processes:

* ``apply_turn`` writes its ops and its marker in one transaction; ``markers``' primary key
  makes a second recording of a marker raise ``StoreError`` (a concurrent one waits for the
  first to commit, then raises), so each unit of work lands exactly once.
* Duplicate ADD rule (in ``apply_turn``): an ADD whose normalised text (casefolded, whitespace
  collapsed) equals a live entry of the same bank and owner becomes a ``NOOP`` row naming that
  entry. Each such text is guarded by a transaction-scoped advisory lock on (bank, owner, text),
  so two processes adding the same fact at once store it once.
* Locks are always taken in one order (advisory locks by key, then the op targets' rows by id,
  then the marker), so concurrent turns never deadlock.

Search (``postgres_reads``): exact for scopes of at most ``exact_below`` live entries and for
``exact=True``; the HNSW index (cosine, ``ef_search`` candidates) above that, re-run exactly
whenever the index comes back short. Writes (``pg_turns``), migrations (``pg_migrations``).

``copy_to_memory`` copies every bank, ids, history and markers included, into a new
``SQLiteStore(":memory:")`` with the same embedder: a throwaway that never touches the server.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import psycopg

from memory_r1.errors import ConfigError, StoreError
from memory_r1.store.base import Embedder
from memory_r1.store.pg_migrations import HNSW_INDEX, migrate
from memory_r1.store.pg_turns import INSERT_MEMORY, PostgresWrites, memory_params, normalise
from memory_r1.store.pglocal import redact, redact_text
from memory_r1.store.postgres_reads import MEMORY_COLUMNS, Cursor, memory_from_row
from memory_r1.store.sqlite import SQLiteStore
from memory_r1.types import Memory


class PostgresStore(PostgresWrites):
    """A ``MemoryStore`` in a PostgreSQL database (tables in the DSN's ``current_schema()``).

    ``ef_search``: HNSW candidates per approximate search (at least ``k`` are always used);
    higher = better recall, slower. ``exact_below``: scopes with at most this many live
    entries are searched exactly (0: always use the index). Both may be changed at any time.
    Use as a context manager or call ``close()``.
    """

    def __init__(
        self,
        path: str | Path,
        embedder: Embedder,
        *,
        ef_search: int = 100,
        exact_below: int = 5_000,
        connect_timeout: int = 10,
    ) -> None:
        self.path = str(path)
        self.embedder = embedder
        self.ef_search, self.exact_below = ef_search, exact_below
        self._lock = threading.RLock()
        self._in_tx = False
        self._conn: psycopg.Connection[Any] | None = _connect(self.path, connect_timeout)
        try:
            migrate(self._conn, embedder)
            self._register_vector()
            self._check_embedder()
        except BaseException:
            self._conn.close()
            self._conn = None
            raise

    def __repr__(self) -> str:
        return f"PostgresStore({redact(self.path)!r}, embedder={self.embedder.name!r})"

    # -- plumbing ---------------------------------------------------------------------------

    def _db(self) -> psycopg.Connection[Any]:
        if self._conn is None:
            raise StoreError(f"store {redact(self.path)!r} is closed")
        return self._conn

    @contextmanager
    def _tx(self) -> Iterator[Cursor]:
        """A cursor in a transaction under the lock (nested calls join it); any error rolls
        the whole transaction back."""
        with self._lock:
            conn = self._db()
            if self._in_tx:
                with conn.cursor() as cur:
                    yield cur
                return
            self._in_tx = True
            try:
                with conn.transaction(), conn.cursor() as cur:
                    yield cur
            except psycopg.OperationalError as exc:
                raise StoreError(
                    f"PostgreSQL at {redact(self.path)}: {redact_text(str(exc), self.path)}"
                ) from None
            finally:
                self._in_tx = False

    def _register_vector(self) -> None:
        from pgvector.psycopg import register_vector  # the extension exists only after migrate

        with self._db().transaction():
            register_vector(self._db())

    def _check_embedder(self) -> None:
        name, dim = self.embedder.name, str(self.embedder.dim)
        with self._tx() as cur:
            cur.execute("SELECT key, value FROM meta")
            meta = dict(cur.fetchall())
        if (meta.get("embedder_name"), meta.get("embedder_dim")) != (name, dim):
            raise ConfigError(
                f"{redact(self.path)}: this store was written with embedder {meta.get('embedder_name')!r} "
                f"(dim {meta.get('embedder_dim')}) but was opened with {name!r} (dim {dim}); "
                "open it with the same embedder or use a new database"
            )

    def _embed(self, texts: Sequence[str]) -> np.ndarray:
        vectors = np.asarray(self.embedder.embed(list(texts)), dtype=np.float32)
        if vectors.shape != (len(texts), self.embedder.dim):
            raise StoreError(
                f"embedder {self.embedder.name!r} returned shape {vectors.shape}, "
                f"expected ({len(texts)}, {self.embedder.dim})"
            )
        # Renormalise defensively so that scores are cosines even for a sloppy embedder.
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return vectors / np.where(norms == 0, 1.0, norms)

    # -- public writes (row writes, apply / apply_turn: ``pg_turns.PostgresWrites``) --------

    def add(
        self, bank: str, text: str, owner: str, timestamp: str = "", metadata: Mapping[str, Any] | None = None
    ) -> Memory:
        """Insert a new entry (and an ADD history row); blank text raises ``StoreError``."""
        item = {"text": text, "owner": owner, "timestamp": timestamp, "metadata": metadata}
        return self.add_many(bank, [item])[0]

    def add_many(self, bank: str, items: Sequence[Mapping[str, Any]]) -> list[Memory]:
        """Insert many entries in one transaction (one embedding batch, pipelined inserts);
        returns the new ``Memory`` objects in input order."""
        if any(not str(item.get("text", "")).strip() for item in items):
            raise StoreError("cannot add a memory with empty text")
        if not items:
            return []
        vectors = self._embed([item["text"] for item in items])
        made = [self._new_memory(item) for item in items]
        with self._tx() as cur:
            cur.executemany(
                INSERT_MEMORY, [memory_params(bank, m, meta, v) for (m, meta), v in zip(made, vectors)]
            )
            cur.executemany(
                "INSERT INTO history (bank, memory_id, event, old_text, new_text, owner, created_at, detail)"
                " VALUES (%s, %s, 'ADD', NULL, %s, %s, %s, '{}')",
                [(bank, m.id, m.text, m.owner, m.created_at) for m, _ in made],
            )
        return [m for m, _ in made]

    def update(
        self, bank: str, memory_id: str, text: str, timestamp: str | None = None, owner: str | None = None
    ) -> Memory:
        """Replace a live entry's text and vector; an unknown, deleted or (with ``owner``)
        another owner's id raises ``NotFoundError``."""
        if not text.strip():
            raise StoreError("cannot update a memory to empty text")
        vec = self._embed([text])[0]
        with self._tx() as cur:
            old = self._live_or_raise(cur, bank, memory_id, owner)
            return self._replace(cur, bank, old, text, timestamp, vec, None)[0]

    def delete(self, bank: str, memory_id: str, owner: str | None = None) -> Memory:
        """Soft-delete a live entry (text kept, ``deleted=True``); ``NotFoundError`` as ``update``."""
        with self._tx() as cur:
            old = self._live_or_raise(cur, bank, memory_id, owner)
            return self._soft_delete(cur, bank, old, None)[0]

    def delete_owner(self, bank: str, owner: str) -> int:
        """Soft-delete every live entry of ``owner`` in one transaction; returns how many."""
        with self._tx() as cur:
            cur.execute(
                f"SELECT {MEMORY_COLUMNS}, seq FROM memories WHERE bank = %s AND owner = %s AND NOT deleted"
                " ORDER BY id FOR UPDATE",
                (bank, owner),
            )
            rows = sorted(cur.fetchall(), key=lambda r: r[8])  # locked by id, logged in insertion order
            for row in rows:
                self._soft_delete(cur, bank, memory_from_row(row), None)
            return len(rows)

    def delete_bank(self, bank: str) -> int:
        """Hard-delete a bank's entries, history and markers (cleanup); returns entries removed."""
        with self._tx() as cur:
            cur.execute("DELETE FROM memories WHERE bank = %s", (bank,))
            n = cur.rowcount
            cur.execute("DELETE FROM history WHERE bank = %s", (bank,))
            cur.execute("DELETE FROM markers WHERE bank = %s", (bank,))
        return n

    # -- the HNSW index, for bulk loads --------------------------------------------------------

    def drop_index(self) -> None:
        """Drop the HNSW index before a bulk load (inserting into HNSW costs ~1-2 ms a row,
        building it afterwards a fraction of that); searches stay correct (exact) meanwhile."""
        with self._tx() as cur:
            cur.execute("DROP INDEX IF EXISTS idx_memories_hnsw")

    def build_index(self, maintenance_work_mem: str = "1GB") -> float:
        """(Re)build the HNSW index over the current rows (pgvector builds it in memory, in
        parallel workers); returns the seconds taken. Writers wait while it runs."""
        start = time.perf_counter()
        with self._tx() as cur:
            cur.execute("SELECT set_config('maintenance_work_mem', %s, true)", (maintenance_work_mem,))
            cur.execute("DROP INDEX IF EXISTS idx_memories_hnsw")
            cur.execute(HNSW_INDEX)
        return time.perf_counter() - start

    # -- lifecycle --------------------------------------------------------------------------

    def copy_to_memory(self) -> SQLiteStore:
        """Every bank, read in one consistent snapshot, copied into a new in-memory
        ``SQLiteStore`` with the same embedder (ids, times, history and markers kept)."""
        with self._tx() as cur:
            cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            cur.execute(f"SELECT {MEMORY_COLUMNS}, bank, embedding FROM memories ORDER BY seq")
            memories = cur.fetchall()
            cur.execute(
                "SELECT id, bank, memory_id, event, old_text, new_text, owner, created_at, detail FROM history ORDER BY id"
            )
            history = cur.fetchall()
            cur.execute("SELECT bank, marker, created_at FROM markers ORDER BY bank, marker")
            markers = cur.fetchall()
        copy = SQLiteStore(":memory:", self.embedder)
        try:
            with copy._tx() as conn:
                # seq (SQLite's change sequence) and norm (the duplicate key) as its writes set them
                conn.executemany(
                    "INSERT INTO memories (id, owner, text, timestamp, created_at, updated_at, metadata,"
                    " deleted, bank, embedding, dim, seq, norm) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [
                        (*r[:7], int(r[7]), r[8], _blob(r[9]), self.embedder.dim, i, normalise(r[2]))
                        for i, r in enumerate(memories, 1)
                    ],
                )
                conn.execute("UPDATE counters SET value = ? WHERE name = 'change'", (len(memories),))
                conn.executemany(
                    "INSERT INTO history (id, bank, memory_id, event, old_text, new_text, owner,"
                    " created_at, detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    history,
                )
                conn.executemany("INSERT INTO markers (bank, marker, created_at) VALUES (?, ?, ?)", markers)
        except BaseException:
            copy.close()
            raise
        return copy

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __enter__(self) -> PostgresStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _blob(vector: Any) -> bytes:
    return np.asarray(vector.to_numpy() if hasattr(vector, "to_numpy") else vector, dtype="<f4").tobytes()


def _connect(dsn: str, timeout: int) -> psycopg.Connection[Any]:
    """One connection, autocommit off; a bad DSN or unreachable server is a ``ConfigError``
    that names the DSN with its password masked."""
    try:
        conn = psycopg.connect(dsn, autocommit=False, connect_timeout=timeout)
    except psycopg.Error as exc:
        raise ConfigError(
            f"cannot connect to PostgreSQL at {redact(dsn)}: {redact_text(str(exc).strip(), dsn)}; "
            "check the DSN (host, port, database, user, password) and that the server is running"
        ) from None
    conn.isolation_level = psycopg.IsolationLevel.READ_COMMITTED
    return conn
