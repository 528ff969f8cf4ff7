"""Parse LoCoMo (``locomo10.json``) into typed conversations, and Memory-R1's 1:1:8 split (L1).

Contract:

* ``load_locomo(path)`` returns one :class:`~memory_r1.types.Conversation` per sample, in file
  order. Sessions come from the ``session_N`` keys only, sorted numerically (``conv-26`` carries
  phantom ``session_20..35_date_time`` keys without sessions; they are ignored).
* Every QA item is kept, category 5 included, in the original order, duplicates included
  (``QA.index`` is the position in the sample's ``qa`` list). Answers are ``str()``-ed (six are
  ints in conv-26); category-5 items that only carry ``adversarial_answer`` get ``answer=""``.
* Evidence is repaired: ``"D8:6; D9:17"`` and space-joined lists are split, ``"D:11:26"`` becomes
  ``"D11:26"`` and ``"D30:05"`` becomes ``"D30:5"``; what does not parse (``"D"``) is dropped
  with a logged warning. Ids pointing at missing turns are kept as they are.
* Any malformed file raises a single :class:`~memory_r1.errors.DataError` that names the file and
  a field path such as ``[3].qa[17].question``.

The split (``SPLITS``) is by ``sample_id``; ``questions`` then drops category 5, which gives
152 / 81 / 1,307 questions (``SPLIT_SIZES``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from memory_r1.errors import ConfigError, DataError
from memory_r1.types import CATEGORY_NAMES, QA, Conversation, Session, Turn

log = logging.getLogger(__name__)

ENV_VAR = "MEMORY_R1_LOCOMO"
DEFAULT_RELATIVE = Path("../shared/data/locomo10.json")

SPLITS: dict[str, tuple[str, ...]] = {
    "train": ("conv-26",),
    "validation": ("conv-30",),
    "test": (
        "conv-41",
        "conv-42",
        "conv-43",
        "conv-44",
        "conv-47",
        "conv-48",
        "conv-49",
        "conv-50",
    ),
}
#: Non-adversarial question counts per split on the real file (the paper's 152/81/1307).
SPLIT_SIZES: dict[str, int] = {"train": 152, "validation": 81, "test": 1307}

_SESSION_KEY = re.compile(r"session_(\d+)")
_OBSERVATION_KEY = re.compile(r"session_(\d+)_observation")
_EVIDENCE_ID = re.compile(r"D:?(\d+):(\d+)")


# ---------------------------------------------------------------------------------------- paths


def default_path() -> Path:
    """Where the LoCoMo file is looked for when no path is given (first hit wins).

    ``$MEMORY_R1_LOCOMO`` if set (even if missing, so a wrong setting is reported), else
    ``../shared/data/locomo10.json`` relative to the working directory, else relative to the
    repository root found from this file. Raises DataError when none exists.
    """
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env)
    candidates = [Path.cwd() / DEFAULT_RELATIVE, Path(__file__).parents[3] / DEFAULT_RELATIVE]
    for candidate in candidates:
        if candidate.is_file():
            return candidate.resolve()
    raise DataError(
        candidates[0].resolve(),
        "<file>",
        "LoCoMo file not found (also looked in "
        f"{candidates[1].resolve()}); pass --data PATH or set ${ENV_VAR}",
    )


def sha256_of(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file's bytes (recorded with every result)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# -------------------------------------------------------------------------------------- loading


def load_locomo(path: str | os.PathLike[str] | None = None) -> list[Conversation]:
    """Load and validate a LoCoMo-schema JSON file. ``path=None`` uses :func:`default_path`."""
    file = Path(path) if path is not None else default_path()
    raw = read_json(file, f"LoCoMo file not found; pass --data PATH or set ${ENV_VAR}")
    return parse_locomo(raw, file)


def read_json(file: Path, missing: str) -> Any:
    """The decoded JSON of ``file``; a DataError saying ``missing`` when it is not a file, or
    that it is not valid JSON (the loaders of every JSON data set share this)."""
    if not file.is_file():
        raise DataError(file, "<file>", missing)
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(file, "<file>", f"not valid JSON: {exc}") from None


def parse_locomo(raw: Any, path: object = "<memory>") -> list[Conversation]:
    """Parse already-decoded LoCoMo JSON (a list of samples); ``path`` only labels errors."""
    return parse_each(raw, path, "samples", "sample_id", _parse_sample)


def parse_each(
    raw: Any, path: object, items: str, id_key: str, parse: Callable[[Any, str, object], Conversation]
) -> list[Conversation]:
    """``parse(item, "[i]", path)`` for each item of the list ``raw``, in order; a DataError when
    ``raw`` is not a list (of ``items``) or two items share a ``sample_id`` (named ``id_key``)."""
    if not isinstance(raw, list):
        raise DataError(path, "<root>", f"expected a list of {items}, got {type(raw).__name__}")
    convs: list[Conversation] = []
    seen: set[str] = set()
    for i, item in enumerate(raw):
        conv = parse(item, f"[{i}]", path)
        if conv.sample_id in seen:
            raise DataError(path, f"[{i}].{id_key}", f"duplicate {id_key} {conv.sample_id!r}")
        seen.add(conv.sample_id)
        convs.append(conv)
    return convs


def _need(obj: Any, key: str, kind: type | tuple[type, ...], where: str, path: object) -> Any:
    """``obj[key]`` if present and of ``kind``, else a DataError naming ``where.key``."""
    if not isinstance(obj, dict):
        raise DataError(path, where, f"expected an object, got {type(obj).__name__}")
    if key not in obj:
        raise DataError(path, f"{where}.{key}", "missing")
    value = obj[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise DataError(path, f"{where}.{key}", f"expected {names}, got {type(value).__name__}")
    return value


def _parse_sample(sample: Any, where: str, path: object) -> Conversation:
    sample_id = _need(sample, "sample_id", str, where, path)
    conv = _need(sample, "conversation", dict, where, path)
    cw = f"{where}.conversation"
    speaker_a = _need(conv, "speaker_a", str, cw, path)
    speaker_b = _need(conv, "speaker_b", str, cw, path)
    numbers = sorted(int(m.group(1)) for k in conv if (m := _SESSION_KEY.fullmatch(k)))
    sessions = tuple(_parse_session(conv, n, (speaker_a, speaker_b), cw, path) for n in numbers)
    qa_list = _need(sample, "qa", list, where, path)
    qa = tuple(_parse_qa(item, sample_id, j, f"{where}.qa[{j}]", path) for j, item in enumerate(qa_list))
    return Conversation(
        sample_id=sample_id,
        speaker_a=speaker_a,
        speaker_b=speaker_b,
        sessions=sessions,
        qa=qa,
        observations=_parse_observations(sample.get("observation")),
    )


def _parse_session(conv: dict[str, Any], n: int, speakers: tuple[str, str], cw: str, path: object) -> Session:
    turns_raw = _need(conv, f"session_{n}", list, cw, path)
    date_time = _need(conv, f"session_{n}_date_time", str, cw, path)
    turns = []
    for i, t in enumerate(turns_raw):
        tw = f"{cw}.session_{n}[{i}]"
        speaker = _need(t, "speaker", str, tw, path)
        if speaker not in speakers:
            raise DataError(
                path, f"{tw}.speaker", f"{speaker!r} is neither speaker_a nor speaker_b {speakers}"
            )
        caption = t.get("blip_caption")
        if caption is not None and not isinstance(caption, str):
            raise DataError(path, f"{tw}.blip_caption", "expected str")
        turns.append(
            Turn(
                dia_id=_need(t, "dia_id", str, tw, path),
                speaker=speaker,
                text=_need(t, "text", str, tw, path),
                session=n,
                date_time=date_time,
                blip_caption=caption or None,
                listener=speakers[1] if speaker == speakers[0] else speakers[0],
            )
        )
    return Session(index=n, date_time=date_time, turns=tuple(turns))


def _parse_qa(item: Any, sample_id: str, index: int, where: str, path: object) -> QA:
    question = _need(item, "question", str, where, path)
    category = _need(item, "category", int, where, path)
    if category not in CATEGORY_NAMES:
        raise DataError(path, f"{where}.category", f"{category} is not one of 1-5")
    if "answer" in item and item["answer"] is not None:
        answer = item["answer"]
        if not isinstance(answer, (str, int, float)) or isinstance(answer, bool):
            problem = f"expected str or int, got {type(answer).__name__}"
            raise DataError(path, f"{where}.answer", problem)
        answer = str(answer)  # six answers are ints (conv-26); Mem0 str()s them too
    elif category == 5:
        answer = ""  # adversarial items may carry only `adversarial_answer`; splits drop them
    else:
        raise DataError(path, f"{where}.answer", "missing (only category 5 may omit it)")
    evidence_raw = item.get("evidence", [])
    if not isinstance(evidence_raw, list) or not all(isinstance(e, str) for e in evidence_raw):
        raise DataError(path, f"{where}.evidence", "expected a list of strings")
    evidence, dropped = repair_evidence(evidence_raw)
    for bad in dropped:
        log.warning("%s: %s.evidence: dropped unparseable id %r", path, where, bad)
    return QA(sample_id, index, question, answer, category, evidence)


def repair_evidence(raw: Iterable[str]) -> tuple[tuple[str, ...], list[str]]:
    """Split, normalise and validate evidence ids; returns (ids, dropped pieces).

    >>> repair_evidence(["D8:6; D9:17", "D:11:26", "D30:05", "D", "D9:1 D4:4"])
    (('D8:6', 'D9:17', 'D11:26', 'D30:5', 'D9:1', 'D4:4'), ['D'])
    """
    ids: list[str] = []
    dropped: list[str] = []
    for entry in raw:
        for piece in re.split(r"[;,\s]+", entry.strip()):
            if not piece:
                continue
            m = _EVIDENCE_ID.fullmatch(piece)
            if m:
                ids.append(f"D{int(m.group(1))}:{int(m.group(2))}")
            else:
                dropped.append(piece)
    return tuple(ids), dropped


def _parse_observations(raw: Any) -> dict[int, dict[str, tuple[tuple[str, str], ...]]]:
    """Best effort: generated side data, so odd shapes are skipped rather than fatal.

    A fact tied to several turns (10 in the real file) keeps the last id, the turn by which the
    whole fact has been said.
    """
    out: dict[int, dict[str, tuple[tuple[str, str], ...]]] = {}
    if not isinstance(raw, dict):
        return out
    for key, per_speaker in raw.items():
        m = _OBSERVATION_KEY.fullmatch(str(key))
        if not m or not isinstance(per_speaker, dict):
            continue
        session: dict[str, tuple[tuple[str, str], ...]] = {}
        for speaker, facts in per_speaker.items():
            if not isinstance(facts, list):
                continue
            pairs = []
            for fact in facts:
                if not (isinstance(fact, list) and len(fact) == 2 and isinstance(fact[0], str)):
                    continue
                dia = fact[1]
                if isinstance(dia, list):
                    dia = dia[-1] if dia and isinstance(dia[-1], str) else None
                if isinstance(dia, str):
                    pairs.append((fact[0], dia))
            session[str(speaker)] = tuple(pairs)
        out[int(m.group(1))] = session
    return dict(sorted(out.items()))


# --------------------------------------------------------------------------------------- splits


def split_conversations(convs: Sequence[Conversation], split: str) -> list[Conversation]:
    """The conversations of ``split`` present in ``convs``, in ``convs`` order.

    Absent ids are not an error (the synthetic fixture holds only conv-26 and conv-30).
    """
    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    wanted = set(SPLITS[split])
    return [c for c in convs if c.sample_id in wanted]


def questions(convs: Iterable[Conversation], categories: Iterable[int] = (1, 2, 3, 4)) -> list[QA]:
    """All QA items of the given categories, conversation then file order, duplicates kept."""
    keep = set(categories)
    return [q for c in convs for q in c.qa if q.category in keep]


def select(
    convs: Sequence[Conversation],
    split: str | None = None,
    sample_ids: Iterable[str] | None = None,
) -> list[Conversation]:
    """Convenience: by split, or by explicit sample ids (unknown ids raise), or all."""
    if split is not None and sample_ids is not None:
        raise ConfigError("give either a split or sample ids, not both")
    if split is not None:
        return split_conversations(convs, split)
    if sample_ids is None:
        return list(convs)
    ids = list(sample_ids)
    known = {c.sample_id for c in convs}
    missing = [s for s in ids if s not in known]
    if missing:
        raise ConfigError(f"unknown sample ids {missing}; the file has {sorted(known)}")
    wanted = set(ids)
    return [c for c in convs if c.sample_id in wanted]


def category_counts(qas: Iterable[QA]) -> Mapping[int | str, int]:
    """Number of questions per category id, ascending (handy for logging split sizes)."""
    counts: dict[int | str, int] = {}
    for q in qas:
        counts[q.category] = counts.get(q.category, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: (isinstance(kv[0], str), kv[0])))
