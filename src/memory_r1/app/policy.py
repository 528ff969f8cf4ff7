"""Trainable policies for the commands: load one over a model, save it as a plain checkpoint.

``dtype="auto"`` (the default) is :func:`memory_r1.llm.hf.resolve_precision`: bf16 weights on
CUDA; fp32 weights + bf16 autocast on a CPU with native bf16 (AVX512_BF16/AMX); fp32 elsewhere
(emulated bf16 is slower than fp32).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def load_policy(
    model: str,
    *,
    lora_r: int | None,
    value_head: bool = False,
    reference: bool = True,
    dtype: str = "auto",
    seed: int = 0,
) -> Any:
    """A :class:`Policy` over ``model`` loaded by ``HFModel`` (LoRA of rank ``lora_r`` if set;
    adapters initialised from ``seed``), with ``HFModel``'s precision (weights + autocast).

    ``model`` is anything :class:`~memory_r1.llm.hf.HFModel` loads (HF dir, catalogue name,
    GGUF path); LoRA (``peft``, all linear layers) unless ``lora_r is None``.
    """
    from memory_r1.llm.hf import HFModel
    from memory_r1.rl.algorithms.policy import Policy

    hf = HFModel(model, dtype=dtype)
    lora = None
    if lora_r is not None:
        from peft import LoraConfig

        lora = LoraConfig(
            r=lora_r,
            lora_alpha=2 * lora_r,
            lora_dropout=0.0,
            target_modules="all-linear",
            task_type="CAUSAL_LM",
        )
    return Policy(
        hf.model,
        hf.tokenizer,
        lora=lora,
        value_head=value_head,
        reference=reference,
        autocast=hf.autocast,
        seed=seed,
    )


def export_final(policy: Any, path: str | Path) -> Path:
    """Save the policy as a plain HF checkpoint (LoRA merged into a copy) at ``path``."""
    return policy.export(path)
