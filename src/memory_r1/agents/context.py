"""What each agent reads, retrieved and rendered in ONE place (L2).

Inference (the pipeline, the bench baselines), Memory-SFT examples, the RL environments and
validation all call these functions, so a model is trained on exactly the prompts it meets:

* :func:`related_memories` - the Memory Manager's context: the top ``k`` memories of the
  turn's speaker for each new fact, de-duplicated, **best score first** (the order fixes the
  small ids ``"0", "1", ...`` of :class:`~memory_r1.agents.manager.IdMap`);
* :func:`manager_context` - that context rendered: ``(Prompt, IdMap)``;
* :func:`answer_memories` - the Answer Agent's context: the top ``k`` memories of each speaker
  by similarity to the question (paper: 2 x 30), best first;
* :func:`answer_context` - that context rendered as the Answer Agent's prompt.
"""

from __future__ import annotations

from collections.abc import Sequence

from memory_r1.agents.answer import answer_prompt
from memory_r1.agents.manager import IdMap, manager_prompt
from memory_r1.llm.base import Prompt
from memory_r1.store.base import MemoryStore
from memory_r1.types import Hit, Memory


def dedupe_hits(hit_lists: Sequence[Sequence[Hit]]) -> list[Memory]:
    """Union of several hit lists, each memory once, ordered by its best score."""
    best: dict[str, Hit] = {}
    for hits in hit_lists:
        for h in hits:
            if h.memory.id not in best or h.score > best[h.memory.id].score:
                best[h.memory.id] = h
    return [h.memory for h in sorted(best.values(), key=lambda h: -h.score)]


def related_memories(store: MemoryStore, bank: str, facts: Sequence[str], owner: str, k: int) -> list[Memory]:
    """The memories of ``owner`` related to any of ``facts`` (top ``k`` each), best first."""
    if not facts:
        return []
    return dedupe_hits(store.search_many(bank, list(facts), owner=owner, k=k))


def manager_context(
    store: MemoryStore, bank: str, facts: Sequence[str], owner: str, k: int
) -> tuple[Prompt, IdMap]:
    """The Manager prompt for ``facts`` over their related memories, and its id map."""
    idmap = IdMap(related_memories(store, bank, facts, owner, k))
    return manager_prompt(facts, idmap), idmap


def answer_memories(
    store: MemoryStore, bank: str, question: str, speakers: tuple[str, str], k: int
) -> tuple[list[Memory], list[Memory]]:
    """Top ``k`` memories of each speaker by similarity to ``question``, best first."""
    a, b = (store.search(bank, question, owner=s, k=k) for s in speakers)
    return [h.memory for h in a], [h.memory for h in b]


def answer_context(
    store: MemoryStore, bank: str, question: str, speakers: tuple[str, str], k: int, *, distill: bool = True
) -> tuple[Prompt, list[Memory], list[Memory]]:
    """The Answer Agent's prompt for ``question`` and the memories it shows."""
    mem_a, mem_b = answer_memories(store, bank, question, speakers, k)
    prompt = answer_prompt(question, speakers[0], mem_a, speakers[1], mem_b, distill=distill)
    return prompt, mem_a, mem_b
