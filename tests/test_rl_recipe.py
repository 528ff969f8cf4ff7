"""The RL recipe's knobs, each against something that can fail: Dr.GRPO's budget normaliser,
one seed -> one LoRA init, PPO's no-signal skip, dynamic sampling, reward choices, the
evidence filter, the frozen Answer Agent's loading, the Manager SFT's id order."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from memory_r1.errors import ConfigError
from memory_r1.llm.base import Prompt
from memory_r1.rl.algorithms.grpo import GRPOConfig
from memory_r1.rl.algorithms.losses import aggregate
from memory_r1.rl.algorithms.ppo import PPOConfig
from memory_r1.rl.algorithms.trainer import TrainConfig, Trainer, make_algorithm, rollouts
from memory_r1.rl.envs import rewards as R
from memory_r1.rl.tiny import ToyAnswerEnv, toy_policy

torch.set_num_threads(1)
QA = {"capital of france ?": "paris", "capital of italy ?": "rome"}


def _cpu() -> Any:
    from accelerate import Accelerator

    return Accelerator(cpu=True)


def _lora() -> Any:
    peft = pytest.importorskip("peft")
    return peft.LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj"])


# ------------------------------------------------------------------------------ Dr.GRPO


def test_dr_grpo_divides_by_the_generation_budget_not_the_batch_length() -> None:
    x, m = torch.ones(2, 3), torch.ones(2, 3)
    assert aggregate(x, m, "dr-grpo", max_len=10).item() == pytest.approx(6 / 20)
    policy = toy_policy(0, qa=QA)
    torch.manual_seed(0)
    batch = policy.generate([policy.render(Prompt("", q)) for q in QA], 4, max_new_tokens=7)
    assert batch.budget == 7
    batch.rewards = torch.tensor([1.0, 0, 0, 0, 0, 1, 0, 0])
    seen: list[Any] = []
    from memory_r1.rl.algorithms import grpo

    real = grpo.policy_loss

    def spy(*a: Any, **k: Any) -> Any:
        seen.append(k.get("max_len", a[6] if len(a) > 6 else None))
        return real(*a, **k)

    algo = make_algorithm(policy, GRPOConfig(group_size=4, agg="dr-grpo", beta=0.0))
    grpo.policy_loss = spy  # type: ignore[assignment]
    try:
        algo.prepare(batch)
        algo.step(batch)
    finally:
        grpo.policy_loss = real  # type: ignore[assignment]
    assert seen == [7]  # the budget, whatever the batch's realised width (here <= 7)


# -------------------------------------------------------------------------- seeds, LoRA


def test_one_seed_gives_one_lora_initialisation() -> None:
    from memory_r1.rl.algorithms.policy import Policy
    from memory_r1.rl.tiny import tiny_llama, tiny_tokenizer, toy_words

    def adapters(seed: int) -> dict[str, Any]:
        torch.manual_seed(1234 + random.randrange(10**6))  # whatever state the caller left
        tok = tiny_tokenizer(toy_words())
        policy = Policy(tiny_llama(tok), tok, lora=_lora(), seed=seed)
        return {k: v.clone() for k, v in policy.model.state_dict().items() if "lora_A" in k}

    a, b, c = adapters(5), adapters(5), adapters(6)
    assert a and all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


# ------------------------------------------------------------------------ no-signal skip


def test_ppo_skips_a_batch_whose_rewards_all_tie() -> None:
    policy = toy_policy(0, value_head=True, qa=QA)
    algo = make_algorithm(policy, PPOConfig(samples_per_prompt=2, lr=1e-2))
    torch.manual_seed(0)
    batch = policy.generate([policy.render(Prompt("", q)) for q in QA], 2, 3)
    before = [p.detach().clone() for p in policy.actor_parameters()]
    batch.rewards = torch.zeros(4)
    algo.prepare(batch)
    assert algo.step(batch) == {"skipped_update": 1.0}
    assert all(torch.equal(b, p) for b, p in zip(before, policy.actor_parameters()))
    batch.rewards = torch.tensor([0.0, 1.0, 0.0, 0.0])  # one reward differs: a real update
    algo.prepare(batch)
    stats = algo.step(batch)
    assert stats["skipped_update"] == 0.0 and stats["grad_norm"] > 0


# ----------------------------------------------------------------------- dynamic sampling


class _OnlyFrance(ToyAnswerEnv):
    """Reward varies within a group only for the france question (random 0/1); italy ties."""

    def __init__(self) -> None:
        super().__init__(QA)
        self.calls = 0

    def score(self, completions: list[str], metas: list[dict[str, str]]) -> list[float]:
        self.calls += 1
        return [float(i % 2) if m["answer"] == "paris" else 0.0 for i, m in enumerate(metas)]


@pytest.mark.parametrize("dynamic", [False, True])
def test_dynamic_sampling_fills_the_batch_with_informative_groups(dynamic: bool) -> None:
    policy = toy_policy(0, qa=QA)
    algo = make_algorithm(policy, GRPOConfig(group_size=2, lr=1e-2))
    env = _OnlyFrance()
    cfg = TrainConfig(
        steps=1,
        prompts_per_step=4,
        max_new_tokens=3,
        dynamic_sampling=dynamic,
        max_draw_factor=5,
        progress=False,
    )
    torch.manual_seed(0)
    batch = next(rollouts(env, algo, cfg, random.Random(0)))
    groups = batch.rewards.view(-1, 2)
    informative = groups[:, 0] != groups[:, 1]
    assert batch.info["informative_frac"] < 1.0  # italy groups were drawn and tied
    if dynamic:
        assert len(batch) == 8 and bool(informative.all())  # 4 groups, every one informative
        assert batch.info["prompts_drawn"] > 4 and env.calls == batch.info["draws"] > 1
        assert batch.groups.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
        assert all(m["answer"] == "paris" for m in batch.metas)
    else:
        assert len(batch) == 8 and batch.info["prompts_drawn"] == 4 and env.calls == 1
        assert not bool(informative.all())


def test_dynamic_sampling_gives_up_after_its_draw_bound() -> None:
    class Tied(ToyAnswerEnv):
        def score(self, completions: list[str], metas: list[Any]) -> list[float]:
            return [0.0] * len(completions)

    policy = toy_policy(0, qa=QA)
    algo = make_algorithm(policy, GRPOConfig(group_size=2, lr=1e-2))
    cfg = TrainConfig(
        steps=1,
        prompts_per_step=2,
        max_new_tokens=2,
        dynamic_sampling=True,
        max_draw_factor=3,
        progress=False,
    )
    batch = next(rollouts(Tied(QA), algo, cfg, random.Random(0)))
    assert batch.info["prompts_drawn"] == 6 and batch.info["informative_frac"] == 0.0
    assert algo.step(batch) == {"skipped_update": 1.0}  # the last draw, all tied: no update


# --------------------------------------------------------------------------------- rewards


def test_reward_choices_score_the_parsed_answer() -> None:
    outs = ["**Answer:** in Paris", "**Answer:** Paris", "Paris"]
    gold = ["Paris"] * 3
    assert R.score_answers(outs, gold, "em").rewards == [0.0, 1.0, 0.0]
    f1 = R.score_answers(outs, gold, "f1").rewards
    assert f1 == pytest.approx([2 / 3, 1.0, 0.0])
    assert R.score_answers(outs, gold, "em+f1").rewards == pytest.approx([1 / 3, 1.0, 0.0])
    with pytest.raises(ValueError, match="unknown reward"):
        R.score_answers(outs, gold, "bleu")  # type: ignore[arg-type]


def test_answer_env_reward_and_evidence_filter() -> None:
    from memory_r1.data.locomo import parse_locomo
    from memory_r1.data.synthetic import tiny_locomo
    from memory_r1.rl.envs.answer import AnswerEnv
    from memory_r1.rl.sft.data import observation_bank
    from memory_r1.store.embedders import HashEmbedder

    conv = parse_locomo(tiny_locomo())[0]
    store = observation_bank(conv, HashEmbedder())
    every = AnswerEnv([conv], store=store, split=None, k=1, reward="f1")
    kept = AnswerEnv([conv], store=store, split=None, k=1, require_evidence=True)
    shown = [m["evidence_shown"] for _, m in every.episodes]
    assert any(shown) and not all(shown)  # k=1 hides some evidence: the filter has work
    assert len(kept) == sum(shown) and kept.skipped["no_evidence_shown"] == len(every) - len(kept)
    assert all(m["evidence_shown"] for _, m in kept.episodes)
    _, meta = every.episodes[0]
    assert every.score([f"**Answer:** x {meta['answer']}"], [meta])[0] == pytest.approx(
        R.score_answers([f"**Answer:** x {meta['answer']}"], [meta["answer"]], "f1").rewards[0]
    )
    assert every.stops and every.budget == 160  # the Answer Agent's own, at inference
    with pytest.raises(ValueError, match="reward"):
        AnswerEnv([conv], store=store, split=None, reward="j")  # type: ignore[arg-type]


def test_rollouts_stop_where_inference_stops() -> None:
    """The env's stop strings end a rollout row; its text is cut there, its tokens kept."""

    class Stops(ToyAnswerEnv):
        stops = ("paris",)
        budget = 6

    policy = toy_policy(0, qa=QA)
    algo = make_algorithm(policy, GRPOConfig(group_size=8, lr=1e-2))
    torch.manual_seed(0)
    batch = next(
        rollouts(Stops(QA), algo, TrainConfig(steps=1, prompts_per_step=4, progress=False), random.Random(0))
    )
    assert batch.budget == 6 and batch.width <= 6
    ids = batch.input_ids[:, -batch.width :]
    paris = policy.tokenizer.convert_tokens_to_ids("paris")
    for row, mask, text in zip(ids, batch.completion_mask, batch.completions):
        n = int(mask.sum())
        assert "paris" not in text
        if paris in row[:n].tolist():
            assert row[n - 1] == paris  # the row ended on the stop string's token


# ------------------------------------------------------------------ frozen Answer Agent


def test_frozen_answer_agent_loads_from_dir_gguf_or_endpoint(tmp_path: Path) -> None:
    from memory_r1.app.common import frozen_answer_model

    d = tmp_path / "ckpt"
    d.mkdir()
    assert frozen_answer_model(str(d)).backend == "hf"
    assert frozen_answer_model("smollm2-135m").backend == "llamacpp"
    lora = frozen_answer_model("smollm2-135m", lora="a.gguf")
    assert lora.backend == "llamacpp" and lora.options == {"lora_path": "a.gguf"}
    api = frozen_answer_model("served", base_url="http://127.0.0.1:8000/v1")
    assert api.backend == "openai" and api.base_url == "http://127.0.0.1:8000/v1"
    with pytest.raises(ConfigError, match="HF directory"):
        frozen_answer_model(str(d), backend="llamacpp")
    with pytest.raises(ConfigError, match="llamacpp"):
        frozen_answer_model(str(d), lora="a.gguf")


# ----------------------------------------------------------------- Manager SFT id order


def test_manager_sft_orders_related_memories_as_the_pipeline_does() -> None:
    from memory_r1.agents.context import related_memories
    from memory_r1.data.locomo import parse_locomo
    from memory_r1.data.synthetic import tiny_locomo
    from memory_r1.rl.sft.data import replay_observations
    from memory_r1.store.embedders import HashEmbedder
    from memory_r1.store.sqlite import SQLiteStore

    conv = parse_locomo(tiny_locomo())[0]
    checked = 0
    with SQLiteStore(":memory:", HashEmbedder()) as store:
        for _, speaker, facts, idmap, _ in replay_observations(conv, store, "b", top_k=5):
            want = related_memories(store, "b", facts, speaker, 5)  # the pipeline's context
            assert [m.id for m in idmap.memories] == [m.id for m in want]
            checked += len(want) > 1
    assert checked  # some turn had several related memories, so the order was tested


def test_trainer_runs_dynamic_sampling_end_to_end(tmp_path: Path) -> None:
    policy = toy_policy(0, qa=QA)
    trainer = Trainer(
        make_algorithm(policy, GRPOConfig(group_size=2, lr=1e-2)),
        _OnlyFrance(),
        TrainConfig(
            steps=2,
            prompts_per_step=2,
            max_new_tokens=3,
            dynamic_sampling=True,
            progress=False,
            out_dir=str(tmp_path),
        ),
        _cpu(),
    )
    rows = trainer.train()
    assert [r["step"] for r in rows] == [1, 2]
    assert all(r["skipped_update"] == 0.0 and r["informative_frac"] < 1 for r in rows)
