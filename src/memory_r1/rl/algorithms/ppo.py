"""PPO (Schulman et al. 2017) with a value head, as used for language models (Ouyang et al.).

Per completion token ``t`` (one completion is one episode)::

    r_t    = -beta * (logp_old_t - ref_t)  +  [t == last] * R        k1 KL inside the reward
    A, Ret = GAE(r, V_old; gamma, lam)     then A is whitened over the batch
    loss   = agg[ -min(rho_t A_t, clip(rho_t, 1-eps, 1+eps) A_t) ]
             + vf_coef * 0.5 * mean[ max((V - Ret)^2, (V_old + clip(V - V_old, +-c) - Ret)^2) ]

How this departs from the textbook / paper (arXiv 2508.19828, section 5 and its training details):

* **Critic = a value head on the policy's trunk** (``Linear(hidden, 1)`` on the last hidden
  state), not VERL's separate critic model. The head has its own learning rate (``critic_lr``,
  the paper's critic lr); the value loss reaches the shared trunk at the actor lr, scaled by
  ``vf_coef``. With LoRA the adapters are shared the same way.
* **Token-level MDP with a bandit reward**: the EM reward sits on the last completion token;
  ``gamma = lam = 1`` (no discounting within a completion), so ``A_t`` is the reward-to-go
  (EM minus the KL still to come) minus ``V_t``.
* **KL**: per-token k1 estimate added to the reward with a fixed ``beta`` (no adaptive KL
  controller); the reference is the initial policy and is never refreshed.
* **Advantages whitened** over the whole rollout batch (masked mean/std), returns not. A
  batch whose outcome rewards all tie is skipped (``skip_no_signal``): whitening would turn
  its near-zero advantages into unit-variance noise.
* **Shared prompts**: with ``samples_per_prompt > 1`` every pass reads each prompt once
  (``Batch.groups``); minibatches are drawn as whole groups.
* **pi_old** is recomputed by one no-grad forward at rollout time (the values come from the
  same pass), not taken from the sampler; ``logp_mismatch`` reports the difference. The model
  runs in eval mode (no dropout) so the first ratio is exactly 1.
* No entropy bonus, no learning-rate schedule (the paper's is constant).
* **Micro-batches** (``micro_batch_size``): forward + backward per chunk of that many rows,
  one optimizer step per minibatch; the policy term takes the minibatch's normalisers (its
  real tokens, rows, ``T``) and the value term its real tokens, so the update equals the
  whole-minibatch one (to float rounding). ``prepare``'s no-grad passes run in chunks too.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, get_args

import torch

from memory_r1.rl.algorithms.accumulation import (
    Clip,
    StatsSum,
    backward_only,
    check_passes,
    clip_and_step,
    drop_left_padding,
    micro_slices,
    rowwise,
    update_passes,
)
from memory_r1.rl.algorithms.losses import (
    Agg,
    gae,
    kl_k1,
    masked_mean,
    masked_whiten,
    policy_loss,
    value_loss,
)
from memory_r1.rl.algorithms.policy import Policy
from memory_r1.rl.algorithms.rollout_batch import Batch


@dataclass(frozen=True)
class PPOConfig:
    """PPO hyperparameters; defaults are the paper's (lrs are the paper's, tiny)."""

    samples_per_prompt: int = 1  # PPO needs no group; >1 just gives more rollouts per prompt
    beta: float = 0.01  # k1 KL coefficient inside the per-token reward; 0 = no reference pass
    clip_eps: float = 0.2
    value_clip: float = 0.2
    gamma: float = 1.0
    lam: float = 1.0
    lr: float = 1e-6  # actor (policy trunk + LM head / LoRA adapters)
    critic_lr: float = 1e-5  # value head
    vf_coef: float = 0.1
    whiten_advantages: bool = True
    agg: Agg = "token-mean"
    num_epochs: int = 1
    num_minibatches: int = 1
    max_grad_norm: float = 1.0
    micro_batch_size: int | None = None  # rows per forward/backward; None = whole minibatch
    # A batch whose outcome rewards all tie carries no policy signal, and whitening would blow
    # its ~0 advantages (float noise, tiny KL terms) up to unit variance. True: skip it.
    skip_no_signal: bool = True

    def __post_init__(self) -> None:
        if self.samples_per_prompt < 1:
            raise ValueError("samples_per_prompt must be >= 1")
        if self.beta < 0:
            raise ValueError(f"beta={self.beta} must be >= 0 (0 switches the KL penalty off)")
        if not 0 < self.clip_eps < 1 or self.value_clip <= 0:
            raise ValueError("clip_eps must be in (0, 1) and value_clip > 0 (0.2 for both is usual)")
        if not (0 <= self.gamma <= 1 and 0 <= self.lam <= 1):
            raise ValueError(f"gamma={self.gamma} and lam={self.lam} must be in [0, 1]")
        if self.lr <= 0 or self.critic_lr <= 0 or self.max_grad_norm <= 0 or self.vf_coef < 0:
            raise ValueError("lr, critic_lr and max_grad_norm must be > 0, vf_coef >= 0")
        if self.agg not in get_args(Agg):
            raise ValueError(f"agg={self.agg!r}: choose one of {get_args(Agg)}")
        check_passes(self.num_epochs, self.num_minibatches, self.micro_batch_size)


class PPO:
    """PPO updates of ``policy`` (built with ``value_head=True``): ``prepare`` then ``step``."""

    def __init__(self, policy: Policy, cfg: PPOConfig) -> None:
        if policy.value_head is None:
            raise ValueError("PPO needs a critic: build the Policy with value_head=True")
        self.policy, self.cfg = policy, cfg
        self.optimizer: Any = torch.optim.AdamW(
            [
                {"params": list(policy.actor_parameters()), "lr": cfg.lr},
                {"params": list(policy.value_parameters()), "lr": cfg.critic_lr},
            ],
            weight_decay=0.0,
        )
        self.backward: Callable[[torch.Tensor], None] | None = None  # set by the Trainer
        self.clip: Clip | None = None  # the accelerator's clip_grad_norm_, set by the Trainer

    @property
    def samples_per_prompt(self) -> int:
        return self.cfg.samples_per_prompt

    @torch.no_grad()
    def prepare(self, batch: Batch) -> None:
        """Fill ``old_logp``, ``values``, ``ref_logp``, ``advantages`` and ``returns`` ``(B, T)``."""
        assert batch.rewards is not None, "score the batch before prepare()"
        cfg, p, t = self.cfg, self.policy, batch.temperature
        args, mask = (batch.input_ids, batch.attention_mask, batch.completion_mask), batch.completion_mask
        g = batch.groups
        with p.precision():
            batch.old_logp, batch.values = rowwise(
                lambda *a, **k: p.forward(*a, values=True, temperature=t, **k),
                cfg.micro_batch_size,
                *args,
                groups=g,
            )
        with p.precision(p.ref):
            batch.ref_logp = (
                rowwise(
                    partial(p.ref_logprobs, temperature=t),
                    cfg.micro_batch_size,
                    *args,
                    groups=g,
                )
                if cfg.beta > 0
                else batch.old_logp
            )
        kl = kl_k1(batch.old_logp, batch.ref_logp) * mask
        token_rewards = -cfg.beta * kl
        last = mask.sum(1).long().clamp(min=1) - 1  # every completion has >= 1 token
        token_rewards[torch.arange(len(batch)), last] += batch.rewards
        adv, batch.returns = gae(token_rewards, batch.values, mask, cfg.gamma, cfg.lam)
        batch.advantages = masked_whiten(adv, mask) if cfg.whiten_advantages else adv
        batch.info["kl"] = masked_mean(kl, mask).item()
        batch.info["value_mean"] = masked_mean(batch.values, mask).item()

    def step(self, batch: Batch) -> dict[str, float]:
        """``num_epochs`` x ``num_minibatches`` optimizer steps on a prepared batch; mean stats."""
        cfg = self.cfg
        assert batch.rewards is not None
        if cfg.skip_no_signal and bool((batch.rewards == batch.rewards[0]).all()):
            return {"skipped_update": 1.0}
        params = [*self.policy.actor_parameters(), *self.policy.value_parameters()]
        return update_passes(
            batch, cfg.num_epochs, cfg.num_minibatches, lambda mb, first: self._update(mb, params, first)
        )

    def _update(self, mb: Batch, params: list[torch.nn.Parameter], first: bool) -> dict[str, float]:
        """One optimizer step on minibatch ``mb``: forward + backward per micro-batch."""
        cfg = self.cfg
        assert mb.old_logp is not None and mb.values is not None
        assert mb.advantages is not None and mb.returns is not None
        n_tokens = mb.completion_mask.sum().item()
        acc = StatsSum(n_tokens)
        self.optimizer.zero_grad(set_to_none=True)  # the accumulation starts from nothing
        with self.policy.precision():  # weight casts shared by every micro-batch
            for sl in micro_slices(len(mb), cfg.micro_batch_size, mb.groups):
                mask = mb.completion_mask[sl]
                ids, att = drop_left_padding(mb.input_ids[sl], mb.attention_mask[sl])
                logp, values = self.policy.forward(
                    ids,
                    att,
                    mask,
                    values=True,
                    temperature=mb.temperature,
                    groups=mb.groups[sl] if mb.groups is not None else None,
                )
                assert values is not None
                pl, stats = policy_loss(
                    logp,
                    mb.old_logp[sl],
                    mb.advantages[sl],
                    mask,
                    cfg.clip_eps,
                    cfg.agg,
                    mb.budget,
                    n_rows=len(mb),
                    n_tokens=n_tokens,
                )
                vl, vstats = value_loss(
                    values, mb.values[sl], mb.returns[sl], mask, cfg.value_clip, n_tokens=n_tokens
                )
                loss = pl + cfg.vf_coef * vl
                tokens = mask.sum().item()
                acc.add_mean(tokens, {**stats, **vstats})
                acc.add_share(policy_loss=pl.item(), value_loss=vl.item(), loss=loss.item())
                if first:  # before any update: sampler vs recomputed log-probs
                    gap = (mb.sample_logp[sl] - mb.old_logp[sl]).abs()
                    acc.add_mean(tokens, {"logp_mismatch": masked_mean(gap, mask).item()})
                backward_only(loss, self.backward)
        stats = acc.values
        stats["grad_norm"] = clip_and_step(self.optimizer, params, cfg.max_grad_norm, self.clip)
        return stats
