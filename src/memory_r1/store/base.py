"""Seams of the storage layer (L1): the ``Embedder`` and the ``MemoryStore``.

Score contract (every backend): ``search`` returns hits sorted by descending ``score``, and
``score`` is the cosine similarity of L2-normalised embeddings, in [-1, 1]; **higher = more
similar**. Search is always filtered by ``bank`` (a namespace, e.g. one per conversation and run)
and, when given, by ``owner`` (a speaker / user): entries of other owners are never returned.

Every mutation and every decision appends a history row: ADD, UPDATE, DELETE (a soft delete:
the row stays, flagged), NOOP and INVALID.

Owner scope on single-memory calls: ``get`` / ``update`` / ``delete`` / ``history`` take an
optional ``owner``; when given, a memory of another owner is treated exactly as a missing one
(``get`` returns None, ``update`` / ``delete`` raise ``NotFoundError``), so a caller scoped to
one owner can never read or change another's memories.
"""

from __future__ import annotations

import builtins
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from memory_r1.types import HistoryRow, Hit, Memory, Op


@runtime_checkable
class Embedder(Protocol):
    name: str
    dim: int

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """float32 array (len(texts), dim), each row L2-normalised."""
        ...


@runtime_checkable
class MemoryStore(Protocol):
    def add(
        self,
        bank: str,
        text: str,
        owner: str,
        timestamp: str = "",
        metadata: Mapping[str, Any] | None = None,
    ) -> Memory: ...

    def add_many(self, bank: str, items: Sequence[Mapping[str, Any]]) -> list[Memory]:
        """Bulk ``add`` in one transaction: items with ``text``, ``owner`` and optional
        ``timestamp`` / ``metadata``; the new memories in input order."""
        ...

    def update(
        self, bank: str, memory_id: str, text: str, timestamp: str | None = None, owner: str | None = None
    ) -> Memory:
        """Replace a live entry's text; ``NotFoundError`` if it is unknown, deleted or not
        ``owner``'s (when given)."""
        ...

    def delete(self, bank: str, memory_id: str, owner: str | None = None) -> Memory:
        """Soft-delete a live entry; ``NotFoundError`` as for ``update``."""
        ...

    def delete_owner(self, bank: str, owner: str) -> int:
        """Soft-delete every live entry of ``owner`` in one transaction (one DELETE history
        row each); returns how many."""
        ...

    def apply(
        self,
        bank: str,
        op: Op,
        owner: str,
        timestamp: str = "",
        metadata: Mapping[str, Any] | None = None,
    ) -> HistoryRow: ...

    def apply_turn(
        self,
        bank: str,
        ops: Sequence[Op],
        owner: str,
        timestamp: str = "",
        metadata: Mapping[str, Any] | None = None,
        marker: str | None = None,
    ) -> list[HistoryRow]:
        """Apply several ops and record ``marker`` as done, all in one transaction."""
        ...

    def markers(self, bank: str) -> set[str]:
        """The markers recorded by ``apply_turn`` (the units of work already done)."""
        ...

    def get(self, bank: str, memory_id: str, owner: str | None = None) -> Memory | None:
        """The entry, soft-deleted ones included; None if not in ``bank`` (or not ``owner``'s)."""
        ...

    def list(
        self, bank: str, owner: str | None = None, include_deleted: bool = False
    ) -> builtins.list[Memory]: ...

    def search(self, bank: str, query: str, owner: str | None = None, k: int = 10) -> builtins.list[Hit]: ...

    def search_many(
        self, bank: str, queries: Sequence[str], owner: str | None = None, k: int = 10
    ) -> builtins.list[builtins.list[Hit]]: ...

    def history(
        self, bank: str, memory_id: str | None = None, owner: str | None = None
    ) -> builtins.list[HistoryRow]:
        """History rows in order, of one memory and / or one owner when given."""
        ...

    def owners(self, bank: str) -> builtins.list[str]:
        """Every owner with entries or history rows in ``bank``, sorted."""
        ...

    def count(self, bank: str, owner: str | None = None) -> int:
        """Live memories in ``bank`` (and of ``owner``, if given)."""
        ...

    def banks(self) -> builtins.list[str]:
        """Every bank with memories, history rows or markers, sorted."""
        ...

    def delete_bank(self, bank: str) -> int:
        """Hard-delete a bank's memories, history and markers; returns the memories removed."""
        ...

    def copy_to_memory(self) -> MemoryStore:
        """An independent in-memory copy of every bank (e.g. to try operations and throw them
        away), with the same embedder."""
        ...

    def close(self) -> None: ...

    def __enter__(self) -> MemoryStore: ...

    def __exit__(self, *exc: object) -> None: ...
