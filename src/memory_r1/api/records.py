"""What the memory API's calls take and return, in Mem0's shapes (pure functions).

* Owners: a call names whose memories it touches with ``user_id`` / ``agent_id`` / ``run_id``.
  The store's owner is the first given, prefixed: ``"user:alice"``, else ``"agent:…"``, else
  ``"run:…"``; every id given is also kept in the memory's metadata, so ``get_all(user_id=
  "alice", run_id="r1")`` narrows alice's memories to that run.
* Items: ``{"id", "memory", "hash", "metadata", "created_at", "updated_at", "owner",
  "user_id"?, "agent_id"?, "run_id"?, "score"?}`` (times ISO 8601 UTC; score = cosine, higher =
  more similar).
* History rows: ``{"id", "memory_id", "event", "old_memory", "new_memory", "created_at",
  "owner", "detail"}`` with Mem0's event names (``NONE`` for NOOP) and ``INVALID`` for an
  operation the Manager got wrong (kept, never dropped).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from memory_r1.errors import InvalidInput
from memory_r1.types import HistoryRow, Memory, OpKind

ID_KEYS = ("user_id", "agent_id", "run_id")
_PREFIX = {"user_id": "user", "agent_id": "agent", "run_id": "run"}
#: history-row keys that are bookkeeping, not the user's metadata
_INTERNAL = {"dia_id", "session", *ID_KEYS}


def scope_ids(user_id: str | None, agent_id: str | None, run_id: str | None) -> dict[str, str]:
    """The ids a call gave, checked: each a non-empty string."""
    ids = {"user_id": user_id, "agent_id": agent_id, "run_id": run_id}
    out: dict[str, str] = {}
    for key, value in ids.items():
        if value is None:
            continue
        if not isinstance(value, str) or not value.strip():
            raise InvalidInput(f"{key} must be a non-empty string, got {value!r}")
        out[key] = value
    return out


def owner_of(ids: Mapping[str, str]) -> str:
    """The store owner of a call's ids; none given is an error (as in Mem0)."""
    for key in ID_KEYS:
        if key in ids:
            return f"{_PREFIX[key]}:{ids[key]}"
    raise InvalidInput("at least one of user_id, agent_id or run_id is required")


def parse_messages(messages: Any) -> list[dict[str, str]]:
    """A string or a list of ``{"role", "content"}`` -> checked messages (system ones kept out
    of memory by the caller)."""
    if isinstance(messages, str):
        messages = [{"role": "user", "content": messages}]
    if isinstance(messages, Mapping):
        messages = [messages]
    if not isinstance(messages, Sequence) or isinstance(messages, (str, bytes)) or not messages:
        raise InvalidInput("messages must be a non-empty string or a list of {role, content} objects")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, Mapping) or not isinstance(m.get("content"), str):
            raise InvalidInput(f"messages[{i}] must be an object with a string 'content'")
        role = m.get("role", "user")
        if role not in ("user", "assistant", "system"):
            raise InvalidInput(f"messages[{i}].role must be user, assistant or system, got {role!r}")
        if m["content"].strip():
            out.append({"role": str(role), "content": m["content"]})
    if not out:
        raise InvalidInput("messages contain no text")
    return out


def check_metadata(metadata: Any) -> dict[str, Any]:
    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping):
        raise InvalidInput(f"metadata must be an object, got {type(metadata).__name__}")
    clash = sorted(_INTERNAL & set(metadata))
    if clash:
        raise InvalidInput(f"metadata may not set {', '.join(clash)}: pass them as arguments")
    return dict(metadata)


def matches(memory: Memory, ids: Mapping[str, str], filters: Mapping[str, Any] | None) -> bool:
    """Whether ``memory`` carries every given id and every ``filters`` key = value."""
    meta = memory.metadata
    return all(meta.get(k) == v for k, v in ids.items()) and all(
        meta.get(k) == v for k, v in (filters or {}).items()
    )


def iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat()


def item(memory: Memory, score: float | None = None) -> dict[str, Any]:
    """A memory in Mem0's result shape."""
    meta = dict(memory.metadata)
    out: dict[str, Any] = {
        "id": memory.id,
        "memory": memory.text,
        "hash": hashlib.md5(memory.text.encode("utf-8")).hexdigest(),
        "metadata": {k: v for k, v in meta.items() if k not in _INTERNAL},
        "created_at": iso(memory.created_at),
        "updated_at": iso(memory.updated_at),
        "owner": memory.owner,
    }
    out.update({k: meta[k] for k in ID_KEYS if k in meta})
    if score is not None:
        out["score"] = score
    return out


def event_name(kind: OpKind) -> str:
    return "NONE" if kind is OpKind.NOOP else kind.value


def history_row(row: HistoryRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "memory_id": row.memory_id,
        "event": event_name(row.event),
        "old_memory": row.old_text,
        "new_memory": row.new_text,
        "created_at": iso(row.created_at),
        "owner": row.owner,
        "detail": dict(row.detail),
    }


def operation(row: HistoryRow) -> dict[str, Any]:
    """One operation an ``add`` applied, as Mem0 returns it (plus ``INVALID`` with its error)."""
    event = event_name(row.event)
    text = row.old_text if row.event is OpKind.DELETE else (row.new_text or row.old_text)
    out: dict[str, Any] = {"id": row.memory_id, "memory": text, "event": event}
    if row.event is OpKind.UPDATE:
        out["previous_memory"] = row.old_text
    if row.event is OpKind.INVALID:
        out["error"] = row.detail.get("error")
    return out
