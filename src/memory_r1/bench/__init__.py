"""The benchmark harness (L3): several memory systems, one backbone LLM and embedder.

``context``        ``BenchContext``, the models and embedder every system shares
``systems``        the ``SYSTEMS`` registry, ``create_system``, memory-r1
``baselines``      locomo-rag, full-context, vanilla
``worker_system``  the lifecycle of a library run in its own venv (``mem0_system``, ``amem_system``)
``runner``         ``run_bench``: each system through the eval runner, in its own folder
``report``         the comparison report (``report_markdown``, ``report_charts``, ``published``)

Every system is a :class:`memory_r1.types.MemorySystem`. Like ``eval``, nothing below L3
imports this package.
"""

from memory_r1.bench.context import BenchContext
from memory_r1.bench.runner import run_bench
from memory_r1.bench.systems import SYSTEMS, create_system

__all__ = ["SYSTEMS", "BenchContext", "create_system", "run_bench"]
