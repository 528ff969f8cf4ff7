"""memory-r1: an LLM agent's long-term memory whose Memory Manager and Answer Agent are learned.

``from memory_r1 import Memory`` gives the memory layer (:mod:`memory_r1.api`); it is imported on
first use, so ``import memory_r1`` stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from memory_r1.api import Memory, MemoryConfig

__all__ = ["Memory", "MemoryConfig"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from memory_r1 import api

        return getattr(api, name)
    raise AttributeError(f"module 'memory_r1' has no attribute {name!r}")
