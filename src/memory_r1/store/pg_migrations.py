"""Ordered schema migrations for the PostgreSQL store (the same scheme as ``store.migrations``).

Each migration is a small function registered in order with ``@migration`` and recorded by name
in ``_migrations``; never edit or reorder a released one, append a new one. Tables live in the
connection's ``current_schema()`` (``public`` unless the DSN sets ``search_path``).

``migrate`` runs every pending migration in ONE transaction that first takes a
transaction-scoped advisory lock, so two processes opening the same database at once apply each
migration exactly once: the second waits for the lock, then finds nothing left to do. DDL is
transactional in PostgreSQL, so a failed migration leaves no half-built schema.

The vector column needs its dimension in the DDL (an HNSW index needs a typed
``vector(dim)``), so migrations receive the embedder, and the first one records that embedder in
``meta`` in the same transaction that fixes the column's dimension.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg import sql

from memory_r1.errors import ConfigError
from memory_r1.store.base import Embedder

Cursor = psycopg.Cursor[Any]
Migration = Callable[[Cursor, Embedder], None]
MIGRATIONS: list[Migration] = []

#: Key of the advisory lock that serialises migrations within one database.
MIGRATE_LOCK = 0x6D656D5F7231  # "mem_r1"


#: The approximate-search index (``PostgresStore.build_index`` re-creates it the same way).
HNSW_INDEX = "CREATE INDEX idx_memories_hnsw ON memories USING hnsw (embedding vector_cosine_ops)"


def migration(fn: Migration) -> Migration:
    MIGRATIONS.append(fn)
    return fn


def migrate(conn: psycopg.Connection[Any], embedder: Embedder) -> list[str]:
    """Apply pending migrations in one locked transaction; returns the names applied now."""
    applied = []
    with conn.transaction(), conn.cursor() as cur:
        cur.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATE_LOCK,))
        _ensure_vector_extension(cur)
        cur.execute(
            "CREATE TABLE IF NOT EXISTS _migrations"
            " (name TEXT PRIMARY KEY, applied_at DOUBLE PRECISION NOT NULL)"
        )
        cur.execute("SELECT name FROM _migrations")
        done = {row[0] for row in cur.fetchall()}
        for fn in MIGRATIONS:
            if fn.__name__ in done:
                continue
            fn(cur, embedder)
            cur.execute(
                "INSERT INTO _migrations (name, applied_at) VALUES (%s, %s)", (fn.__name__, time.time())
            )
            applied.append(fn.__name__)
    return applied


def _ensure_vector_extension(cur: Cursor) -> None:
    cur.execute("SELECT 1 FROM pg_extension WHERE extname = 'vector'")
    if cur.fetchone() is not None:
        return
    try:
        with cur.connection.transaction():  # a savepoint: a refusal leaves the outer one usable
            cur.execute("CREATE EXTENSION IF NOT EXISTS vector")
    except (psycopg.errors.InsufficientPrivilege, psycopg.errors.UndefinedFile) as exc:
        raise ConfigError(
            "the PostgreSQL store needs the pgvector extension: have a superuser run "
            f"'CREATE EXTENSION vector' in this database, or install pgvector ({exc})"
        ) from exc


@migration
def m001_initial(cur: Cursor, embedder: Embedder) -> None:
    # memories: one row per entry; soft-deleted rows stay (deleted) with their text for audit.
    # seq gives insertion order (SQLite's rowid); norm_text is the casefolded, whitespace-
    # collapsed text that the duplicate-ADD rule compares.
    cur.execute(
        sql.SQL(
            """
            CREATE TABLE memories (
                seq BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
                id TEXT PRIMARY KEY,
                bank TEXT NOT NULL,
                owner TEXT NOT NULL,
                text TEXT NOT NULL,
                norm_text TEXT NOT NULL,
                timestamp TEXT NOT NULL DEFAULT '',
                created_at DOUBLE PRECISION NOT NULL,
                updated_at DOUBLE PRECISION NOT NULL,
                metadata TEXT NOT NULL DEFAULT '{{}}',
                deleted BOOLEAN NOT NULL DEFAULT FALSE,
                embedding vector({dim}) NOT NULL
            )
            """
        ).format(dim=sql.Literal(int(embedder.dim)))
    )
    cur.execute("CREATE INDEX idx_memories_scope ON memories (bank, owner, deleted, seq)")
    # history: append-only log of every operation, NOOP and INVALID included.
    cur.execute(
        """
        CREATE TABLE history (
            id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            bank TEXT NOT NULL,
            memory_id TEXT,
            event TEXT NOT NULL,
            old_text TEXT,
            new_text TEXT,
            owner TEXT,
            created_at DOUBLE PRECISION NOT NULL,
            detail TEXT NOT NULL DEFAULT '{}'
        )
        """
    )
    cur.execute("CREATE INDEX idx_history_bank ON history (bank, memory_id)")
    # meta: which embedder wrote the vectors, fixed together with the column's dimension.
    cur.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    cur.executemany(
        "INSERT INTO meta (key, value) VALUES (%s, %s)",
        [("embedder_name", embedder.name), ("embedder_dim", str(embedder.dim))],
    )


@migration
def m002_markers(cur: Cursor, embedder: Embedder) -> None:
    # markers: units of work (one conversation turn) written in the same transaction as their
    # ops; the primary key makes a second recording of a marker fail (or wait, then fail).
    cur.execute(
        """
        CREATE TABLE markers (
            bank TEXT NOT NULL,
            marker TEXT NOT NULL,
            created_at DOUBLE PRECISION NOT NULL,
            PRIMARY KEY (bank, marker)
        )
        """
    )


@migration
def m003_hnsw_index(cur: Cursor, embedder: Embedder) -> None:
    # Approximate nearest neighbours by cosine distance (pgvector defaults: m=16,
    # ef_construction=64); search filters by bank / owner after the index scan.
    cur.execute(HNSW_INDEX)


@migration
def m004_duplicate_lookup(cur: Cursor, embedder: Embedder) -> None:
    # The duplicate-ADD check looks a normalised text up among the scope's live entries.
    cur.execute("CREATE INDEX idx_memories_norm_text ON memories (bank, owner, norm_text) WHERE NOT deleted")
