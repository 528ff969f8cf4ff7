"""Memory systems under one interface, for the benchmark harness (L3).

Every system gets the same :class:`BenchContext`: the backbone LLM (one ``ModelConfig``, and
the in-process models built from it once, shared by role), the embedder name and a folder of
its own. Differences between systems therefore come from how they build memory, not from the
model that answers: every built-in system answers with ``ctx.models["answer"]``.

``SYSTEMS`` is the one registry, name -> ``"module:factory"``; a factory takes a
``BenchContext`` and returns a :class:`System`. Modules are imported only when their system is
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
* ``mem0``, ``mem0-latest``: Mem0 itself, in :mod:`memory_r1.bench.mem0_system`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, Protocol

from memory_r1.agents.system import build_models, build_pipeline
from memory_r1.config import ModelConfig, SystemConfig
from memory_r1.errors import ConfigError
from memory_r1.eval.runner import EvalSystem
from memory_r1.llm import create_model
from memory_r1.llm.base import ChatModel
from memory_r1.registry import resolve
from memory_r1.store import Embedder, create_embedder

#: system name -> "module:factory"; factory(ctx: BenchContext) -> System.
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


@dataclass
class BenchContext:
    """What every system is built from.

    ``models``: in-process models by role (``"extract"``, ``"manager"``, ``"answer"``), shared
    across systems so a GGUF loads once; None = built from ``llm`` on first use
    (:func:`role_models`). ``options``: system-specific settings (``answer_agent``,
    ``memory_manager`` checkpoint dirs, ``distill``, ``constrained``, ``context_tokens``, ...).
    """

    llm: ModelConfig
    embedder: str
    out_dir: Path
    models: dict[str, ChatModel] | None = None
    options: dict[str, Any] = field(default_factory=dict)


class System(EvalSystem, Protocol):
    """A memory system the bench runner drives (``MemoryR1Pipeline`` is one).

    ``ingest_turn`` returns an ``agents.pipeline.TurnResult`` (LLM calls and tokens of the
    turn); ``answer`` returns ``(agents.answer.AnswerResult, retrieval seconds)``;
    ``done_turns`` the dia_ids already ingested into ``bank`` (resume); ``bank_size`` the live
    memories (or stored items) of ``bank``. A system may expose ``version`` (e.g. Mem0's), which
    the run config records.
    """

    name: str

    def bank_size(self, bank: str) -> int: ...

    def close(self) -> None: ...


def create_system(name: str, ctx: BenchContext) -> System:
    """Build the system registered as ``name`` in ``ctx.out_dir`` (created).

    Unknown names raise ``UnknownModelError``; a module that cannot be imported or lacks its
    factory raises ``ConfigError`` naming the system, so a runner can skip it and go on.
    """
    try:
        factory = resolve(SYSTEMS, name, "memory system")
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"memory system {name!r} is not available ({SYSTEMS[name]}): {exc}") from exc
    ctx.out_dir.mkdir(parents=True, exist_ok=True)
    return factory(ctx)  # type: ignore[no-any-return]


@cache
def shared_embedder(name: str) -> Embedder:
    """One warmed-up embedder per name for the whole process (MiniLM loads once; it and the
    hash embedder are thread-safe)."""
    embedder = create_embedder(name)
    embedder.embed(["warm-up"])
    return embedder  # type: ignore[no-any-return]


def role_models(ctx: BenchContext) -> dict[str, ChatModel]:
    """``ctx.models``, built from the backbone (and kept in ``ctx``) when not given."""
    if ctx.models is None:
        ctx.models = build_models(SystemConfig(llm=ctx.llm, embedder=ctx.embedder))
    return ctx.models


def checkpoint(path: str | None) -> ModelConfig | None:
    """A trained agent checkpoint (HF dir) as the ``hf``-backend config ``eval locomo`` uses."""
    return ModelConfig(backend="hf", model=path) if path else None


def create_memory_r1(ctx: BenchContext, *, trained: bool = True) -> System:
    """The Memory-R1 pipeline, store at ``out_dir/store.sqlite``; the shipped adapters (when
    ``trained``) or trained checkpoints replace the backbone for their role only."""
    from memory_r1.agents.system import with_shipped_adapters

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


def create_memory_r1_untrained(ctx: BenchContext) -> System:
    """``memory-r1`` on the untrained backbone (no adapters, the paper's 30 memories per speaker)."""
    return create_memory_r1(ctx, trained=False)
