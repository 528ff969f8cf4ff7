"""Parse MSC-Self-Instruct (MemGPT's Multi-Session Chat probe set) into typed conversations (L1).

Hugging Face ``MemGPT/MSC-Self-Instruct`` (rev ``5138f41``, Apache-2.0) ships
``msc_self_instruct.jsonl``: 500 records built from Facebook's Multi-Session Chat, each with
``previous_dialogs`` (earlier sessions: ``{"personas", "dialog": [{"text", "id"?}, ...],
"time_num", "time_unit", "time_back"?}``), ``dialog`` (the latest session, turns with ``id``
``"Speaker 1"``/``"Speaker 2"`` and ``text``), ``personas``, ``init_personas``, ``metadata`` and
``self_instruct`` = ``{"B": question, "A": answer}``. The file is user-supplied; nothing ships.

Contract, so the LoCoMo runner evaluates it zero-shot:

* One record -> one :class:`~memory_r1.types.Conversation` (its own memory bank), ``sample_id``
  ``"msc-{record index}"``, speakers ``"Speaker 1"`` and ``"Speaker 2"``.
* Sessions: the ``previous_dialogs`` in order, then (``include_current=True``, the default)
  the record's own ``dialog`` as the last one, since the question may refer to it. A turn's
  speaker is its ``id`` when that reads "speaker 1/2" (any case, ``_`` allowed), else the
  speakers alternate starting with Speaker 1 (previous sessions carry no ids).
* MSC has no calendar dates: ``date_time`` is ``"session N"``, plus the record's ``time_back``
  text when a previous session has one.
* One :class:`~memory_r1.types.QA` (index 0, category ``"msc"``, no evidence): question
  ``self_instruct.B``, answer ``str(self_instruct.A)``.
* JSONL (one record a line, blank lines skipped) or a JSON file holding one list of records.
  A malformed file raises :class:`~memory_r1.errors.DataError` naming the file and a
  field path such as ``[7].previous_dialogs[2].dialog[4].text`` (``[7]`` = record index).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from memory_r1.data.locomo import _need
from memory_r1.errors import DataError
from memory_r1.types import QA, Conversation, Session, Turn

SPEAKERS = ("Speaker 1", "Speaker 2")
CATEGORY = "msc"
_SPEAKER_ID = re.compile(r"speaker[\s_]*([12])", re.IGNORECASE)


def load_msc(path: str | os.PathLike[str], include_current: bool = True) -> list[Conversation]:
    """Load and validate an MSC-Self-Instruct file (JSONL or a JSON list), in file order."""
    file = Path(path)
    if not file.is_file():
        raise DataError(file, "<file>", "MSC-Self-Instruct file not found")
    return parse_msc(read_records(file), file, include_current)


def read_records(file: Path) -> list[Any]:
    """The decoded records of a JSONL file, or of a JSON file holding one list."""
    try:
        text = file.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(file, "<file>", f"not UTF-8 text: {exc}") from None
    try:
        whole = json.loads(text)
    except json.JSONDecodeError:
        whole = None  # JSONL (several values), or broken: read line by line to say where
    if isinstance(whole, list):
        return whole
    records = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise DataError(file, f"[{len(records)}]", f"line {lineno}: not valid JSON: {exc}") from None
    return records


def parse_msc(
    records: list[Any], path: object = "<memory>", include_current: bool = True
) -> list[Conversation]:
    """Parse decoded MSC-Self-Instruct records; ``path`` only labels errors."""
    return [_parse_record(r, i, path, include_current) for i, r in enumerate(records)]


def _parse_record(record: Any, i: int, path: object, include_current: bool) -> Conversation:
    where = f"[{i}]"
    sample_id = f"msc-{i}"
    probe = _need(record, "self_instruct", dict, where, path)
    question = _need(probe, "B", str, f"{where}.self_instruct", path)
    answer = _need(probe, "A", (str, int, float), f"{where}.self_instruct", path)
    previous = _need(record, "previous_dialogs", list, where, path)

    dialogs: list[tuple[Any, str, str]] = []  # (turn list, field path, time_back)
    for k, prev in enumerate(previous):
        pw = f"{where}.previous_dialogs[{k}]"
        turns = _need(prev, "dialog", list, pw, path)
        time_back = _optional_str(prev, "time_back", pw, path)
        dialogs.append((turns, f"{pw}.dialog", (time_back or "").strip()))
    if include_current and "dialog" in record:
        dialogs.append((_need(record, "dialog", list, where, path), f"{where}.dialog", ""))

    sessions = []
    for n, (turns, dw, time_back) in enumerate(dialogs, start=1):
        date = f"session {n}, {time_back}" if time_back else f"session {n}"
        sessions.append(Session(index=n, date_time=date, turns=_parse_turns(turns, n, date, dw, path)))
    qa = QA(sample_id, 0, question, str(answer), CATEGORY, ())
    return Conversation(sample_id, SPEAKERS[0], SPEAKERS[1], tuple(sessions), (qa,))


def _parse_turns(raw: list[Any], n: int, date: str, where: str, path: object) -> tuple[Turn, ...]:
    turns = []
    for i, t in enumerate(raw):
        tw = f"{where}[{i}]"
        text = _need(t, "text", str, tw, path)
        speaker_id = _optional_str(t, "id", tw, path)
        turns.append(Turn(f"D{n}:{i + 1}", speaker_of(speaker_id, i), text, n, date))
    return tuple(turns)


def _optional_str(obj: dict[str, Any], key: str, where: str, path: object) -> str | None:
    """``obj[key]`` if it is a str, None if absent or None, else a DataError naming ``where.key``."""
    value = obj.get(key)
    if value is not None and not isinstance(value, str):
        raise DataError(path, f"{where}.{key}", f"expected str, got {type(value).__name__}")
    return value


def speaker_of(speaker_id: str | None, position: int) -> str:
    """``"Speaker 1"``/``"Speaker 2"`` from a turn's ``id``, else by alternation from position 0.

    >>> speaker_of("speaker_2", 0), speaker_of(None, 0), speaker_of(None, 3), speaker_of("bot", 2)
    ('Speaker 2', 'Speaker 1', 'Speaker 2', 'Speaker 1')
    """
    m = _SPEAKER_ID.fullmatch((speaker_id or "").strip())
    return SPEAKERS[int(m.group(1)) - 1] if m else SPEAKERS[position % 2]
