"""The bench's memory systems by name, and the Memory-R1 pipeline as two of them (L3).

Every system is built from the same :class:`memory_r1.bench.context.BenchContext` and satisfies
:class:`memory_r1.types.MemorySystem`.

``SYSTEMS`` is the one registry, name -> ``"module:factory"``; a factory takes a
``BenchContext`` and returns a ``MemorySystem``. Modules are imported only when their system is
chosen (:func:`create_system`), so an optional system whose module or dependencies are missing
(Mem0) fails with a ``ConfigError`` for itself alone. Built-in systems:

* ``memory-r1``: the trained Memory-R1 pipeline (learned Manager + Answer Agent with
  distillation): on the default GGUF through llama.cpp every role runs with its shipped
  adapter (:func:`memory_r1.agents.system.with_shipped_adapters`), so it alone does not answer
  with the untrained backbone; ``options["memory_manager"]`` / ``options["answer_agent"]``
  are trained HF checkpoint dirs run through the ``hf`` backend for that role instead (as
  ``eval locomo --answer-agent``);
* ``memory-r1-untrained``: the same pipeline on the untrained backbone;
* ``locomo-rag``, ``full-context``, ``vanilla``: the baselines in :mod:`memory_r1.bench.baselines`;
* ``mem0``, ``mem0-latest``: Mem0 itself, in :mod:`memory_r1.bench.mem0_system`;
* ``a-mem``: A-Mem, in :mod:`memory_r1.bench.amem_system`.
"""

from __future__ import annotations

from memory_r1.agents.system import build_pipeline, with_shipped_adapters
from memory_r1.bench.context import BenchContext, role_models
from memory_r1.config import ModelConfig, SystemConfig
from memory_r1.errors import ConfigError
from memory_r1.llm import create_model
from memory_r1.registry import resolve
from memory_r1.types import MemorySystem

#: system name -> "module:factory"; factory(ctx: BenchContext) -> MemorySystem.
SYSTEMS: dict[str, str] = {
    "memory-r1": "memory_r1.bench.systems:create_memory_r1",
    "memory-r1-untrained": "memory_r1.bench.systems:create_memory_r1_untrained",
    "locomo-rag": "memory_r1.bench.baselines:create_locomo_rag",
    "full-context": "memory_r1.bench.baselines:create_full_context",
    "vanilla": "memory_r1.bench.baselines:create_vanilla",
    "mem0": "memory_r1.bench.mem0_system:create_mem0",
    "mem0-latest": "memory_r1.bench.mem0_system:create_mem0_latest",
    "a-mem": "memory_r1.bench.amem_system:create_amem",
}


def create_system(name: str, ctx: BenchContext) -> MemorySystem:
    """Build the system registered as ``name`` in ``ctx.out_dir`` (created).

    Unknown names raise ``UnknownModelError``; a module that cannot be imported or lacks its
    factory raises ``ConfigError`` naming the system, so a runner can skip it and go on.
    """
    try:
        factory = resolve(SYSTEMS, name, "memory system")
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"memory system {name!r} is not available ({SYSTEMS[name]}): {exc}") from exc
    ctx.out_dir.mkdir(parents=True, exist_ok=True)
    return factory(ctx)


def checkpoint(path: str | None) -> ModelConfig | None:
    """A trained agent checkpoint (HF dir) as the ``hf``-backend config ``eval locomo`` uses."""
    return ModelConfig(backend="hf", model=path) if path else None


def create_memory_r1(ctx: BenchContext, *, trained: bool = True) -> MemorySystem:
    """The Memory-R1 pipeline, store at ``out_dir/store.sqlite``; the shipped adapters (when
    ``trained``) or trained checkpoints replace the backbone for their role only."""
    o = ctx.options
    cfg = SystemConfig(
        llm=ctx.llm,
        manager_llm=checkpoint(o.get("memory_manager")),
        answer_llm=checkpoint(o.get("answer_agent")),
        embedder=ctx.embedder,
        store_path=str(ctx.out_dir / "store.sqlite"),
        distill=o.get("distill", True),
        constrained=o.get("constrained", True),
    )
    adapters = None
    if trained:
        cfg, adapters = with_shipped_adapters(cfg)
    models = dict(role_models(ctx))
    for role, mc in (("extract", cfg.llm), ("manager", cfg.manager_llm), ("answer", cfg.answer_llm)):
        if mc is not None and (mc.backend == "hf" or "lora_path" in mc.options):
            models[role] = create_model(mc.backend, **mc.kwargs())
    pipeline = build_pipeline(cfg, models)
    pipeline.name = "memory-r1" if trained else "memory-r1-untrained"
    info = {"adapters": adapters, "answer_k": cfg.answer_k}
    pipeline.describe = lambda: info  # type: ignore[attr-defined]
    return pipeline


def create_memory_r1_untrained(ctx: BenchContext) -> MemorySystem:
    """``memory-r1`` on the untrained backbone (no adapters, the paper's 30 memories per speaker)."""
    return create_memory_r1(ctx, trained=False)
