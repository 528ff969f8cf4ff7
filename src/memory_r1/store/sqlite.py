"""The embedded default ``MemoryStore``: one SQLite file, float32 blobs, brute-force cosine.

Contracts beyond ``store.base``:

* Scope: every read is filtered by ``bank`` in the SQL itself, and by ``owner`` when given.
* Deletes are soft (``deleted=1``, text kept); every operation appends exactly one history row.
* ``apply``/``apply_turn`` never raise for a bad operation: an UPDATE/DELETE whose id is
  unknown, deleted or another owner's, or an ADD/UPDATE with blank text, is recorded as an
  ``INVALID`` row whose ``detail`` holds ``error`` (the reason), ``rejected`` (the op kind) and
  ``raw``; the bank is left unchanged. (``add``/``update``/``delete`` do raise ``StoreError``.)
* ``apply_turn`` writes its ops and its marker in one transaction: after a crash either both
  are there or neither, so ingestion resumes by skipping ``markers(bank)``.
* The file remembers which embedder wrote its vectors (``meta`` table); opening it with another
  name or dim raises ``ConfigError``.
* ``apply_turn`` turns an ADD whose normalised text (``migrations.normalise``: casefold,
  whitespace collapsed) equals a live memory of the same bank and owner into a NOOP row whose
  ``detail["duplicate_of"]`` is that memory's id. The check runs inside the writer transaction,
  so two processes adding one fact at once store it once. ``add``/``add_many`` store as given.
* Search is exact cosine over the scope's float32 matrix (``store.index``), cached in-process
  per (bank, owner). Every reader sees every committed write: before a cached scope is used,
  ``PRAGMA data_version`` (changed by any other connection's commit) and this store's own
  commit count are compared with the scope's; on a change the scope reads only the rows whose
  change sequence ``seq`` (``migrations.m003_change_seq``) is above the one it has seen.

Concurrency: WAL journal, ``synchronous=NORMAL`` (a killed process loses no committed
transaction), a 30 s busy timeout, ``BEGIN IMMEDIATE`` for every write (writers in threads and
processes queue instead of failing) and one ``RLock`` around the single connection (reads too:
Python's sqlite3 cursors are not safe to share between threads). Each ``add`` is one
transaction with its history row, so a SIGKILL leaves it wholly done or not started. Texts are
embedded before the write transaction opens, so the file is never locked while a model runs.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from memory_r1.errors import ConfigError, StoreError
from memory_r1.store.base import Embedder
from memory_r1.store.index import ScopeCache
from memory_r1.store.migrations import migrate, normalise
from memory_r1.store.sqlite_reads import _MEMORY_COLUMNS, SQLiteReads, _memory, _to_json
from memory_r1.types import HistoryRow, Memory, Op, OpKind


class SQLiteStore(SQLiteReads):
    """A ``MemoryStore`` in one SQLite file (or ``":memory:"``). Use as a context manager or
    call ``close()``."""

    def __init__(self, path: str | Path, embedder: Embedder) -> None:
        self.path = str(path)
        self.embedder = embedder
        self._lock = threading.RLock()
        self._in_tx = False
        self._own_commits = 0
        self._scopes = ScopeCache()
        # Autocommit mode: transactions are explicit (``_tx``), so DDL and DML behave alike.
        if self.path != ":memory:" and not self.path.startswith("file:"):
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        conn.row_factory = sqlite3.Row
        try:
            conn.execute("PRAGMA journal_mode=WAL")  # ":memory:" answers "memory"; that is fine
            conn.execute("PRAGMA synchronous=NORMAL")
            migrate(conn)
            self._conn: sqlite3.Connection | None = conn
            self._check_embedder()
        except BaseException:
            conn.close()
            self._conn = None
            raise

    # -- plumbing ---------------------------------------------------------------------------

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreError(f"store {self.path!r} is closed")
        return self._conn

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """A write transaction under the lock (nested calls join it); rolled back on any error."""
        with self._lock:
            conn = self._db()
            if self._in_tx:
                yield conn
                return
            conn.execute("BEGIN IMMEDIATE")
            self._in_tx = True
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")  # no scope is cached from inside a write (``_scope``)
                raise
            else:
                conn.execute("COMMIT")
                self._own_commits += 1  # data_version ignores our own commits; this does not
            finally:
                self._in_tx = False

    def _check_embedder(self) -> None:
        name, dim = self.embedder.name, str(self.embedder.dim)
        with self._tx() as conn:
            meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
            if not meta:
                meta = {"embedder_name": name, "embedder_dim": dim}
                conn.executemany("INSERT INTO meta (key, value) VALUES (?, ?)", meta.items())
        if (meta.get("embedder_name"), meta.get("embedder_dim")) != (name, dim):
            raise ConfigError(
                f"{self.path}: this store was written with embedder {meta.get('embedder_name')!r} "
                f"(dim {meta.get('embedder_dim')}) but was opened with {name!r} (dim {dim}); "
                "open it with the same embedder or use a new file"
            )

    def _log(
        self,
        conn: sqlite3.Connection,
        bank: str,
        event: OpKind,
        memory_id: str | None,
        old_text: str | None,
        new_text: str | None,
        owner: str | None,
        detail: Mapping[str, Any] | None = None,
    ) -> HistoryRow:
        """Append one history row (inside the caller's transaction) and return it."""
        now, detail_json = time.time(), _to_json(detail)
        cur = conn.execute(
            "INSERT INTO history (bank, memory_id, event, old_text, new_text, owner, created_at,"
            " detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (bank, memory_id, event.value, old_text, new_text, owner, now, detail_json),
        )
        assert cur.lastrowid is not None
        return HistoryRow(
            cur.lastrowid, bank, memory_id, event, old_text, new_text, owner, now, json.loads(detail_json)
        )

    @staticmethod
    def _next_seq(conn: sqlite3.Connection) -> int:
        """The next change sequence; only inside a writer transaction, which serialises it."""
        row = conn.execute("UPDATE counters SET value = value + 1 WHERE name = 'change' RETURNING value")
        return int(row.fetchone()[0])

    # -- writes: each takes precomputed vectors and runs inside the caller's transaction -----

    def _insert(
        self,
        conn: sqlite3.Connection,
        bank: str,
        item: Mapping[str, Any],
        vec: np.ndarray,
        detail: Mapping[str, Any] | None,
    ) -> tuple[Memory, HistoryRow]:
        now, meta = time.time(), _to_json(item.get("metadata"))
        text, ts, seq = item["text"], item.get("timestamp") or "", self._next_seq(conn)
        mem = Memory(uuid.uuid4().hex, text, item["owner"], ts, now, now, json.loads(meta))
        values = (mem.id, bank, mem.owner, text, ts, now, now, meta, vec.astype("<f4").tobytes())
        conn.execute(
            "INSERT INTO memories (id, bank, owner, text, timestamp, created_at, updated_at, metadata,"
            " embedding, dim, seq, norm) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (*values, len(vec), seq, normalise(text)),
        )
        return mem, self._log(conn, bank, OpKind.ADD, mem.id, None, mem.text, mem.owner, detail)

    def _replace(
        self,
        conn: sqlite3.Connection,
        bank: str,
        old: Memory,
        text: str,
        timestamp: str | None,
        vec: np.ndarray,
        detail: Mapping[str, Any] | None,
    ) -> tuple[Memory, HistoryRow]:
        now, ts = time.time(), old.timestamp if timestamp is None else timestamp
        blob, seq = vec.astype("<f4").tobytes(), self._next_seq(conn)
        conn.execute(
            "UPDATE memories SET text = ?, timestamp = ?, updated_at = ?, embedding = ?, dim = ?,"
            " seq = ?, norm = ? WHERE id = ?",
            (text, ts, now, blob, len(vec), seq, normalise(text), old.id),
        )
        new = Memory(old.id, text, old.owner, ts, old.created_at, now, old.metadata)
        return new, self._log(conn, bank, OpKind.UPDATE, old.id, old.text, text, old.owner, detail)

    def _soft_delete(
        self, conn: sqlite3.Connection, bank: str, old: Memory, detail: Mapping[str, Any] | None
    ) -> tuple[Memory, HistoryRow]:
        now = time.time()
        conn.execute(
            "UPDATE memories SET deleted = 1, updated_at = ?, seq = ? WHERE id = ?",
            (now, self._next_seq(conn), old.id),
        )
        gone = Memory(
            old.id, old.text, old.owner, old.timestamp, old.created_at, now, old.metadata, deleted=True
        )
        return gone, self._log(conn, bank, OpKind.DELETE, old.id, old.text, None, old.owner, detail)

    # -- public writes ----------------------------------------------------------------------

    def add(
        self, bank: str, text: str, owner: str, timestamp: str = "", metadata: Mapping[str, Any] | None = None
    ) -> Memory:
        """Insert a new entry (and an ADD history row); blank text raises ``StoreError``."""
        item = {"text": text, "owner": owner, "timestamp": timestamp, "metadata": metadata}
        return self.add_many(bank, [item])[0]

    def add_many(self, bank: str, items: Sequence[Mapping[str, Any]]) -> list[Memory]:
        """Insert many entries in one transaction, embedding all texts in one batch.

        Each item is a mapping with ``text`` and ``owner`` and optional ``timestamp`` and
        ``metadata``; returns the new ``Memory`` objects in input order.
        """
        if any(not str(item.get("text", "")).strip() for item in items):
            raise StoreError("cannot add a memory with empty text")
        if not items:
            return []
        vectors = self._embed([item["text"] for item in items])
        with self._tx() as conn:
            return [self._insert(conn, bank, it, vec, None)[0] for it, vec in zip(items, vectors)]

    def update(
        self, bank: str, memory_id: str, text: str, timestamp: str | None = None, owner: str | None = None
    ) -> Memory:
        """Replace a live entry's text and vector; an unknown, deleted or (with ``owner``)
        another owner's id raises ``NotFoundError``."""
        if not text.strip():
            raise StoreError("cannot update a memory to empty text")
        vec = self._embed([text])[0]
        with self._tx() as conn:
            old = self._live_or_raise(conn, bank, memory_id, owner)
            return self._replace(conn, bank, old, text, timestamp, vec, None)[0]

    def delete(self, bank: str, memory_id: str, owner: str | None = None) -> Memory:
        """Soft-delete a live entry (text kept, ``deleted=True``); ``NotFoundError`` as ``update``."""
        with self._tx() as conn:
            old = self._live_or_raise(conn, bank, memory_id, owner)
            return self._soft_delete(conn, bank, old, None)[0]

    def delete_owner(self, bank: str, owner: str) -> int:
        """Soft-delete every live entry of ``owner`` in one transaction; returns how many."""
        with self._tx() as conn:
            rows = conn.execute(
                f"SELECT {_MEMORY_COLUMNS} FROM memories WHERE bank = ? AND owner = ? AND deleted = 0"
                " ORDER BY rowid",
                (bank, owner),
            ).fetchall()
            for row in rows:
                self._soft_delete(conn, bank, _memory(row), None)
            return len(rows)

    def apply(
        self, bank: str, op: Op, owner: str, timestamp: str = "", metadata: Mapping[str, Any] | None = None
    ) -> HistoryRow:
        """Carry out one manager operation for ``owner``; returns its (single) history row.

        ADD stores ``metadata`` on the new entry; for every kind a non-empty ``metadata`` is also
        copied into the history row's ``detail["metadata"]`` (where the op came from). A
        non-empty ``timestamp`` replaces an UPDATEd entry's timestamp.
        """
        return self.apply_turn(bank, [op], owner, timestamp, metadata)[0]

    def apply_turn(
        self,
        bank: str,
        ops: Sequence[Op],
        owner: str,
        timestamp: str = "",
        metadata: Mapping[str, Any] | None = None,
        marker: str | None = None,
    ) -> list[HistoryRow]:
        """``apply`` each op in order, and record ``marker`` as done, in one transaction.

        Ops see the effects of earlier ones (a DELETE then an UPDATE of the same id makes the
        UPDATE INVALID). A marker already recorded for ``bank`` raises ``StoreError`` and
        applies nothing: each unit of work lands exactly once.
        """
        detail = {"metadata": dict(metadata)} if metadata else {}
        texts = list(
            dict.fromkeys(
                op.text for op in ops if OpKind(op.kind) in (OpKind.ADD, OpKind.UPDATE) and op.text.strip()
            )
        )
        vectors = dict(zip(texts, self._embed(texts))) if texts else {}
        with self._tx() as conn:
            if marker is not None:
                self._record_marker(conn, bank, marker)
            rows = []
            for op in ops:
                kind = OpKind(op.kind)
                error, target = self._check(conn, bank, kind, op, owner)
                if error is not None:
                    info = {"error": error, "rejected": kind.value, "raw": op.raw, **detail}
                    rows.append(self._note(conn, bank, OpKind.INVALID, op, owner, info))
                elif kind is OpKind.ADD and (dup := self._duplicate(conn, bank, owner, op.text)):
                    info = {"duplicate_of": dup, **detail}
                    rows.append(self._log(conn, bank, OpKind.NOOP, dup, None, op.text, owner, info))
                elif kind is OpKind.ADD:
                    item = {"text": op.text, "owner": owner, "timestamp": timestamp, "metadata": metadata}
                    rows.append(self._insert(conn, bank, item, vectors[op.text], detail)[1])
                elif kind is OpKind.UPDATE and target is not None:
                    rows.append(
                        self._replace(
                            conn, bank, target, op.text, timestamp or None, vectors[op.text], detail
                        )[1]
                    )
                elif kind is OpKind.DELETE and target is not None:
                    rows.append(self._soft_delete(conn, bank, target, detail)[1])
                elif kind is OpKind.NOOP:
                    rows.append(self._note(conn, bank, OpKind.NOOP, op, owner, detail))
                else:  # an INVALID op from the parser: keep its reason and the raw output
                    info = {"error": op.error, "raw": op.raw, **detail}
                    rows.append(self._note(conn, bank, OpKind.INVALID, op, owner, info))
            return rows

    @staticmethod
    def _record_marker(conn: sqlite3.Connection, bank: str, marker: str) -> None:
        if conn.execute("SELECT 1 FROM markers WHERE bank = ? AND marker = ?", (bank, marker)).fetchone():
            raise StoreError(f"marker {marker!r} is already recorded in bank {bank!r}")
        conn.execute(
            "INSERT INTO markers (bank, marker, created_at) VALUES (?, ?, ?)", (bank, marker, time.time())
        )

    def _note(
        self,
        conn: sqlite3.Connection,
        bank: str,
        event: OpKind,
        op: Op,
        owner: str,
        detail: Mapping[str, Any],
    ) -> HistoryRow:
        """A history row that changes no memory (NOOP, INVALID)."""
        return self._log(conn, bank, event, op.memory_id, op.old_text, op.text or None, owner, detail)

    def delete_bank(self, bank: str) -> int:
        """Hard-delete a bank's entries, history and markers (cleanup); returns entries removed."""
        with self._tx() as conn:
            n = conn.execute("DELETE FROM memories WHERE bank = ?", (bank,)).rowcount
            conn.execute("DELETE FROM history WHERE bank = ?", (bank,))
            conn.execute("DELETE FROM markers WHERE bank = ?", (bank,))
            conn.execute(  # no row is left to carry a seq: cached scopes must see the drop
                "INSERT INTO bank_drops (bank, seq) VALUES (?, ?)"
                " ON CONFLICT (bank) DO UPDATE SET seq = excluded.seq",
                (bank, self._next_seq(conn)),
            )
            self._scopes.invalidate(bank)
        return n

    # -- lifecycle --------------------------------------------------------------------------

    def copy_to_memory(self) -> SQLiteStore:
        """An independent in-memory snapshot (SQLite backup API) with the same embedder."""
        copy = SQLiteStore(":memory:", self.embedder)
        with self._lock:
            self._db().backup(copy._db())
            copy._scopes = self._scopes.copy()  # read-only matrices: safe to share
        return copy

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
                self._scopes.clear()

    def __enter__(self) -> SQLiteStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
