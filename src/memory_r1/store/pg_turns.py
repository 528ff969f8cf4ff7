"""The write side of :class:`memory_r1.store.postgres.PostgresStore`: row writes inside the
caller's transaction, and ``apply`` / ``apply_turn``, a turn's ops and its marker in one
transaction, safe against concurrent writers in other processes.

Order inside the transaction, the same in every process so that turns never deadlock:

1. one advisory lock per distinct (bank, owner, normalised ADD text), by key;
2. row locks on the UPDATE / DELETE targets, by id;
3. the marker row (its primary key refuses a second recording; a concurrent one waits);
4. the ops in order, each one history row. An ADD re-checks for a live duplicate *after* its
   lock is held; READ COMMITTED gives that statement a fresh snapshot, so it sees a duplicate
   that a concurrent turn committed while this one waited.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from memory_r1.errors import NotFoundError, StoreError
from memory_r1.store.postgres_reads import MEMORY_COLUMNS, Cursor, PostgresReads, memory_from_row, to_json
from memory_r1.types import HistoryRow, Memory, Op, OpKind

#: First key of the two-key advisory locks that guard duplicate ADDs (the migration lock uses
#: the one-bigint form, a separate key space).
DUPLICATE_LOCK_CLASS = 0x6D72  # "mr"


def normalise(text: str) -> str:
    """The text the duplicate-ADD rule compares: casefolded, runs of whitespace collapsed."""
    return " ".join(text.casefold().split())


def text_lock_key(bank: str, owner: str, text: str) -> int:
    """A signed 32-bit advisory-lock key for (bank, owner, normalised text)."""
    raw = "\x1f".join((bank, owner, normalise(text))).encode()
    return int.from_bytes(hashlib.blake2b(raw, digest_size=4).digest(), "little", signed=True)


class PostgresWrites(PostgresReads):
    """Row writes inside the caller's transaction, and the manager-operation writes; the
    store provides ``_tx`` and ``_embed``."""

    def _log(
        self,
        cur: Cursor,
        bank: str,
        event: OpKind,
        memory_id: str | None,
        old_text: str | None,
        new_text: str | None,
        owner: str | None,
        detail: Mapping[str, Any] | None = None,
    ) -> HistoryRow:
        """Append one history row (inside the caller's transaction) and return it."""
        now, detail_json = time.time(), to_json(detail)
        cur.execute(
            "INSERT INTO history (bank, memory_id, event, old_text, new_text, owner, created_at, detail)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
            (bank, memory_id, event.value, old_text, new_text, owner, now, detail_json),
        )
        row = cur.fetchone()
        assert row is not None
        return HistoryRow(
            int(row[0]), bank, memory_id, event, old_text, new_text, owner, now, json.loads(detail_json)
        )

    def _live(self, cur: Cursor, bank: str, memory_id: str | None, lock: bool = False) -> Memory | None:
        cur.execute(
            f"SELECT {MEMORY_COLUMNS} FROM memories WHERE bank = %s AND id = %s AND NOT deleted"
            + (" FOR UPDATE" if lock else ""),
            (bank, memory_id),
        )
        row = cur.fetchone()
        return None if row is None else memory_from_row(row)

    def _live_or_raise(self, cur: Cursor, bank: str, memory_id: str, owner: str | None = None) -> Memory:
        old = self._live(cur, bank, memory_id, lock=True)
        if old is None or (owner is not None and old.owner != owner):
            scope = f"bank {bank!r}" + (f" for owner {owner!r}" if owner is not None else "")
            raise NotFoundError(f"no memory {memory_id!r} in {scope}")
        return old

    # -- writes: each takes precomputed vectors and runs inside the caller's transaction -----

    def _new_memory(self, item: Mapping[str, Any]) -> tuple[Memory, str]:
        now, meta = time.time(), to_json(item.get("metadata"))
        mem = Memory(
            uuid.uuid4().hex,
            item["text"],
            item["owner"],
            item.get("timestamp") or "",
            now,
            now,
            json.loads(meta),
        )
        return mem, meta

    def _insert(
        self,
        cur: Cursor,
        bank: str,
        item: Mapping[str, Any],
        vec: np.ndarray,
        detail: Mapping[str, Any] | None,
    ) -> tuple[Memory, HistoryRow]:
        mem, meta = self._new_memory(item)
        cur.execute(INSERT_MEMORY, memory_params(bank, mem, meta, vec))
        return mem, self._log(cur, bank, OpKind.ADD, mem.id, None, mem.text, mem.owner, detail)

    def _replace(
        self,
        cur: Cursor,
        bank: str,
        old: Memory,
        text: str,
        timestamp: str | None,
        vec: np.ndarray,
        detail: Mapping[str, Any] | None,
    ) -> tuple[Memory, HistoryRow]:
        now, ts = time.time(), old.timestamp if timestamp is None else timestamp
        cur.execute(
            "UPDATE memories SET text = %s, norm_text = %s, timestamp = %s, updated_at = %s,"
            " embedding = %s WHERE id = %s",
            (text, normalise(text), ts, now, vec, old.id),
        )
        new = Memory(old.id, text, old.owner, ts, old.created_at, now, old.metadata)
        return new, self._log(cur, bank, OpKind.UPDATE, old.id, old.text, text, old.owner, detail)

    def _soft_delete(
        self, cur: Cursor, bank: str, old: Memory, detail: Mapping[str, Any] | None
    ) -> tuple[Memory, HistoryRow]:
        now = time.time()
        cur.execute("UPDATE memories SET deleted = TRUE, updated_at = %s WHERE id = %s", (now, old.id))
        gone = Memory(
            old.id, old.text, old.owner, old.timestamp, old.created_at, now, old.metadata, deleted=True
        )
        return gone, self._log(cur, bank, OpKind.DELETE, old.id, old.text, None, old.owner, detail)

    def apply(
        self,
        bank: str,
        op: Op,
        owner: str,
        timestamp: str = "",
        metadata: Mapping[str, Any] | None = None,
    ) -> HistoryRow:
        """Carry out one manager operation for ``owner``; returns its (single) history row.

        ADD stores ``metadata`` on the new entry; for every kind a non-empty ``metadata`` is also
        copied into the history row's ``detail["metadata"]``. A non-empty ``timestamp`` replaces
        an UPDATEd entry's timestamp.
        """
        return self.apply_turn(bank, [op], owner, timestamp, metadata)[0]

    def apply_turn(
        self,
        bank: str,
        ops: Sequence[Op],
        owner: str,
        timestamp: str = "",
        metadata: Mapping[str, Any] | None = None,
        marker: str | None = None,
    ) -> list[HistoryRow]:
        """``apply`` each op in order, and record ``marker`` as done, in one transaction.

        Ops see the effects of earlier ones. An ADD whose normalised text equals a live entry
        of this bank and owner becomes a NOOP row naming it. A marker already recorded for
        ``bank`` raises ``StoreError`` and applies nothing.
        """
        detail = {"metadata": dict(metadata)} if metadata else {}
        texts = list(
            dict.fromkeys(
                op.text for op in ops if OpKind(op.kind) in (OpKind.ADD, OpKind.UPDATE) and op.text.strip()
            )
        )
        vectors = dict(zip(texts, self._embed(texts))) if texts else {}
        with self._tx() as cur:
            _lock_turn(cur, bank, owner, ops)
            if marker is not None:
                cur.execute(
                    "INSERT INTO markers (bank, marker, created_at) VALUES (%s, %s, %s) ON CONFLICT DO NOTHING",
                    (bank, marker, time.time()),
                )
                if cur.rowcount == 0:
                    raise StoreError(f"marker {marker!r} is already recorded in bank {bank!r}")
            item = {"owner": owner, "timestamp": timestamp, "metadata": metadata}
            return [self._apply_one(cur, bank, op, owner, item, detail, vectors) for op in ops]

    def _apply_one(
        self,
        cur: Cursor,
        bank: str,
        op: Op,
        owner: str,
        item: Mapping[str, Any],
        detail: Mapping[str, Any],
        vectors: Mapping[str, np.ndarray],
    ) -> HistoryRow:
        kind = OpKind(op.kind)
        error, target = self._check(cur, bank, kind, op, owner)
        if error is not None:
            info = {"error": error, "rejected": kind.value, "raw": op.raw, **detail}
            return self._note(cur, bank, OpKind.INVALID, op, owner, info)
        if kind is OpKind.ADD:
            dup = _live_duplicate(cur, bank, owner, op.text)
            if dup is not None:
                info = {"duplicate_of": dup.id, **detail}
                return self._log(cur, bank, OpKind.NOOP, dup.id, None, op.text, owner, info)
            return self._insert(cur, bank, {**item, "text": op.text}, vectors[op.text], detail)[1]
        if kind is OpKind.UPDATE and target is not None:
            ts = item["timestamp"] or None
            return self._replace(cur, bank, target, op.text, ts, vectors[op.text], detail)[1]
        if kind is OpKind.DELETE and target is not None:
            return self._soft_delete(cur, bank, target, detail)[1]
        if kind is OpKind.NOOP:
            return self._note(cur, bank, OpKind.NOOP, op, owner, detail)
        # an INVALID op from the parser: keep its reason and the raw output
        return self._note(cur, bank, OpKind.INVALID, op, owner, {"error": op.error, "raw": op.raw, **detail})

    def _check(
        self, cur: Cursor, bank: str, kind: OpKind, op: Op, owner: str
    ) -> tuple[str | None, Memory | None]:
        """(why ``op`` cannot be carried out for ``owner`` or None, the live target if any)."""
        if kind in (OpKind.ADD, OpKind.UPDATE) and not op.text.strip():
            return f"{kind.value} with empty text", None
        if kind not in (OpKind.UPDATE, OpKind.DELETE):
            return None, None
        target = self._live(cur, bank, op.memory_id)
        if target is None:
            return f"{kind.value} of unknown or deleted memory id {op.memory_id!r}", None
        if target.owner != owner:  # scope is enforced here, not left to the prompt
            return f"{kind.value} of a memory owned by {target.owner!r}, not {owner!r}", None
        return None, target

    def _note(
        self,
        cur: Cursor,
        bank: str,
        event: OpKind,
        op: Op,
        owner: str,
        detail: Mapping[str, Any],
    ) -> HistoryRow:
        """A history row that changes no memory (NOOP, INVALID)."""
        return self._log(cur, bank, event, op.memory_id, op.old_text, op.text or None, owner, detail)


def _lock_turn(cur: Cursor, bank: str, owner: str, ops: Sequence[Op]) -> None:
    """Steps 1 and 2 of the module docstring: advisory locks by key, then target rows by id."""
    adds = {op.text for op in ops if OpKind(op.kind) is OpKind.ADD and op.text.strip()}
    for key in sorted({text_lock_key(bank, owner, text) for text in adds}):
        cur.execute("SELECT pg_advisory_xact_lock(%s::int, %s::int)", (DUPLICATE_LOCK_CLASS, key))
    ids = sorted(
        {
            op.memory_id
            for op in ops
            if OpKind(op.kind) in (OpKind.UPDATE, OpKind.DELETE) and op.memory_id is not None
        }
    )
    if ids:
        cur.execute(
            "SELECT id FROM memories WHERE bank = %s AND id = ANY(%s) ORDER BY id FOR UPDATE", (bank, ids)
        )
        cur.fetchall()


def _live_duplicate(cur: Cursor, bank: str, owner: str, text: str) -> Memory | None:
    cur.execute(
        f"SELECT {MEMORY_COLUMNS} FROM memories WHERE bank = %s AND owner = %s AND norm_text = %s"
        " AND NOT deleted ORDER BY seq LIMIT 1",
        (bank, owner, normalise(text)),
    )
    row = cur.fetchone()
    return None if row is None else memory_from_row(row)


INSERT_MEMORY = (
    "INSERT INTO memories (id, bank, owner, text, norm_text, timestamp, created_at, updated_at, metadata,"
    " deleted, embedding) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, FALSE, %s)"
)


def memory_params(bank: str, mem: Memory, meta: str, vec: np.ndarray) -> tuple[Any, ...]:
    return (
        mem.id,
        bank,
        mem.owner,
        mem.text,
        normalise(mem.text),
        mem.timestamp,
        mem.created_at,
        mem.updated_at,
        meta,
        vec,
    )
