"""Assemble a ``MemoryR1Pipeline`` from a ``SystemConfig`` through the registries (L2).

With the in-process llama.cpp backend each role (extraction, manager, answer) gets its own
``Llama`` instance on the same GGUF: llama.cpp reuses the KV cache of the longest common token
prefix with the previous call, so a role that keeps its own instance re-reads only the part of
its prompt that changed (the system prompt and few-shot examples are read once). A 135M-270M
GGUF costs ~0.4 GiB per instance. Other backends share one model object per distinct config.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from memory_r1.agents.answer import AnswerAgent
from memory_r1.agents.extract import FactExtractor
from memory_r1.agents.manager import MemoryManager
from memory_r1.agents.pipeline import MemoryR1Pipeline, PipelineConfig
from memory_r1.config import DEFAULT_MODEL, ModelConfig, SystemConfig
from memory_r1.llm import create_model
from memory_r1.llm.base import ChatModel
from memory_r1.store import create_embedder, open_store


def with_shipped_adapters(
    config: SystemConfig, answer_k: int | None = None
) -> tuple[SystemConfig, dict[str, Any] | None]:
    """The trained Memory-R1: ``config`` with the shipped LoRA adapters
    (:mod:`memory_r1.llm.adapters`) on every role that runs the default GGUF on llama.cpp, and
    the Answer Agent's retrieval size from its card unless ``answer_k`` is given.

    Returns ``(config, record)``; ``record`` names each adapter used (path, sha256, commit), or is
    None when no role runs the default model on llama.cpp (the adapters are trained for it
    alone). A missing or corrupt adapter raises ``ModelError`` naming the file.
    """
    from memory_r1.llm.adapters import ROLE_ADAPTER, load_adapter

    def default(mc: ModelConfig | None) -> bool:
        return mc is not None and mc.backend == "llamacpp" and mc.model == DEFAULT_MODEL

    roles = {
        "extract": config.llm,
        "manager": config.manager_llm or config.llm,
        "answer": config.answer_llm or config.llm,
    }
    targets = {role for role, mc in roles.items() if default(mc)}
    if not targets:
        return (config if answer_k is None else replace(config, answer_k=answer_k)), None
    adapters = {ROLE_ADAPTER[r]: load_adapter(ROLE_ADAPTER[r]) for r in sorted(targets)}

    def adapted(role: str) -> ModelConfig:
        mc = roles[role]
        if role not in targets:
            return mc
        lora = str(adapters[ROLE_ADAPTER[role]].gguf)
        return replace(mc, options={**mc.options, "lora_path": lora})

    k = answer_k
    if k is None:
        k = (
            int(adapters["answer"].card.get("pipeline", {}).get("answer_k", config.answer_k))
            if "answer" in adapters
            else config.answer_k
        )
    cfg = replace(
        config,
        llm=adapted("extract"),
        manager_llm=adapted("manager"),
        answer_llm=adapted("answer"),
        answer_k=k,
    )
    return cfg, {name: a.record() for name, a in adapters.items()}


def build_models(config: SystemConfig) -> dict[str, ChatModel]:
    """One model per role: ``extract``, ``manager``, ``answer``."""
    roles = {
        "extract": config.llm,
        "manager": config.manager_llm or config.llm,
        "answer": config.answer_llm or config.llm,
    }
    shared: dict[_ModelKey, ChatModel] = {}
    models: dict[str, ChatModel] = {}
    for role, mc in roles.items():
        key = _key(mc)
        if mc.backend == "llamacpp" or key not in shared:
            shared[key] = create_model(mc.backend, **mc.kwargs())
        models[role] = shared[key]
    return models


#: what makes two model configs the same model: backend, model, base URL and sorted options.
_ModelKey = tuple[str, str, str | None, tuple[tuple[str, Any], ...]]


def _key(mc: ModelConfig) -> _ModelKey:
    return (mc.backend, mc.model, mc.base_url, tuple(sorted(mc.options.items())))


def build_pipeline(config: SystemConfig, models: dict[str, ChatModel] | None = None) -> MemoryR1Pipeline:
    models = models or build_models(config)
    embedder = create_embedder(config.embedder)
    embedder.embed(["warm-up"])  # load the embedding model now, not inside the first turn
    store = open_store(config.store_path, embedder)
    return MemoryR1Pipeline(
        store=store,
        extractor=FactExtractor(models["extract"], constrained=config.constrained),
        manager=MemoryManager(models["manager"], constrained=config.constrained),
        answer_agent=AnswerAgent(models["answer"], distill=config.distill),
        config=PipelineConfig(related_k=config.related_k, answer_k=config.answer_k),
    )
