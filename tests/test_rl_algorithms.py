"""The RL arithmetic against hand-computed values (pure torch, no model), and the rewards."""

from __future__ import annotations

import doctest

import pytest

torch = pytest.importorskip("torch")

from memory_r1.rl.algorithms import accumulation as C
from memory_r1.rl.algorithms import losses as A
from memory_r1.rl.algorithms.grpo import GRPOConfig
from memory_r1.rl.algorithms.ppo import PPOConfig
from memory_r1.rl.envs import rewards as R

torch.set_num_threads(1)


def test_doctests_of_pure_modules() -> None:
    for module in (A, C, R):
        result = doctest.testmod(module)
        assert result.attempted > 0 and result.failed == 0, module.__name__


# ---------------------------------------------------------------------------------- masks


def test_masked_mean_and_whiten_ignore_padding() -> None:
    x = torch.tensor([[1.0, 2.0, 3.0, 100.0], [4.0, 5.0, -50.0, 7.0]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    assert A.masked_mean(x, mask).item() == pytest.approx(3.0)
    assert A.masked_mean(x, mask, dim=1).tolist() == pytest.approx([2.0, 4.5])
    w = A.masked_whiten(x, mask)
    assert A.masked_mean(w, mask).item() == pytest.approx(0.0, abs=1e-6)
    assert A.masked_var(w, mask).item() == pytest.approx(1.0, abs=1e-5)
    assert (w[mask == 0] == 0).all()


# ------------------------------------------------------------------------------------ GAE


def test_gae_gamma_lambda_one_is_reward_to_go_minus_value() -> None:
    # reward on the last real token, one pad position whose value must be ignored
    rewards = torch.tensor([[0.0, 0.0, 1.0, 0.0], [-0.1, -0.1, 0.5, 0.0]])
    values = torch.tensor([[0.2, 0.5, 0.7, 9.0], [0.3, 0.1, 0.2, 9.0]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 0]])
    adv, ret = A.gae(rewards, values, mask, gamma=1.0, lam=1.0)
    assert adv[0].tolist() == pytest.approx([0.8, 0.5, 0.3, 0.0])
    assert ret[0].tolist() == pytest.approx([1.0, 1.0, 1.0, 0.0])
    # reward-to-go of row 1: 0.3, 0.4, 0.5
    assert adv[1].tolist() == pytest.approx([0.3 - 0.3, 0.4 - 0.1, 0.5 - 0.2, 0.0])
    assert ret[1].tolist() == pytest.approx([0.3, 0.4, 0.5, 0.0])


def test_gae_general_gamma_lambda_by_hand() -> None:
    g, lam = 0.9, 0.8
    r = torch.tensor([[0.5, 0.0, 1.0]])
    v = torch.tensor([[0.1, 0.2, 0.3]])
    mask = torch.ones(1, 3)
    d2 = 1.0 - 0.3  # terminal: no bootstrap after the last token
    d1 = 0.0 + g * 0.3 - 0.2
    d0 = 0.5 + g * 0.2 - 0.1
    a2 = d2
    a1 = d1 + g * lam * a2
    a0 = d0 + g * lam * a1
    adv, ret = A.gae(r, v, mask, gamma=g, lam=lam)
    assert adv[0].tolist() == pytest.approx([a0, a1, a2])
    assert ret[0].tolist() == pytest.approx([a0 + 0.1, a1 + 0.2, a2 + 0.3])


# ------------------------------------------------------------------------------ group adv


@pytest.mark.parametrize("scale", ["group", "batch", "none"])
def test_group_advantages_zero_mean_per_group(scale: str) -> None:
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.3, 0.3, 0.3, 0.3, 0.0, 0.0, 0.0, 1.0])
    adv = A.group_advantages(rewards, 4, scale)  # type: ignore[arg-type]
    per_group = adv.view(3, 4)
    assert per_group.mean(1).abs().max().item() < 1e-6
    assert (per_group[1] == 0).all()  # tied group: no signal whatever the scale
    if scale == "group":
        assert per_group[0].std().item() == pytest.approx(1.0, abs=1e-3)
        assert per_group[0].tolist() == pytest.approx([0.866, -0.866, -0.866, 0.866], abs=1e-3)
    if scale == "none":
        assert per_group[2].tolist() == pytest.approx([-0.25, -0.25, -0.25, 0.75])


def test_group_advantages_rejects_ragged_groups() -> None:
    with pytest.raises(ValueError, match="multiple of group_size"):
        A.group_advantages(torch.zeros(6), 4)


# ----------------------------------------------------------------------------------- KL


def test_kl_estimators() -> None:
    torch.manual_seed(0)
    logp, ref = torch.randn(64, 8), torch.randn(64, 8)
    assert (A.kl_k3(logp, ref) >= 0).all()
    assert A.kl_k3(logp, logp).abs().max().item() == 0.0
    assert torch.equal(A.kl_k1(logp, ref), logp - ref)
    # both are unbiased for KL(p || q) on samples from p
    p = torch.tensor([0.6, 0.3, 0.1])
    q = torch.tensor([0.2, 0.5, 0.3])
    exact = (p * (p / q).log()).sum().item()
    idx = torch.multinomial(p, 200_000, replacement=True)
    lp, lq = p.log()[idx], q.log()[idx]
    assert A.kl_k3(lp, lq).mean().item() == pytest.approx(exact, rel=0.03)
    assert A.kl_k1(lp, lq).mean().item() == pytest.approx(exact, rel=0.03)


# ------------------------------------------------------------------------------ policy loss


def _grad_of_surrogate(ratio: float, adv: float, eps: float = 0.2) -> tuple[float, float]:
    old = torch.zeros(1, 1)
    logp = torch.full((1, 1), float(torch.tensor(ratio).log()), requires_grad=True)
    loss, stats = A.policy_loss(logp, old, torch.tensor([adv]), torch.ones(1, 1), eps)
    loss.backward()
    assert logp.grad is not None
    return logp.grad.item(), stats["clipfrac"]


@pytest.mark.parametrize(
    ("ratio", "adv", "clipped"),
    [
        (1.5, 1.0, True),
        (0.5, -1.0, True),  # outside the trust region, pushed further: no grad
        (1.5, -1.0, False),
        (0.5, 1.0, False),  # outside but pulled back: gradient flows
        (1.1, 1.0, False),
        (0.9, -1.0, False),
    ],  # inside: gradient flows
)
def test_clipped_ratio_gets_no_gradient(ratio: float, adv: float, clipped: bool) -> None:
    grad, clipfrac = _grad_of_surrogate(ratio, adv)
    if clipped:
        assert grad == 0.0 and clipfrac == 1.0
    else:
        # d/dlogp of -A * exp(logp - old) = -A * ratio
        assert grad == pytest.approx(-adv * ratio) and clipfrac == 0.0


def test_policy_loss_on_policy_is_minus_mean_advantage() -> None:
    logp = torch.randn(3, 4)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]])
    adv = torch.tensor([1.0, -2.0, 4.0])
    loss, stats = A.policy_loss(logp, logp, adv, mask, agg="token-mean")
    assert loss.item() == pytest.approx(-(4 * 1.0 + 2 * -2.0 + 4.0) / 7)
    assert stats["approx_kl"] == 0.0 and stats["ratio_mean"] == 1.0
    seq, _ = A.policy_loss(logp, logp, adv, mask, agg="seq-mean-token-mean")
    assert seq.item() == pytest.approx(-(1.0 - 2.0 + 4.0) / 3)
    dr, _ = A.policy_loss(logp, logp, adv, mask, agg="dr-grpo", max_len=8)
    assert dr.item() == pytest.approx(-(4 * 1.0 + 2 * -2.0 + 4.0) / (3 * 8))


def test_value_loss_clipping_by_hand() -> None:
    old = torch.tensor([[0.0, 0.0]])
    returns = torch.tensor([[1.0, 1.0]])
    values = torch.tensor([[0.5, -0.5]], requires_grad=True)
    loss, stats = A.value_loss(values, old, returns, torch.ones(1, 2), clip=0.2)
    # token 0: max((0.5-1)^2, (0.2-1)^2) = 0.64 (clipped branch); token 1: max(2.25, 0.64)
    assert loss.item() == pytest.approx(0.5 * (0.64 + 2.25) / 2)
    assert stats["vf_clipfrac"] == 0.5
    loss.backward()
    assert values.grad is not None and values.grad[0, 0].item() == 0.0  # clipped: no gradient


# -------------------------------------------------------------------------------- rewards


def test_answer_reward_uses_parse_answer_and_counts_format_failures() -> None:
    completions = [
        "**Memories selected as relevant:**\n- 7 May: went to Paris\n**Answer:** Paris.",
        "Paris",  # right text, no marker: 0 in training, counted
        "**Answer:** Paris\nbecause she said so",  # rambling after the answer line is cut
        "**Answer:** Rome",
    ]
    golds = ["paris"] * 4
    assert R.answer_reward(completions=completions, answers=golds, prompts=["q"] * 4) == [1.0, 0.0, 1.0, 0.0]
    stats = R.score_answers(completions, golds)
    assert stats.format_failures == 1 and stats.format_failure_rate == 0.25
    assert R.f1_reward(["**Answer:** in Paris"], ["Paris"]) == [pytest.approx(2 / 3)]
    with pytest.raises(ValueError, match="one gold answer per completion"):
        R.answer_reward(["a", "b"], ["a"])


def test_configs_say_what_to_change() -> None:
    with pytest.raises(ValueError, match="group_size >= 2"):
        GRPOConfig(group_size=1)
    with pytest.raises(ValueError, match="choose one of"):
        GRPOConfig(agg="mean")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="clip_eps"):
        PPOConfig(clip_eps=1.5)
    assert GRPOConfig().beta == 0.01 and PPOConfig().gamma == PPOConfig().lam == 1.0
