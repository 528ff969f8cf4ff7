"""Answer Agent (L2): question + 2 x 30 retrieved memories -> distilled memories + short answer.

Paper §3: Mem0's ``ANSWER_PROMPT`` plus (9) list the memories found useful and (10) answer after
``**Answer:**``, in one generation. ``distill=False`` is the ablation without the selection list.
Memories are shown in the order given (the caller passes them by descending similarity), at
most ``per_speaker`` (30) each, as ``timestamp: text`` lines.

``AnswerResult.raw`` is ``prompt.response_prefix + completion.text`` (the distilled prompt
prefills the selection heading); the answer marker is never in the prefix, so
``parse_answer(completion.text)`` gives the same answer and marker flag (RL can use either).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from memory_r1.agents.formats import PER_SPEAKER, answer_prompt, answer_sampling, parse_answer
from memory_r1.llm.base import ChatModel, Completion, Prompt
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
    def __init__(self, model: ChatModel, distill: bool = True, per_speaker: int = PER_SPEAKER) -> None:
        self.model = model
        self.distill = distill
        self.per_speaker = per_speaker

    def build_prompt(self, question: str, speaker_a: str, memories_a: Sequence[Memory],
                     speaker_b: str, memories_b: Sequence[Memory]) -> Prompt:
        return answer_prompt(question, speaker_a, memories_a, speaker_b, memories_b,
                             distill=self.distill, per_speaker=self.per_speaker)

    def answer(self, question: str, speaker_a: str, memories_a: Sequence[Memory],
               speaker_b: str, memories_b: Sequence[Memory]) -> AnswerResult:
        prompt = self.build_prompt(question, speaker_a, memories_a, speaker_b, memories_b)
        completion = self.model.complete(prompt, answer_sampling(self.distill))
        raw = prompt.response_prefix + completion.text
        parsed = parse_answer(raw)
        return AnswerResult(parsed.answer, parsed.selected, raw, parsed.has_marker, completion)
