"""The read side of :class:`memory_r1.store.sqlite.SQLiteStore` and its row codecs.

Every read runs under the store's lock on its one connection and is filtered by ``bank`` in
the SQL itself (and by ``owner`` when given). ``search`` ranks the scope's float32 matrix
(``store.index``), built from SQLite once per (bank, owner) and then kept up to date with
every commit, this connection's and any other's, by reading only the rows changed since.
"""

from __future__ import annotations

import builtins
import json
import sqlite3
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from memory_r1.errors import NotFoundError, StoreError
from memory_r1.store.base import Embedder
from memory_r1.store.index import Scope, ScopeCache
from memory_r1.store.migrations import normalise
from memory_r1.types import HistoryRow, Hit, Memory, Op, OpKind

_MEMORY_COLUMNS = "id, owner, text, timestamp, created_at, updated_at, metadata, deleted"


def _to_json(value: Mapping[str, Any] | None) -> str:
    try:
        return json.dumps(dict(value or {}), ensure_ascii=False, sort_keys=True)
    except (TypeError, ValueError) as exc:
        raise StoreError(f"metadata must be JSON-serialisable: {exc}") from exc


def _memory(row: sqlite3.Row) -> Memory:
    # Positional and with a shortcut for empty metadata: rebuilding a search scope calls this
    # once per entry, and it dominates that rebuild.
    meta = row["metadata"]
    return Memory(
        row["id"],
        row["text"],
        row["owner"],
        row["timestamp"],
        row["created_at"],
        row["updated_at"],
        {} if meta == "{}" else json.loads(meta),
        bool(row["deleted"]),
    )


def _history_row(row: sqlite3.Row) -> HistoryRow:
    fields = dict(row)
    fields.update(event=OpKind(row["event"]), detail=json.loads(row["detail"]))
    return HistoryRow(**fields)


class SQLiteReads:
    """Reads over ``self._db()``; the store provides the connection, lock, embedder and cache."""

    embedder: Embedder
    _lock: threading.RLock
    _scopes: ScopeCache
    _in_tx: bool
    _own_commits: int  # commits through this store's connection (they leave data_version alone)

    def _db(self) -> sqlite3.Connection:
        raise NotImplementedError

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

    def _live(self, conn: sqlite3.Connection, bank: str, memory_id: str | None) -> Memory | None:
        row = conn.execute(
            f"SELECT {_MEMORY_COLUMNS} FROM memories WHERE bank = ? AND id = ? AND deleted = 0",
            (bank, memory_id),
        ).fetchone()
        return None if row is None else _memory(row)

    def _live_or_raise(
        self, conn: sqlite3.Connection, bank: str, memory_id: str, owner: str | None = None
    ) -> Memory:
        old = self._live(conn, bank, memory_id)
        if old is None or (owner is not None and old.owner != owner):
            scope = f"bank {bank!r}" + (f" for owner {owner!r}" if owner is not None else "")
            raise NotFoundError(f"no memory {memory_id!r} in {scope}")
        return old

    def _check(
        self, conn: sqlite3.Connection, bank: str, kind: OpKind, op: Op, owner: str
    ) -> tuple[str | None, Memory | None]:
        """(why ``op`` cannot be carried out for ``owner`` or None, the live target if any)."""
        if kind in (OpKind.ADD, OpKind.UPDATE) and not op.text.strip():
            return f"{kind.value} with empty text", None
        if kind not in (OpKind.UPDATE, OpKind.DELETE):
            return None, None
        target = self._live(conn, bank, op.memory_id)
        if target is None:
            return f"{kind.value} of unknown or deleted memory id {op.memory_id!r}", None
        if target.owner != owner:  # scope is enforced here, not left to the prompt
            return f"{kind.value} of a memory owned by {target.owner!r}, not {owner!r}", None
        return None, target

    @staticmethod
    def _duplicate(conn: sqlite3.Connection, bank: str, owner: str, text: str) -> str | None:
        """The id of the oldest live memory of ``owner`` whose normalised text is ``text``'s."""
        row = conn.execute(
            "SELECT id FROM memories WHERE bank = ? AND owner = ? AND norm = ? AND deleted = 0"
            " ORDER BY rowid LIMIT 1",
            (bank, owner, normalise(text)),
        ).fetchone()
        return None if row is None else str(row[0])

    # -- reads (filtered by bank in SQL, and by owner when given) ------------------------------------------------------------------------------

    def _query(self, sql: str, args: Sequence[Any]) -> list[sqlite3.Row]:
        with self._lock:
            return self._db().execute(sql, args).fetchall()

    def get(self, bank: str, memory_id: str, owner: str | None = None) -> Memory | None:
        """The entry, soft-deleted ones included (check ``.deleted``); None if not in ``bank``
        (or, with ``owner``, not that owner's)."""
        sql, args = f"SELECT {_MEMORY_COLUMNS} FROM memories WHERE bank = ? AND id = ?", [bank, memory_id]
        if owner is not None:
            sql, args = sql + " AND owner = ?", [*args, owner]
        rows = self._query(sql, args)
        return _memory(rows[0]) if rows else None

    def list(
        self, bank: str, owner: str | None = None, include_deleted: bool = False
    ) -> builtins.list[Memory]:
        """Entries of ``bank`` (and ``owner``, if given) in insertion order."""
        sql, args = f"SELECT {_MEMORY_COLUMNS} FROM memories WHERE bank = ?", [bank]
        if owner is not None:
            sql, args = sql + " AND owner = ?", [*args, owner]
        if not include_deleted:
            sql += " AND deleted = 0"
        return [_memory(r) for r in self._query(sql + " ORDER BY rowid", args)]

    def count(self, bank: str, owner: str | None = None) -> int:
        """Number of live entries in ``bank`` (and ``owner``, if given)."""
        sql, args = "SELECT COUNT(*) FROM memories WHERE bank = ? AND deleted = 0", [bank]
        if owner is not None:
            sql, args = sql + " AND owner = ?", [*args, owner]
        return int(self._query(sql, args)[0][0])

    def banks(self) -> builtins.list[str]:
        """Every bank with entries, history rows or markers, sorted."""
        return [
            r[0]
            for r in self._query(
                "SELECT bank FROM memories UNION SELECT bank FROM"
                " history UNION SELECT bank FROM markers ORDER BY bank",
                (),
            )
        ]

    def markers(self, bank: str) -> set[str]:
        """The markers recorded by ``apply_turn`` for ``bank`` (units of work already done)."""
        return {r[0] for r in self._query("SELECT marker FROM markers WHERE bank = ?", (bank,))}

    def history(
        self, bank: str, memory_id: str | None = None, owner: str | None = None
    ) -> builtins.list[HistoryRow]:
        """History rows of ``bank`` (of one entry and / or one owner) in the order written."""
        sql, args = "SELECT * FROM history WHERE bank = ?", [bank]
        if memory_id is not None:
            sql, args = sql + " AND memory_id = ?", [*args, memory_id]
        if owner is not None:
            sql, args = sql + " AND owner = ?", [*args, owner]
        return [_history_row(r) for r in self._query(sql + " ORDER BY id", args)]

    def owners(self, bank: str) -> builtins.list[str]:
        """Every owner with entries or history rows in ``bank``, sorted."""
        sql = (
            "SELECT owner FROM memories WHERE bank = ? UNION SELECT owner FROM history"
            " WHERE bank = ? AND owner IS NOT NULL ORDER BY owner"
        )
        return [r[0] for r in self._query(sql, (bank, bank))]

    def _scope(self, bank: str, owner: str | None) -> Scope:
        """The cached scope of (bank, owner), first brought up to date with every commit.

        The fast path costs one ``PRAGMA data_version`` (it changes when another connection
        commits) compared with the token the scope was last checked at, together with this
        store's own commit count. Otherwise the scope is refreshed in one read snapshot from
        the rows whose ``seq`` is above the scope's, or rebuilt if the bank was hard-deleted
        since (``bank_drops``) or the scope is not cached. Inside this store's own write
        transaction a throwaway scope is built and nothing is cached.
        """
        with self._lock:
            conn = self._db()
            # Read before the snapshot opens: a commit in between is then seen now and
            # merely re-checked (finding nothing new) on the next call.
            token = (conn.execute("PRAGMA data_version").fetchone()[0], self._own_commits)
            if self._in_tx:  # our own write is open: what it shows may yet be rolled back
                return self._refreshed(conn, bank, owner, None)
            scope = self._scopes.get(bank, owner)
            if scope is not None and scope.token == token:
                return scope
            conn.execute("BEGIN")  # one read snapshot for the counter and the rows
            try:
                scope = self._refreshed(conn, bank, owner, scope)
            finally:
                conn.execute("COMMIT")
            scope.token = token
            self._scopes.put(bank, owner, scope)
            return scope

    def _refreshed(
        self, conn: sqlite3.Connection, bank: str, owner: str | None, scope: Scope | None
    ) -> Scope:
        head = conn.execute("SELECT value FROM counters WHERE name = 'change'").fetchone()[0]
        drop = conn.execute("SELECT seq FROM bank_drops WHERE bank = ?", (bank,)).fetchone()
        if scope is not None and drop is not None and drop[0] > scope.seq:
            scope = None
        columns = f"SELECT {_MEMORY_COLUMNS}, embedding, dim FROM memories"
        args: list[Any] = [bank]
        if scope is None:
            scope = Scope(self.embedder.dim)
            sql = f"{columns} WHERE bank = ? AND deleted = 0"
        else:  # the index on (bank, seq) keeps this to the changed rows, whatever the owner
            sql = f"{columns} INDEXED BY idx_memories_seq WHERE bank = ? AND seq > ?"
            args.append(scope.seq)
        if owner is not None:
            sql = sql + " AND owner = ?"
            args.append(owner)
        rows = conn.execute(sql + " ORDER BY rowid", args).fetchall()
        if any(r["dim"] != self.embedder.dim for r in rows):
            raise StoreError(f"bank {bank!r} holds vectors whose dim is not {self.embedder.dim}")
        scope.apply((_memory(r), r["embedding"]) for r in rows)
        scope.seq = head
        return scope

    def search(self, bank: str, query: str, owner: str | None = None, k: int = 10) -> builtins.list[Hit]:
        """Top-``k`` live entries by cosine similarity, highest first (see ``store.base``)."""
        return self.search_many(bank, [query], owner=owner, k=k)[0]

    def search_many(
        self, bank: str, queries: Sequence[str], owner: str | None = None, k: int = 10
    ) -> builtins.list[builtins.list[Hit]]:
        """``search`` for several queries, embedded in one batch; one hit list per query."""
        if isinstance(queries, str):
            raise TypeError("search_many() takes a sequence of queries, not a single string")
        if not queries:
            return []
        scope = self._scope(bank, owner)
        if k <= 0 or not len(scope):  # nothing to rank: skip embedding the queries
            return [[] for _ in queries]
        vectors = self._embed(queries)  # outside the lock: a model may run here
        with self._lock:
            # Refreshed again under the same lock hold as the ranking, since the scope is
            # updated in place (cheap: one pragma when nothing was committed meanwhile).
            return self._scope(bank, owner).top_k(vectors, k)
