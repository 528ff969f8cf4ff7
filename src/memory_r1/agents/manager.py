"""Memory Manager (L2): new facts + related memories -> ADD / UPDATE / DELETE / NOOP ops.

Paper §2 (Alg. 3, step 3): Mem0's ``DEFAULT_UPDATE_MEMORY_PROMPT`` over memories whose ids are
remapped to ``"0", "1", ...`` (:class:`~memory_r1.agents.formats.IdMap`) and mapped back after.
Pure: no store access. The caller retrieves ``related`` and applies the returned ops.

Every unusable output or item becomes an ``INVALID`` op (counted in ``n_invalid``); nothing is
dropped silently. :meth:`MemoryManager.build_prompt` is public so RL rollouts render exactly the
prompt the pipeline uses and parse with :func:`~memory_r1.agents.formats.parse_operations`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from memory_r1.agents.formats import IdMap, manager_prompt, manager_sampling, parse_operations
from memory_r1.llm.base import ChatModel, Completion, Prompt
from memory_r1.types import Memory, Op, OpKind


@dataclass(frozen=True)
class ManagerResult:
    """Ops with real memory ids; ``completion`` is None when no call was made (no facts)."""

    ops: list[Op]
    completion: Completion | None
    n_invalid: int


class MemoryManager:
    """``decide(facts, related)``; ``constrained`` asks the backend for JSON-schema decoding."""

    def __init__(self, model: ChatModel, constrained: bool = True) -> None:
        self.model = model
        self.constrained = constrained

    def build_prompt(self, facts: Sequence[str], related: Sequence[Memory]) -> tuple[Prompt, IdMap]:
        """The manager prompt and the id map needed to parse its answer."""
        idmap = IdMap(related)
        return manager_prompt(facts, idmap), idmap

    def decide(self, facts: Sequence[str], related: Sequence[Memory]) -> ManagerResult:
        """One model call (none if ``facts`` is empty) -> parsed ops, INVALID ones included."""
        if not facts:
            return ManagerResult([], None, 0)
        prompt, idmap = self.build_prompt(facts, related)
        # One item per fact is asked for; +1 leaves room for a DELETE beside an ADD.
        sampling = manager_sampling(self.constrained, max_items=len(facts) + 1)
        completion = self.model.complete(prompt, sampling)
        ops = parse_operations(completion.text, idmap, facts)
        return ManagerResult(ops, completion, sum(op.kind is OpKind.INVALID for op in ops))
