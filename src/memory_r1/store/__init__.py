"""Storage layer (L1): memory stores and embedders, looked up by name.

``STORES`` and ``embedders.EMBEDDERS`` map a name to ``"module:Class"``; the class is imported
only when chosen, so importing this package pulls in neither torch nor sentence-transformers
(nor psycopg). Stores: "sqlite" (``store.sqlite``, the embedded default) and "postgres"
(``store.postgres``: PostgreSQL + pgvector; ``open_store`` picks it for a ``postgresql://`` DSN).

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
STORES: dict[str, str] = {
    "sqlite": "memory_r1.store.sqlite:SQLiteStore",
    "postgres": "memory_r1.store.postgres:PostgresStore",
}

__all__ = [
    "EMBEDDERS",
    "STORES",
    "Embedder",
    "MemoryStore",
    "create_embedder",
    "create_store",
    "is_dsn",
    "open_store",
]


def is_dsn(target: str | Path) -> bool:
    """Whether ``target`` is a PostgreSQL URI (``postgresql://`` or ``postgres://``)."""
    return isinstance(target, str) and target.startswith(("postgresql://", "postgres://"))


def create_store(name: str, **kwargs: Any) -> MemoryStore:
    """Build the store registered as ``name``; unknown names raise ``UnknownModelError``.

    ``create_store("sqlite", path="memories.db", embedder=create_embedder("minilm"))``
    """
    store: MemoryStore = resolve(STORES, name, "store")(**kwargs)
    return store


def open_store(target: str | Path, embedder: Embedder, kind: str | None = None) -> MemoryStore:
    """Open (creating if needed) the ``kind`` store at ``target``.

    Without ``kind``, a ``postgresql://`` or ``postgres://`` URI opens the "postgres" store (a
    libpq DSN; needs the ``postgres`` extra) and anything else the "sqlite" store (a file path,
    or ``":memory:"`` for a throwaway).
    """
    if kind is None:
        kind = "postgres" if is_dsn(target) else "sqlite"
    return create_store(kind, path=target, embedder=embedder)
