"""The benchmark harness (L3): several memory systems, one backbone LLM and embedder.

``systems``    the ``System`` protocol, ``BenchContext``, the ``SYSTEMS`` registry, memory-r1
``baselines``  locomo-rag, full-context, vanilla
``runner``     ``run_bench``: each system through the eval runner, in its own folder
``cli``        ``memory-r1 bench locomo | longmemeval | msc``

Like ``eval``, nothing below L3 imports this package.
"""

from memory_r1.bench.runner import run_bench
from memory_r1.bench.systems import SYSTEMS, BenchContext, System, create_system

__all__ = ["SYSTEMS", "BenchContext", "System", "create_system", "run_bench"]
