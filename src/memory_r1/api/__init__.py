"""The memory layer for agent builders: ``Memory``, a Mem0-shaped API over the Memory-R1
pipeline and a ``MemoryStore`` (no torch)."""
