"""Memory-SFT data (L3): teacher examples for behaviour cloning, the warm start before RL.

Paper §9 item 10 (Memory-SFT baseline). Untrained small models answer NONE/ADD for everything
and ramble, so RL starts from a policy cloned on teacher outputs, using the *same prompts* as the
pipeline and RL (the prompt builders of ``agents.extract`` / ``manager`` / ``answer``).

Data contract: an :class:`SFTExample` is ``(role, prompt, target)``, ``role`` in ``ROLES``;
``target`` is the whole output as the role's parser reads it (``parse_facts``,
``parse_operations`` with ``example.idmap``, ``parse_answer``), the prompt's
``response_prefix`` included; training is on :func:`completion_text` (target minus that prefix,
which the rendered prompt already holds) plus EOS. Two sources:

* :func:`build_sft_examples` - from LoCoMo's own annotations, no teacher model:

  - ``extract``: per turn, the session-observation facts whose ``dia_id`` is that turn ->
    ``{"facts": [...]}``; turns without facts -> ``{"facts": []}``, kept with probability
    ``empty_ratio`` so they do not dominate.
  - ``manager``: observation facts replayed in turn order into an in-memory SQLite bank
    (``HashEmbedder`` unless given; owner = speaker). One example per (turn, speaker): related =
    deduplicated union of the top-``top_k`` memories of that speaker per fact, best score
    first (Mem0's, and the pipeline's, order, which fixes the small ids); per fact
    NONE (of the memory) when a related memory has the same normalised text or cosine >=
    ``none_threshold`` (0.95: near-identical wording only; a bag-of-words embedder scores
    reworded facts far lower), NONE with ``"id": null`` for a repeat inside the turn, else ADD;
    ADDs are then applied (:func:`replay_observations`; the same replay builds RL's
    ``observations`` bank source, :mod:`memory_r1.rl.envs.builders`). Deviation: LoCoMo has no
    UPDATE/DELETE labels, so these targets never teach UPDATE or DELETE (a teacher model via
    :func:`from_teacher_jsonl` can).
  - ``answer``: per QA of categories 1-4, the Answer Agent's prompt exactly as RL and
    evaluation build it (:func:`memory_r1.agents.context.answer_context`: the top
    ``answer_k`` memories per speaker of the teacher bank below, by similarity to the
    question); target = ``SELECTED_HEADING``, bullets of the shown memories that come from
    the QA's evidence turns, a blank line, ``**Answer:** gold``. QAs none of whose evidence
    is shown are skipped.

* :func:`from_teacher_jsonl` - rows ``{role, system, user, target}`` (optional ``examples``
  ``[[user, assistant], ...]`` and ``response_prefix``; when absent and ``system`` is the role's
  standard prompt, the standard few-shot examples / prefix are used), e.g. EM-filtered outputs
  of a stronger model over an OpenAI-compatible endpoint.

Training on these examples: :mod:`memory_r1.rl.sft.train` (``sft_train``, ``sft_loss``).
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from memory_r1.agents import answer, extract, manager
from memory_r1.agents.context import answer_context, dedupe_hits
from memory_r1.llm.base import Prompt
from memory_r1.rl.envs.evidence import CATEGORIES, evidence_shown
from memory_r1.store.embedders import HashEmbedder
from memory_r1.store.sqlite import SQLiteStore
from memory_r1.types import Conversation, Hit, Turn

if TYPE_CHECKING:
    from memory_r1.store.base import Embedder, MemoryStore

ROLES = ("extract", "manager", "answer")
_STANDARD: dict[str, tuple[str, tuple[tuple[str, str], ...], str]] = {
    "extract": (extract.EXTRACT_SYSTEM, extract.EXTRACT_EXAMPLES, ""),
    "manager": (manager.MANAGER_SYSTEM, manager.MANAGER_EXAMPLES, ""),
    "answer": (answer.ANSWER_SYSTEM, answer.ANSWER_EXAMPLES, answer.SELECTED_HEADING + "\n"),
}


@dataclass(frozen=True)
class SFTExample:
    role: str
    prompt: Prompt
    target: str
    idmap: manager.IdMap | None = field(default=None, compare=False)  # manager: to parse the target
    meta: Mapping[str, Any] = field(default_factory=dict, compare=False)


def completion_text(ex: SFTExample) -> str:
    """The tokens to train on: ``target`` without the prompt's prefilled ``response_prefix``."""
    pre = ex.prompt.response_prefix
    return ex.target[len(pre) :] if pre and ex.target.startswith(pre) else ex.target


def _norm(text: str) -> str:
    return " ".join(text.casefold().split()).rstrip(".")


def facts_by_turn(conv: Conversation) -> dict[str, list[tuple[str, str]]]:
    """dia_id -> [(speaker, fact), ...] from the session observations."""
    out: dict[str, list[tuple[str, str]]] = {}
    for per_speaker in conv.observations.values():
        for speaker, pairs in per_speaker.items():
            for fact, dia in pairs:
                if fact.strip():
                    out.setdefault(dia, []).append((speaker, " ".join(fact.split())))
    return out


def extract_examples(conv: Conversation, rng: random.Random, empty_ratio: float = 0.2) -> list[SFTExample]:
    facts = facts_by_turn(conv)
    out = []
    for turn in conv.turns():
        got = [f for _, f in facts.get(turn.dia_id, [])]
        if not got and rng.random() >= empty_ratio:
            continue
        target = json.dumps({"facts": got}, ensure_ascii=False)
        out.append(
            SFTExample(
                "extract", extract.extract_prompt(turn), target, meta={"dia_id": turn.dia_id, "facts": got}
            )
        )
    return out


def _restate_one(
    store: MemoryStore, bank: str, speaker: str, new: list[str], rng: random.Random
) -> list[str]:
    """``new`` with one of ``speaker``'s stored memories inserted at a random position (as is
    when the speaker has none yet)."""
    stored = [m.text for m in store.list(bank, owner=speaker)]
    if not stored:
        return new
    new = list(new)
    new.insert(rng.randrange(len(new) + 1), rng.choice(stored))
    return new


def _teacher_items(
    new: Sequence[str], hits: Sequence[Sequence[Hit]], idmap: manager.IdMap, none_threshold: float
) -> list[dict[str, Any]]:
    """The Manager's ``{"id", "text", "event"}`` decision per fact (rule: module docstring)."""
    items: list[dict[str, Any]] = []
    seen: set[str] = set()
    for fact, fact_hits in zip(new, hits):
        dup = next(
            (h.memory for h in fact_hits if _norm(h.memory.text) == _norm(fact) or h.score >= none_threshold),
            None,
        )
        if dup is not None:
            items.append({"id": idmap.small(dup.id), "text": dup.text, "event": "NONE"})
        elif _norm(fact) in seen:
            items.append({"id": None, "text": fact, "event": "NONE"})
        else:
            items.append({"id": None, "text": fact, "event": "ADD"})
        seen.add(_norm(fact))
    return items


def _apply_adds(
    store: MemoryStore, bank: str, turn: Turn, speaker: str, items: Sequence[Mapping[str, Any]]
) -> None:
    """Add the ``items`` decided ADD: owner = speaker, the session date-time, ``{"dia_id"}``."""
    adds = [
        {
            "text": it["text"],
            "owner": speaker,
            "timestamp": turn.date_time,
            "metadata": {"dia_id": turn.dia_id},
        }
        for it in items
        if it["event"] == "ADD"
    ]
    if adds:
        store.add_many(bank, adds)


def replay_observations(
    conv: Conversation,
    store: MemoryStore,
    bank: str,
    top_k: int = 5,
    none_threshold: float = 0.95,
    *,
    repeat_ratio: float = 0.0,
    rng: random.Random | None = None,
) -> Iterator[tuple[Turn, str, list[str], manager.IdMap, list[dict[str, Any]]]]:
    """Replay ``conv``'s observation facts into ``store[bank]`` in turn order (the teacher bank).

    Yields ``(turn, speaker, new_facts, idmap, items)`` per (turn, speaker) with facts, where
    ``items`` are the Manager's ``{"id", "text", "event"}`` decisions (NONE / ADD, see the
    module docstring), then applies the ADDs: owner = speaker, timestamp = the session
    date-time, metadata ``{"dia_id"}``. Exhausting it with no consumer builds the bank only.

    ``repeat_ratio``: with this probability (``rng``) a (turn, speaker) also restates one of
    that speaker's stored memories, at a random position among its facts; the rule above labels
    it NONE. LoCoMo's observations are all new facts, so without repeats every Manager target
    is ADD; an extractor at inference re-states stored facts, which the Manager must not ADD
    twice. The bank built is the same with or without repeats.

    The related memories are those of :func:`memory_r1.agents.context.related_memories`
    (top ``top_k`` of the speaker per fact, de-duplicated, best score first), built from the
    same per-fact hits the NONE rule reads.
    """
    if repeat_ratio and rng is None:
        raise ValueError("repeat_ratio needs an rng")
    facts = facts_by_turn(conv)
    for turn in conv.turns():
        by_speaker: dict[str, list[str]] = {}
        for speaker, fact in facts.get(turn.dia_id, []):
            by_speaker.setdefault(speaker, []).append(fact)
        for speaker, new in by_speaker.items():
            if repeat_ratio and rng is not None and rng.random() < repeat_ratio:
                new = _restate_one(store, bank, speaker, new, rng)
            hits = store.search_many(bank, new, owner=speaker, k=top_k)
            idmap = manager.IdMap(dedupe_hits(hits))
            items = _teacher_items(new, hits, idmap, none_threshold)
            yield turn, speaker, new, idmap, items
            _apply_adds(store, bank, turn, speaker, items)


def manager_examples(
    conv: Conversation,
    embedder: Embedder | None = None,
    top_k: int = 5,
    none_threshold: float = 0.95,
    repeat_ratio: float = 0.0,
    rng: random.Random | None = None,
) -> list[SFTExample]:
    """One Manager example per (turn, speaker) of ``conv``'s teacher-bank replay (see
    :func:`replay_observations`), on an in-memory bank embedded with ``embedder``."""
    out: list[SFTExample] = []
    with SQLiteStore(":memory:", embedder or HashEmbedder()) as store:
        for turn, speaker, new, idmap, items in replay_observations(
            conv, store, conv.sample_id, top_k, none_threshold, repeat_ratio=repeat_ratio, rng=rng
        ):
            target = json.dumps({"memory": items}, ensure_ascii=False)
            out.append(
                SFTExample(
                    "manager",
                    manager.manager_prompt(new, idmap),
                    target,
                    idmap,
                    meta={"dia_id": turn.dia_id, "owner": speaker, "facts": new},
                )
            )
    return out


def observation_bank(conv: Conversation, embedder: Embedder | None = None) -> SQLiteStore:
    """An in-memory store holding ``conv``'s teacher bank (bank ``conv.sample_id``)."""
    store = SQLiteStore(":memory:", embedder or HashEmbedder())
    for _ in replay_observations(conv, store, conv.sample_id):
        pass
    return store


def answer_examples(
    conv: Conversation,
    store: MemoryStore,
    k: int = 10,
    categories: Iterable[int] = CATEGORIES,
    bank: str | None = None,
) -> tuple[list[SFTExample], int]:
    """``(examples, skipped)``: one example per QA whose evidence the retrieval shows.

    The prompt is :func:`memory_r1.agents.context.answer_context` over ``store[bank]`` (the
    teacher bank, default bank ``conv.sample_id``) with ``k`` memories per speaker: the very
    prompt RL and evaluation give the Answer Agent. The target selects the shown memories
    from the evidence turns (shown order) and answers the gold answer. A QA none of whose
    evidence is shown is skipped (counted): its answer cannot be read off its prompt.
    """
    cats = set(categories)
    out, skipped = [], 0
    for qa in conv.qa:
        if qa.category not in cats or not str(qa.answer).strip():
            continue
        prompt, mem_a, mem_b = answer_context(store, bank or conv.sample_id, qa.question, conv.speakers, k)
        shown = [m for m in [*mem_a, *mem_b] if evidence_shown(qa, [m])]
        if not shown:
            skipped += 1
            continue
        bullets = "\n".join(f"- {answer.render_memory(m)}" for m in shown)
        target = f"{answer.SELECTED_HEADING}\n{bullets}\n\n**Answer:** {qa.answer}"
        out.append(SFTExample("answer", prompt, target, meta={"qid": qa.qid, "answer": qa.answer}))
    return out, skipped


def build_sft_examples(
    convs: Sequence[Conversation],
    roles: Sequence[str] = ROLES,
    seed: int = 0,
    *,
    empty_ratio: float = 0.2,
    embedder: Embedder | None = None,
    top_k: int = 5,
    none_threshold: float = 0.95,
    answer_k: int = 10,
    answer_store: MemoryStore | None = None,
    repeat_ratio: float = 0.25,
) -> list[SFTExample]:
    """Teacher examples from LoCoMo annotations for ``convs`` (use the training split only).

    ``repeat_ratio``: the share of Manager examples that also restate a stored memory (target
    NONE, see :func:`replay_observations`). ``answer_store``: a store with each conversation's
    teacher bank (``rl.envs.builders.answer_banks(..., "observations")``, the bank RL and ``eval
    answer-agent`` use); without one, an in-memory teacher bank per conversation is built with
    ``embedder``.
    """
    bad = set(roles) - set(ROLES)
    if bad:
        raise ValueError(f"unknown roles {sorted(bad)}; expected a subset of {ROLES}")
    rng = random.Random(seed)
    out: list[SFTExample] = []
    for conv in convs:
        if "extract" in roles:
            out += extract_examples(conv, rng, empty_ratio)
        if "manager" in roles:
            out += manager_examples(conv, embedder, top_k, none_threshold, repeat_ratio, rng)
        if "answer" in roles:
            store = answer_store if answer_store is not None else observation_bank(conv, embedder)
            examples, _ = answer_examples(conv, store, answer_k)
            out += examples
    return out


def from_teacher_jsonl(path: str | Path) -> list[SFTExample]:
    """Examples from ``{role, system, user, target}`` JSONL rows (see the module docstring)."""
    out = []
    with open(path, encoding="utf-8") as f:
        rows = [(n, json.loads(line)) for n, line in enumerate(f, 1) if line.strip()]
    for n, row in rows:
        role = row.get("role")
        if role not in ROLES or not all(isinstance(row.get(k), str) for k in ("system", "user", "target")):
            raise ValueError(f"{path}:{n}: need role in {ROLES} and string system/user/target")
        system, examples, prefix = _STANDARD[role]
        standard = row["system"] == system
        shots = row.get("examples")
        prompt = Prompt(
            row["system"],
            row["user"],
            tuple((str(u), str(a)) for u, a in shots)
            if shots is not None
            else (examples if standard else ()),
            row.get("response_prefix", prefix if standard else ""),
        )
        out.append(SFTExample(role, prompt, row["target"], meta={"line": n}))
    return out
