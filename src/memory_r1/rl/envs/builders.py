"""What the RL environments are built on (L3): memory banks, Manager snapshots, the envs.

**Answer-Agent banks** (:func:`answer_banks`, ``source``):

* ``"pipeline"`` - each conversation ingested by the *untrained* pipeline on ``bank_model``
  (extract -> manage, one LLM per role), into ``<out>/banks.sqlite``; resumable, since turns
  already marked are not redone and no LLM is loaded when every turn is.
* ``"observations"`` - LoCoMo's own session observations replayed by
  :func:`memory_r1.rl.sft.data.replay_observations` (the Memory-SFT teacher bank: facts ADDed in
  turn order, near-identical repeats skipped; owner = speaker, timestamp = the session
  date-time, metadata ``{"dia_id"}``), into ``<out>/banks-observations.sqlite``. No LLM call:
  the embedder's time only, every fact embedded in one batch (:class:`PrefetchEmbedder`):
  ~9 s per conversation with MiniLM on a busy 2-core CPU, instant with ``hash``. A bank
  counts as built once it holds the marker ``"observations"``; a half-built one is rebuilt
  from scratch.

Deviation: the paper builds Answer tuples from a GPT-4o-mini bank (B.2) or the trained
Manager's bank (Alg. 2). ``pipeline`` with a small offline model is the closest we have
offline, ``observations`` a cleaner, cheaper teacher bank; it is not the bank the Answer Agent
meets at test time, where the Manager built it.

**answer_k** (memories retrieved per speaker for each Answer prompt, :class:`AnswerEnv` and
the frozen Answer Agent of :class:`ManagerEnv`): the paper uses 30 (2 x 30 = 60 memories,
about 2-3k prompt tokens). Prompt length, hence rollout and update cost, grows about linearly
with it, so CPU runs can afford 5-10; validation and ``eval answer-agent`` must use the same k
to be comparable.

**Manager snapshots** (:func:`manager_snapshots`): cached in ``<out>/snapshots.jsonl`` (the
pipeline's running bank in ``<out>/snapshot_banks.sqlite``), see :mod:`memory_r1.rl.envs.snapshots`.

**Environments** (:func:`answer_env`, :func:`manager_env`): an
:class:`~memory_r1.rl.envs.answer.AnswerEnv` over built banks and a
:class:`~memory_r1.rl.envs.manager.ManagerEnv` over snapshots and a frozen Answer Agent.

Injection point: :func:`make_chat_model` builds every non-trained LLM (bank building, the
frozen Answer Agent); tests monkeypatch it to return a ``FakeChatModel``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from memory_r1.config import ModelConfig
from memory_r1.data.locomo import load_locomo, questions, split_conversations
from memory_r1.errors import ConfigError
from memory_r1.rl.envs.answer import AnswerEnv
from memory_r1.rl.envs.evidence import link_questions
from memory_r1.rl.envs.manager import ManagerEnv
from memory_r1.rl.envs.snapshots import Snapshot, build_snapshots, load_snapshots
from memory_r1.rl.sft.data import facts_by_turn, observation_bank, replay_observations
from memory_r1.types import Conversation

if TYPE_CHECKING:
    from memory_r1.agents.answer import AnswerAgent
    from memory_r1.agents.pipeline import MemoryR1Pipeline
    from memory_r1.llm.base import ChatModel
    from memory_r1.store.base import Embedder, MemoryStore

BANK_SOURCES = ("pipeline", "observations")
OBSERVATIONS_MARKER = "observations"


def make_chat_model(cfg: ModelConfig) -> ChatModel:
    """The ``ChatModel`` for ``cfg`` (through the backend registry); monkeypatch in tests."""
    from memory_r1.llm import create_model

    return create_model(cfg.backend, **cfg.kwargs())


def split_convs(data: str | None, split: str) -> list[Conversation]:
    """The LoCoMo conversations of ``split`` (train conv-26, validation conv-30, test others)."""
    convs = split_conversations(load_locomo(data), split)
    if not convs:
        raise ConfigError(f"{data or 'the LoCoMo file'} has no {split}-split conversation")
    return convs


def pipeline(store_path: Path, embedder: Embedder, bank_model: ModelConfig) -> MemoryR1Pipeline:
    """The untrained pipeline (one model per role, as ``build_models``) over ``store_path``."""
    from memory_r1.agents.answer import AnswerAgent
    from memory_r1.agents.extract import FactExtractor
    from memory_r1.agents.manager import MemoryManager
    from memory_r1.agents.pipeline import MemoryR1Pipeline
    from memory_r1.store import open_store

    shared = bank_model.backend != "llamacpp"
    first = make_chat_model(bank_model)
    m = [first] + [first if shared else make_chat_model(bank_model) for _ in range(2)]
    return MemoryR1Pipeline(
        open_store(store_path, embedder), FactExtractor(m[0]), MemoryManager(m[1]), AnswerAgent(m[2])
    )


class PrefetchEmbedder:
    """Wraps an embedder; :meth:`prefetch` embeds many texts in one batched call and
    :meth:`embed` answers from that table (the rest through the wrapped embedder, then kept).

    Same ``name`` and ``dim``, so a store accepts it in place of the wrapped one. Replaying a
    conversation embeds each fact twice (search, then add) and each question once, a few texts
    per call: batching them all first turns minutes of MiniLM calls on a CPU into seconds. The
    table only grows, so use it for building banks and episodes, not inside a training loop.
    """

    def __init__(self, inner: Embedder) -> None:
        self.inner, self.name, self.dim = inner, inner.name, inner.dim
        self._table: dict[str, np.ndarray] = {}

    def prefetch(self, texts: Sequence[str]) -> None:
        todo = [t for t in dict.fromkeys(texts) if t not in self._table]
        if todo:
            self._table.update(zip(todo, np.asarray(self.inner.embed(todo), dtype=np.float32)))

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        self.prefetch(texts)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.stack([self._table[t] for t in texts])


def _observation_banks(convs: Sequence[Conversation], path: Path, embedder: PrefetchEmbedder) -> MemoryStore:
    from memory_r1.store import open_store

    store = open_store(path, embedder)
    for conv in convs:
        bank = conv.sample_id
        if OBSERVATIONS_MARKER in store.markers(bank):
            continue
        store.delete_bank(bank)  # a bank left half-built by a crash
        embedder.prefetch([f for pairs in facts_by_turn(conv).values() for _, f in pairs])
        for _ in replay_observations(conv, store, bank):
            pass
        store.apply_turn(bank, [], owner="", marker=OBSERVATIONS_MARKER)
    return store


def _pipeline_banks(
    convs: Sequence[Conversation], path: Path, embedder: Embedder, bank_model: ModelConfig
) -> MemoryStore:
    from memory_r1.store import open_store

    store = open_store(path, embedder)
    if all({t.dia_id for t in c.turns()} <= store.markers(c.sample_id) for c in convs):
        return store
    store.close()
    pipe = pipeline(path, embedder, bank_model)
    for conv in convs:
        done = pipe.store.markers(conv.sample_id)
        for turn in conv.turns():
            if turn.dia_id not in done:
                pipe.ingest_turn(conv.sample_id, turn)
    return pipe.store


def answer_banks(
    convs: Sequence[Conversation],
    out: Path,
    embedder: Embedder,
    source: str = "pipeline",
    bank_model: ModelConfig | None = None,
) -> MemoryStore:
    """A store holding one built bank per conversation (named by ``sample_id``); see above."""
    if source not in BANK_SOURCES:
        raise ConfigError(f"unknown bank source {source!r}: choose one of {', '.join(BANK_SOURCES)}")
    out.mkdir(parents=True, exist_ok=True)
    embedder = PrefetchEmbedder(embedder)
    if source == "observations":
        return _observation_banks(convs, out / "banks-observations.sqlite", embedder)
    return _pipeline_banks(convs, out / "banks.sqlite", embedder, bank_model or ModelConfig())


def answer_env(
    convs: Sequence[Conversation], store: MemoryStore, answer_k: int = 30, **options: Any
) -> AnswerEnv:
    """:class:`AnswerEnv` over ``convs`` (all their questions) on banks built in ``store``;
    ``options``: ``reward``, ``require_evidence``, ... (``AnswerEnv``'s keywords)."""
    if answer_k < 1:
        raise ConfigError("--answer-k must be >= 1")
    prefetch = getattr(store.embedder, "prefetch", None)  # type: ignore[attr-defined]
    if prefetch is not None:  # every question's vector in one batch
        prefetch([qa.question for qa in questions(convs)])
    return AnswerEnv(convs, store=store, split=None, k=answer_k, **options)


def manager_snapshots(
    convs: Sequence[Conversation], out: Path, embedder: Embedder, bank_model: ModelConfig
) -> list[Snapshot]:
    """Snapshots of every turn of ``convs`` from the cache, building the missing ones."""
    cache = out / "snapshots.jsonl"
    ids = {c.sample_id for c in convs}
    cached = [s for s in load_snapshots(cache) if s.sample_id in ids]
    have = {(s.sample_id, s.turn.dia_id) for s in cached}
    missing = [c for c in convs if any((c.sample_id, t.dia_id) not in have for t in c.turns())]
    snaps = [s for s in cached if s.sample_id not in {c.sample_id for c in missing}]
    if missing:
        pipe = pipeline(out / "snapshot_banks.sqlite", embedder, bank_model)
        for conv in missing:
            snaps += build_snapshots(conv, pipe, cache)
    return snaps


def manager_env(
    convs: Sequence[Conversation],
    snapshots: Sequence[Snapshot],
    agent: AnswerAgent,
    embedder: Embedder,
    answer_k: int = 30,
    **options: Any,
) -> ManagerEnv:
    """:class:`ManagerEnv` on the snapshots of ``convs``, rewarded by the frozen ``agent``."""
    from memory_r1.store.sqlite import SQLiteStore

    ids = {c.sample_id for c in convs}
    return ManagerEnv(
        [s for s in snapshots if s.sample_id in ids],
        convs,
        agent,
        lambda: SQLiteStore(":memory:", embedder),
        answer_k=answer_k,
        **options,
    )


def teacher_snapshots(convs: Sequence[Conversation], embedder: Embedder | None = None) -> list[Snapshot]:
    """Manager snapshots that can be won (``--bank-source observations``), no LLM call.

    One per turn t with observation facts and a linked question. The bank is LoCoMo's teacher
    bank (:func:`memory_r1.rl.sft.data.observation_bank`) of the turns *before* t, plus the teacher
    memories of the linked questions' *other* evidence turns, wherever they lie (a question that
    also needs a later turn is answerable only if that turn's facts are there); t's own
    memories are left out. The facts are t's observations. So the reward of an episode turns on
    what the Manager does with t's facts: ADD (or UPDATE) them and the evidence is complete;
    NOOP or DELETE them and it is not. :meth:`ManagerEnv.trivial_rewards` measures how often
    that is so.
    """
    out = []
    links = link_questions(convs)
    for conv in convs:
        turns = conv.turns()
        index: dict[str | None, int] = {t.dia_id: i for i, t in enumerate(turns)}
        facts = facts_by_turn(conv)
        with observation_bank(conv, embedder) as store:
            mems = store.list(conv.sample_id)
        for i, turn in enumerate(turns):
            qas = links.get((conv.sample_id, turn.dia_id), [])
            if not qas or not facts.get(turn.dia_id):
                continue
            other = {e for qa in qas for e in qa.evidence} - {turn.dia_id}
            keep = tuple(
                m
                for m in mems
                if m.metadata.get("dia_id") != turn.dia_id
                and (index.get(m.metadata.get("dia_id"), len(turns)) < i or m.metadata.get("dia_id") in other)
            )
            out.append(
                Snapshot(
                    conv.sample_id, i, conv.speakers, turn, keep, tuple(f for _, f in facts[turn.dia_id])
                )
            )
    return out


def snapshots_for(
    convs: Sequence[Conversation], out: Path, embedder: Embedder, source: str, bank_model: ModelConfig
) -> tuple[list[Snapshot], Embedder]:
    """Manager snapshots of ``convs`` from ``source`` and the embedder to score them with:
    ``observations`` -> :func:`teacher_snapshots` (winnable, no LLM; every memory embedded in
    one batch), ``pipeline`` -> :func:`manager_snapshots`."""
    if source != "observations":
        return manager_snapshots(convs, out, embedder, bank_model), embedder
    emb = PrefetchEmbedder(embedder)
    snaps = teacher_snapshots(convs, emb)
    emb.prefetch([m.text for s in snaps for m in s.memories])
    return snaps, emb
