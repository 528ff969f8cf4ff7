"""The memory layer for agent builders: ``Memory``, a Mem0-shaped API over the Memory-R1
pipeline and a ``MemoryStore`` (no torch).

>>> from memory_r1.api import Memory, MemoryConfig
"""

from __future__ import annotations

from memory_r1.api.config import MemoryConfig
from memory_r1.api.memory import Memory

__all__ = ["Memory", "MemoryConfig"]
