"""The trained agents shipped with memory-r1: GGUF LoRA adapters over the default GGUF (L1).

Two adapters live in ``memory_r1/adapters/<name>/`` (written by ``memory-r1 export adapter``,
regenerated from scratch by ``make train``):

* ``memory`` - the fact extractor and the Memory Manager (one adapter, two prompts);
* ``answer`` - the Answer Agent.

Each directory holds ``adapter.gguf`` (what llama.cpp loads at run time over the quantized
base), ``adapter_model.safetensors`` + ``adapter_config.json`` (the same weights as a PEFT
adapter, for further training), ``CARD.md`` (for people) and ``card.json`` (for this module):
``{"name", "base_model", "base_sha256", "rank", "files": {file: sha256}, "pipeline": {...},
"scores": {...}, "commands": [...], "commit"}``. ``card["pipeline"]`` holds the inference
settings the adapter was trained for (e.g. ``answer_k``).

:func:`load_adapter` checks that every file exists, that its sha256 is the card's, that the
GGUF is a LoRA adapter, and that the base model is the one the adapter was trained over
(by sha256), raising :class:`~memory_r1.errors.ModelError` that names the file otherwise:
llama.cpp itself reports a bad adapter file as a bare failure, or not at all.
Nothing here imports torch or llama_cpp.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from memory_r1.errors import ModelError
from memory_r1.llm.models import file_sha256, gguf_metadata, resolve_model

ADAPTERS_DIR = Path(__file__).resolve().parent.parent / "adapters"
ADAPTER_NAMES = ("memory", "answer")
ROLE_ADAPTER = {"extract": "memory", "manager": "memory", "answer": "answer"}
GGUF_FILE = "adapter.gguf"
CARD_FILES = ("card.json", "CARD.md")


@dataclass(frozen=True)
class Adapter:
    """A checked adapter: its GGUF, card and where it came from."""

    name: str
    directory: Path
    card: dict[str, Any]

    @property
    def gguf(self) -> Path:
        return self.directory / GGUF_FILE

    @property
    def sha256(self) -> str:
        return str(self.card["files"][GGUF_FILE])

    @property
    def base_model(self) -> str:
        return str(self.card["base_model"])

    def record(self) -> dict[str, Any]:
        """What a run config records about this adapter."""
        return {
            "name": self.name,
            "path": str(self.gguf),
            "sha256": self.sha256,
            "base_model": self.base_model,
            "rank": self.card.get("rank"),
            "commit": self.card.get("commit"),
        }


def _read_card(directory: Path) -> dict[str, Any]:
    path = directory / "card.json"
    if not path.is_file():
        raise ModelError(f"adapter card missing: {path} (re-install memory-r1 or run `make train`)")
    try:
        card = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ModelError(f"{path}: not a readable JSON card ({e})") from e
    for key in ("name", "base_model", "base_sha256", "files"):
        if key not in card:
            raise ModelError(f"{path}: field {key!r} missing")
    if GGUF_FILE not in card["files"]:
        raise ModelError(f"{path}: field 'files' has no {GGUF_FILE}")
    return card


def load_adapter(name_or_dir: str | Path, *, check_base: bool = True) -> Adapter:
    """The shipped adapter ``name`` (``memory`` / ``answer``) or an adapter directory, checked."""
    key = str(name_or_dir)
    directory = ADAPTERS_DIR / key if key in ADAPTER_NAMES else Path(key).expanduser()
    card = _read_card(directory)
    for file, digest in card["files"].items():
        path = directory / file
        if not path.is_file():
            raise ModelError(f"adapter file missing: {path}")
        if file_sha256(path) != digest:
            raise ModelError(
                f"adapter file corrupt: {path} (sha256 differs from "
                f"{directory / 'card.json'}; re-install memory-r1 or run `make train`)"
            )
    gguf = directory / GGUF_FILE
    meta = gguf_metadata(gguf)  # raises ModelError on a file that is not GGUF
    if meta.get("general.type") != "adapter" or meta.get("adapter.type") != "lora":
        raise ModelError(
            f"{gguf}: not a GGUF LoRA adapter (general.type="
            f"{meta.get('general.type')!r}, adapter.type={meta.get('adapter.type')!r})"
        )
    if check_base:
        base = resolve_model(card["base_model"]).locate()
        if file_sha256(base) != card["base_sha256"]:
            raise ModelError(
                f"{gguf} was trained over {card['base_model']} with sha256 "
                f"{card['base_sha256'][:12]}..., but {base} differs"
            )
    return Adapter(str(card["name"]), directory, card)


def shipped_adapters() -> dict[str, Adapter]:
    """Every shipped adapter, checked (``ModelError`` naming the file if one is broken)."""
    return {name: load_adapter(name) for name in ADAPTER_NAMES}
