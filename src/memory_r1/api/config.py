"""The memory layer's configuration: one frozen dataclass, from a dict or a JSON / TOML file.

Native shape (every key optional)::

    {"store": {"kind": "sqlite", "path": "memories.sqlite"},      # or {"kind": "postgres", "dsn": ...}
     "llm": {"backend": "llamacpp", "model": "smollm2-135m",       # or "openai" + "base_url" (+ "api_key")
             "adapters": "shipped"},                               # "shipped" (the trained agents) | "none"
     "embedder": "minilm", "bank": "default", "related_k": 5, "answer_k": null}

Mem0's shape is accepted too (``vector_store`` / ``llm`` / ``embedder`` as ``{"provider", "config"}``:
``vector_store.provider`` ``sqlite`` | ``postgres`` | ``pgvector`` with ``path`` / ``dsn`` /
``connection_string``; ``llm.provider`` ``llamacpp`` | ``openai`` | ``ollama`` | ``vllm`` | ``lmstudio``
with ``model`` and ``openai_base_url`` / ``base_url`` / ``ollama_base_url``). An unknown key is an
error naming it, never ignored.
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from memory_r1.config import DEFAULT_MODEL, ModelConfig
from memory_r1.errors import ConfigError, DataError

#: Mem0 LLM providers that speak the OpenAI API.
_OPENAI_PROVIDERS = {"openai", "ollama", "vllm", "lmstudio", "openai_compatible", "litellm"}


def default_store_path() -> str:
    """``$MEMORY_R1_STORE``, else ``~/.memory-r1/memories.sqlite``."""
    return os.environ.get("MEMORY_R1_STORE") or str(Path.home() / ".memory-r1" / "memories.sqlite")


@dataclass(frozen=True)
class MemoryConfig:
    """Everything ``Memory`` needs; ``__post_init__`` says what to change."""

    store_kind: str = "sqlite"
    store_target: str = field(default_factory=default_store_path)  # SQLite path or PostgreSQL DSN
    llm: ModelConfig = field(default_factory=ModelConfig)
    api_key: str | None = None  # openai backend: sent as the bearer token
    adapters: str = "shipped"  # the trained agents over the default GGUF on llama.cpp; "none": base model
    embedder: str = "minilm"
    bank: str = "default"
    related_k: int = 5
    answer_k: int | None = None  # None: the shipped Answer Agent's own retrieval size (its card), else 30

    def __post_init__(self) -> None:
        if self.store_kind not in ("sqlite", "postgres"):
            raise ConfigError(f"store kind {self.store_kind!r}: choose sqlite or postgres")
        if self.adapters not in ("shipped", "none"):
            raise ConfigError(f"adapters {self.adapters!r}: choose shipped or none")
        if not self.bank.strip():
            raise ConfigError("bank must be a non-empty name")
        if self.related_k < 1 or (self.answer_k is not None and self.answer_k < 1):
            raise ConfigError("related_k and answer_k must be at least 1")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None, source: str = "config") -> MemoryConfig:
        """Native or Mem0-shaped dict -> config; unknown keys raise ``DataError`` naming them."""
        data = dict(data or {})
        kw: dict[str, Any] = {}
        store = data.pop("store", None) or _mem0_store(data.pop("vector_store", None), source)
        if store:
            store = dict(_mapping(store, source, "store"))
            kw["store_kind"] = str(store.pop("kind", "sqlite"))
            target = store.pop("path", None) or store.pop("dsn", None)
            if target is not None:
                kw["store_target"] = str(target)
            _no_more(store, source, "store")
        llm = data.pop("llm", None)
        if llm:
            kw.update(_llm(_mapping(llm, source, "llm"), source))
        emb = data.pop("embedder", None)
        if emb is not None:
            kw["embedder"] = (
                emb if isinstance(emb, str) else str(_mapping(emb, source, "embedder")["provider"])
            )
        simple = {f.name for f in fields(cls)} - {"store_kind", "store_target", "llm", "api_key", "embedder"}
        for key in list(data):
            if key in simple:
                kw[key] = data.pop(key)
        _no_more(data, source, "")
        return cls(**kw)

    @classmethod
    def from_file(cls, path: str | Path) -> MemoryConfig:
        """A JSON or TOML file (by suffix) in the shape of :meth:`from_dict`."""
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8")
            data = tomllib.loads(text) if p.suffix == ".toml" else json.loads(text)
        except OSError as e:
            raise DataError(p, "", f"cannot read: {e.strerror or e}") from e
        except (ValueError, tomllib.TOMLDecodeError) as e:
            raise DataError(p, "", f"not valid {'TOML' if p.suffix == '.toml' else 'JSON'}: {e}") from e
        if not isinstance(data, dict):
            raise DataError(p, "", "the top level must be an object")
        return cls.from_dict(data, source=str(p))


def _mapping(value: Any, source: str, key: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise DataError(source, key, f"must be an object, got {type(value).__name__}")
    return value


def _no_more(rest: Mapping[str, Any], source: str, where: str) -> None:
    if rest:
        names = ", ".join(f"{where}.{k}" if where else k for k in rest)
        raise DataError(source, names, "unknown key")


def _mem0_store(vector_store: Any, source: str) -> dict[str, Any] | None:
    if vector_store is None:
        return None
    vs = dict(_mapping(vector_store, source, "vector_store"))
    provider = str(vs.pop("provider", "sqlite"))
    conf = dict(_mapping(vs.pop("config", {}), source, "vector_store.config"))
    _no_more(vs, source, "vector_store")
    kind = {"sqlite": "sqlite", "postgres": "postgres", "pgvector": "postgres"}.get(provider)
    if kind is None:
        raise DataError(source, "vector_store.provider", f"{provider!r}: choose sqlite, postgres or pgvector")
    target = conf.pop("path", None) or conf.pop("dsn", None) or conf.pop("connection_string", None)
    for ignored in ("collection_name", "embedding_model_dims"):  # Mem0 keys with no meaning here
        conf.pop(ignored, None)
    _no_more(conf, source, "vector_store.config")
    return {"kind": kind, **({"path": target} if target else {})}


def _llm(llm: Mapping[str, Any], source: str) -> dict[str, Any]:
    llm = dict(llm)
    if "provider" in llm:  # Mem0's {"provider", "config"}
        provider = str(llm.pop("provider"))
        conf = dict(_mapping(llm.pop("config", {}), source, "llm.config"))
        _no_more(llm, source, "llm")
        backend = "openai" if provider in _OPENAI_PROVIDERS else provider
        base = (
            conf.pop("openai_base_url", None)
            or conf.pop("ollama_base_url", None)
            or conf.pop("base_url", None)
        )
        llm = {"backend": backend, "model": conf.pop("model", DEFAULT_MODEL), "base_url": base}
        llm |= {k: conf.pop(k) for k in ("api_key", "adapters") if k in conf}
        for ignored in ("temperature", "max_tokens", "top_p"):  # decoding is the agents' own
            conf.pop(ignored, None)
        _no_more(conf, source, "llm.config")
    out: dict[str, Any] = {}
    if "adapters" in llm:
        out["adapters"] = str(llm.pop("adapters"))
    if "api_key" in llm:
        out["api_key"] = llm.pop("api_key")
    backend = str(llm.pop("backend", "llamacpp"))
    model = str(llm.pop("model", DEFAULT_MODEL))
    base_url = llm.pop("base_url", None)
    _no_more(llm, source, "llm")
    out["llm"] = ModelConfig(backend=backend, model=model, base_url=base_url)
    return out
