"""Parse LongMemEval (Wu et al. 2024, ``xiaowu0162/LongMemEval``) into typed conversations (L1).

The files (``longmemeval_s.json``, ``_m``, ``_oracle``, and the ``_cleaned`` re-releases) are
user-supplied; nothing is shipped. Each is one JSON list of 500 instances with the fields the
LongMemEval README documents: ``question_id`` (suffix ``_abs`` = abstention),
``question_type``, ``question``, ``answer``, ``question_date``, ``haystack_session_ids``,
``haystack_dates``, ``haystack_sessions`` (sessions as lists of
``{"role": "user"|"assistant", "content": str, "has_answer"?: bool}``) and
``answer_session_ids``.

Contract, so the LoCoMo runner evaluates it zero-shot:

* One instance -> one :class:`~memory_r1.types.Conversation` (its own memory bank):
  ``sample_id`` = ``question_id``, speakers ``"user"`` and ``"assistant"`` (the roles).
* Sessions are put in chronological order of ``haystack_dates`` when every date parses as
  ``"2023/05/20 (Sat) 02:21"`` (the oracle file is not sorted; a memory that UPDATEs needs the
  order), else kept in file order; the sort is stable. ``Session.index`` is the 1-based position
  after sorting; turns get dia_id ``"D{session}:{i}"`` (i 1-based) and the session's date string.
* One :class:`~memory_r1.types.QA` (index 0) with ``category`` = ``question_type`` (a string,
  its own display name), or ``"abstention"`` when ``question_id`` ends with ``_abs``. Answers
  are ``str()``-ed (some are numbers).
* Evidence = the dia_ids of the turns marked ``has_answer: true``; when none is marked (e.g.
  preference questions), all turns of the sessions listed in ``answer_session_ids``.
* ``question_date`` is validated but not carried: :class:`~memory_r1.types.QA` has no date.
* A malformed file raises :class:`~memory_r1.errors.DataError` naming the file and a field path
  such as ``[3].haystack_sessions[2][5].role``.
"""

from __future__ import annotations

import logging
import os
from datetime import datetime
from pathlib import Path
from typing import Any

from memory_r1.data.locomo import _need, parse_each, read_json
from memory_r1.errors import DataError
from memory_r1.types import QA, Conversation, Session, Turn

log = logging.getLogger(__name__)

ROLES = ("user", "assistant")
QUESTION_TYPES = (
    "single-session-user",
    "single-session-assistant",
    "single-session-preference",
    "multi-session",
    "knowledge-update",
    "temporal-reasoning",
)
ABSTENTION = "abstention"
DATE_FORMAT = "%Y/%m/%d (%a) %H:%M"


def load_longmemeval(path: str | os.PathLike[str]) -> list[Conversation]:
    """Load and validate a LongMemEval JSON file (one Conversation per instance, file order)."""
    file = Path(path)
    return parse_longmemeval(read_json(file, "LongMemEval file not found"), file)


def parse_longmemeval(raw: Any, path: object = "<memory>") -> list[Conversation]:
    """Parse already-decoded LongMemEval JSON (a list of instances); ``path`` labels errors."""
    return parse_each(raw, path, "instances", "question_id", _parse_instance)


def category_of(question_id: str, question_type: str) -> str:
    """The QA category: ``"abstention"`` for ``*_abs`` ids, else the question type.

    >>> category_of("gpt4_2655b836_abs", "temporal-reasoning"), category_of("e47becba", "multi-session")
    ('abstention', 'multi-session')
    """
    return ABSTENTION if question_id.endswith("_abs") else question_type


def _parse_instance(item: Any, where: str, path: object) -> Conversation:
    qid = _need(item, "question_id", str, where, path)
    qtype = _need(item, "question_type", str, where, path)
    if not qtype.strip() or qtype.strip().isdigit() or qtype.strip() == "overall":
        raise DataError(path, f"{where}.question_type", f"{qtype!r} cannot name a category")
    if qtype not in QUESTION_TYPES:
        log.warning("%s: %s.question_type: unknown type %r kept as a category", path, where, qtype)
    question = _need(item, "question", str, where, path)
    answer = _need(item, "answer", (str, int, float), where, path)
    if "question_date" in item and not isinstance(item["question_date"], str):
        raise DataError(path, f"{where}.question_date", "expected str")
    dates = _str_list(item, "haystack_dates", where, path)
    session_ids = _str_list(item, "haystack_session_ids", where, path)
    sessions_raw = _need(item, "haystack_sessions", list, where, path)
    answer_ids = _str_list(item, "answer_session_ids", where, path, required=False)
    for name, values in (("haystack_dates", dates), ("haystack_session_ids", session_ids)):
        if len(values) != len(sessions_raw):
            problem = f"{len(values)} entries for {len(sessions_raw)} haystack_sessions"
            raise DataError(path, f"{where}.{name}", problem)

    order = _chronological(dates)
    sessions: list[Session] = []
    evidence: list[str] = []
    by_session_id: dict[str, list[str]] = {}
    for n, k in enumerate(order, start=1):
        turns = _parse_session(sessions_raw[k], n, dates[k], f"{where}.haystack_sessions[{k}]", path)
        sessions.append(Session(index=n, date_time=dates[k], turns=tuple(t for t, _ in turns)))
        evidence.extend(t.dia_id for t, marked in turns if marked)
        by_session_id.setdefault(session_ids[k], []).extend(t.dia_id for t, _ in turns)
    if not evidence:  # no turn-level label: fall back to the evidence sessions' turns
        evidence = [d for sid in answer_ids for d in by_session_id.get(sid, [])]

    qa = QA(
        sample_id=qid,
        index=0,
        question=question,
        answer=str(answer),
        category=category_of(qid, qtype),
        evidence=tuple(evidence),
    )
    return Conversation(qid, ROLES[0], ROLES[1], tuple(sessions), (qa,))


def _parse_session(raw: Any, n: int, date: str, where: str, path: object) -> list[tuple[Turn, bool]]:
    if not isinstance(raw, list):
        raise DataError(path, where, f"expected a list of turns, got {type(raw).__name__}")
    out = []
    for i, t in enumerate(raw):
        tw = f"{where}[{i}]"
        role = _need(t, "role", str, tw, path)
        if role not in ROLES:
            raise DataError(path, f"{tw}.role", f"{role!r} is neither 'user' nor 'assistant'")
        content = _need(t, "content", str, tw, path)
        marked = t.get("has_answer", False)
        if not isinstance(marked, bool):
            raise DataError(path, f"{tw}.has_answer", f"expected bool, got {type(marked).__name__}")
        turn = Turn(dia_id=f"D{n}:{i + 1}", speaker=role, text=content, session=n, date_time=date)
        out.append((turn, marked))
    return out


def _str_list(item: dict[str, Any], key: str, where: str, path: object, required: bool = True) -> list[str]:
    if not required and key not in item:
        return []
    values = _need(item, key, list, where, path)
    for j, v in enumerate(values):
        if not isinstance(v, str):
            raise DataError(path, f"{where}.{key}[{j}]", f"expected str, got {type(v).__name__}")
    return [str(v) for v in values]


def _chronological(dates: list[str]) -> list[int]:
    """Session positions sorted by date (stable), or file order if any date does not parse."""
    try:
        stamps = [datetime.strptime(d.strip(), DATE_FORMAT) for d in dates]
    except ValueError:
        return list(range(len(dates)))
    return sorted(range(len(dates)), key=lambda k: stamps[k])
