"""Ordered schema migrations for the SQLite store (after simonw/llm's ``migrations.py``).

Each migration is a small function registered in order with ``@migration``; ``migrate(conn)``
applies, each in its own transaction, those whose name is not yet in ``_migrations``. Never edit
or reorder a released migration: append a new one, so old files upgrade in place.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable

Migration = Callable[[sqlite3.Connection], None]
MIGRATIONS: list[Migration] = []


def migration(fn: Migration) -> Migration:
    MIGRATIONS.append(fn)
    return fn


def migrate(conn: sqlite3.Connection) -> None:
    """Apply pending migrations. ``conn`` must be in autocommit mode (``isolation_level=None``)."""
    conn.execute("CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied_at REAL NOT NULL)")
    done = {row[0] for row in conn.execute("SELECT name FROM _migrations")}
    for fn in MIGRATIONS:
        if fn.__name__ in done:
            continue
        conn.execute("BEGIN IMMEDIATE")
        try:
            # Re-check under the write lock: another process may have just applied it.
            applied = conn.execute("SELECT 1 FROM _migrations WHERE name = ?", (fn.__name__,))
            if applied.fetchone() is None:
                fn(conn)
                conn.execute(
                    "INSERT INTO _migrations (name, applied_at) VALUES (?, ?)",
                    (fn.__name__, time.time()),
                )
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")


@migration
def m001_initial(conn: sqlite3.Connection) -> None:
    # memories: one row per entry, soft-deleted rows kept (deleted=1) with their text for audit.
    # embedding: float32 little-endian bytes of an L2-normalised vector of length dim.
    conn.execute(
        """
        CREATE TABLE memories (
            id TEXT PRIMARY KEY,
            bank TEXT NOT NULL,
            owner TEXT NOT NULL,
            text TEXT NOT NULL,
            timestamp TEXT NOT NULL DEFAULT '',
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL,
            metadata TEXT NOT NULL DEFAULT '{}',
            deleted INTEGER NOT NULL DEFAULT 0,
            embedding BLOB NOT NULL,
            dim INTEGER NOT NULL
        )
        """
    )
    conn.execute("CREATE INDEX idx_memories_scope ON memories (bank, owner, deleted)")
    # history: append-only log of every operation, NOOP and INVALID included.
    conn.execute(
        """
        CREATE TABLE history (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            bank TEXT NOT NULL,
            memory_id TEXT,
            event TEXT NOT NULL,
            old_text TEXT,
            new_text TEXT,
            owner TEXT,
            created_at REAL NOT NULL,
            detail TEXT NOT NULL DEFAULT '{}'
        )
        """
    )
    conn.execute("CREATE INDEX idx_history_bank ON history (bank, memory_id)")
    # meta: key/value facts about the file itself (which embedder wrote its vectors).
    conn.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")


@migration
def m002_markers(conn: sqlite3.Connection) -> None:
    # markers: units of work (e.g. one conversation turn) whose ops were applied, written in the
    # same transaction as those ops, so an interrupted ingestion resumes without doubling them.
    conn.execute(
        """
        CREATE TABLE markers (
            bank TEXT NOT NULL,
            marker TEXT NOT NULL,
            created_at REAL NOT NULL,
            PRIMARY KEY (bank, marker)
        )
        """
    )


def normalise(text: str) -> str:
    """The duplicate key of a memory text: casefolded, runs of whitespace collapsed to one
    space, ends stripped (``"Alice  moved\\tto Paris"`` and ``"alice moved to paris"`` match)."""
    return " ".join(text.casefold().split())


@migration
def m003_change_seq(conn: sqlite3.Connection) -> None:
    # seq: a change sequence, strictly increasing across the whole file, set from the counter
    # row inside the writer transaction on every insert, update and soft delete. Writers are
    # serialised (BEGIN IMMEDIATE), so a reader that has seen seq S has seen every change <= S
    # and can refresh a cached scope by reading only the rows whose seq is higher.
    conn.execute("ALTER TABLE memories ADD COLUMN seq INTEGER NOT NULL DEFAULT 0")
    conn.execute("UPDATE memories SET seq = rowid")  # backfill: unique, in insertion order
    conn.execute("CREATE INDEX idx_memories_seq ON memories (bank, seq)")
    conn.execute("CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL)")
    conn.execute("INSERT INTO counters (name, value) SELECT 'change', COALESCE(MAX(seq), 0) FROM memories")
    # bank_drops: hard deletes leave no row to carry a seq, so ``delete_bank`` records the seq
    # at which a bank was emptied; a scope cached before it is rebuilt from scratch.
    conn.execute("CREATE TABLE bank_drops (bank TEXT PRIMARY KEY, seq INTEGER NOT NULL)")


@migration
def m004_normalised_text(conn: sqlite3.Connection) -> None:
    # norm: ``normalise(text)``, so the writer transaction of ``apply_turn`` finds a live
    # duplicate of an ADD with one index lookup instead of scanning the owner's memories.
    conn.create_function("memory_r1_normalise", 1, normalise, deterministic=True)
    conn.execute("ALTER TABLE memories ADD COLUMN norm TEXT NOT NULL DEFAULT ''")
    conn.execute("UPDATE memories SET norm = memory_r1_normalise(text)")
    conn.execute("CREATE INDEX idx_memories_norm ON memories (bank, owner, norm) WHERE deleted = 0")
