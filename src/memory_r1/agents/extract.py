"""Fact extraction (L2): one LoCoMo utterance -> self-contained facts (paper Alg. 3, step 1).

Mem0's ``FACT_RETRIEVAL_PROMPT`` adapted to one turn with its session date-time (the paper,
default 2: turn = one utterance, so evidence ids map 1:1). The prompt and parser live in
:mod:`memory_r1.agents.formats`.

Failure contract: an output that cannot be parsed is returned as ``error`` with ``facts == []``;
the turn's own text is NOT used as a fallback fact (that would hide the failure and store raw
chit-chat). The pipeline records the error as one INVALID op and counts it. A truncated list
returns the complete facts salvaged *and* an error, so a caller may keep them or not.
"""

from __future__ import annotations

from dataclasses import dataclass

from memory_r1.agents.formats import extract_prompt, extract_sampling, parse_facts
from memory_r1.llm.base import ChatModel, Completion, Prompt
from memory_r1.types import Turn


@dataclass(frozen=True)
class ExtractResult:
    """``facts`` (maybe empty = nothing worth keeping), ``error`` (None = parsed) and the raw call."""

    facts: list[str]
    error: str | None
    completion: Completion


class FactExtractor:
    """``extract(turn)`` with one model call; ``constrained`` asks for JSON-schema decoding."""

    def __init__(self, model: ChatModel, constrained: bool = True) -> None:
        self.model = model
        self.constrained = constrained

    def build_prompt(self, turn: Turn) -> Prompt:
        return extract_prompt(turn)

    def extract(self, turn: Turn) -> ExtractResult:
        completion = self.model.complete(self.build_prompt(turn), extract_sampling(self.constrained))
        facts, error = parse_facts(completion.text)
        return ExtractResult(facts, error, completion)
