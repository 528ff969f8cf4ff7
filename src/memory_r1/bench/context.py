"""What every bench system is built from (L3): :class:`BenchContext` and the shared models.

Every system gets the same :class:`BenchContext`: the backbone LLM (one ``ModelConfig``, and
the in-process models built from it once, shared by role), the embedder name and a folder of
its own. Differences between systems therefore come from how they build memory, not from the
model that answers: every built-in system answers with ``ctx.models["answer"]``
(:func:`role_models`) and embeds with :func:`shared_embedder`.

The system modules (``systems``, ``baselines``, ``mem0_system``, ``amem_system``) import this
module; it imports none of them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from memory_r1.agents.system import build_models
from memory_r1.config import ModelConfig, SystemConfig
from memory_r1.llm.base import ChatModel
from memory_r1.store import Embedder, create_embedder


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


@cache
def shared_embedder(name: str) -> Embedder:
    """One warmed-up embedder per name for the whole process (MiniLM loads once; it and the
    hash embedder are thread-safe)."""
    embedder = create_embedder(name)
    embedder.embed(["warm-up"])
    return embedder


def role_models(ctx: BenchContext) -> dict[str, ChatModel]:
    """``ctx.models``, built from the backbone (and kept in ``ctx``) when not given."""
    if ctx.models is None:
        ctx.models = build_models(SystemConfig(llm=ctx.llm, embedder=ctx.embedder))
    return ctx.models
