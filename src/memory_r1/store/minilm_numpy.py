"""all-MiniLM-L6-v2 in NumPy: the same sentence embeddings as sentence-transformers, no torch.

A BERT encoder (6 layers, hidden 384, 12 heads, exact erf GELU, post-LayerNorm) over the
package's ``model.safetensors``, WordPiece through ``tokenizers`` (Rust, torch-free), inputs cut
at 256 tokens (``sentence_bert_config.json``), mean pooling over the attention mask, then L2
normalisation: sentence-transformers' ``encode(normalize_embeddings=True)``. A test checks the
two agree (cosine > 0.9999 per row). Batches are padded to their longest text, so callers sort
by length first (:meth:`MiniLMNumpy.encode` does).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np


def _gelu(x: np.ndarray) -> np.ndarray:
    # BERT's exact GELU, 0.5 x (1 + erf(x / sqrt 2)), with erf by Abramowitz-Stegun 7.1.26
    # (|error| < 1.5e-7, about float32 rounding); NumPy has no vectorised erf.
    z = np.abs(x) / np.float32(math.sqrt(2.0))
    t = 1.0 / (1.0 + 0.3275911 * z)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    erf = np.sign(x) * (1.0 - poly * np.exp(-z * z))
    out: np.ndarray = (0.5 * x * (1.0 + erf)).astype(np.float32, copy=False)
    return out


def _layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float) -> np.ndarray:
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    out: np.ndarray = ((x - mean) / np.sqrt(var + eps)) * weight + bias
    return out


class MiniLMNumpy:
    """``encode(texts) -> (n, 384)`` float32, rows L2-normalised; load once, thread-compatible
    (no state changes after ``__init__``)."""

    def __init__(self, model_dir: str | Path, max_length: int | None = None) -> None:
        from safetensors.numpy import load_file
        from tokenizers import Tokenizer

        d = Path(model_dir)
        cfg = json.loads((d / "config.json").read_text(encoding="utf-8"))
        st_cfg = d / "sentence_bert_config.json"
        self.max_length = max_length or (
            int(json.loads(st_cfg.read_text(encoding="utf-8"))["max_seq_length"]) if st_cfg.exists() else 256
        )
        self.heads, self.layers = int(cfg["num_attention_heads"]), int(cfg["num_hidden_layers"])
        self.eps = float(cfg["layer_norm_eps"])
        raw = load_file(str(d / "model.safetensors"))
        self.w = {
            k.removeprefix("bert.").removeprefix("0.auto_model."): v.astype(np.float32)
            for k, v in raw.items()
        }
        for i in range(self.layers):  # fuse Q, K, V into one (hidden, 3 hidden) matmul
            p = f"encoder.layer.{i}.attention.self."
            self.w[p + "qkv.weight"] = np.concatenate(
                [self.w[p + n + ".weight"].T for n in ("query", "key", "value")], 1
            )
            self.w[p + "qkv.bias"] = np.concatenate(
                [self.w.pop(p + n + ".bias") for n in ("query", "key", "value")]
            )
            for n in ("query", "key", "value"):
                del self.w[p + n + ".weight"]
        for k in [
            k for k in self.w if k.endswith(".weight") and self.w[k].ndim == 2 and "embeddings" not in k
        ]:
            if not k.endswith("qkv.weight"):
                self.w[k] = np.ascontiguousarray(self.w[k].T)  # (in, out) for x @ W
        self.tokenizer = Tokenizer.from_file(str(d / "tokenizer.json"))
        self.tokenizer.enable_truncation(self.max_length)
        self.tokenizer.no_padding()

    def encode(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        encs = self.tokenizer.encode_batch(list(texts))
        order = sorted(range(len(encs)), key=lambda i: len(encs[i].ids))
        out = np.zeros((len(encs), self.w["embeddings.word_embeddings.weight"].shape[1]), dtype=np.float32)
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            n = max(len(encs[i].ids) for i in idx)
            ids = np.zeros((len(idx), n), dtype=np.int64)
            mask = np.zeros((len(idx), n), dtype=np.float32)
            for row, i in enumerate(idx):
                ids[row, : len(encs[i].ids)] = encs[i].ids
                mask[row, : len(encs[i].ids)] = 1.0
            out[idx] = self._forward(ids, mask)
        return out

    def _forward(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        w, (b, n) = self.w, ids.shape
        x = w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][:n]
        x = x + w["embeddings.token_type_embeddings.weight"][0]
        # Dense layers run on (b * n, hidden): NumPy's 3-D @ 2-D loops over the batch (10x slower).
        x = _layer_norm(
            x.reshape(b * n, -1), w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], self.eps
        )
        bias = ((1.0 - mask) * np.float32(np.finfo(np.float32).min))[:, None, None, :]
        hd = x.shape[-1] // self.heads
        for i in range(self.layers):
            p = f"encoder.layer.{i}."
            qkv = x @ w[p + "attention.self.qkv.weight"] + w[p + "attention.self.qkv.bias"]
            q, k, v = (
                t.reshape(b, n, self.heads, hd).transpose(0, 2, 1, 3) for t in np.split(qkv, 3, axis=-1)
            )
            scores = (q @ k.transpose(0, 1, 3, 2)) / np.float32(math.sqrt(hd)) + bias
            scores = np.exp(scores - scores.max(-1, keepdims=True))
            ctx = ((scores / scores.sum(-1, keepdims=True)) @ v).transpose(0, 2, 1, 3).reshape(b * n, -1)
            att = ctx @ w[p + "attention.output.dense.weight"] + w[p + "attention.output.dense.bias"]
            x = _layer_norm(
                att + x,
                w[p + "attention.output.LayerNorm.weight"],
                w[p + "attention.output.LayerNorm.bias"],
                self.eps,
            )
            h = _gelu(x @ w[p + "intermediate.dense.weight"] + w[p + "intermediate.dense.bias"])
            h = h @ w[p + "output.dense.weight"] + w[p + "output.dense.bias"]
            x = _layer_norm(h + x, w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"], self.eps)
        hidden = x.reshape(b, n, -1)
        pooled = (hidden * mask[..., None]).sum(1) / np.maximum(mask.sum(1, keepdims=True), 1e-9)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        out: np.ndarray = (pooled / np.maximum(norms, 1e-12)).astype(np.float32)
        return out
