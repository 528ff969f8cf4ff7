"""Memory-bank snapshots for Memory Manager episodes (paper B.2 / Alg. 1).

A Manager training tuple is (bank state, turn t, QA pairs linked to t). This module caches the
first two parts, one JSON line per turn, in conversation order::

    {"sample_id", "index", "speakers": [a, b],
     "turn": {"dia_id", "speaker", "text", "session", "date_time", "blip_caption"},
     "memories": [{"id", "text", "owner", "timestamp"}, ...],   # live bank BEFORE turn t
     "facts": [...]}                                             # facts extracted from turn t

The QA links are made later by :class:`memory_r1.rl.envs.manager.ManagerEnv` (from the evidence), so
one cache serves any linking rule.

**Which bank** (``mode``; the paper says "preceding 24 turns" in B.2 and "previous 50 turns"
in Alg. 1, building it with GPT-4o-mini):

* ``"running"`` (default): one bank ingested turn after turn by ``pipeline`` (the inference
  loop, Alg. 3); the snapshot of turn t is that bank just before t is ingested. O(T) model
  calls, and the Manager trains on the same kind of bank it faces at inference. ``window`` is
  ignored in this mode.
* ``"window"``: Alg. 1 literally: for every t an empty bank is filled by ingesting turns
  ``t-window .. t-1`` (``window=50``), then t is ingested for its facts. O(T x window)
  calls (about 30k per LoCoMo conversation with a real model), so it is opt-in.

**Resume**: turns whose ``dia_id`` is already in ``out_path`` are skipped. In running mode
the bank lives in ``pipeline.store`` under ``bank`` (default ``"snap:<sample_id>"``); when the
store's turn markers for it do not equal the cached turns (a fresh in-memory store, or a crash
between the store commit and the file append) the bank is rebuilt from the last cached
snapshot and that last turn is re-ingested (not re-recorded). The pipeline can be any backend.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from memory_r1.types import Conversation, Memory, Turn

if TYPE_CHECKING:
    from memory_r1.agents.pipeline import MemoryR1Pipeline
    from memory_r1.store.base import MemoryStore

log = logging.getLogger(__name__)

Mode = Literal["running", "window"]
_MEM_KEYS = ("id", "text", "owner", "timestamp")


@dataclass(frozen=True)
class Snapshot:
    """One cached turn: the live bank before it (``memories``), the turn and its facts."""

    sample_id: str
    index: int  # position of the turn in ``conv.turns()``
    speakers: tuple[str, str]
    turn: Turn
    memories: tuple[Memory, ...]
    facts: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        t = self.turn
        return {
            "sample_id": self.sample_id,
            "index": self.index,
            "speakers": list(self.speakers),
            "turn": {
                "dia_id": t.dia_id,
                "speaker": t.speaker,
                "text": t.text,
                "session": t.session,
                "date_time": t.date_time,
                "blip_caption": t.blip_caption,
                "listener": t.listener,
            },
            "memories": [{k: getattr(m, k) for k in _MEM_KEYS} for m in self.memories],
            "facts": list(self.facts),
        }

    @classmethod
    def from_json(cls, row: dict[str, Any]) -> Snapshot:
        mems = tuple(
            Memory(m["id"], m["text"], m["owner"], m.get("timestamp", ""), 0.0, 0.0) for m in row["memories"]
        )
        a, b = row["speakers"]
        return cls(
            row["sample_id"], int(row["index"]), (a, b), Turn(**row["turn"]), mems, tuple(row["facts"])
        )


def load_snapshots(path: str | Path) -> list[Snapshot]:
    """Every snapshot in a cache file, file order (a missing file gives ``[]``).

    A last line cut off by a crash is ignored; any other bad line raises ``ValueError``.
    """
    p = Path(path)
    if not p.exists():
        return []
    lines = [ln for ln in p.read_text(encoding="utf-8").splitlines() if ln.strip()]
    out: list[Snapshot] = []
    for i, line in enumerate(lines):
        try:
            out.append(Snapshot.from_json(json.loads(line)))
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            if i == len(lines) - 1:
                log.warning("%s: ignoring a truncated last line (%s)", p, exc)
                break
            raise ValueError(f"{p}:{i + 1}: bad snapshot line: {exc}") from exc
    return out


def _drop_partial_tail(path: Path) -> None:
    """Cut a last line left unfinished by a crash, so new lines start on their own."""
    if path.exists():
        data = path.read_bytes()
        if data and not data.endswith(b"\n"):
            path.write_bytes(data[: data.rfind(b"\n") + 1])


def _live(store: MemoryStore, bank: str) -> tuple[Memory, ...]:
    return tuple(store.list(bank))


def _restore(store: MemoryStore, bank: str, memories: Sequence[Memory]) -> None:
    """Replace ``bank`` by the given memories (new ids; text, owner and timestamp kept)."""
    store.delete_bank(bank)
    if memories:
        store.add_many(bank, [{"text": m.text, "owner": m.owner, "timestamp": m.timestamp} for m in memories])


def build_snapshots(
    conv: Conversation,
    pipeline: MemoryR1Pipeline,
    out_path: str | Path,
    window: int = 50,
    *,
    mode: Mode = "running",
    bank: str | None = None,
    limit: int | None = None,
) -> list[Snapshot]:
    """Ingest ``conv`` with ``pipeline`` and append one snapshot per new turn to ``out_path``.

    ``pipeline`` is a :class:`~memory_r1.agents.pipeline.MemoryR1Pipeline` (its store must
    offer ``list``, ``add_many``, ``delete_bank`` and ``markers``, as ``SQLiteStore`` does).
    ``limit`` stops after that many turns of the conversation (smoke runs). Returns every
    snapshot of ``conv`` now in the file (cached and new), turn order.
    """
    if mode not in ("running", "window"):
        raise ValueError(f"mode must be 'running' or 'window', not {mode!r}")
    if window < 1:
        raise ValueError("window must be >= 1")
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    _drop_partial_tail(out)
    cached = sorted((s for s in load_snapshots(out) if s.sample_id == conv.sample_id), key=lambda s: s.index)
    done = {s.turn.dia_id for s in cached}
    turns = conv.turns()[:limit]
    store, bank = pipeline.store, bank or f"snap:{conv.sample_id}"
    if mode == "running" and store.markers(bank) != done:
        if not cached:  # a bank without a cache: start over
            store.delete_bank(bank)
        else:
            last = cached[-1]
            log.info("rebuilding bank %s from the snapshot of %s", bank, last.turn.dia_id)
            _restore(store, bank, last.memories)
            for s in cached[:-1]:  # markers only, so the next resume finds the bank consistent
                store.apply_turn(bank, [], owner=s.turn.speaker, marker=s.turn.dia_id)
            pipeline.ingest_turn(bank, last.turn)
    with open(out, "a", encoding="utf-8") as f:
        for i, turn in enumerate(turns):
            if turn.dia_id in done:
                continue
            if mode == "window":
                store.delete_bank(bank)
                for prev in turns[max(0, i - window) : i]:
                    pipeline.ingest_turn(bank, prev)
            before = _live(store, bank)
            result = pipeline.ingest_turn(bank, turn)
            snap = Snapshot(conv.sample_id, i, conv.speakers, turn, before, tuple(result.facts))
            f.write(json.dumps(snap.to_json(), ensure_ascii=False) + "\n")
            f.flush()
            done.add(turn.dia_id)
        if mode == "window":
            store.delete_bank(bank)
    return sorted((s for s in load_snapshots(out) if s.sample_id == conv.sample_id), key=lambda s: s.index)
