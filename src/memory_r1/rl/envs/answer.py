"""The Answer Agent's RL environment (paper section 4 and section 9 item 4), torch-free.

:class:`AnswerEnv` - one episode per question (categories 1-4): the Answer Agent's prompt over
the top ``k`` memories of each speaker (2 x 30) retrieved once from a built bank
(:func:`memory_r1.agents.context.answer_context`, the function inference uses); reward = EM,
F1 or their mean after ``**Answer:**`` (0 without the marker; :mod:`memory_r1.rl.envs.rewards`).

Also here: :data:`Render` and :func:`rendered`, how both environments hand out a prompt (as
a :class:`~memory_r1.llm.base.Prompt`, or as final text when given a ``render``).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from memory_r1.agents.answer import answer_sampling
from memory_r1.agents.context import answer_context
from memory_r1.data.locomo import questions, split_conversations
from memory_r1.llm.base import Prompt
from memory_r1.rl.envs.evidence import CATEGORIES, evidence_shown
from memory_r1.rl.envs.rewards import REWARDS, Reward, score_answers
from memory_r1.types import QA, Conversation

if TYPE_CHECKING:
    from memory_r1.agents.pipeline import MemoryR1Pipeline
    from memory_r1.store.base import MemoryStore

Render = Callable[[Prompt], str]


def rendered(prompt: Prompt, render: Render | None) -> str | Prompt:
    """``render(prompt)``, or the prompt itself without a ``render``."""
    return render(prompt) if render is not None else prompt


def _ingest_missing(pipeline: MemoryR1Pipeline, store: MemoryStore, bank: str, conv: Conversation) -> None:
    """Ingest the turns of ``conv`` whose marker ``store[bank]`` lacks (resumable)."""
    done = store.markers(bank)
    for turn in conv.turns():
        if turn.dia_id not in done:
            pipeline.ingest_turn(bank, turn)


class AnswerEnv:
    """Answer Agent episodes over banks already in ``store`` (or built here by ``pipeline``).

    ``bank(conv)`` names a conversation's bank (default its ``sample_id``, as the eval runner
    does). With ``pipeline`` and no ``store``, ``pipeline.store`` is used and turns whose marker
    is missing are ingested first (resumable). ``k``: memories per speaker (paper 30; see
    :mod:`memory_r1.rl.envs.builders`). Prompts come from
    :func:`memory_r1.agents.context.answer_context`, the function inference uses.

    ``reward``: ``"em"`` (the paper's), ``"f1"`` or ``"em+f1"`` (their mean), all over the
    parsed answer and 0 without a marker (:mod:`memory_r1.rl.envs.rewards`). Filters (counted in
    ``skipped``): ``require_evidence`` drops questions none of whose evidence turns is among
    the shown memories (no answer can be read off the prompt); ``skip_empty`` drops prompts
    that show no memory at all. ``stops`` / ``budget``: the Answer Agent's stop strings and
    token budget at inference, which rollouts use too.

    Metas: ``{"qid", "answer", "category", "question", "evidence_shown"}``; ``episodes``
    keeps conversation then question order (validation takes a prefix).
    """

    def __init__(
        self,
        convs: Sequence[Conversation],
        store: MemoryStore | None = None,
        *,
        pipeline: MemoryR1Pipeline | None = None,
        k: int = 30,
        split: str | None = "train",
        bank: Callable[[Conversation], str] = lambda c: c.sample_id,
        categories: Sequence[int] = CATEGORIES,
        distill: bool = True,
        render: Render | None = None,
        reward: Reward = "em",
        require_evidence: bool = False,
        skip_empty: bool = True,
    ) -> None:
        if store is None and pipeline is None:
            raise ValueError("AnswerEnv needs a store with built banks or a pipeline")
        if reward not in REWARDS:
            raise ValueError(f"reward must be one of {REWARDS}, got {reward!r}")
        if store is None:
            assert pipeline is not None
            store = pipeline.store
        convs = split_conversations(convs, split) if split is not None else list(convs)
        self.render, self.reward, self.distill = render, reward, distill
        sampling = answer_sampling(distill)
        self.stops, self.budget = sampling.stop, sampling.max_tokens
        self.episodes: list[tuple[Prompt, dict[str, Any]]] = []
        self.skipped = {"no_evidence_shown": 0, "empty": 0}
        for conv in convs:
            name = bank(conv)
            if pipeline is not None:
                _ingest_missing(pipeline, store, name, conv)
            for qa in questions([conv], categories):
                episode = self._episode(
                    store, name, conv, qa, k, require_evidence=require_evidence, skip_empty=skip_empty
                )
                if episode is not None:
                    self.episodes.append(episode)
        if not self.episodes:
            raise ValueError(
                f"AnswerEnv: no questions in the given conversations/split (skipped {self.skipped})"
            )
        self._failures = 0.0

    def _episode(
        self,
        store: MemoryStore,
        bank: str,
        conv: Conversation,
        qa: QA,
        k: int,
        *,
        require_evidence: bool,
        skip_empty: bool,
    ) -> tuple[Prompt, dict[str, Any]] | None:
        """``qa``'s prompt and meta, or None (counted in ``skipped``) when a filter drops it."""
        prompt, mem_a, mem_b = answer_context(
            store, bank, qa.question, conv.speakers, k, distill=self.distill
        )
        shown = evidence_shown(qa, [*mem_a, *mem_b])
        if skip_empty and not mem_a and not mem_b:
            self.skipped["empty"] += 1
            return None
        if require_evidence and not shown:
            self.skipped["no_evidence_shown"] += 1
            return None
        meta = {
            "qid": qa.qid,
            "answer": qa.answer,
            "category": qa.category,
            "question": qa.question,
            "evidence_shown": shown,
        }
        return prompt, meta

    def __len__(self) -> int:
        return len(self.episodes)

    def prompts(self, batch_size: int, rng: random.Random) -> list[tuple[str | Prompt, Any]]:
        picks = [rng.choice(self.episodes) for _ in range(batch_size)]
        return [(rendered(p, self.render), dict(meta)) for p, meta in picks]

    def score(self, completions: list[str], metas: list[Any]) -> list[float]:
        stats = score_answers(completions, [m["answer"] for m in metas], self.reward)
        self._failures = stats.format_failure_rate
        return stats.rewards

    def stats(self) -> dict[str, float]:
        return {"format_failure_rate": self._failures}
