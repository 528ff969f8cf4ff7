"""Trained checkpoints -> shippable LoRA adapters over the default GGUF (L3, torch).

A trained agent is stored as the low-rank difference between its weights and the base model's:
for every decoder projection ``W`` (q, k, v, o, gate, up, down of each layer),
``delta = W_trained - W_base`` is truncated by SVD to rank ``r`` and split evenly,
``B = U_r sqrt(S_r)``, ``A = sqrt(S_r) V_r^T``, so ``B @ A`` is the best rank-``r``
approximation of ``delta`` (exact when the training itself was LoRA of rank <= ``r``). One
path for every checkpoint: a merged HF export, an SFT LoRA, a LoRA stacked on a merged SFT
model (rank up to the sum of the ranks). ``retained`` reports ``||B A|| / ||delta||``.

Written twice, from the same tensors:

* ``adapter_model.safetensors`` + ``adapter_config.json``: a PEFT adapter (``lora_alpha = r``,
  so the scale is 1), float16, for further training (``memory-r1 train --model`` on the base
  plus ``PeftModel.from_pretrained``);
* ``adapter.gguf``: a GGUF LoRA that llama.cpp loads at run time over the quantized base
  (``general.type = adapter``, ``adapter.type = lora``, ``adapter.lora.alpha = r``; tensors
  ``blk.N.attn_q.weight.lora_a`` / ``.lora_b``). llama.cpp's Llama GGUFs store q and k with
  their rows permuted for its rotary layout, so ``lora_b`` of q and k is permuted the same way
  (``lora_a`` acts on the input side and is not).

The base weights are read the way training reads them (``HFModel`` over the GGUF, de-quantized),
so the difference holds only what training changed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

PROJECTIONS = {  # HF module (under model.layers.N.) -> llama.cpp tensor (under blk.N.)
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}


@dataclass
class LowRank:
    """Per module ``(A, B)`` (``A``: r x in, ``B``: out x r) and the retained share of each delta."""

    rank: int
    factors: dict[str, tuple[torch.Tensor, torch.Tensor]]
    retained: dict[str, float]
    config: dict[str, Any]  # the base model's HF config (heads, layers)


def _linear_weights(state: dict[str, torch.Tensor], n_layers: int) -> dict[str, torch.Tensor]:
    out = {}
    for i in range(n_layers):
        for mod in PROJECTIONS:
            key = f"model.layers.{i}.{mod}.weight"
            if key not in state:
                raise KeyError(f"checkpoint has no {key}")
            out[f"model.layers.{i}.{mod}"] = state[key].float()
    return out


def merged_state(model: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The decoder weights of ``model`` (catalogue name, GGUF, HF dir, or a PEFT adapter dir,
    merged over its base) in float32, and the model's HF config as a dict."""
    from memory_r1.llm.hf import HFModel

    hf = HFModel(model, dtype="float32")  # a PEFT dir is merged over its base by HFModel
    return hf.model.state_dict(), hf.model.config.to_dict()


def low_rank(
    trained: dict[str, torch.Tensor], base: dict[str, torch.Tensor], config: dict[str, Any], rank: int
) -> LowRank:
    """Rank-``rank`` factors of ``trained - base`` for every decoder projection."""
    if rank < 1:
        raise ValueError("rank must be >= 1")
    n_layers = int(config["num_hidden_layers"])
    tw, bw = _linear_weights(trained, n_layers), _linear_weights(base, n_layers)
    factors, retained = {}, {}
    for name, w in tw.items():
        delta = (w - bw[name]).double()
        u, s, vh = torch.linalg.svd(delta, full_matrices=False)
        r = min(rank, s.numel())
        root = s[:r].sqrt()
        b, a = u[:, :r] * root, root[:, None] * vh[:r]
        if r < rank:  # pad to a uniform rank (zero rows/columns change nothing)
            a = torch.cat([a, a.new_zeros(rank - r, a.shape[1])])
            b = torch.cat([b, b.new_zeros(b.shape[0], rank - r)], dim=1)
        total = float(s.square().sum())
        retained[name] = float(s[:r].square().sum() / total) ** 0.5 if total > 0 else 1.0
        factors[name] = (a.float(), b.float())
    return LowRank(rank, factors, retained, config)


def permute_rows(w: torch.Tensor, n_head: int) -> torch.Tensor:
    """llama.cpp's q/k row order (``convert_hf_to_gguf``'s ``LlamaModel.permute``)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_gguf_lora(lr: LowRank, path: str | Path, arch: str = "llama") -> Path:
    """``lr`` as a llama.cpp GGUF LoRA (float16) at ``path``."""
    import gguf
    import numpy as np

    path = Path(path)
    cfg = lr.config
    n_head, n_kv = (
        int(cfg["num_attention_heads"]),
        int(cfg.get("num_key_value_heads") or cfg["num_attention_heads"]),
    )
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_string("general.type", "adapter")
    writer.add_string("adapter.type", "lora")
    writer.add_float32("adapter.lora.alpha", float(lr.rank))
    for name, (a, b) in lr.factors.items():
        layer = int(name.split(".")[2])
        mod = name.split(".", 3)[3]
        if mod == "self_attn.q_proj":
            b = permute_rows(b, n_head)
        elif mod == "self_attn.k_proj":
            b = permute_rows(b, n_kv)
        stem = f"blk.{layer}.{PROJECTIONS[mod]}.weight"
        writer.add_tensor(f"{stem}.lora_a", a.to(torch.float16).numpy().astype(np.float16))
        writer.add_tensor(f"{stem}.lora_b", b.to(torch.float16).numpy().astype(np.float16))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def write_peft(lr: LowRank, out: str | Path, base_model: str) -> Path:
    """``lr`` as a PEFT LoRA adapter directory (float16, ``lora_alpha = r``)."""
    from safetensors.torch import save_file

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for name, (a, b) in lr.factors.items():
        stem = f"base_model.model.{name}"
        tensors[f"{stem}.lora_A.weight"] = a.to(torch.float16).contiguous()
        tensors[f"{stem}.lora_B.weight"] = b.to(torch.float16).contiguous()
    save_file(tensors, str(out / "adapter_model.safetensors"), metadata={"format": "pt"})
    config = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base_model,
        "r": lr.rank,
        "lora_alpha": lr.rank,
        "lora_dropout": 0.0,
        "bias": "none",
        "target_modules": sorted({m.split(".")[-1] for m in PROJECTIONS}),
        "fan_in_fan_out": False,
        "inference_mode": True,
        "init_lora_weights": True,
        "modules_to_save": None,
        "use_rslora": False,
        "use_dora": False,
    }
    (out / "adapter_config.json").write_text(json.dumps(config, indent=2) + "\n")
    return out


def export_adapter(trained: str, base_model: str, out: str | Path, rank: int) -> dict[str, Any]:
    """Write ``out/adapter.gguf`` and the PEFT files for ``trained`` over ``base_model``;
    returns a summary (rank, retained share min / mean, file sizes)."""
    base, config = merged_state(base_model)
    weights, _ = merged_state(trained)
    lr = low_rank(weights, base, config, rank)
    out = Path(out)
    write_peft(lr, out, base_model)
    write_gguf_lora(lr, out / "adapter.gguf")
    kept = list(lr.retained.values())
    return {
        "rank": rank,
        "retained_min": min(kept),
        "retained_mean": sum(kept) / len(kept),
        "bytes": {p.name: p.stat().st_size for p in sorted(out.iterdir()) if p.is_file()},
    }


def read_peft(directory: str | Path, config: dict[str, Any]) -> LowRank:
    """A PEFT LoRA adapter (every decoder projection) as :class:`LowRank`, its scale
    ``lora_alpha / r`` folded into ``B``; ``config``: the base model's HF config dict."""
    from safetensors.torch import load_file

    directory = Path(directory)
    cfg = json.loads((directory / "adapter_config.json").read_text())
    scale = float(cfg["lora_alpha"]) / float(cfg["r"])
    state = load_file(str(directory / "adapter_model.safetensors"))
    factors = {}
    for i in range(int(config["num_hidden_layers"])):
        for mod in PROJECTIONS:
            stem = f"base_model.model.model.layers.{i}.{mod}"
            a, b = state[f"{stem}.lora_A.weight"].float(), state[f"{stem}.lora_B.weight"].float()
            factors[f"model.layers.{i}.{mod}"] = (a, b * scale)
    return LowRank(int(cfg["r"]), factors, dict.fromkeys(factors, 1.0), config)


CARD_LICENSE = (
    "Trained on LoCoMo (snap-research/locomo, CC BY-NC 4.0), train split conv-26 only. The "
    "adapter is derived from that data and is for **non-commercial use only** (CC BY-NC 4.0); "
    "the base model, SmolLM2-135M-Instruct, is Apache-2.0."
)


def git_commit(cwd: str | Path | None = None) -> str | None:
    """The commit of the working tree (``+dirty`` when it has changes), or None outside git."""
    import subprocess

    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("+dirty" if dirty else "")


def _card_markdown(out: Path, card: dict[str, Any], summary: dict[str, Any]) -> str:
    """``CARD.md``: the card of :func:`write_card` for people (files in ``out``)."""
    lines = [
        f"# memory-r1 `{card['name']}` adapter: {card['role']}",
        "",
        f"LoRA rank {card['rank']} on every decoder projection of `{card['base_model']}` "
        f"(`{card['base_file']}`, sha256 `{card['base_sha256']}`).",
        "",
        "| file | bytes | sha256 |",
        "|---|---|---|",
    ]
    lines += [f"| `{f}` | {(out / f).stat().st_size:,} | `{d}` |" for f, d in card["files"].items()]
    lines += [
        "",
        "## Data and licence",
        "",
        CARD_LICENSE,
        "",
        "## How it was made",
        "",
        f"Commit `{card['commit']}`; exported from "
        f"`{card['trained_from']}` (SVD of the weight difference, retained "
        f"{100 * summary['retained_min']:.2f} % (min) / {100 * summary['retained_mean']:.2f} % "
        "(mean) of its Frobenius norm).",
        "",
        "```bash",
        *card["commands"],
        "```",
        "",
        "## Inference settings",
        "",
        "```json",
        json.dumps(card["pipeline"], indent=2),
        "```",
        "",
        "## Validation scores (conv-30)",
        "",
        "```json",
        json.dumps(card["scores"], indent=2),
        "```",
        "",
    ]
    return "\n".join(lines)


def write_card(
    out: str | Path,
    *,
    name: str,
    role: str,
    base_model: str,
    rank: int,
    summary: dict[str, Any],
    pipeline: dict[str, Any],
    scores: dict[str, Any],
    commands: list[str],
    trained_from: str,
) -> dict[str, Any]:
    """``out/card.json`` (what :func:`memory_r1.llm.adapters.load_adapter` checks) and
    ``out/CARD.md`` (for people): base model and its sha256, data and licence, the commands,
    the commit, the validation scores and every file's sha256."""
    from memory_r1.llm.models import file_sha256, resolve_model

    out = Path(out)
    base_path = resolve_model(base_model).locate()
    files = {
        p.name: file_sha256(p)
        for p in sorted(out.iterdir())
        if p.is_file() and p.name not in ("card.json", "CARD.md")
    }
    card: dict[str, Any] = {
        "name": name,
        "role": role,
        "base_model": base_model,
        "base_file": base_path.name,
        "base_sha256": file_sha256(base_path),
        "rank": rank,
        "retained": {k: summary[k] for k in ("retained_min", "retained_mean")},
        "files": files,
        "pipeline": pipeline,
        "scores": scores,
        "commands": commands,
        "trained_from": trained_from,
        "commit": git_commit(),
        "license": CARD_LICENSE,
    }
    (out / "card.json").write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
    (out / "CARD.md").write_text(_card_markdown(out, card, summary), encoding="utf-8")
    return card
