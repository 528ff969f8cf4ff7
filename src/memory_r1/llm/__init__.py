"""LLM backends behind one seam (``base.ChatModel``), chosen by name and imported lazily (L1).

``create_model("llamacpp", model="smollm2-135m")`` imports only the chosen backend, so torch
(``hf``) and llama_cpp (``llamacpp``) stay optional: importing ``memory_r1.llm`` imports neither.
Third-party packages add backends through the ``memory_r1.backends`` entry-point group
(``name = "pkg.module:Class"``); the built-in names win on a clash.
"""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Any

from memory_r1.llm.base import (
    COMPLETION_STOPS,
    ChatModel,
    Message,
    Prompt,
    Sampling,
    complete_many,
    render_completion,
)
from memory_r1.registry import resolve
from memory_r1.types import Completion

#: backend name -> "module:Class"; the one mapping of built-in backends.
BACKENDS: dict[str, str] = {
    "llamacpp": "memory_r1.llm.llamacpp:LlamaCppModel",
    "openai": "memory_r1.llm.openai_compat:OpenAICompatModel",
    "hf": "memory_r1.llm.hf:HFModel",
}

ENTRY_POINT_GROUP = "memory_r1.backends"


def available_backends() -> dict[str, str]:
    """Built-in backends plus those registered by installed packages (entry points)."""
    found = {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}
    return {**found, **BACKENDS}


def create_model(backend: str, **kwargs: Any) -> ChatModel:
    """Instantiate ``backend`` with ``kwargs`` (the backend class's own parameters).

    Raises :class:`UnknownModelError` for a name no registry knows; a backend whose optional
    dependency is missing raises :class:`memory_r1.errors.ModelError` saying what to install.
    """
    return resolve(available_backends(), backend, "LLM backend")(**kwargs)


__all__ = [
    "BACKENDS",
    "COMPLETION_STOPS",
    "ChatModel",
    "Completion",
    "Message",
    "Prompt",
    "Sampling",
    "available_backends",
    "complete_many",
    "create_model",
    "render_completion",
]
