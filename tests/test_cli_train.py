"""``memory-r1 sft`` / ``memory-r1 train`` on the synthetic fixture: a tiny random Llama saved
to disk (4096 positions, word-level vocabulary), the hash embedder, and FakeChatModels in place
of the llama.cpp models that build banks and answer for the Manager's reward."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("peft")

from click.testing import CliRunner  # noqa: E402

from memory_r1.cli import main  # noqa: E402
from memory_r1.llm.base import Prompt, Sampling  # noqa: E402
from memory_r1.rl import run  # noqa: E402
from memory_r1.rl.trainer import read_metrics  # noqa: E402
from memory_r1.testing import FakeChatModel  # noqa: E402

WORDS = ["**Answer:**", "Caroline", "Melanie", "counseling", "Sweden", "the", "a", "{", "}",
         '"facts":', "[]", "Selected", "memories:", "-", "yes", "no"]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from memory_r1.rl.tiny import tiny_tokenizer

    path = tmp_path_factory.mktemp("tiny-llama")
    tok = tiny_tokenizer(WORDS)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=4096, eos_token_id=tok.eos_token_id,
                         pad_token_id=tok.pad_token_id, bos_token_id=None)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def _fake_llm(prompt: Prompt, _: Sampling) -> str:
    """Extraction: the utterance is the fact; Manager: ADD every fact; Answer: a fixed answer."""
    if "New facts: " in prompt.user:
        facts = json.loads(prompt.user.split("New facts: ", 1)[1].splitlines()[0])
        return json.dumps({"memory": [{"id": None, "text": f, "event": "ADD"} for f in facts]})
    if "**Answer:**" in prompt.system or "Question" in prompt.user:
        return "- memory\n**Answer:** counseling"
    return json.dumps({"facts": [prompt.user.splitlines()[-1]]})


@pytest.fixture
def fake_llms(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    made: list[object] = []

    def factory(cfg):  # noqa: ANN001, ANN202
        made.append(cfg)
        return FakeChatModel(reply_fn=_fake_llm)

    monkeypatch.setattr(run, "make_chat_model", factory)
    return made


def _invoke(args: list[str]):  # noqa: ANN202
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output + repr(res.exception)
    return res


def test_sft_writes_a_checkpoint_hfmodel_loads(tiny_model: Path, tiny_locomo_path: Path,
                                               tmp_path: Path) -> None:
    from memory_r1.llm.hf import HFModel

    out = tmp_path / "sft"
    _invoke(["sft", "--model", str(tiny_model), "--out", str(out), "--data", str(tiny_locomo_path),
             "--roles", "answer,extract", "--steps", "2", "--batch-size", "2", "--lr", "1e-3",
             "--lora-r", "4", "--embedder", "hash"])
    assert [r["step"] for r in read_metrics(out / "metrics.jsonl")] == [1, 2]
    assert (out / "checkpoint-2" / "policy").is_dir() and (out / "sft_loss.png").exists()
    assert (out / "final" / "model.safetensors").exists()
    loaded = HFModel(str(out / "final"), dtype="float32")
    assert not any("lora" in k for k in loaded.model.state_dict())  # merged: a plain model


@pytest.mark.parametrize("algo", ["grpo", "ppo"])
def test_train_answer_agent(algo: str, tiny_model: Path, tiny_locomo_path: Path, tmp_path: Path,
                            fake_llms: list[object]) -> None:
    out = tmp_path / algo
    args = ["train", "answer-agent", "--algo", algo, "--model", str(tiny_model), "--out", str(out),
            "--data", str(tiny_locomo_path), "--steps", "2", "--batch-size", "2",
            "--group-size", "2", "--max-new-tokens", "4", "--lr", "1e-4", "--embedder", "hash"]
    _invoke(args)
    rows = read_metrics(out / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2] and "reward_mean" in rows[0]
    assert (out / "checkpoint-2" / "trainer_state.pt").exists() and (out / "metrics.png").exists()
    assert (out / "final" / "model.safetensors").exists() and (out / "banks.sqlite").exists()
    assert len(fake_llms) == 3  # one bank-building model per role (llamacpp default)
    if algo == "grpo":  # resuming a finished run: banks complete (no LLM), no new step
        _invoke([*args, "--resume"])
        assert len(fake_llms) == 3
        assert [r["step"] for r in read_metrics(out / "metrics.jsonl")] == [1, 2]


def test_train_memory_manager(tiny_model: Path, tiny_locomo_path: Path, tmp_path: Path,
                              fake_llms: list[object]) -> None:
    out = tmp_path / "mm"
    _invoke(["train", "memory-manager", "--algo", "grpo", "--model", str(tiny_model),
             "--out", str(out), "--data", str(tiny_locomo_path), "--steps", "1",
             "--batch-size", "1", "--group-size", "2", "--max-new-tokens", "4",
             "--embedder", "hash"])
    assert (out / "snapshots.jsonl").exists()
    assert [r["step"] for r in read_metrics(out / "metrics.jsonl")] == [1]


@pytest.mark.parametrize("extra,needle", [
    (["--lora-r", "4", "--full"], "--lora-r or --full"),
    (["--group-size", "1"], "grpo"),
])
def test_bad_combination_is_a_clean_error(extra: list[str], needle: str, tiny_model: Path,
                                          tiny_locomo_path: Path, tmp_path: Path) -> None:
    res = CliRunner().invoke(main, ["train", "answer-agent", "--algo", "grpo", "--model",
                                    str(tiny_model), "--out", str(tmp_path / "x"), "--data",
                                    str(tiny_locomo_path), "--embedder", "hash", *extra])
    assert res.exit_code != 0 and needle in res.output and "Traceback" not in res.output
    assert isinstance(res.exception, SystemExit)


def test_existing_run_needs_resume(tmp_path: Path, tiny_model: Path) -> None:
    (tmp_path / "metrics.jsonl").write_text("{}\n")
    res = CliRunner().invoke(main, ["train", "answer-agent", "--algo", "ppo", "--model",
                                    str(tiny_model), "--out", str(tmp_path)])
    assert res.exit_code != 0 and "--resume" in res.output
