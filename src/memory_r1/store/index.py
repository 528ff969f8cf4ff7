"""Exact cosine search over one scope's vectors, and the in-process cache of those scopes.

A ``Scope`` is the entries of one (bank, owner) pair in insertion (rowid) order with their
L2-normalised float32 rows. Scores are dot products of normalised vectors, i.e. cosines in
[-1, 1], higher = more similar; ties keep insertion order. Brute force is ample: one query
against 100k x 384 float32 rows reads 150 MiB, about 7 ms of one core.

A scope is refreshed in place from the rows that changed since it was built (``apply``): new
entries are appended to a buffer whose capacity grows geometrically (amortised O(1) per row),
an updated entry's row is overwritten where it stands (its rowid, hence its rank among ties,
does not change), and a deleted entry's row is only marked dead, so no change costs a copy of
the matrix; dead rows are compacted away once they are over half the rows (and over 1,024). ``seq`` is the highest
change sequence (``migrations.m003_change_seq``) the scope reflects and ``token`` the freshness
token of the connection when it was last checked; the store owns both.

``ScopeCache`` is a bounded LRU. Neither class is thread-safe: the store calls them, and
``top_k``, under its lock.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable, Iterable

import numpy as np

from memory_r1.types import Hit, Memory

#: A changed row: the memory as stored (``deleted`` included) and its float32 LE blob.
Change = tuple[Memory, bytes]


class Scope:
    """Live entries of one (bank, owner) and their matrix, updated by ``apply``."""

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self.seq = 0
        self.token: Hashable = None
        self._matrix = np.zeros((0, dim), dtype=np.float32)  # rows [0, _n) in use
        self._live = np.zeros(0, dtype=bool)
        self._memories: list[Memory] = []  # by row; a dead row keeps its last memory
        self._row: dict[str, int] = {}  # memory id -> row, live and dead
        self._n = 0
        self._dead = 0

    def __len__(self) -> int:
        """The number of live entries."""
        return self._n - self._dead

    @property
    def memories(self) -> list[Memory]:
        """The live entries in insertion order."""
        return [m for m, live in zip(self._memories, self._live[: self._n]) if live]

    def apply(self, changes: Iterable[Change]) -> None:
        """Bring the scope up to date with ``changes`` (rows in rowid order): a live memory is
        inserted or replaced, a deleted one dropped; unknown deleted ids are ignored."""
        fresh: list[Change] = []
        for memory, blob in changes:
            row = self._row.get(memory.id)
            if row is None:
                if not memory.deleted:
                    fresh.append((memory, blob))
            elif memory.deleted:
                self._kill(row)
            else:
                self._set(row, memory, blob)
        if fresh:
            self._append(fresh)
        if self._dead > max(1024, self._n // 2):
            self._compact()

    def _set(self, row: int, memory: Memory, blob: bytes) -> None:
        self._matrix[row] = np.frombuffer(blob, dtype="<f4")
        self._memories[row] = memory
        if not self._live[row]:  # an id can come back only through a rebuild; be safe anyway
            self._live[row] = True
            self._dead -= 1

    def _kill(self, row: int) -> None:
        if self._live[row]:
            self._live[row] = False  # its memory stays in _memories, so rows stay aligned
            self._dead += 1

    def _append(self, fresh: list[Change]) -> None:
        need = self._n + len(fresh)
        if need > len(self._matrix):
            # Geometric growth (x1.25 + a little) keeps appends amortised O(1) per row while a
            # 100k scope over-allocates by a quarter, not by double.
            self._resize(need + need // 4 + 64)
        block = np.frombuffer(b"".join(blob for _, blob in fresh), dtype="<f4")
        self._matrix[self._n : need] = block.reshape(len(fresh), self.dim)
        self._live[self._n : need] = True
        for i, (memory, _) in enumerate(fresh, self._n):
            self._row[memory.id] = i
            self._memories.append(memory)
        self._n = need

    def _resize(self, capacity: int) -> None:
        matrix = np.zeros((capacity, self.dim), dtype=np.float32)
        live = np.zeros(capacity, dtype=bool)
        matrix[: self._n], live[: self._n] = self._matrix[: self._n], self._live[: self._n]
        self._matrix, self._live = matrix, live

    def _compact(self) -> None:
        keep = np.flatnonzero(self._live[: self._n])
        self._matrix = np.ascontiguousarray(self._matrix[keep])
        self._live = np.ones(len(keep), dtype=bool)
        self._memories = [self._memories[i] for i in keep]
        self._row = {m.id: i for i, m in enumerate(self._memories)}
        self._n, self._dead = len(keep), 0

    def top_k(self, queries: np.ndarray, k: int) -> list[list[Hit]]:
        """Best ``k`` live hits per row of ``queries`` ((q, dim), normalised), highest first."""
        n, live = self._n, len(self)
        if k <= 0 or live == 0:
            return [[] for _ in range(len(queries))]
        matrix = self._matrix[:n]
        if len(queries) == 1:
            # One query is a memory-bound matrix-vector product: numpy's own single-threaded
            # SIMD loop (einsum) runs it at memory speed, while multi-threaded BLAS waits on its
            # worker threads: ~15 ms per call on a busy machine even for 2k rows.
            raw = np.einsum("ij,j->i", matrix, queries[0])[None]
        else:  # a batch: one BLAS product reads the matrix once for all queries
            raw = queries @ matrix.T
        scores = np.clip(raw, -1.0, 1.0)  # (q, n)
        if self._dead:  # after the clip, so a dead row ranks below every real score
            scores[:, ~self._live[:n]] = -np.inf
        k = min(k, live)
        out = []
        for row in scores:
            # argpartition finds the k best in O(n); sorting the indices first makes the
            # stable sort below break ties by insertion order.
            top = np.sort(np.argpartition(-row, k - 1)[:k]) if k < n else np.arange(n)
            top = top[np.argsort(-row[top], kind="stable")]
            out.append([Hit(self._memories[i], float(row[i])) for i in top])
        return out

    def clone(self) -> Scope:
        """An independent copy whose ``token`` is unset, so its next use re-checks freshness
        against whatever connection it is then read through."""
        twin = Scope(self.dim)
        twin.seq, twin._n, twin._dead = self.seq, self._n, self._dead
        twin._matrix, twin._live = self._matrix[: self._n].copy(), self._live[: self._n].copy()
        twin._memories, twin._row = list(self._memories), dict(self._row)
        return twin


class ScopeCache:
    """LRU of (bank, owner) -> ``Scope`` holding at most ``max_scopes`` entries."""

    def __init__(self, max_scopes: int = 64) -> None:
        self.max_scopes = max_scopes
        self._scopes: OrderedDict[tuple[str, str | None], Scope] = OrderedDict()

    def get(self, bank: str, owner: str | None) -> Scope | None:
        scope = self._scopes.get((bank, owner))
        if scope is not None:
            self._scopes.move_to_end((bank, owner))
        return scope

    def put(self, bank: str, owner: str | None, scope: Scope) -> None:
        self._scopes[(bank, owner)] = scope
        self._scopes.move_to_end((bank, owner))
        while len(self._scopes) > self.max_scopes:
            self._scopes.popitem(last=False)

    def invalidate(self, bank: str) -> None:
        """Forget every scope of ``bank`` (all owners and the owner-less one)."""
        for key in [key for key in self._scopes if key[0] == bank]:
            del self._scopes[key]

    def clear(self) -> None:
        self._scopes.clear()

    def copy(self) -> ScopeCache:
        """Independent clones of every scope (scopes are mutable, so never shared)."""
        twin = ScopeCache(self.max_scopes)
        twin._scopes = OrderedDict((key, scope.clone()) for key, scope in self._scopes.items())
        return twin
