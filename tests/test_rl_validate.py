"""Greedy validation, best-step export, TensorBoard scalars and the progress bar, on the toy
task of ``rl.tiny`` (a tiny random Llama, whole-word vocabulary, CPU)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("accelerate")

from memory_r1.llm.base import Prompt
from memory_r1.rl.algorithms.grpo import GRPOConfig
from memory_r1.rl.algorithms.trainer import TrainConfig, Trainer, latest_checkpoint, make_algorithm
from memory_r1.rl.monitor import MetricsLog, ProgressBar, read_metrics, read_tensorboard
from memory_r1.rl.sft.data import SFTExample
from memory_r1.rl.sft.train import sft_train
from memory_r1.rl.tiny import ToyAnswerEnv, toy_policy
from memory_r1.rl.validate import (
    ANSWER_KEY,
    Validator,
    answer_validation,
    chat_model,
)

torch.set_num_threads(1)

QA = {"capital of france ?": "paris", "capital of italy ?": "rome", "capital of norway ?": "oslo"}


class EpisodesEnv:
    """What the validation functions read from an AnswerEnv: ``episodes`` of (prompt, meta)."""

    def __init__(self, qa: dict[str, str] = QA) -> None:
        self.episodes = [
            (Prompt("", q), {"qid": f"toy/q{i}", "answer": a, "category": 1, "question": q})
            for i, (q, a) in enumerate(qa.items())
        ]


def _cpu() -> Any:
    from accelerate import Accelerator

    return Accelerator(cpu=True)


def test_validation_decoding_matches_greedy_rollouts_in_any_batching() -> None:
    from memory_r1.llm.base import Sampling, complete_many

    policy = toy_policy(0, qa=QA)
    prompts = [Prompt("", q) for q in [*QA, "?"]]
    ref = policy.generate([policy.render(p) for p in prompts], 1, max_new_tokens=5, temperature=0).completions
    for bs in (1, 3, 16):
        got = complete_many(chat_model(policy, bs), prompts, Sampling(max_tokens=5))
        assert [c.text for c in got] == ref


def test_answer_validation_sees_what_sft_taught() -> None:
    policy = toy_policy(0, qa=QA)
    env = EpisodesEnv()
    before, _ = answer_validation(policy, env)
    exs = [SFTExample("answer", p, f"**Answer:** {m['answer']}") for p, m in env.episodes]
    sft_train(policy, exs, steps=40, batch_size=3, lr=1e-2, seed=0, progress=False)
    after, rows = answer_validation(policy, env, batch_size=2)
    assert after["val_em"] == after["val_f1"] == after["val_bleu1"] == 100.0 > before["val_em"]
    assert after["val_n"] == 3 and after["val_format_failure_rate"] == 0.0
    assert [r["answer"] for r in rows] == list(QA.values())
    assert rows[0]["qid"] == "toy/q0" and rows[0]["category"] == 1 and rows[0]["em"] == 1.0
    capped, rows = answer_validation(policy, env, max_questions=2)
    assert capped["val_n"] == 2 and len(rows) == 2


def _trainer(out: Path, steps: int, save_every: int = 0) -> Trainer:
    policy = toy_policy(0)
    env = EpisodesEnv({"capital of france ?": "paris"})
    validator = Validator(lambda p: answer_validation(p, env), out, ANSWER_KEY)
    cfg = TrainConfig(
        steps=steps,
        prompts_per_step=4,
        max_new_tokens=3,
        seed=0,
        out_dir=str(out),
        save_every=save_every,
        validate_every=2,
        progress=False,
    )
    return Trainer(
        make_algorithm(policy, GRPOConfig(group_size=4, lr=1e-2, skip_no_signal=False)),
        ToyAnswerEnv(),
        cfg,
        _cpu(),
        validator=validator,
    )


def test_validation_schedule_best_export_tensorboard_and_resume(tmp_path: Path) -> None:
    out = tmp_path / "run"
    rows = _trainer(out, steps=5, save_every=2).train()
    # step 0 before training, every 2 steps, and the last step
    assert [r["step"] for r in rows if "val_em" in r] == [0, 2, 4, 5]
    assert "reward_mean" not in rows[0] and "reward_mean" in rows[1]
    assert [r["step"] for r in read_metrics(out / "metrics.jsonl")] == [0, 1, 2, 3, 4, 5]
    doc = json.loads((out / "validation.json").read_text())
    assert [r["step"] for r in doc["rows"]] == [0, 2, 4, 5] and doc["key"] == list(ANSWER_KEY)
    scores = [(r["val_em"], r["val_f1"]) for r in doc["rows"]]
    assert doc["best"]["step"] == doc["rows"][scores.index(max(scores))]["step"]  # ties: earliest
    best_row = json.loads((out / "best" / "validation_row.json").read_text())
    assert best_row == doc["best"] and (out / "best" / "model.safetensors").exists()
    assert (out / "validation" / "step-4.jsonl").read_text().count("\n") == 1
    per_cat = json.loads((out / "validation" / "step-4.scores.json").read_text())
    step4 = next(r for r in doc["rows"] if r["step"] == 4)
    assert per_cat["overall"]["f1"] == pytest.approx(step4["val_f1"])
    assert per_cat["single-hop"]["n"] == 1 and set(per_cat) == {"single-hop", "overall"}
    tb = read_tensorboard(out / "tb")
    assert {"reward_mean", "loss", "kl", "val_em", "val_f1", "val_bleu1"} <= tb.keys()
    assert [s for s, _ in tb["val_em"]] == [0, 2, 4, 5]
    assert [s for s, _ in tb["reward_mean"]] == [1, 2, 3, 4, 5]

    # A crash after step 5, resumed from checkpoint-2: logs and validation cut back, regrown.
    resumed = _trainer(out, steps=5)
    resumed.resume(out / "checkpoint-2")
    assert [r["step"] for r in read_metrics(out / "metrics.jsonl")] == [0, 1, 2]
    assert [r["step"] for r in json.loads((out / "validation.json").read_text())["rows"]] == [0, 2]
    again = resumed.train()
    assert [r["step"] for r in again] == [3, 4, 5]  # no second step-0 validation
    assert [r["step"] for r in read_metrics(out / "metrics.jsonl")] == [0, 1, 2, 3, 4, 5]
    tb = read_tensorboard(out / "tb")
    assert [s for s, _ in tb["reward_mean"]] == [1, 2, 3, 4, 5]  # purged, not doubled
    assert [s for s, _ in tb["val_em"]] == [0, 2, 4, 5]
    strip = lambda rs: [{k: v for k, v in r.items() if not k.endswith("_s")} for r in rs]  # noqa: E731
    assert strip(again) == strip(rows[3:])  # validating did not change the training run
    assert latest_checkpoint(out) == out / "checkpoint-4"


def test_validation_needs_a_validator() -> None:
    cfg = TrainConfig(steps=1, prompts_per_step=1, max_new_tokens=1, validate_every=1, progress=False)
    with pytest.raises(ValueError, match="validator"):
        Trainer(make_algorithm(toy_policy(0), GRPOConfig(group_size=2)), ToyAnswerEnv(), cfg, _cpu())
    with pytest.raises(ValueError, match="validate_every"):
        TrainConfig(validate_every=-1)


def test_metrics_log_skips_non_numbers_and_progress_bar_runs(tmp_path: Path) -> None:
    log = MetricsLog(tmp_path)
    log.write({"step": 1, "a": 1.5, "flag": True, "name": "x", "nan": float("nan")})
    log.close()
    assert read_metrics(tmp_path / "metrics.jsonl")[0]["name"] == "x"
    assert set(read_tensorboard(tmp_path / "tb")) == {"a"}
    MetricsLog(None).write({"step": 1, "a": 1.0})  # no folder: nothing, no error
    with ProgressBar(3, enabled=True) as bar:  # not a terminal under pytest: must not fail
        bar.update(1, "reward 0.5")
        bar.note("validating...")
        bar.update(3, "reward 1.0")
    with ProgressBar(3, enabled=False) as bar:
        bar.update(2, "x")
