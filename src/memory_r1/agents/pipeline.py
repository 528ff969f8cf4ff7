"""The Memory-R1 inference pipeline over one memory bank (L2).

Build step, per dialogue turn (paper Alg. 3, Mem0's classic loop):

1. the ``FactExtractor`` turns the utterance into facts (``{"facts": [...]}``);
2. each fact retrieves the top ``related_k`` memories of the same speaker; the union is
   de-duplicated, best score first (:mod:`memory_r1.agents.context`, the one place that
   retrieves and renders what each agent reads, for inference, SFT and RL alike);
3. the ``MemoryManager`` answers with ADD / UPDATE / DELETE / NOOP over small integer ids;
4. every operation is applied to the store, which appends one history row per operation.

A turn's writes and its "done" marker land in one store transaction, so an interrupted run
resumes without re-doing a turn and without duplicate memories. An extraction that cannot be
parsed becomes one INVALID history row (counted; facts salvaged from a cut-off list are still
used); a turn without facts becomes one NOOP row.

Answer step: the top ``answer_k`` (30) memories of each speaker (60 candidates), by similarity
to the question, go to the ``AnswerAgent``, which selects the relevant ones and answers
(:func:`answer_from_bank`, shared with the retrieval baselines of ``memory_r1.bench``).

The pipeline also satisfies ``memory_r1.types.MemorySystem`` (``name``, ``done_turns``,
``bank_size``, ``close``), so the eval and bench runners drive it like any other system.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from memory_r1.agents.answer import AnswerAgent
from memory_r1.agents.context import answer_memories, related_memories
from memory_r1.agents.extract import FactExtractor
from memory_r1.agents.manager import ManagerResult, MemoryManager
from memory_r1.store.base import MemoryStore
from memory_r1.types import AnswerResult, Completion, Memory, Op, OpKind, Turn, TurnResult


@dataclass(frozen=True)
class PipelineConfig:
    related_k: int = 5  # memories retrieved per fact for the Manager (Mem0's default)
    answer_k: int = 30  # memories per speaker for the Answer Agent (paper: 2 x 30 = 60)
    add_when_empty: bool = True  # no related memory -> ADD the facts without a Manager call

    def __post_init__(self) -> None:
        if self.related_k < 1 or self.answer_k < 1:
            raise ValueError("related_k and answer_k must be >= 1")


class Manager(Protocol):
    """Facts + related memories -> ops: the learned ``MemoryManager``, or a heuristic stand-in
    (the bench's ``vanilla`` system). ``completion`` None means no model call was made."""

    def decide(self, facts: Sequence[str], related: Sequence[Memory]) -> ManagerResult: ...


def answer_from_bank(
    store: MemoryStore, agent: AnswerAgent, k: int, bank: str, question: str, speakers: tuple[str, str]
) -> tuple[AnswerResult, float]:
    """Top ``k`` entries of each speaker by similarity to ``question`` -> ``agent``.

    Returns the Answer Agent's result and the retrieval time in seconds.
    """
    t0 = time.perf_counter()
    mem_a, mem_b = answer_memories(store, bank, question, speakers, k)
    retrieval = time.perf_counter() - t0
    return agent.answer(question, speakers[0], mem_a, speakers[1], mem_b), retrieval


class MemoryR1Pipeline:
    """Extractor + Manager + Answer Agent over a ``MemoryStore``; one instance, many banks."""

    def __init__(
        self,
        store: MemoryStore,
        extractor: FactExtractor,
        manager: MemoryManager | Manager,
        answer_agent: AnswerAgent,
        config: PipelineConfig = PipelineConfig(),
        name: str = "memory-r1",
    ) -> None:
        self.name = name
        self.store = store
        self.extractor = extractor
        self.manager = manager
        self.answer_agent = answer_agent
        self.config = config

    # -- bookkeeping (the ``MemorySystem`` protocol) ---------------------------------------
    def done_turns(self, bank: str) -> set[str]:
        """dia_ids whose operations are already in the store (their markers)."""
        return self.store.markers(bank)

    def bank_size(self, bank: str) -> int:
        """Live memories in ``bank``."""
        return len(self.store.list(bank))

    def close(self) -> None:
        self.store.close()

    # -- build --------------------------------------------------------------------------
    def ingest_turn(
        self,
        bank: str,
        turn: Turn,
        *,
        owner: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> TurnResult:
        """Extract, decide and apply one turn (one store transaction with its marker).

        ``owner``: whose bank scope the turn reads and writes (default: the speaker);
        ``metadata``: stored on new memories beside ``dia_id`` and ``session``. The history rows
        written are in ``result.history``.
        """
        owner = turn.speaker if owner is None else owner
        result = TurnResult(turn.dia_id)
        extracted = self.extractor.extract(turn)
        self._account(result, extracted.completion)
        ops: list[Op] = []
        if extracted.error is not None:  # recorded; facts salvaged from a cut-off list go on
            ops.append(
                Op(OpKind.INVALID, error=f"extraction: {extracted.error}", raw=extracted.completion.text)
            )
        result.facts = list(extracted.facts)
        if result.facts:
            ops += self.decide(bank, result, owner)
        elif not ops:
            ops.append(Op(OpKind.NOOP, error="no facts"))
        result.ops = ops
        meta = {**(metadata or {}), "dia_id": turn.dia_id, "session": turn.session}
        result.history = self.store.apply_turn(
            bank, ops, owner=owner, timestamp=turn.date_time, metadata=meta, marker=turn.dia_id
        )
        return result

    def decide(self, bank: str, result: TurnResult, owner: str) -> list[Op]:
        """The Manager's operations for the turn's facts.

        With no related memory at all, UPDATE / DELETE / NOOP-on-an-id are impossible and the
        Manager could only ADD or drop new information, so (``add_when_empty``) every fact is
        added without a model call. This skips one call per turn while a bank is new.
        """
        related = self.related(bank, result.facts, owner)
        if not related and self.config.add_when_empty:
            return [Op(OpKind.ADD, text=f) for f in result.facts]
        decided = self.manager.decide(result.facts, related)
        if decided.completion is not None:
            self._account(result, decided.completion)
        return list(decided.ops) or [Op(OpKind.NOOP, error="no operations")]

    def related(self, bank: str, facts: list[str], owner: str) -> list[Memory]:
        return related_memories(self.store, bank, facts, owner, self.config.related_k)

    # -- answer -------------------------------------------------------------------------
    def answer(self, bank: str, question: str, speakers: tuple[str, str]) -> tuple[AnswerResult, float]:
        """The Answer Agent's result and the retrieval time in seconds."""
        return answer_from_bank(self.store, self.answer_agent, self.config.answer_k, bank, question, speakers)

    @staticmethod
    def _account(result: TurnResult, completion: Completion) -> None:
        result.llm_calls += 1
        result.llm_seconds += completion.seconds
        result.tokens_in += completion.prompt_tokens
        result.tokens_out += completion.completion_tokens
