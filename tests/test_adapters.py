"""Shipped LoRA adapters: export (SVD, PEFT, GGUF), checks, and the default pipeline using them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from memory_r1.agents.system import with_shipped_adapters
from memory_r1.config import ModelConfig, SystemConfig
from memory_r1.errors import ModelError
from memory_r1.llm import adapters as A
from memory_r1.llm.models import file_sha256
from memory_r1.rl import adapter_export as X

CONFIG = {"num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2}
SHAPES = {
    "self_attn.q_proj": (16, 16),
    "self_attn.k_proj": (8, 16),
    "self_attn.v_proj": (8, 16),
    "self_attn.o_proj": (16, 16),
    "mlp.gate_proj": (24, 16),
    "mlp.up_proj": (24, 16),
    "mlp.down_proj": (16, 24),
}


def states(rank: int, seed: int = 0) -> tuple[dict, dict]:
    g = torch.Generator().manual_seed(seed)
    base, trained = {}, {}
    for i in range(CONFIG["num_hidden_layers"]):
        for mod, (o, n) in SHAPES.items():
            key = f"model.layers.{i}.{mod}.weight"
            base[key] = torch.randn(o, n, generator=g)
            delta = torch.randn(o, rank, generator=g) @ torch.randn(rank, n, generator=g)
            trained[key] = base[key] + 0.1 * delta
    return base, trained


def test_low_rank_is_exact_at_the_training_rank_and_reports_truncation() -> None:
    base, trained = states(rank=4)
    lr = X.low_rank(trained, base, CONFIG, 4)
    for name, (a, b) in lr.factors.items():
        delta = trained[name + ".weight"] - base[name + ".weight"]
        assert a.shape == (4, delta.shape[1]) and b.shape == (delta.shape[0], 4)
        torch.testing.assert_close(b @ a, delta, atol=1e-5, rtol=1e-4)
    assert min(lr.retained.values()) > 0.9999
    cut = X.low_rank(trained, base, CONFIG, 2)
    assert max(cut.retained.values()) < 0.999  # a rank-4 delta loses energy at rank 2


def test_permute_rows_is_llama_cpp_rotary_order() -> None:
    w = torch.arange(8 * 3).reshape(8, 3).float()  # 2 heads of 4 rows
    p = X.permute_rows(w, 2)
    # per head, rows (0, 1, 2, 3) -> (0, 2, 1, 3): the two halves interleaved
    assert p[:, 0].tolist() == [0, 6, 3, 9, 12, 18, 15, 21]


def test_peft_and_gguf_files_hold_the_same_factors(tmp_path: Path) -> None:
    import gguf

    base, trained = states(rank=3)
    lr = X.low_rank(trained, base, CONFIG, 3)
    X.write_peft(lr, tmp_path, "smollm2-135m")
    back = X.read_peft(tmp_path, CONFIG)
    for name, (a, b) in lr.factors.items():
        torch.testing.assert_close(
            back.factors[name][1] @ back.factors[name][0], b @ a, atol=2e-2, rtol=2e-2
        )  # float16 on disk
    X.write_gguf_lora(lr, tmp_path / "adapter.gguf")
    reader = gguf.GGUFReader(str(tmp_path / "adapter.gguf"))
    names = {t.name: t for t in reader.tensors}
    assert len(names) == 2 * 7 * CONFIG["num_hidden_layers"]
    a, b = lr.factors["model.layers.1.self_attn.k_proj"]
    got_b = np.asarray(names["blk.1.attn_k.weight.lora_b"].data, dtype=np.float32)
    want = X.permute_rows(b, CONFIG["num_key_value_heads"]).numpy()
    np.testing.assert_allclose(got_b.reshape(want.shape), want, atol=1e-2)
    got_a = np.asarray(names["blk.1.attn_k.weight.lora_a"].data, dtype=np.float32)
    np.testing.assert_allclose(got_a.reshape(a.shape), a.numpy(), atol=1e-2)
    meta = A.gguf_metadata(tmp_path / "adapter.gguf")
    assert meta["general.type"] == "adapter" and meta["adapter.type"] == "lora"
    assert meta["adapter.lora.alpha"] == 3.0


def make_adapter(directory: Path, name: str = "answer", **pipeline: object) -> Path:
    """A checked-in-shaped adapter directory around a tiny real GGUF LoRA."""
    base, trained = states(rank=2)
    directory.mkdir(parents=True, exist_ok=True)
    X.write_gguf_lora(X.low_rank(trained, base, CONFIG, 2), directory / "adapter.gguf")
    from memory_r1.llm.models import resolve_model

    card = {
        "name": name,
        "base_model": "smollm2-135m",
        "base_sha256": file_sha256(resolve_model("smollm2-135m").locate()),
        "rank": 2,
        "files": {"adapter.gguf": file_sha256(directory / "adapter.gguf")},
        "pipeline": pipeline,
    }
    (directory / "card.json").write_text(json.dumps(card))
    return directory


def test_load_adapter_checks_files_and_names_the_bad_one(tmp_path: Path) -> None:
    good = make_adapter(tmp_path / "good")
    assert A.load_adapter(good).sha256 == file_sha256(good / "adapter.gguf")

    missing = make_adapter(tmp_path / "missing")
    (missing / "adapter.gguf").unlink()
    with pytest.raises(ModelError, match=r"adapter file missing: .*missing/adapter.gguf"):
        A.load_adapter(missing)

    corrupt = make_adapter(tmp_path / "corrupt")
    data = bytearray((corrupt / "adapter.gguf").read_bytes())
    data[-10] ^= 0xFF
    (corrupt / "adapter.gguf").write_bytes(bytes(data))
    with pytest.raises(ModelError, match=r"adapter file corrupt: .*corrupt/adapter.gguf"):
        A.load_adapter(corrupt)

    nocard = tmp_path / "nocard"
    shutil.copytree(good, nocard)
    (nocard / "card.json").unlink()
    with pytest.raises(ModelError, match=r"adapter card missing: .*nocard/card.json"):
        A.load_adapter(nocard)

    other = make_adapter(tmp_path / "other")
    card = json.loads((other / "card.json").read_text())
    card["base_sha256"] = "0" * 64
    (other / "card.json").write_text(json.dumps(card))
    with pytest.raises(ModelError, match="was trained over smollm2-135m"):
        A.load_adapter(other)


def test_default_pipeline_uses_the_shipped_adapters_and_untrained_does_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(A, "ADAPTERS_DIR", tmp_path)
    make_adapter(tmp_path / "memory", "memory")
    make_adapter(tmp_path / "answer", "answer", answer_k=10)
    cfg, record = with_shipped_adapters(SystemConfig())
    assert cfg.llm.options["lora_path"] == str(tmp_path / "memory" / "adapter.gguf")
    assert cfg.manager_llm is not None and cfg.answer_llm is not None
    assert cfg.manager_llm.options["lora_path"] == str(tmp_path / "memory" / "adapter.gguf")
    assert cfg.answer_llm.options["lora_path"] == str(tmp_path / "answer" / "adapter.gguf")
    assert cfg.answer_k == 10 and set(record) == {"memory", "answer"}
    assert record["answer"]["sha256"] == file_sha256(tmp_path / "answer" / "adapter.gguf")
    # another model, or a trained checkpoint for a role: no adapter where it does not fit
    gemma, none = with_shipped_adapters(SystemConfig(llm=ModelConfig(model="gemma3-270m")))
    assert none is None and "lora_path" not in gemma.llm.options and gemma.answer_k == 30
    ckpt, rec = with_shipped_adapters(SystemConfig(answer_llm=ModelConfig(backend="hf", model="x")))
    assert set(rec) == {"memory"} and ckpt.answer_llm.backend == "hf"
    (tmp_path / "answer" / "adapter.gguf").write_bytes(b"GGUF broken")
    with pytest.raises(ModelError, match=r"answer/adapter\.gguf"):
        with_shipped_adapters(SystemConfig())


def test_cli_untrained_flag_builds_no_adapter(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from memory_r1.app import locomo

    monkeypatch.setattr(A, "ADAPTERS_DIR", tmp_path)
    make_adapter(tmp_path / "memory", "memory")
    make_adapter(tmp_path / "answer", "answer", answer_k=10)
    opts = {
        "backend": "llamacpp",
        "model": "smollm2-135m",
        "base_url": None,
        "manager_ckpt": None,
        "answer_ckpt": None,
        "embedder": "hash",
        "no_distill": False,
        "unconstrained": False,
        "answer_k": None,
    }
    trained, rec = locomo.system_config(":memory:", untrained=False, **opts)
    base, none = locomo.system_config(":memory:", untrained=True, **opts)
    assert rec is not None and "lora_path" in trained.answer_llm.options
    assert none is None and base.answer_llm is None and base.llm.options == {} and base.answer_k == 30


def _llama_logits(model_path: Path, tokens: list[int], lora: Path | None = None) -> np.ndarray:
    import llama_cpp

    llm = llama_cpp.Llama(
        model_path=str(model_path),
        n_ctx=256,
        logits_all=True,
        verbose=False,
        n_threads=2,
        lora_path=str(lora) if lora else None,
    )
    llm.eval(tokens)
    out = np.array(llm.scores[: len(tokens)], dtype=np.float64)
    llm.close()
    return out


@pytest.mark.slow
def test_shipped_gguf_lora_in_llama_cpp_matches_its_peft_twin_in_transformers(
    tmp_path: Path, monkeypatch
) -> None:
    """The logit change the shipped GGUF adapter makes in llama.cpp (quantized base) is the
    change its PEFT twin makes in transformers; for the q/k factors alone, written without the
    rotary row permutation, it is not."""
    from peft import PeftModel

    from memory_r1.llm.hf import HFModel
    from memory_r1.llm.models import resolve_model

    adapter = A.load_adapter("answer")
    base_path = resolve_model("smollm2-135m").locate()
    hf = HFModel("smollm2-135m", dtype="float32")
    text = (
        "Memories for Caroline: - [7 May 2023] Caroline went to an LGBTQ support group. "
        "Question: When did Caroline go to the support group? Answer:"
    )
    tokens = hf.tokenizer(text)["input_ids"]
    ids = torch.tensor([tokens])
    cpp_base = _llama_logits(base_path, tokens)

    def hf_delta(directory: Path) -> np.ndarray:
        with torch.no_grad():
            base = hf.model(ids).logits[0].double().numpy()
            peft = PeftModel.from_pretrained(hf.model, str(directory))
            out = peft(ids).logits[0].double().numpy() - base
            peft.unload()
        return out.ravel()

    def cosine(lora: Path, want: np.ndarray) -> float:
        got = (_llama_logits(base_path, tokens, lora) - cpp_base).ravel()
        return float(got @ want / np.linalg.norm(got) / np.linalg.norm(want))

    assert cosine(adapter.gguf, hf_delta(adapter.directory)) > 0.95
    cfg = {"num_hidden_layers": 30, "num_attention_heads": 9, "num_key_value_heads": 3}
    qk = X.read_peft(adapter.directory, cfg)
    for name, (a, b) in qk.factors.items():  # keep the q and k factors only
        if not name.endswith(("q_proj", "k_proj")):
            qk.factors[name] = (a, torch.zeros_like(b))
    X.write_peft(qk, tmp_path / "qk", "smollm2-135m")
    X.write_gguf_lora(qk, tmp_path / "qk.gguf")
    want = hf_delta(tmp_path / "qk")
    good = cosine(tmp_path / "qk.gguf", want)
    monkeypatch.setattr(X, "permute_rows", lambda w, n: w)  # sabotage: HF row order
    X.write_gguf_lora(qk, tmp_path / "unpermuted.gguf")
    bad = cosine(tmp_path / "unpermuted.gguf", want)
    # measured: 0.77 vs -0.12 (the q/k change is small next to Q4_1 rounding of the base)
    assert good > 0.6 and bad < good - 0.4, (good, bad)


def test_hf_model_merges_a_peft_adapter_dir_over_its_base(tmp_path: Path) -> None:
    """A PEFT adapter directory (what ``export adapter`` ships) loads as its base with the
    LoRA merged in, so training can continue from a shipped adapter."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from memory_r1.llm.hf import HFModel
    from memory_r1.rl.tiny import tiny_tokenizer

    tok = tiny_tokenizer(["Alice", "moved", "to", "Paris"])
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=16,
        intermediate_size=24,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    model.save_pretrained(tmp_path / "base")
    tok.save_pretrained(tmp_path / "base")
    base = {k: v.float() for k, v in model.state_dict().items()}
    start, shifted = states(rank=2, seed=1)
    trained = dict(base)
    for key, w in shifted.items():  # base + a rank-2 delta
        trained[key] = base[key] + (w - start[key])
    X.write_peft(X.low_rank(trained, base, CONFIG, 2), tmp_path / "peft", str(tmp_path / "base"))
    got = HFModel(str(tmp_path / "peft"), dtype="float32").model.state_dict()
    key = "model.layers.1.self_attn.k_proj.weight"
    assert not torch.allclose(trained[key], base[key], atol=1e-3)
    torch.testing.assert_close(got[key], trained[key], atol=2e-2, rtol=2e-2)
    with pytest.raises(ModelError, match="no shipped adapter"):
        HFModel("adapter:nope")
    (tmp_path / "peft" / "adapter_config.json").write_text("{}")
    with pytest.raises(ModelError, match=r"adapter_config\.json"):
        HFModel(str(tmp_path / "peft"))


def test_frozen_answer_model_takes_the_shipped_answer_adapter() -> None:
    from memory_r1.app.common import frozen_answer_model

    cfg = frozen_answer_model("smollm2-135m", lora="shipped")
    assert cfg.backend == "llamacpp"
    assert cfg.options["lora_path"] == str(A.load_adapter("answer").gguf)
