"""Gradient accumulation: micro-batches give the very update of the whole minibatch.

One hand-built rollout batch on the tiny random Llama (two prompts of different lengths, so
left padding differs; completions of 1-6 tokens, so token-mean, seq-mean and Dr.GRPO weight
rows differently and micro-batches hold unequal token counts). Each run starts from the same
weights and RNG; the optimizer is swapped for plain SGD, whose update is linear in the
gradient (Adam's first step is nearly ``lr * sign(g)`` and would hide a wrong scale), and
clipping is off (``max_grad_norm`` huge), for the same reason. Compared per optimizer step:
every parameter's accumulated gradient; then the parameters after the step and the stats.
SFT likewise: three examples with 3-7 target tokens, ``sft_train``'s AdamW replaced by SGD.
Tolerance (fp32): ``atol=1e-5, rtol=1e-4``; the differences seen are <= 1.5e-6 on gradients
up to ~10 (summation order only).
"""

from __future__ import annotations

from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("accelerate")

from memory_r1.llm.base import Prompt
from memory_r1.rl.algorithms.grpo import GRPOConfig
from memory_r1.rl.algorithms.policy import Policy
from memory_r1.rl.algorithms.ppo import PPOConfig
from memory_r1.rl.algorithms.rollout_batch import Batch
from memory_r1.rl.algorithms.trainer import make_algorithm
from memory_r1.rl.tiny import toy_policy

torch.set_num_threads(1)

AGGS = ("token-mean", "seq-mean-token-mean", "dr-grpo")
LENGTHS = (6, 1, 4, 2, 5, 3, 6, 2)  # completion tokens per row; T = 6
REWARDS = (1.0, 0.0, 0.5, 0.0, 0.0, 1.0, 0.25, 0.0)  # two groups of 4, both with variance
ATOL, RTOL = 1e-5, 1e-4
LR = 0.05  # small enough that float error does not grow over 4 steps, big enough to clip


def _batch(policy: Policy) -> Batch:
    """8 rows: 4 completions of a long prompt, then 4 of a short one (left-padded)."""
    tok = policy.tokenizer
    texts = [policy.render(Prompt("", "capital of france ?")), policy.render(Prompt("", "?"))]
    enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=not policy.chat)
    ids_p = enc["input_ids"].repeat_interleave(4, 0)
    att_p = enc["attention_mask"].repeat_interleave(4, 0)
    assert (att_p == 0).any()  # the short prompt really is padded
    gen = torch.Generator().manual_seed(0)
    t = max(LENGTHS)
    words = torch.randint(5, len(tok), (len(LENGTHS), t), generator=gen)  # no special token
    mask = torch.tensor([[1.0] * n + [0.0] * (t - n) for n in LENGTHS])
    comp = torch.where(mask.bool(), words, torch.full_like(words, tok.pad_token_id))
    return Batch(
        input_ids=torch.cat([ids_p, comp], 1),
        attention_mask=torch.cat([att_p, mask.long()], 1),
        completion_mask=mask,
        sample_logp=torch.zeros_like(mask),
        prompts=[texts[0]] * 4 + [texts[1]] * 4,
        completions=[""] * len(LENGTHS),
        rewards=torch.tensor(REWARDS),
    )


def _run(
    algo_name: str, agg: str, micro: int | None, epochs: int, minibatches: int
) -> tuple[list[list[Any]], dict[str, Any], dict[str, float]]:
    """(gradients at each optimizer step, parameters after, stats) of one ``prepare`` + ``step``."""
    from accelerate import Accelerator

    ppo = algo_name == "ppo"
    policy = toy_policy(0, value_head=ppo)
    if ppo:  # a non-zero critic, so the value loss is not trivially at its start
        torch.manual_seed(1)
        assert policy.value_head is not None
        torch.nn.init.normal_(policy.value_head.weight, std=0.3)
    common = {
        "agg": agg,
        "beta": 0.1,
        "max_grad_norm": 1e9,
        "num_epochs": epochs,
        "num_minibatches": minibatches,
        "micro_batch_size": micro,
    }
    cfg = (
        PPOConfig(samples_per_prompt=4, vf_coef=0.5, **common)
        if ppo  # type: ignore[arg-type]
        else GRPOConfig(group_size=4, **common)
    )  # type: ignore[arg-type]
    algo = make_algorithm(policy, cfg)
    algo.backward = Accelerator(cpu=True).backward  # as the Trainer runs it
    params = [*policy.actor_parameters(), *policy.value_parameters()]
    algo.optimizer = torch.optim.SGD(params, lr=LR)
    grads: list[list[Any]] = []
    sgd_step = algo.optimizer.step

    def recording_step(*a: Any, **k: Any) -> Any:
        grads.append([None if p.grad is None else p.grad.detach().clone() for p in params])
        return sgd_step(*a, **k)

    algo.optimizer.step = recording_step  # type: ignore[method-assign]
    batch = _batch(policy)
    torch.manual_seed(0)  # the minibatch shuffle
    algo.prepare(batch)
    stats = algo.step(batch)
    after = {f"p{i}": p.detach().clone() for i, p in enumerate(params)}
    return grads, after, stats


def _assert_close(a: Any, b: Any, what: str) -> None:
    assert a.shape == b.shape, what
    err = (a - b).abs().max().item()
    assert torch.allclose(a, b, atol=ATOL, rtol=RTOL), f"{what}: max |diff| {err:.3g}"


@pytest.mark.parametrize("algo", ["grpo", "ppo"])
@pytest.mark.parametrize("agg", AGGS)
@pytest.mark.parametrize("micro", [1, 3])  # 3: uneven micro-batches (3 + 3 + 2, or 3 + 1)
@pytest.mark.parametrize("epochs,minibatches", [(1, 1), (2, 2)], ids=["1x1", "2x2"])
def test_micro_batches_accumulate_the_minibatch_gradient(
    algo: str, agg: str, micro: int, epochs: int, minibatches: int
) -> None:
    g_full, p_full, s_full = _run(algo, agg, None, epochs, minibatches)
    g_micro, p_micro, s_micro = _run(algo, agg, micro, epochs, minibatches)
    assert len(g_full) == len(g_micro) == epochs * minibatches  # one step per minibatch
    for step, (gf, gm) in enumerate(zip(g_full, g_micro)):
        assert sum(float(g.abs().sum()) for g in gf if g is not None) > 1e-3  # a real gradient
        for i, (a, b) in enumerate(zip(gf, gm)):
            assert (a is None) == (b is None)
            if a is not None:
                _assert_close(b, a, f"step {step} grad of param {i}")
    for k in p_full:
        _assert_close(p_micro[k], p_full[k], f"{k} after the update")
    assert s_full.keys() == s_micro.keys()
    for k in s_full:
        assert s_micro[k] == pytest.approx(s_full[k], rel=1e-4, abs=1e-6), k
    if epochs > 1:  # pi_old recomputed and the policy moved: ratio and clip paths exercised
        assert s_full["ratio_mean"] != 1.0 and s_full["approx_kl"] > 0
        assert s_full["clipfrac"] > 0


def test_micro_batches_split_tokens_unevenly() -> None:
    """The premise of the test above: per-micro-batch means would weigh tokens differently."""
    counts = [sum(LENGTHS[i : i + 3]) for i in range(0, len(LENGTHS), 3)]
    assert len(set(counts)) > 1 and len(set(LENGTHS)) > 2


def test_micro_batch_size_is_validated() -> None:
    with pytest.raises(ValueError, match="micro_batch_size"):
        GRPOConfig(micro_batch_size=0)
    with pytest.raises(ValueError, match="micro_batch_size"):
        PPOConfig(micro_batch_size=0)


# ------------------------------------------------------------------------------------ SFT

SFT_QA = {"capital of france ?": "paris", "capital of italy ?": "rome", "capital of norway ?": "oslo"}


def _sft_run(
    micro: int | None, monkeypatch: pytest.MonkeyPatch
) -> tuple[list[list[Any]], dict[str, Any], list[float]]:
    from memory_r1.rl.sft.data import SFTExample
    from memory_r1.rl.sft.train import sft_train

    # targets of 2, 4 and 6 words (+ EOS), prompts of 1 and 4 words
    examples = [
        SFTExample("answer", Prompt("", "capital of france ?"), "**Answer:** paris"),
        SFTExample("answer", Prompt("", "?"), "**Answer:** rome oslo paris"),
        SFTExample("answer", Prompt("", "capital of italy ?"), "**Answer:** oslo rome of norway paris"),
    ]
    policy = toy_policy(0, qa=SFT_QA)
    params = list(policy.actor_parameters())
    grads: list[list[Any]] = []

    class RecordingSGD(torch.optim.SGD):  # stands in for sft_train's AdamW (see module doc)
        def step(self, closure: Any = None) -> Any:
            grads.append([None if p.grad is None else p.grad.detach().clone() for p in params])
            return super().step(closure)

    with monkeypatch.context() as m:
        m.setattr(torch.optim, "AdamW", RecordingSGD)
        history = sft_train(
            policy,
            examples,
            steps=2,
            batch_size=3,
            lr=LR,
            seed=0,
            max_grad_norm=0.0,
            progress=False,
            micro_batch_size=micro,
        )
    return grads, {f"p{i}": p.detach().clone() for i, p in enumerate(params)}, history


@pytest.mark.parametrize("micro", [1, 2])
def test_sft_micro_batches_accumulate_the_batch_gradient(micro: int, monkeypatch: pytest.MonkeyPatch) -> None:
    g_full, p_full, h_full = _sft_run(None, monkeypatch)
    g_micro, p_micro, h_micro = _sft_run(micro, monkeypatch)
    assert len(g_full) == len(g_micro) == 2
    for step, (gf, gm) in enumerate(zip(g_full, g_micro)):
        assert sum(float(g.abs().sum()) for g in gf if g is not None) > 1e-3
        for i, (a, b) in enumerate(zip(gf, gm)):
            _assert_close(b, a, f"sft step {step} grad of param {i}")
    for k in p_full:
        _assert_close(p_micro[k], p_full[k], f"sft {k} after two steps")
    assert h_micro == pytest.approx(h_full, rel=1e-5)
    with pytest.raises(ValueError, match="micro_batch_size"):
        from memory_r1.rl.sft.train import sft_train

        sft_train(toy_policy(0, qa=SFT_QA), [], steps=1, micro_batch_size=0, progress=False)


@pytest.mark.parametrize("skip", [True, False])
def test_grpo_skips_a_batch_without_signal(skip: bool) -> None:
    """Every group tied (rewards all 0): no advantage, so no policy signal. By default GRPO skips
    the update: weights bit-identical. With ``skip_no_signal=False`` the update runs on what is
    left, the KL gradient of a policy that equals its reference: float noise (grad-norm ~0, its
    exact value depends on the machine's float summation order), which Adam may blow up to
    steps of up to ``lr`` per weight (seen in a real run: KL to the reference crept to 5e-6
    over 10 signal-free steps). So: noise-sized gradient, lr-bounded moves, nothing more."""
    lr = 1e-3
    policy = toy_policy(0)
    algo = make_algorithm(policy, GRPOConfig(group_size=4, beta=0.1, lr=lr, skip_no_signal=skip))
    before = [p.detach().clone() for p in policy.actor_parameters()]
    batch = _batch(policy)
    batch.rewards = torch.zeros(len(LENGTHS))
    algo.prepare(batch)
    stats = algo.step(batch)
    assert stats["skipped_update"] == (1.0 if skip else 0.0)
    assert ("loss" in stats) is (not skip)  # the update ran (and logged its loss) only if not skipped
    moved = max(
        float((b - p.detach()).abs().max()) for b, p in zip(before, policy.actor_parameters(), strict=True)
    )
    if skip:
        assert moved == 0.0
    else:
        assert stats["grad_norm"] < 1e-4 and abs(stats["policy_loss"]) < 1e-6
        assert moved <= lr * 1.01  # Adam's per-weight step bound: noise, not a learned update


FP16_SCRIPT = """
import json, torch
from accelerate import Accelerator
from memory_r1.rl.tiny import ToyAnswerEnv, toy_policy
from memory_r1.rl.algorithms.grpo import GRPOConfig
from memory_r1.rl.algorithms.trainer import Trainer, TrainConfig, make_algorithm
torch.set_num_threads(1)

class Env(ToyAnswerEnv):
    def score(self, completions, metas):
        return [float("paris" in c.split()) for c in completions]

ACC = Accelerator(cpu=True, mixed_precision="fp16")  # CPU: accelerate makes no scaler itself

def run(scaled):
    ACC.native_amp = scaled  # what accelerate sets on a GPU with fp16
    ACC.scaler = torch.amp.GradScaler("cpu", init_scale=1024.0) if scaled else None
    policy = toy_policy(0)
    cfg = GRPOConfig(group_size=4, lr=1e-2, max_grad_norm=0.5)
    trainer = Trainer(make_algorithm(policy, cfg), Env(),
                      TrainConfig(steps=2, prompts_per_step=4, max_new_tokens=3, progress=False),
                      ACC)
    norms = [row["grad_norm"] for row in trainer.train()]
    return norms, [p.detach().clone() for p in policy.model.parameters()]

plain, w_plain = run(False)
scaled, w_scaled = run(True)
print(json.dumps({"plain": plain, "scaled": scaled,
                  "diff": max(float((a - b).abs().max()) for a, b in zip(w_plain, w_scaled))}))
"""


def test_loss_scaling_is_undone_before_clipping() -> None:
    """fp16 mixed precision multiplies the loss (so every gradient) by the scaler's factor, here
    1024. Clipping must see the unscaled gradients: the run with a scaler reports the same
    grad norms and ends with the same weights as the run without (``max_grad_norm=0.5``
    clips both steps). Clipping the scaled gradients would report ~1024x the norm and clip
    almost everything away. A subprocess: accelerate's state is one per process."""
    import json
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", FP16_SCRIPT], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert min(out["plain"]) > 0.5  # both steps really clip
    assert out["scaled"] == pytest.approx(out["plain"], rel=1e-5)
    assert out["diff"] < 1e-6


def test_minibatches_shrink_to_the_groups_a_batch_holds() -> None:
    """A dynamically sampled batch can hold one group; two minibatches then mean one."""
    import torch

    from memory_r1.rl.algorithms.accumulation import minibatch_indices

    parts = minibatch_indices(4, 2, torch.tensor([0, 0, 0, 0]))
    assert [p.tolist() for p in parts] == [[0, 1, 2, 3]]
    parts = minibatch_indices(4, 2, torch.tensor([0, 0, 1, 1]))
    assert sorted(p.tolist() for p in parts) == [[0, 1], [2, 3]]
