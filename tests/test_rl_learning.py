"""The trainer on a tiny random Llama: log-prob plumbing, learning, LoRA, checkpoints, metrics.

The toy task (``rl.tiny``): three questions ("capital of france ?" -> paris, italy -> rome,
norway -> oslo); reward 1 iff the completion parses to ``**Answer:** <its answer>`` (the real
``rl.envs.rewards.score_answers``). Whole-word tokens and three-token completions make a rewarded
output reachable by chance (~2 % at the start). Every answer is a different word, so only a
policy that reads its prompt can score above 1/3.

The learning tests are built to fail when the algorithm is broken. Each sabotage below is run
by ``test_sabotage_is_caught`` and must make its criterion fail:

* a policy that ignores its prompt (every question rendered as the same text) -> the
  multi-question learning criterion (best 10-step mean reward >= 0.8) fails: it caps at ~1/3;
* plain REINFORCE instead of the clipped surrogate (``-A * logp``, no ratio, no clip) -> the
  trust-region criterion fails: 8 epochs x 2 minibatches on one batch push the ratio of
  positive-advantage tokens to ~2.6, where the clip holds it near 1.6 (criterion < 2);
* the KL term with its sign flipped (GRPO's k3 loss, PPO's k1 reward penalty) -> the KL
  criterion fails: with ``beta > 0`` the policy must end *closer* to its reference than the
  same run with ``beta = 0``; flipped, it ends farther.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("accelerate")

from memory_r1.llm.base import Prompt
from memory_r1.rl.algorithms.grpo import GRPOConfig
from memory_r1.rl.algorithms.ppo import PPOConfig
from memory_r1.rl.algorithms.trainer import TrainConfig, Trainer, latest_checkpoint, make_algorithm
from memory_r1.rl.monitor import plot_metrics, read_metrics
from memory_r1.rl.tiny import ToyAnswerEnv, toy_policy

torch.set_num_threads(1)

MULTI_QA = {"capital of france ?": "paris", "capital of italy ?": "rome", "capital of norway ?": "oslo"}
# 16 prompts x 8 samples = 128 rollouts per step (the paper's batch), 2 epochs x 2 minibatches
# so pi_old and the clip act. The lr is far above the paper's 1e-6: a 30k-parameter model
# from scratch, not a pretrained 8B one.
LEARN = TrainConfig(steps=100, prompts_per_step=16, max_new_tokens=3, seed=0, progress=False)
GRPO_CFG = GRPOConfig(lr=3e-3, num_epochs=2, num_minibatches=2)
PPO_CFG = PPOConfig(samples_per_prompt=8, lr=3e-3, critic_lr=1e-2, num_epochs=2, num_minibatches=2)


def _cpu() -> Any:
    """Tests stay on CPU even where CUDA exists: bitwise resume checks need CPU determinism."""
    from accelerate import Accelerator

    return Accelerator(cpu=True)


def _lora() -> Any:
    peft = pytest.importorskip("peft")
    return peft.LoraConfig(
        r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj", "v_proj", "up_proj"]
    )


class _MentionsParis(ToyAnswerEnv):
    """Reward 1 for any completion containing "paris": dense enough that a 16-rollout step
    always has reward variance, so one-step tests really update."""

    def score(self, completions: list[str], metas: list[dict[str, str]]) -> list[float]:
        return [float("paris" in c.split()) for c in completions]


def _clone_state(module: Any) -> dict[str, Any]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _same_state(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ---------------------------------------------------------------------- rollout plumbing


def test_generate_masks_and_logprobs_match_recomputation() -> None:
    policy = toy_policy(0)
    texts = [policy.render(Prompt("", "capital of france ?")), policy.render(Prompt("", "?"))]
    torch.manual_seed(1)  # a draw in which some rows end early (toy_policy seeds torch itself)
    batch = policy.generate(texts, n=4, max_new_tokens=6, temperature=0.8)
    t = batch.completion_mask.shape[1]
    assert batch.input_ids.shape == (8, batch.attention_mask.shape[1]) and t <= 6
    assert batch.prompts[:4] == [texts[0]] * 4 and batch.prompts[4:] == [texts[1]] * 4
    eos = policy.tokenizer.eos_token_id
    ended = 0
    for row, mask in zip(batch.input_ids[:, -t:], batch.completion_mask):
        n = int(mask.sum())
        assert mask[:n].all() and not mask[n:].any()  # ones, then padding
        hits = (row == eos).nonzero()
        assert n == (int(hits[0]) + 1 if len(hits) else t)  # EOS itself is trained on
        ended += bool(len(hits))
    assert ended > 0  # some rows stopped early, so the padding path is exercised
    # recomputed log-probs (completion positions only) equal the sampler's
    args = (batch.input_ids, batch.attention_mask, batch.completion_mask)
    logp = policy.logprobs(*args, temperature=0.8)
    assert torch.allclose(logp, batch.sample_logp, atol=1e-5)
    assert torch.allclose(policy.ref_logprobs(*args, temperature=0.8), logp, atol=1e-6)
    # the short prompt was left-padded: alone, without padding, it scores the same
    width = batch.input_ids.shape[1] - t
    n_pad = int((batch.attention_mask[4, :width] == 0).sum())
    assert n_pad > 0
    alone = policy.logprobs(
        batch.input_ids[4:5, n_pad:],
        batch.attention_mask[4:5, n_pad:],
        batch.completion_mask[4:5],
        temperature=0.8,
    )
    assert torch.allclose(alone, logp[4:5], atol=1e-5)


# ---------------------------------------------------------------------------- learning


def _learn(
    cfg: GRPOConfig | PPOConfig, tmp_path: Path | None = None
) -> tuple[list[float], list[dict[str, float]], Any]:
    policy = toy_policy(0, value_head=isinstance(cfg, PPOConfig), qa=MULTI_QA)
    assert policy.ref is not None
    ref_before = _clone_state(policy.ref)
    out = {"out_dir": str(tmp_path)} if tmp_path is not None else {}
    trainer = Trainer(
        make_algorithm(policy, cfg), ToyAnswerEnv(MULTI_QA), TrainConfig(**{**LEARN.__dict__, **out}), _cpu()
    )
    history = trainer.train()
    assert _same_state(ref_before, _clone_state(policy.ref))  # the reference never moves
    assert _same_state(ref_before, _clone_state(toy_policy(0, qa=MULTI_QA).model))  # = start
    return [row["reward_mean"] for row in history], history, policy


def learned(rewards: list[float], name: str = "") -> bool:
    """Start near 0, and some 10-step window averages >= 0.8 (above any prompt-blind policy's
    1/3). Judged on the best window, not the last: at this lr a converged toy policy can still
    dip for a few steps (Adam on 30k parameters), which says nothing about the update."""
    start = sum(rewards[:5]) / 5
    windows = [sum(rewards[i : i + 10]) / 10 for i in range(len(rewards) - 9)]
    print(
        f"{name}: start {start:.3f}, best 10-step mean {max(windows):.3f}, "
        f"last 10 {windows[-1]:.3f}; every 10th: {[round(r, 2) for r in rewards[::10]]}"
    )
    return start < 0.15 and max(windows) >= 0.8


def test_grpo_learns_three_answers(tmp_path: Path) -> None:
    rewards, history, _ = _learn(GRPO_CFG, tmp_path)
    assert learned(rewards, "GRPO")
    updated = [row for row in history if not row["skipped_update"]]  # all-tied batches skip
    assert len(updated) > len(history) // 2
    assert any(row["clipfrac"] > 0 for row in updated)  # 2 epochs x 2 minibatches: clip acts
    assert max(row["kl"] for row in updated) > 0.0
    assert all(row["logp_mismatch"] < 1e-4 for row in updated)


def test_ppo_learns_three_answers(tmp_path: Path) -> None:
    rewards, history, _ = _learn(PPO_CFG, tmp_path)
    assert learned(rewards, "PPO")
    assert history[-1]["value_mean"] > history[0]["value_mean"]  # the critic tracked the reward
    updated = [row for row in history if not row["skipped_update"]]  # all-tied batches skip
    assert len(updated) > len(history) // 2
    assert any(row["clipfrac"] > 0 for row in updated)
    assert all(row["logp_mismatch"] < 1e-4 for row in updated)
    rows = read_metrics(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in rows] == list(range(1, LEARN.steps + 1))
    png = plot_metrics(tmp_path / "metrics.jsonl", tmp_path / "curves.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def trust_region_ratio(algo_name: str) -> float:
    """Mean ratio pi_new / pi_old over the positive-advantage tokens of one batch after 8 epochs
    x 2 minibatches (16 Adam steps at lr 3e-3): the clipped surrogate stops pushing a token
    once its ratio passes 1 + eps (0.2); other tokens' gradients still move it (shared
    weights), so it ends at ~1.6, while REINFORCE, with no brake, ends at ~2.6 (measured)."""
    ppo = algo_name == "ppo"
    policy = toy_policy(0, value_head=ppo, qa=MULTI_QA)
    cfg: Any = (
        PPOConfig(samples_per_prompt=8, lr=3e-3, critic_lr=1e-2, num_epochs=8, num_minibatches=2, beta=0.0)
        if ppo
        else GRPOConfig(group_size=8, lr=3e-3, num_epochs=8, num_minibatches=2, beta=0.0)
    )
    algo = make_algorithm(policy, cfg)
    env = _MentionsParis(MULTI_QA)
    torch.manual_seed(0)
    items = env.prompts(4, __import__("random").Random(0))
    batch = policy.generate([policy.render(p) for p, _ in items], 8, 3, temperature=1.0)
    batch.rewards = torch.tensor(env.score(batch.completions, [m for _, m in items for _ in range(8)]))
    algo.prepare(batch)
    old = batch.old_logp.clone()
    adv = batch.advantages if batch.advantages.dim() == 2 else batch.advantages.unsqueeze(1).expand_as(old)
    algo.step(batch)
    with torch.no_grad():
        new = policy.logprobs(
            batch.input_ids, batch.attention_mask, batch.completion_mask, groups=batch.groups
        )
    pos = (adv > 0) & batch.completion_mask.bool()
    return float(torch.exp(new - old)[pos].mean())


@pytest.mark.parametrize("algo", ["grpo", "ppo"])
def test_the_clip_bounds_the_ratio_over_epochs(algo: str) -> None:
    ratio = trust_region_ratio(algo)
    print(f"{algo}: mean ratio of positive-advantage tokens after 16 updates: {ratio:.3f}")
    assert ratio < 2.0


def kl_to_reference(algo_name: str, beta: float) -> float:
    """Mean KL (k3, to the reference) over the last 10 steps of a 40-step run on the toy task."""
    ppo = algo_name == "ppo"
    policy = toy_policy(0, value_head=ppo, qa=MULTI_QA)
    cfg: Any = (
        PPOConfig(samples_per_prompt=8, lr=3e-3, critic_lr=1e-2, beta=beta, skip_no_signal=False)
        if ppo
        else GRPOConfig(lr=3e-3, beta=beta, skip_no_signal=False)
    )
    trainer = Trainer(
        make_algorithm(policy, cfg),
        _MentionsParis(MULTI_QA),
        TrainConfig(steps=40, prompts_per_step=8, max_new_tokens=3, seed=0, progress=False),
        _cpu(),
    )
    trainer.train()
    env = ToyAnswerEnv(MULTI_QA)
    torch.manual_seed(1)
    items = env.prompts(16, __import__("random").Random(1))
    batch = policy.generate([policy.render(p) for p, _ in items], 8, 3, temperature=1.0)
    args = (batch.input_ids, batch.attention_mask, batch.completion_mask)
    with torch.no_grad():
        logp = policy.logprobs(*args, groups=batch.groups)
        ref = policy.ref_logprobs(*args, groups=batch.groups)
    from memory_r1.rl.algorithms.losses import kl_k3, masked_mean

    return float(masked_mean(kl_k3(logp, ref), batch.completion_mask))


@pytest.mark.parametrize("algo", ["grpo", "ppo"])
def test_the_kl_penalty_keeps_the_policy_near_its_reference(algo: str) -> None:
    free, held = kl_to_reference(algo, 0.0), kl_to_reference(algo, 1.0)
    print(f"{algo}: KL to the reference after 40 steps: beta 0 -> {free:.4f}, beta 1 -> {held:.4f}")
    assert held < 0.7 * free


# ------------------------------------------------------------------- sabotage: the tests bite


def _reinforce(
    logp: Any,
    old_logp: Any,
    adv: Any,
    mask: Any,
    clip_eps: float = 0.2,
    agg: Any = "token-mean",
    max_len: Any = None,
    **norm: Any,
) -> Any:
    """Plain REINFORCE: ``-A * logp``, no ratio, no clip (the sabotage)."""
    from memory_r1.rl.algorithms.losses import aggregate

    if adv.dim() == 1:
        adv = adv.unsqueeze(1).expand_as(logp)
    loss = aggregate(-adv * logp, mask, agg, max_len, **norm)
    return loss, {"clipfrac": 0.0, "approx_kl": 0.0, "ratio_mean": 1.0}


SABOTAGES: dict[str, tuple[Callable[[pytest.MonkeyPatch], None], Callable[[], bool]]] = {}


def _sabotage(name: str, criterion: Callable[[], bool]) -> Callable[[Any], Any]:
    def register(patch: Callable[[pytest.MonkeyPatch], None]) -> Any:
        SABOTAGES[name] = (patch, criterion)
        return patch

    return register


@_sabotage("prompt-ignoring policy", lambda: learned(_learn(GRPO_CFG)[0], "GRPO, prompt-blind"))
def _blind(mp: pytest.MonkeyPatch) -> None:
    from memory_r1.rl.algorithms.policy import Policy

    real = Policy.render
    mp.setattr(Policy, "render", lambda self, prompt: real(self, Prompt("", "capital of ?")))


@_sabotage("plain REINFORCE (grpo)", lambda: trust_region_ratio("grpo") < 2.0)
def _reinforce_grpo(mp: pytest.MonkeyPatch) -> None:
    mp.setattr("memory_r1.rl.algorithms.grpo.policy_loss", _reinforce)


@_sabotage("plain REINFORCE (ppo)", lambda: trust_region_ratio("ppo") < 2.0)
def _reinforce_ppo(mp: pytest.MonkeyPatch) -> None:
    mp.setattr("memory_r1.rl.algorithms.ppo.policy_loss", _reinforce)


@_sabotage(
    "KL sign flipped (grpo)", lambda: kl_to_reference("grpo", 1.0) < 0.7 * kl_to_reference("grpo", 0.0)
)
def _flip_grpo(mp: pytest.MonkeyPatch) -> None:
    from memory_r1.rl.algorithms import losses as algorithms

    mp.setattr("memory_r1.rl.algorithms.grpo.kl_k3", lambda lp, ref: -algorithms.kl_k3(lp, ref))


@_sabotage("KL sign flipped (ppo)", lambda: kl_to_reference("ppo", 1.0) < 0.7 * kl_to_reference("ppo", 0.0))
def _flip_ppo(mp: pytest.MonkeyPatch) -> None:
    from memory_r1.rl.algorithms import losses as algorithms

    mp.setattr("memory_r1.rl.algorithms.ppo.kl_k1", lambda lp, ref: -algorithms.kl_k1(lp, ref))


@pytest.mark.parametrize("name", list(SABOTAGES))
def test_sabotage_is_caught(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each broken algorithm fails the criterion its test asserts (see the module docstring)."""
    patch, criterion = SABOTAGES[name]
    patch(monkeypatch)
    assert not criterion(), f"{name}: the learning tests would not notice this sabotage"


# ------------------------------------------------------------------- LoRA and full FT


@pytest.mark.parametrize("algo", ["grpo", "ppo"])
@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_one_step_full_and_lora(algo: str, lora: bool) -> None:
    policy = toy_policy(0, value_head=algo == "ppo", lora=_lora() if lora else None)
    cfg: GRPOConfig | PPOConfig = (
        GRPOConfig(group_size=4, lr=1e-2, num_epochs=2, num_minibatches=2)
        if algo == "grpo"
        else PPOConfig(samples_per_prompt=4, lr=1e-2, critic_lr=1e-2, num_epochs=2, num_minibatches=2)
    )
    before = _clone_state(policy.model)
    trainer = Trainer(
        make_algorithm(policy, cfg),
        _MentionsParis(),
        TrainConfig(steps=1, prompts_per_step=4, max_new_tokens=3, seed=0, progress=False),
        _cpu(),
    )
    stats = trainer.train()[0]
    assert 0 < stats["reward_mean"] < 1
    assert stats["grad_norm"] > 0 and stats["loss"] == stats["loss"]  # finite, not NaN
    after = _clone_state(policy.model)
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    if lora:
        assert changed and all("lora_" in k for k in changed)  # the base model is untouched
        # reference = adapters disabled = the untouched base model
        base = toy_policy(0)
        batch = policy.generate([policy.render(Prompt("", "capital of france ?"))], n=4, max_new_tokens=3)
        args = (batch.input_ids, batch.attention_mask, batch.completion_mask)
        assert torch.allclose(policy.ref_logprobs(*args), base.logprobs(*args), atol=1e-6)
        assert not torch.allclose(policy.logprobs(*args), base.logprobs(*args), atol=1e-4)
    else:
        assert len(changed) == len(before)
    if algo == "grpo":  # 2 epochs x 2 minibatches: pi_old recomputed, ratio moves off 1
        assert stats["ratio_mean"] != 1.0


# ---------------------------------------------------------------------------- resume


@pytest.mark.parametrize("algo,lora", [("ppo", False), ("grpo", True)], ids=["ppo-full", "grpo-lora"])
def test_checkpoint_resumes_to_the_same_state(tmp_path: Path, algo: str, lora: bool) -> None:
    def make(out: Path, save_every: int) -> Trainer:
        policy = toy_policy(0, value_head=algo == "ppo", lora=_lora() if lora else None)
        cfg: GRPOConfig | PPOConfig = (
            GRPOConfig(group_size=4, lr=1e-2, num_minibatches=2)
            if algo == "grpo"
            else PPOConfig(samples_per_prompt=2, lr=1e-2, critic_lr=1e-2)
        )
        return Trainer(
            make_algorithm(policy, cfg),
            _MentionsParis(),
            TrainConfig(
                steps=4,
                prompts_per_step=4,
                max_new_tokens=3,
                seed=0,
                out_dir=str(out),
                save_every=save_every,
                progress=False,
            ),
            _cpu(),
        )

    straight = make(tmp_path / "a", save_every=2)
    init = _clone_state(straight.algo.policy.model)
    rows_a = straight.train()
    assert not _same_state(init, _clone_state(straight.algo.policy.model))  # it did train
    ckpt = latest_checkpoint(tmp_path / "a")
    assert ckpt is not None and ckpt.name == "checkpoint-4"
    mid = tmp_path / "a" / "checkpoint-2"
    saved = json.loads((mid / "policy" / "config.json").read_text()) if not lora else None
    assert (mid / "policy" / ("adapter_model.safetensors" if lora else "model.safetensors")).exists()
    assert saved is None or saved["model_type"] == "llama"

    # Resume in the same folder, as after a crash: the log is cut back to step 2 and regrown.
    resumed = make(tmp_path / "a", save_every=0)
    resumed.resume(mid)
    assert resumed.step == 2
    assert [r["step"] for r in read_metrics(tmp_path / "a" / "metrics.jsonl")] == [1, 2]
    rows_b = resumed.train()
    assert [r["step"] for r in rows_b] == [3, 4]
    assert [r["step"] for r in read_metrics(tmp_path / "a" / "metrics.jsonl")] == [1, 2, 3, 4]

    def strip(rows: list[dict[str, float]]) -> list[dict[str, float]]:
        return [{k: v for k, v in r.items() if not k.endswith("_s")} for r in rows]

    assert strip(rows_b) == strip(rows_a[2:])  # the same batches and the same updates
    pa, pb = straight.algo.policy, resumed.algo.policy
    assert _same_state(_clone_state(pa.model), _clone_state(pb.model))
    if pa.value_head is not None and pb.value_head is not None:
        assert _same_state(_clone_state(pa.value_head), _clone_state(pb.value_head))
    opt_a, opt_b = straight.algo.optimizer.state_dict(), resumed.algo.optimizer.state_dict()
    assert all(
        torch.equal(opt_a["state"][i]["exp_avg"], opt_b["state"][i]["exp_avg"]) for i in opt_a["state"]
    )
