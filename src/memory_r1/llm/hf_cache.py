"""Attention and KV cache for the transformers decoding loop (L1, torch).

* :func:`use_grouped_attention` registers :func:`_sdpa_grouped`: SDPA for prefill, and for a
  one-token query (a decode step) two small matmuls (:func:`attend_one`), faster on CPU than
  torch's flash kernel at query length 1.
* :func:`new_cache` gives each full-attention layer a preallocated buffer
  (:class:`_BufferedLayer`) written in place while decoding; :func:`expand_cache` repeats or
  selects rows (prefix sharing, finished rows leaving the batch), :func:`cast_cache` changes
  the cached dtype.
* :func:`position_ids` skips left padding.

:mod:`memory_r1.llm.hf_decode` drives these; RL scoring (teacher forcing over a shared prefix)
reuses the cache helpers.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers.cache_utils import DynamicLayer

ATTENTION = "memr1_sdpa"


def _sdpa_grouped(
    module: Any,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """transformers' SDPA attention, except that grouped-query attention (SmolLM2: 9 query
    heads over 3 key/value heads) stays grouped *with* a padding mask.

    transformers passes ``enable_gqa`` only when there is no mask and otherwise copies every
    key and value ``n_rep`` times (``repeat_kv``) at every layer and step: with a left-padded
    batch and a 1,000-token cache that copy was ~75 % of a decoding step here (32 rows: 67 ms
    vs 4 ms per layer with ``enable_gqa``; equal outputs).
    """
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if (
        query.shape[2] == 1
        and not torch.is_grad_enabled()
        and not dropout
        and kwargs.get("position_bias") is None
        and kwargs.get("s_aux") is None
    ):
        return attend_one(query, key, value, attention_mask, scaling), None
    groups = getattr(module, "num_key_value_groups", 1)
    if groups == 1 or attention_mask is None or kwargs.get("position_bias") is not None:
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    out = torch.nn.functional.scaled_dot_product_attention(
        query,
        key,
        value,
        attn_mask=attention_mask,
        dropout_p=dropout,
        scale=scaling,
        is_causal=False,
        enable_gqa=True,
    )
    return out.transpose(1, 2).contiguous(), None


def attend_one(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
) -> torch.Tensor:
    """Attention of ONE query position per row, grouped-query aware: ``query`` ``(B, H, 1, D)``,
    ``key`` / ``value`` ``(B, KV, L, D)``, ``attention_mask`` bool (True = attend) or additive,
    broadcastable to ``(B, 1, 1, L)``. Returns ``(B, 1, H, D)`` like transformers' SDPA
    forward. Scores and softmax in float32; the two matmuls in the cache's dtype."""
    b, h, _, d = query.shape
    kv = key.shape[1]
    q = query.reshape(b, kv, h // kv, d).to(key.dtype)
    scores = torch.matmul(q, key.transpose(-1, -2)).float()
    scores = scores * (d**-0.5 if scaling is None else scaling)
    if attention_mask is not None:
        mask = attention_mask[..., -1:, :].reshape(attention_mask.shape[0], 1, 1, -1)
        if mask.dtype == torch.bool:
            scores = scores.masked_fill(~mask, float("-inf"))
        else:
            scores = scores + mask.float()
    probs = torch.softmax(scores, dim=-1).to(value.dtype)
    out = torch.matmul(probs, value)  # (B, KV, G, D)
    return out.reshape(b, h, 1, d).transpose(1, 2).contiguous()


def use_grouped_attention(model: Any) -> None:
    """Switch ``model`` from ``sdpa`` to :func:`_sdpa_grouped` (registered once, same masks)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    if ATTENTION not in AttentionInterface._global_mapping:
        AttentionInterface.register(ATTENTION, _sdpa_grouped)
        AttentionMaskInterface.register(ATTENTION, sdpa_mask)
    if getattr(model.config, "_attn_implementation", None) == "sdpa":
        model.set_attn_implementation(ATTENTION)


def position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions that skip left padding (and any other masked column); pads get 0."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def new_cache(model: Any, reserve: int = 0) -> Any:
    """A ``DynamicCache`` for ``model``; ``reserve > 0`` (decoding, no autograd) gives each
    full-attention layer a buffer with room for ``reserve`` more positions, written in place,
    instead of ``torch.cat``-ing the whole cache at every step (which copied every cached key
    and value once per generated token: the largest cost of decoding long prompts here)."""
    from transformers import DynamicCache

    cache = DynamicCache(config=model.config)
    if reserve > 0:
        cache.layers = [
            layer if getattr(layer, "is_sliding", False) else _BufferedLayer(reserve)
            for layer in cache.layers
        ]
    return cache


class _BufferedLayer(DynamicLayer):
    """A full-attention cache layer over a preallocated buffer (``keys`` / ``values`` are
    views of its first ``n`` positions). For no-grad decoding only: writes are in place.

    Keys are stored transposed, ``(B, KV, D, positions)``, and ``keys`` is the transposed view:
    a decode step's ``q @ keys^T`` then reads a plain row-major ``(D, n)`` block (with the
    keys' natural layout the bf16 batched matmul took 5x longer on the strided view)."""

    def __init__(self, reserve: int) -> None:
        super().__init__()
        self.reserve, self.n = reserve, 0
        self.buf_k: torch.Tensor | None = None  # (B, KV, D, capacity)
        self.buf_v: torch.Tensor | None = None  # (B, KV, capacity, D)

    def _views(self) -> tuple[torch.Tensor, torch.Tensor]:
        assert self.buf_k is not None and self.buf_v is not None
        keys = self.keys = self.buf_k[..., : self.n].transpose(-1, -2)
        values = self.values = self.buf_v[:, :, : self.n]
        return keys, values

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        end = self.n + key_states.shape[-2]
        buf_k, buf_v = self.buf_k, self.buf_v  # both None before the first write, else both set
        if buf_k is None or buf_v is None or end > buf_k.shape[-1]:
            b, kv, _, d = key_states.shape
            new_k = key_states.new_empty((b, kv, d, end + self.reserve))
            new_v = value_states.new_empty((b, kv, end + self.reserve, value_states.shape[-1]))
            if buf_k is not None and buf_v is not None and self.n:
                new_k[..., : self.n] = buf_k[..., : self.n]
                new_v[:, :, : self.n] = buf_v[:, :, : self.n]
            self.buf_k, self.buf_v = buf_k, buf_v = new_k, new_v
        start = self.n
        buf_k[..., start:end] = key_states.transpose(-1, -2)
        buf_v[:, :, start:end] = value_states
        self.n = end
        keys, values = self._views()
        if start == 0:  # the prefill attends over exactly its own keys: give SDPA the plain
            return key_states, value_states  # tensors (on the transposed view SDPA took a slow path)
        return keys, values

    def get_seq_length(self) -> int:
        return self.n

    def select_rows(self, index: torch.Tensor) -> None:
        assert self.buf_k is not None and self.buf_v is not None
        self.buf_k = self.buf_k.index_select(0, index)
        self.buf_v = self.buf_v.index_select(0, index)
        self._views()

    def cast(self, dtype: torch.dtype) -> None:
        assert self.buf_k is not None and self.buf_v is not None
        self.buf_k, self.buf_v = self.buf_k.to(dtype), self.buf_v.to(dtype)
        self._views()
        self.dtype = dtype


def expand_cache(cache: Any, index: torch.Tensor) -> None:
    """Row ``j`` of the cache becomes old row ``index[j]`` (repeat, select or both), in place.

    Differentiable: the cached keys/values are re-bound to ``index_select`` results, so the
    gradient of every expanded row flows back to the one prompt row it came from.
    """
    for layer in cache.layers:
        if hasattr(layer, "select_rows") and layer.n:
            layer.select_rows(index)
        elif getattr(layer, "is_initialized", False) and layer.keys.numel():
            layer.keys = layer.keys.index_select(0, index)
            layer.values = layer.values.index_select(0, index)


def cast_cache(cache: Any, dtype: torch.dtype) -> None:
    for layer in cache.layers:
        if getattr(layer, "is_initialized", False) and not (layer.keys.dtype == layer.values.dtype == dtype):
            if hasattr(layer, "cast"):
                layer.cast(dtype)
            else:
                layer.keys, layer.values = layer.keys.to(dtype), layer.values.to(dtype)
                layer.dtype = dtype
