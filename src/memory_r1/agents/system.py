"""Assemble a ``MemoryR1Pipeline`` from a ``SystemConfig`` through the registries (L2).

With the in-process llama.cpp backend each role (extraction, manager, answer) gets its own
``Llama`` instance on the same GGUF: llama.cpp reuses the KV cache of the longest common token
prefix with the previous call, so a role that keeps its own instance re-reads only the part of
its prompt that changed (the system prompt and few-shot examples are read once). A 135M-270M
GGUF costs ~0.4 GiB per instance. Other backends share one model object per distinct config.
"""

from __future__ import annotations

from memory_r1.agents.answer import AnswerAgent
from memory_r1.agents.extract import FactExtractor
from memory_r1.agents.manager import MemoryManager
from memory_r1.agents.pipeline import MemoryR1Pipeline, PipelineConfig
from memory_r1.config import ModelConfig, SystemConfig
from memory_r1.llm import create_model
from memory_r1.llm.base import ChatModel
from memory_r1.store import create_embedder, open_store


def build_models(config: SystemConfig) -> dict[str, ChatModel]:
    """One model per role: ``extract``, ``manager``, ``answer``."""
    roles = {
        "extract": config.llm,
        "manager": config.manager_llm or config.llm,
        "answer": config.answer_llm or config.llm,
    }
    shared: dict[ModelConfig, ChatModel] = {}
    models: dict[str, ChatModel] = {}
    for role, mc in roles.items():
        key = _key(mc)
        if mc.backend == "llamacpp" or key not in shared:
            shared[key] = create_model(mc.backend, **mc.kwargs())
        models[role] = shared[key]
    return models


def _key(mc: ModelConfig):  # noqa: ANN202 - a hashable identity of a model config
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
