"""Which LoCoMo questions a turn or a shown memory is evidence for (L3, torch-free).

A QA's repaired ``evidence`` lists the ``dia_id`` of the turns its answer comes from; a memory
built from a turn carries that ``dia_id`` in its metadata (the teacher bank does). The RL
environments, the Manager snapshots and the Memory-SFT answer examples link through these.
"""

from __future__ import annotations

from collections.abc import Sequence

from memory_r1.data.locomo import questions
from memory_r1.types import QA, Conversation, Memory

CATEGORIES = (1, 2, 3, 4)


def evidence_shown(qa: QA, memories: Sequence[Memory]) -> bool:
    """Whether any shown memory came from one of ``qa``'s evidence turns (``metadata.dia_id``)."""
    evidence = set(qa.evidence)
    return any(m.metadata.get("dia_id") in evidence for m in memories)


def link_questions(
    convs: Sequence[Conversation], categories: Sequence[int] = CATEGORIES
) -> dict[tuple[str, str], list[QA]]:
    """``(sample_id, dia_id) -> questions`` whose evidence holds that turn."""
    links: dict[tuple[str, str], list[QA]] = {}
    for qa in questions(convs, categories):
        for dia_id in dict.fromkeys(qa.evidence):
            links.setdefault((qa.sample_id, dia_id), []).append(qa)
    return links
