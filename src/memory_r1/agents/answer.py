"""Answer Agent (L2): question + 2 x 30 retrieved memories -> distilled memories + short answer.

Paper §3: Mem0's ``ANSWER_PROMPT`` plus (9) list the memories found useful and (10) answer after
``**Answer:**``, in one generation. ``distill=False`` is the ablation without the selection list.
Memories are shown in the order given (the caller retrieves them by descending similarity with
:func:`memory_r1.agents.context.answer_memories`), as ``timestamp: text`` lines.

``AnswerResult.raw`` is ``prompt.response_prefix + completion.text`` (the distilled prompt
prefills the selection heading); the answer marker is never in the prefix, so
``parse_answer(completion.text)`` gives the same answer and marker flag (RL can use either).
:meth:`AnswerAgent.answer_prompts` answers many prompts in one batched call where the backend
batches (transformers): the path validation and ``eval answer-agent`` take, with the same
prompts, sampling and parser as :meth:`AnswerAgent.answer`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from memory_r1.agents.formats import answer_prompt, answer_sampling, parse_answer
from memory_r1.llm.base import ChatModel, Completion, Prompt, Sampling, complete_many
from memory_r1.types import Memory


@dataclass(frozen=True)
class AnswerResult:
    """``answer`` is what metrics score; ``has_marker`` False is a format failure in RL."""

    answer: str
    selected: list[str]
    raw: str
    has_marker: bool
    completion: Completion


class AnswerAgent:
    def __init__(self, model: ChatModel, distill: bool = True) -> None:
        self.model = model
        self.distill = distill

    @property
    def sampling(self) -> Sampling:
        """Greedy, with the agent's token budget and stop strings (RL samples with these too)."""
        return answer_sampling(self.distill)

    def build_prompt(
        self,
        question: str,
        speaker_a: str,
        memories_a: Sequence[Memory],
        speaker_b: str,
        memories_b: Sequence[Memory],
    ) -> Prompt:
        return answer_prompt(question, speaker_a, memories_a, speaker_b, memories_b, distill=self.distill)

    def answer(
        self,
        question: str,
        speaker_a: str,
        memories_a: Sequence[Memory],
        speaker_b: str,
        memories_b: Sequence[Memory],
    ) -> AnswerResult:
        prompt = self.build_prompt(question, speaker_a, memories_a, speaker_b, memories_b)
        return self.answer_prompts([prompt])[0]

    def answer_prompts(self, prompts: Sequence[Prompt]) -> list[AnswerResult]:
        """Answer prompts built by :meth:`build_prompt` (or ``agents.context.answer_context``)."""
        out = []
        for prompt, completion in zip(prompts, complete_many(self.model, prompts, self.sampling)):
            raw = prompt.response_prefix + completion.text
            parsed = parse_answer(raw)
            out.append(AnswerResult(parsed.answer, parsed.selected, raw, parsed.has_marker, completion))
        return out
