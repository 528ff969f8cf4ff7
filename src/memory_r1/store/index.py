"""Exact cosine search over one scope's vectors, and the in-process cache of those scopes.

A ``Scope`` is the live entries of one (bank, owner) pair with their L2-normalised float32
matrix. Scores are dot products of normalised vectors, i.e. cosines in [-1, 1], higher = more
similar; ties keep insertion order. Brute force is ample at LoCoMo scale: a (1 x 6000 x 384)
matmul takes well under a millisecond.

``ScopeCache`` is a bounded LRU; the store drops every scope of a bank on any write to it.
Matrices are read-only, so caches (and store copies) can share them. Not thread-safe by
itself: the store calls it under its lock.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from memory_r1.types import Hit, Memory


class Scope(NamedTuple):
    memories: list[Memory]
    matrix: np.ndarray  # (len(memories), dim) float32, read-only, rows L2-normalised

    @classmethod
    def from_blobs(cls, memories: list[Memory], blobs: Sequence[bytes], dim: int) -> Scope:
        """Build from little-endian float32 blobs, one per memory, each of ``dim`` values."""
        raw = np.frombuffer(b"".join(blobs), dtype="<f4")
        matrix = raw.reshape(len(memories), dim).astype(np.float32)
        matrix.setflags(write=False)
        return cls(memories, matrix)

    def top_k(self, queries: np.ndarray, k: int) -> list[list[Hit]]:
        """Best ``k`` hits per row of ``queries`` ((q, dim), normalised), highest score first."""
        n = len(self.memories)
        if k <= 0 or n == 0:
            return [[] for _ in range(len(queries))]
        scores = np.clip(queries @ self.matrix.T, -1.0, 1.0)  # (q, n)
        k = min(k, n)
        out = []
        for row in scores:
            # argpartition finds the k best in O(n); sorting the indices first makes the
            # stable sort below break ties by insertion order.
            top = np.sort(np.argpartition(-row, k - 1)[:k]) if k < n else np.arange(n)
            top = top[np.argsort(-row[top], kind="stable")]
            out.append([Hit(self.memories[i], float(row[i])) for i in top])
        return out


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
        twin = ScopeCache(self.max_scopes)
        twin._scopes = OrderedDict(self._scopes)
        return twin
