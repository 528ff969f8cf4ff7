"""Helpers the commands share: option values -> configs, the judge, the data digest."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any

from memory_r1.config import ModelConfig
from memory_r1.errors import ConfigError

DEFAULT_LORA_R = 16


def same_named(cls: type, options: Mapping[str, Any]) -> dict[str, Any]:
    """The ``options`` whose names are fields of the dataclass ``cls``."""
    return {f.name: options[f.name] for f in fields(cls) if f.name in options}


def lora_rank(lora_r: int | None, full: bool) -> int | None:
    """``--lora-r R | --full`` -> the LoRA rank, or None for full fine-tuning."""
    if full and lora_r is not None:
        raise ConfigError("give either --lora-r or --full, not both")
    if lora_r is not None and lora_r < 1:
        raise ConfigError("--lora-r must be >= 1")
    return None if full else (lora_r or DEFAULT_LORA_R)


def frozen_answer_model(
    model: str, *, backend: str | None = None, base_url: str | None = None, lora: str | None = None
) -> ModelConfig:
    """The frozen Answer Agent of Manager training, from an HF directory, a GGUF / catalogue
    name (+ a GGUF LoRA adapter) or an OpenAI-compatible endpoint.

    ``backend`` None picks it from ``model``: ``openai`` when ``base_url`` is given, ``hf``
    for a directory (a trained checkpoint), else ``llamacpp``. ``lora`` ``"shipped"``: the
    shipped Answer Agent's GGUF LoRA (checked by :func:`~memory_r1.llm.adapters.load_adapter`).
    """
    if lora == "shipped":
        from memory_r1.llm.adapters import load_adapter

        lora = str(load_adapter("answer").gguf)
    if backend is None:
        backend = "openai" if base_url else ("hf" if Path(model).expanduser().is_dir() else "llamacpp")
    if lora and backend != "llamacpp":
        raise ConfigError("--answer-lora is a GGUF LoRA adapter for the llamacpp backend")
    if backend == "llamacpp" and Path(model).expanduser().is_dir():
        raise ConfigError(
            f"{model} is an HF directory: the llamacpp backend needs a GGUF "
            "(use --answer-backend hf, or leave --answer-backend unset)"
        )
    return ModelConfig(
        backend=backend, model=model, base_url=base_url, options={"lora_path": lora} if lora else {}
    )


def make_judge(model: str | None, backend: str, base_url: str | None, runs: int) -> Any:
    """The LLM-as-judge of ``--judge-model`` (None when no model is given)."""
    if not model:
        return None
    from memory_r1.eval.judge import Judge
    from memory_r1.llm import create_model

    jm = ModelConfig(backend=backend, model=model, base_url=base_url)
    return Judge(create_model(jm.backend, **jm.kwargs()), runs=runs)


def data_sha256(data: str | None) -> str | None:
    """SHA-256 of the LoCoMo file ``data`` (the default one when None); None if unreadable."""
    from memory_r1.data.locomo import default_path, sha256_of

    try:
        return sha256_of(data or default_path())
    except OSError:
        return None
