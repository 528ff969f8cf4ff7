"""The read side of :class:`memory_r1.store.postgres.PostgresStore` and its row codecs.

Every read is one short transaction on the store's connection, under the store's lock, filtered
by ``bank`` in the SQL itself (and by ``owner`` when given). Nothing is cached in the process:
each read sees every write committed before it, by any process.

Search ranks by pgvector's cosine distance ``<=>`` and reports ``score = 1 - distance`` (a
cosine in [-1, 1], higher = more similar; ties in insertion order):

* exact: every live entry of the scope is ranked (index scans off; the scope's rows come from
  the (bank, owner) index). Used for ``exact=True`` (recall measurement) and for any scope of
  at most ``exact_below`` live entries, so results at LoCoMo scale are exactly SQLite's.
* approximate (larger scopes): ``ORDER BY embedding <=> q LIMIT k``, served from the HNSW index
  with ``hnsw.ef_search = max(ef_search, k)`` candidates. The index scan filters by bank /
  owner *after* it finds candidates, so a scope that is a small part of the table can come back
  short; whenever fewer than ``k`` hits return, the query is re-run exactly.
"""

from __future__ import annotations

import builtins
import json
import threading
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any

import numpy as np
import psycopg

from memory_r1.errors import StoreError
from memory_r1.store.base import Embedder
from memory_r1.types import HistoryRow, Hit, Memory, OpKind

Cursor = psycopg.Cursor[Any]
MEMORY_COLUMNS = "id, owner, text, timestamp, created_at, updated_at, metadata, deleted"
HISTORY_COLUMNS = "id, bank, memory_id, event, old_text, new_text, owner, created_at, detail"


def to_json(value: Mapping[str, Any] | None) -> str:
    try:
        return json.dumps(dict(value or {}), ensure_ascii=False, sort_keys=True)
    except (TypeError, ValueError) as exc:
        raise StoreError(f"metadata must be JSON-serialisable: {exc}") from exc


def memory_from_row(row: Sequence[Any]) -> Memory:
    """A ``Memory`` from the first eight columns of ``MEMORY_COLUMNS`` order."""
    meta = row[6]
    return Memory(
        row[0], row[2], row[1], row[3], row[4], row[5], {} if meta == "{}" else json.loads(meta), bool(row[7])
    )


def history_from_row(row: Sequence[Any]) -> HistoryRow:
    return HistoryRow(
        int(row[0]), row[1], row[2], OpKind(row[3]), row[4], row[5], row[6], row[7], json.loads(row[8])
    )


def _scope_sql(owner: str | None) -> str:
    return "bank = %(bank)s AND NOT deleted" + (" AND owner = %(owner)s" if owner is not None else "")


class PostgresReads:
    """Reads over ``self._conn``; the store provides the connection, lock and embedder."""

    embedder: Embedder
    ef_search: int
    exact_below: int
    _lock: threading.RLock

    def _tx(self) -> AbstractContextManager[Cursor]:
        raise NotImplementedError

    def _embed(self, texts: Sequence[str]) -> np.ndarray:
        raise NotImplementedError

    def _rows(self, query: str, args: Sequence[Any] | Mapping[str, Any]) -> list[tuple[Any, ...]]:
        with self._tx() as cur:
            cur.execute(query, args)
            return cur.fetchall()

    def get(self, bank: str, memory_id: str, owner: str | None = None) -> Memory | None:
        """The entry, soft-deleted ones included (check ``.deleted``); None if not in ``bank``
        (or, with ``owner``, not that owner's)."""
        query, args = f"SELECT {MEMORY_COLUMNS} FROM memories WHERE bank = %s AND id = %s", [bank, memory_id]
        if owner is not None:
            query, args = query + " AND owner = %s", [*args, owner]
        rows = self._rows(query, args)
        return memory_from_row(rows[0]) if rows else None

    def list(
        self, bank: str, owner: str | None = None, include_deleted: bool = False
    ) -> builtins.list[Memory]:
        """Entries of ``bank`` (and ``owner``, if given) in insertion order."""
        query, args = f"SELECT {MEMORY_COLUMNS} FROM memories WHERE bank = %s", [bank]
        if owner is not None:
            query, args = query + " AND owner = %s", [*args, owner]
        if not include_deleted:
            query += " AND NOT deleted"
        return [memory_from_row(r) for r in self._rows(query + " ORDER BY seq", args)]

    def count(self, bank: str, owner: str | None = None) -> int:
        """Number of live entries in ``bank`` (and ``owner``, if given)."""
        query = f"SELECT count(*) FROM memories WHERE {_scope_sql(owner)}"
        return int(self._rows(query, {"bank": bank, "owner": owner})[0][0])

    def banks(self) -> builtins.list[str]:
        """Every bank with entries, history rows or markers, sorted."""
        query = (
            "SELECT bank FROM (SELECT bank FROM memories UNION SELECT bank FROM history"
            ' UNION SELECT bank FROM markers) b ORDER BY bank COLLATE "C"'
        )
        return [r[0] for r in self._rows(query, ())]

    def markers(self, bank: str) -> set[str]:
        """The markers recorded by ``apply_turn`` for ``bank`` (units of work already done)."""
        return {r[0] for r in self._rows("SELECT marker FROM markers WHERE bank = %s", (bank,))}

    def history(
        self, bank: str, memory_id: str | None = None, owner: str | None = None
    ) -> builtins.list[HistoryRow]:
        """History rows of ``bank`` (of one entry and / or one owner) in the order written."""
        query, args = f"SELECT {HISTORY_COLUMNS} FROM history WHERE bank = %s", [bank]
        if memory_id is not None:
            query, args = query + " AND memory_id = %s", [*args, memory_id]
        if owner is not None:
            query, args = query + " AND owner = %s", [*args, owner]
        return [history_from_row(r) for r in self._rows(query + " ORDER BY id", args)]

    def owners(self, bank: str) -> builtins.list[str]:
        """Every owner with entries or history rows in ``bank``, sorted."""
        query = (
            "SELECT owner FROM (SELECT owner FROM memories WHERE bank = %s UNION SELECT owner FROM history"
            ' WHERE bank = %s AND owner IS NOT NULL) o ORDER BY owner COLLATE "C"'
        )
        return [r[0] for r in self._rows(query, (bank, bank))]

    # -- search -----------------------------------------------------------------------------

    def search(
        self, bank: str, query: str, owner: str | None = None, k: int = 10, *, exact: bool = False
    ) -> builtins.list[Hit]:
        """Top-``k`` live entries by cosine similarity, highest first (see ``store.base``)."""
        return self.search_many(bank, [query], owner=owner, k=k, exact=exact)[0]

    def search_many(
        self,
        bank: str,
        queries: Sequence[str],
        owner: str | None = None,
        k: int = 10,
        *,
        exact: bool = False,
    ) -> builtins.list[builtins.list[Hit]]:
        """``search`` for several queries, embedded in one batch and run in one transaction.

        ``exact=True`` ranks every live entry of the scope; so does a scope of at most
        ``exact_below`` live entries. Larger scopes use the HNSW index.
        """
        if isinstance(queries, str):
            raise TypeError("search_many() takes a sequence of queries, not a single string")
        if not queries:
            return []
        if k <= 0:
            return [[] for _ in queries]
        vectors = self._embed(queries)
        args: dict[str, Any] = {"bank": bank, "owner": owner, "k": k, "n": self.exact_below + 1}
        with self._tx() as cur:
            if not exact:  # a bounded count: at most exact_below + 1 index entries are read
                cur.execute(
                    f"SELECT count(*) FROM (SELECT 1 FROM memories WHERE {_scope_sql(owner)} LIMIT %(n)s) s",
                    args,
                )
                row = cur.fetchone()
                exact = row is not None and row[0] <= self.exact_below
            cur.execute("SELECT set_config('hnsw.ef_search', %s, true)", (str(max(self.ef_search, k)),))
            out = []
            for vec in vectors:
                hits = None if exact else _ranked(cur, {**args, "q": vec}, exact=False)
                if hits is None or len(hits) < k:  # the index came back short: rank them all
                    hits = _ranked(cur, {**args, "q": vec}, exact=True)
                out.append(hits)
            return out


def _ranked(cur: Cursor, args: Mapping[str, Any], exact: bool) -> builtins.list[Hit]:
    """One query vector's hits. The store, not the planner, picks the plan (its statistics
    may be stale): exact turns index scans off, approximate turns sorting off, which leaves
    only the HNSW index scan (the only plan that yields rows in distance order)."""
    order = "embedding <=> %(q)s" + (", seq" if exact else "")
    cur.execute(
        "SELECT set_config('enable_indexscan', %s, true), set_config('enable_sort', %s, true)",
        ("off", "on") if exact else ("on", "off"),
    )
    cur.execute(
        f"SELECT {MEMORY_COLUMNS}, seq, embedding <=> %(q)s FROM memories"
        f" WHERE {_scope_sql(args['owner'])} ORDER BY {order} LIMIT %(k)s",
        args,
    )
    rows = cur.fetchall()
    # The index orders by distance alone: break ties by insertion order, as exact search does.
    rows.sort(key=lambda r: (r[9], r[8]))
    return [Hit(memory_from_row(r), _score(r[9])) for r in rows]


def _score(distance: float | None) -> float:
    # A zero vector has no direction: pgvector answers NaN; score it as orthogonal.
    if distance is None or distance != distance:
        return 0.0
    return float(min(1.0, max(-1.0, 1.0 - distance)))
