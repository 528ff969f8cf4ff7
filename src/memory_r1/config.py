"""Run configuration as frozen dataclasses (L0). The CLI fills them; ``__post_init__`` says what
to change when a combination cannot work."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from memory_r1.errors import ConfigError
from memory_r1.llm import BACKENDS as BUILTIN_BACKENDS  # the backend registry (imports no torch)
from memory_r1.llm import available_backends

DEFAULT_MODEL = "smollm2-135m"  # higher validation F1 untrained: 6.31 vs 5.18 (README)


@dataclass(frozen=True)
class ModelConfig:
    """Which LLM runs an agent. ``model`` is a catalogue name, a GGUF path, an HF dir or, for
    ``openai``, the served model's name."""

    backend: str = "llamacpp"
    model: str = DEFAULT_MODEL
    base_url: str | None = None  # openai backend only
    options: dict[str, Any] = field(default_factory=dict)  # passed to the backend constructor

    def __post_init__(self) -> None:
        if self.backend not in BUILTIN_BACKENDS:  # a built-in name needs no entry-point scan
            backends = available_backends()
            if self.backend not in backends:
                raise ConfigError(f"unknown backend {self.backend!r}: choose one of {', '.join(backends)}")
        if self.backend == "openai" and not self.base_url:
            raise ConfigError("the openai backend needs --base-url (e.g. http://127.0.0.1:8000/v1)")

    def kwargs(self) -> dict[str, Any]:
        kw: dict[str, Any] = {"model": self.model, **self.options}
        if self.backend == "openai":
            kw["base_url"] = self.base_url
        return kw


@dataclass(frozen=True)
class SystemConfig:
    """A whole Memory-R1 system: one model per role (the same by default), store, embedder."""

    llm: ModelConfig = ModelConfig()
    manager_llm: ModelConfig | None = None  # e.g. a trained Memory Manager checkpoint
    answer_llm: ModelConfig | None = None  # e.g. a trained Answer Agent checkpoint
    embedder: str = "minilm"
    store_path: str = ":memory:"
    related_k: int = 5
    answer_k: int = 30
    distill: bool = True
    constrained: bool = True  # schema-constrained JSON where the backend offers it

    def __post_init__(self) -> None:
        if self.answer_k < 1 or self.related_k < 1:
            raise ConfigError("related_k and answer_k must be at least 1")
