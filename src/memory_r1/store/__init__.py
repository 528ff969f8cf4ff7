"""Storage layer (L1): memory stores and embedders, looked up by name.

``STORES`` and ``embedders.EMBEDDERS`` map a name to ``"module:Class"``; the class is imported
only when chosen, so importing this package pulls in neither torch nor sentence-transformers.

>>> from memory_r1.store import create_embedder, open_store
>>> with open_store(":memory:", create_embedder("hash")) as store:
...     _ = store.add("conv-1", "Alice likes tea", owner="Alice")
...     store.search("conv-1", "what does Alice like?", owner="Alice")[0].memory.text
'Alice likes tea'
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from memory_r1.registry import resolve
from memory_r1.store.base import Embedder, MemoryStore
from memory_r1.store.embedders import EMBEDDERS, create_embedder

#: store name -> "module:Class"; the one mapping of store backends. Each class takes
#: ``(path, embedder)`` and implements :class:`memory_r1.store.base.MemoryStore`.
STORES: dict[str, str] = {"sqlite": "memory_r1.store.sqlite:SQLiteStore"}

__all__ = [
    "EMBEDDERS",
    "STORES",
    "Embedder",
    "MemoryStore",
    "create_embedder",
    "create_store",
    "open_store",
]


def create_store(name: str, **kwargs: Any) -> MemoryStore:
    """Build the store registered as ``name``; unknown names raise ``UnknownModelError``.

    ``create_store("sqlite", path="memories.db", embedder=create_embedder("minilm"))``
    """
    store: MemoryStore = resolve(STORES, name, "store")(**kwargs)
    return store


def open_store(path: str | Path, embedder: Embedder, kind: str = "sqlite") -> MemoryStore:
    """Open (creating if needed) the ``kind`` store at ``path`` (SQLite: a file, or
    ``":memory:"`` for a throwaway)."""
    return create_store(kind, path=path, embedder=embedder)
