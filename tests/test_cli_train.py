"""``memory-r1 sft`` / ``memory-r1 train`` on the synthetic fixture: a tiny random Llama saved
to disk (4096 positions, word-level vocabulary), the hash embedder, and FakeChatModels in place
of the llama.cpp models that build banks and answer for the Manager's reward."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("peft")

from click.testing import CliRunner

from memory_r1.cli import main
from memory_r1.llm.base import Prompt, Sampling
from memory_r1.rl.envs import builders as episodes
from memory_r1.rl.monitor import read_metrics, read_tensorboard
from memory_r1.testing import FakeChatModel

WORDS = [
    "**Answer:**",
    "Caroline",
    "Melanie",
    "counseling",
    "Sweden",
    "the",
    "a",
    "{",
    "}",
    '"facts":',
    "[]",
    "Selected",
    "memories:",
    "-",
    "yes",
    "no",
]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from memory_r1.rl.tiny import tiny_tokenizer

    path = tmp_path_factory.mktemp("tiny-llama")
    tok = tiny_tokenizer(WORDS)
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        bos_token_id=None,
    )
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

    def factory(cfg):
        made.append(cfg)
        return FakeChatModel(reply_fn=_fake_llm)

    monkeypatch.setattr(episodes, "make_chat_model", factory)
    return made


def _invoke(args: list[str]):
    if args[0] in ("sft", "train") or args[:2] == ["eval", "answer-agent"]:
        args = [*args, "--no-progress"]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output + repr(res.exception)
    return res


def test_sft_writes_a_checkpoint_hfmodel_loads(
    tiny_model: Path, tiny_locomo_path: Path, tmp_path: Path
) -> None:
    from memory_r1.llm.hf import HFModel

    out = tmp_path / "sft"
    _invoke(
        [
            "sft",
            "--model",
            str(tiny_model),
            "--out",
            str(out),
            "--data",
            str(tiny_locomo_path),
            "--roles",
            "answer,extract",
            "--steps",
            "2",
            "--batch-size",
            "2",
            "--lr",
            "1e-3",
            "--lora-r",
            "4",
            "--embedder",
            "hash",
        ]
    )
    assert [r["step"] for r in read_metrics(out / "metrics.jsonl")] == [1, 2]
    assert (out / "checkpoint-2" / "policy").is_dir() and (out / "sft_loss.png").exists()
    assert [s for s, _ in read_tensorboard(out / "tb")["loss"]] == [1, 2]
    assert (out / "final" / "model.safetensors").exists()
    loaded = HFModel(str(out / "final"), dtype="float32")
    assert not any("lora" in k for k in loaded.model.state_dict())  # merged: a plain model


@pytest.mark.parametrize("algo", ["grpo", "ppo"])
def test_train_answer_agent(
    algo: str, tiny_model: Path, tiny_locomo_path: Path, tmp_path: Path, fake_llms: list[object]
) -> None:
    out = tmp_path / algo
    args = [
        "train",
        "answer-agent",
        "--algo",
        algo,
        "--model",
        str(tiny_model),
        "--out",
        str(out),
        "--data",
        str(tiny_locomo_path),
        "--steps",
        "2",
        "--batch-size",
        "2",
        "--group-size",
        "2",
        "--max-new-tokens",
        "4",
        "--lr",
        "1e-4",
        "--embedder",
        "hash",
    ]
    _invoke(args)
    rows = read_metrics(out / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2] and "reward_mean" in rows[0]
    assert (out / "checkpoint-2" / "trainer_state.pt").exists() and (out / "metrics.png").exists()
    assert (out / "final" / "model.safetensors").exists() and (out / "banks.sqlite").exists()
    assert len(fake_llms) == 3  # one bank-building model per role (llamacpp default)
    tb = read_tensorboard(out / "tb").keys()  # a batch of tied rewards skips its update
    assert "reward_mean" in tb and ("loss" in tb or "skipped_update" in tb)
    assert not (out / "best").exists() and not (out / "validation.json").exists()  # off
    if algo == "grpo":  # resuming a finished run: banks complete (no LLM), no new step
        _invoke([*args, "--resume"])
        assert len(fake_llms) == 3
        assert [r["step"] for r in read_metrics(out / "metrics.jsonl")] == [1, 2]


def test_train_memory_manager(
    tiny_model: Path, tiny_locomo_path: Path, tmp_path: Path, fake_llms: list[object]
) -> None:
    out = tmp_path / "mm"
    _invoke(
        [
            "train",
            "memory-manager",
            "--algo",
            "grpo",
            "--model",
            str(tiny_model),
            "--out",
            str(out),
            "--data",
            str(tiny_locomo_path),
            "--steps",
            "1",
            "--batch-size",
            "1",
            "--group-size",
            "2",
            "--max-new-tokens",
            "4",
            "--embedder",
            "hash",
        ]
    )
    assert (out / "snapshots.jsonl").exists()
    assert [r["step"] for r in read_metrics(out / "metrics.jsonl")] == [1]


@pytest.mark.parametrize(
    "extra,needle",
    [
        (["--lora-r", "4", "--full"], "--lora-r or --full"),
        (["--group-size", "1"], "grpo"),
    ],
)
def test_bad_combination_is_a_clean_error(
    extra: list[str], needle: str, tiny_model: Path, tiny_locomo_path: Path, tmp_path: Path
) -> None:
    res = CliRunner().invoke(
        main,
        [
            "train",
            "answer-agent",
            "--algo",
            "grpo",
            "--model",
            str(tiny_model),
            "--out",
            str(tmp_path / "x"),
            "--data",
            str(tiny_locomo_path),
            "--embedder",
            "hash",
            *extra,
        ],
    )
    assert res.exit_code != 0 and needle in res.output and "Traceback" not in res.output
    assert isinstance(res.exception, SystemExit)


def test_existing_run_needs_resume(tmp_path: Path, tiny_model: Path) -> None:
    (tmp_path / "metrics.jsonl").write_text("{}\n")
    res = CliRunner().invoke(
        main, ["train", "answer-agent", "--algo", "ppo", "--model", str(tiny_model), "--out", str(tmp_path)]
    )
    assert res.exit_code != 0 and "--resume" in res.output


def test_train_answer_agent_on_observation_banks_with_validation(
    tiny_model: Path, tiny_locomo_path: Path, tmp_path: Path, fake_llms: list[object]
) -> None:
    out = tmp_path / "obs"
    res = _invoke(
        [
            "train",
            "answer-agent",
            "--algo",
            "grpo",
            "--model",
            str(tiny_model),
            "--out",
            str(out),
            "--data",
            str(tiny_locomo_path),
            "--steps",
            "3",
            "--batch-size",
            "2",
            "--group-size",
            "2",
            "--max-new-tokens",
            "4",
            "--embedder",
            "hash",
            "--bank-source",
            "observations",
            "--answer-k",
            "2",
            "--validate-every",
            "2",
            "--val-questions",
            "3",
        ]
    )
    assert fake_llms == []  # banks from LoCoMo observations: no LLM at all
    assert (out / "banks-observations.sqlite").exists() and not (out / "banks.sqlite").exists()
    rows = read_metrics(out / "metrics.jsonl")
    assert [r["step"] for r in rows] == [0, 1, 2, 3]
    assert [r["step"] for r in rows if "val_em" in r] == [0, 2, 3]
    assert all(r["val_n"] == 3 for r in rows if "val_n" in r)
    doc = json.loads((out / "validation.json").read_text())
    assert [r["step"] for r in doc["rows"]] == [0, 2, 3] and doc["best"]["step"] in (0, 2, 3)
    assert (out / "best" / "model.safetensors").exists() and "best/" in res.output
    preds = (out / "validation" / "step-0.jsonl").read_text().splitlines()
    assert len(preds) == 3 and json.loads(preds[0])["qid"].startswith("conv-30/")
    assert [s for s, _ in read_tensorboard(out / "tb")["val_f1"]] == [0, 2, 3]


def test_train_memory_manager_with_validation(
    tiny_model: Path, tiny_locomo_path: Path, tmp_path: Path, fake_llms: list[object]
) -> None:
    out = tmp_path / "mmv"
    _invoke(
        [
            "train",
            "memory-manager",
            "--algo",
            "ppo",
            "--model",
            str(tiny_model),
            "--out",
            str(out),
            "--data",
            str(tiny_locomo_path),
            "--steps",
            "1",
            "--batch-size",
            "1",
            "--max-new-tokens",
            "4",
            "--embedder",
            "hash",
            "--validate-every",
            "1",
            "--val-questions",
            "2",
        ]
    )
    snaps = [json.loads(x)["sample_id"] for x in (out / "snapshots.jsonl").read_text().splitlines()]
    assert set(snaps) == {"conv-26", "conv-30"}  # validation snapshots built the same way
    rows = read_metrics(out / "metrics.jsonl")
    assert [r["step"] for r in rows] == [0, 1] and all("val_reward" in r for r in rows)
    doc = json.loads((out / "validation.json").read_text())
    assert doc["key"] == ["val_reward"] and [r["val_n"] for r in doc["rows"]] == [2, 2]
    assert (out / "best" / "model.safetensors").exists()


@pytest.mark.parametrize("source", ["observations", "pipeline"])
def test_eval_answer_agent(
    source: str, tiny_model: Path, tiny_locomo_path: Path, tmp_path: Path, fake_llms: list[object]
) -> None:
    out = tmp_path / "eval"
    res = _invoke(
        [
            "eval",
            "answer-agent",
            "--model",
            str(tiny_model),
            "--out",
            str(out),
            "--data",
            str(tiny_locomo_path),
            "--bank-source",
            source,
            "--answer-k",
            "3",
            "--embedder",
            "hash",
            "--max-questions",
            "4",
        ]
    )
    preds = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(preds) == 4 and all(p["qid"].startswith("conv-30/") for p in preds)
    assert {"raw", "answer", "gold", "f1", "bleu1", "em", "category"} <= preds[0].keys()
    scores = json.loads((out / "scores.json").read_text())
    assert scores["scores"]["overall"]["n"] == 4 and scores["config"]["bank_source"] == source
    assert "overall F1" in res.output and "EM" in res.output
    assert len(fake_llms) == (3 if source == "pipeline" else 0)


def test_memory_manager_trains_on_teacher_banks(
    tiny_model: Path, tiny_locomo_path: Path, tmp_path: Path, fake_llms: list[object]
) -> None:
    """``--bank-source observations`` gives the Manager winnable teacher-bank episodes: no
    pipeline banks are built and the run records the source."""
    out = tmp_path / "mmo"
    _invoke(
        [
            "train",
            "memory-manager",
            "--algo",
            "grpo",
            "--model",
            str(tiny_model),
            "--out",
            str(out),
            "--data",
            str(tiny_locomo_path),
            "--steps",
            "1",
            "--batch-size",
            "1",
            "--group-size",
            "2",
            "--max-new-tokens",
            "4",
            "--embedder",
            "hash",
            "--bank-source",
            "observations",
        ]
    )
    # the one model built is the frozen Answer Agent (the tiny HF model): no bank LLM
    assert [m.model for m in fake_llms] == [str(tiny_model)]  # type: ignore[attr-defined]
    assert not (out / "snapshots.jsonl").exists()
    assert json.loads((out / "run_config.json").read_text())["bank_source"] == "observations"
    assert [r["step"] for r in read_metrics(out / "metrics.jsonl")] == [1]


def test_micro_batch_size_and_dtype_reach_the_trainers(
    tiny_model: Path,
    tiny_locomo_path: Path,
    tmp_path: Path,
    fake_llms: list[object],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``--micro-batch-size`` goes to sft_train / the RL config; ``--dtype`` defaults to auto."""
    from memory_r1.app import policy
    from memory_r1.rl.algorithms import trainer
    from memory_r1.rl.sft import train as sft_module

    seen: dict[str, object] = {}
    real_sft, real_make, real_load = sft_module.sft_train, trainer.make_algorithm, policy.load_policy

    def sft_spy(*a, **k):
        seen["sft"] = k["micro_batch_size"]
        return real_sft(*a, **k)

    def make_spy(policy, cfg):
        seen["rl"] = cfg.micro_batch_size
        return real_make(policy, cfg)

    def load_spy(*a, **k):
        seen.setdefault("dtype", []).append(k["dtype"])  # type: ignore[union-attr]
        return real_load(*a, **k)

    monkeypatch.setattr(sft_module, "sft_train", sft_spy)
    monkeypatch.setattr(trainer, "make_algorithm", make_spy)
    monkeypatch.setattr(policy, "load_policy", load_spy)
    _invoke(
        [
            "sft",
            "--model",
            str(tiny_model),
            "--out",
            str(tmp_path / "sft"),
            "--data",
            str(tiny_locomo_path),
            "--roles",
            "answer",
            "--steps",
            "1",
            "--batch-size",
            "3",
            "--lora-r",
            "4",
            "--embedder",
            "hash",
            "--micro-batch-size",
            "2",
        ]
    )
    _invoke(
        [
            "train",
            "answer-agent",
            "--algo",
            "ppo",
            "--model",
            str(tiny_model),
            "--out",
            str(tmp_path / "rl"),
            "--data",
            str(tiny_locomo_path),
            "--steps",
            "1",
            "--batch-size",
            "2",
            "--group-size",
            "2",
            "--max-new-tokens",
            "4",
            "--embedder",
            "hash",
            "--bank-source",
            "observations",
            "--micro-batch-size",
            "1",
        ]
    )
    assert seen == {"sft": 2, "rl": 1, "dtype": ["auto", "auto"]}
    res = CliRunner().invoke(main, ["train", "--help"])
    assert "--micro-batch-size" in res.output and "accumulate" in res.output
    res = CliRunner().invoke(
        main, ["sft", "--model", str(tiny_model), "--out", str(tmp_path / "bad"), "--micro-batch-size", "0"]
    )
    assert res.exit_code != 0 and "--micro-batch-size" in res.output


def test_eval_answer_agent_records_the_resolved_dtype(
    tiny_model: Path, tiny_locomo_path: Path, tmp_path: Path
) -> None:
    import torch

    from memory_r1.llm.hf import resolve_precision

    out = tmp_path / "eval"
    _invoke(
        [
            "eval",
            "answer-agent",
            "--model",
            str(tiny_model),
            "--out",
            str(out),
            "--data",
            str(tiny_locomo_path),
            "--answer-k",
            "2",
            "--embedder",
            "hash",
            "--max-questions",
            "1",
        ]
    )
    config = json.loads((out / "scores.json").read_text())["config"]
    assert config["dtype"] == "auto"
    device = "cuda" if torch.cuda.is_available() else "cpu"  # where HFModel puts it
    dtype, autocast = resolve_precision("auto", device)
    assert config["dtype_resolved"] == dtype
    assert config["autocast"] == (str(autocast).removeprefix("torch.") if autocast else None)


def test_eval_memory_manager_runs_the_manager_as_inference_does(
    tiny_locomo_path: Path, tmp_path: Path, fake_llms: list[object], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--lora``: the Manager is a GGUF + LoRA on llama.cpp, asked with the pipeline's grammar
    (one item per fact); a Manager that ADDs every fact scores exactly always-ADD."""
    lora = tmp_path / "memory.gguf"
    lora.write_bytes(b"GGUF")
    schemas: list[tuple[int, int]] = []

    def factory(cfg):
        fake_llms.append(cfg)

        def reply(prompt: Prompt, sampling: Sampling) -> str:
            if "New facts: " in prompt.user and sampling.json_schema is not None:
                items = sampling.json_schema["properties"]["memory"]
                facts = json.loads(prompt.user.split("New facts: ", 1)[1].splitlines()[0])
                schemas.append((items["minItems"], len(facts)))
            return _fake_llm(prompt, sampling)

        return FakeChatModel(reply_fn=reply)

    monkeypatch.setattr(episodes, "make_chat_model", factory)
    out = tmp_path / "mm"
    base = ["eval", "memory-manager", "--model", "smollm2-135m", "--out", str(out)]
    base += ["--data", str(tiny_locomo_path), "--embedder", "hash", "--answer-model", "smollm2-135m"]
    res = _invoke([*base, "--lora", str(lora)])
    scores = json.loads((out / "scores.json").read_text())
    assert scores["model"]["val_reward"] == pytest.approx(scores["trivial"]["add"])
    assert scores["config"]["lora"] == str(lora)
    assert schemas and all(n_min == n for n_min, n in schemas)
    assert any(getattr(c, "options", {}).get("lora_path") == str(lora) for c in fake_llms)
    assert "smollm2-135m: " in res.output
    bad = CliRunner().invoke(main, [*base, "--lora", str(tmp_path / "nope.gguf")])
    assert bad.exit_code != 0 and "nope.gguf" in bad.output
