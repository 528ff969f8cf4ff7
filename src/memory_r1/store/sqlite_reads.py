"""The read side of :class:`memory_r1.store.sqlite.SQLiteStore` and its row codecs.

Every read runs under the store's lock on its one connection and is filtered by ``bank`` in
the SQL itself (and by ``owner`` when given). ``search`` ranks the scope's float32 matrix
(``store.index``), built from SQLite once and cached per (bank, owner) until a write to the
bank drops it.
"""

from __future__ import annotations

import builtins
import json
import sqlite3
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from memory_r1.errors import StoreError
from memory_r1.store.base import Embedder
from memory_r1.store.index import Scope, ScopeCache
from memory_r1.types import HistoryRow, Hit, Memory, OpKind

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

    def _db(self) -> sqlite3.Connection:
        raise NotImplementedError

    def _embed(self, texts: Sequence[str]) -> Any:
        raise NotImplementedError

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
        with self._lock:
            scope = self._scopes.get(bank, owner)
            if scope is None:
                sql, args = (
                    f"SELECT {_MEMORY_COLUMNS}, embedding, dim FROM memories WHERE bank = ? AND deleted = 0",
                    [bank],
                )
                if owner is not None:
                    sql, args = sql + " AND owner = ?", [*args, owner]
                rows = self._query(sql + " ORDER BY rowid", args)
                if any(r["dim"] != self.embedder.dim for r in rows):
                    raise StoreError(f"bank {bank!r} holds vectors whose dim is not {self.embedder.dim}")
                scope = Scope.from_blobs(
                    [_memory(r) for r in rows], [r["embedding"] for r in rows], self.embedder.dim
                )
                self._scopes.put(bank, owner, scope)
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
        if k <= 0 or not scope.memories:  # nothing to rank: skip embedding the queries
            return [[] for _ in queries]
        return scope.top_k(self._embed(queries), k)
