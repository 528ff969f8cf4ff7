"""GRPO (Shao et al. 2024, DeepSeekMath) as Memory-R1 uses it: G samples per state, no critic.

Objective, per group of ``G`` completions ``o_i`` of one prompt with rewards ``r_i``::

    A_i  = (r_i - mean(r)) / (std(r) + 1e-4)                 one advantage for all tokens of o_i
    loss = agg_i,t[ -min(rho_it A_i, clip(rho_it, 1-eps, 1+eps) A_i) ] + beta * agg_i,t[k3_it]
    rho_it = pi(o_it | .) / pi_old(o_it | .),  k3 = exp(ref - logp) - (ref - logp) - 1

How this departs from the textbook / paper (paper.md section 5, 9.7):

* **Outcome reward only**: the EM reward is a bandit reward for the whole completion, so
  ``A_i`` is broadcast to every token (DeepSeekMath's outcome supervision); no process reward.
* **std is unbiased** (Bessel), ``eps = 1e-4`` as in TRL; ``scale="batch"`` divides by the
  batch std and ``scale="none"`` not at all (Dr.GRPO). Groups with equal rewards contribute
  nothing, whatever the scale.
* **Aggregation** defaults to the paper's per-sequence mean then mean over sequences
  (``"seq-mean-token-mean"``); ``"token-mean"`` (DAPO) and ``"dr-grpo"`` are options. The
  k3 KL term is aggregated the same way as the policy term.
* **pi_old**: with one epoch and one minibatch (the default) the rollout *is* the current
  policy, so ``old_logp = logp.detach()``: rho = 1 and the clip never binds, i.e. a plain
  policy gradient with a KL penalty (as nanochat and TRL with ``num_iterations=1``). With
  more epochs or minibatches, ``old_logp`` is recomputed by one no-grad forward at rollout
  time, not taken from the sampler; the sampler's log-probs are kept only to report
  ``logp_mismatch`` (it should be ~1e-6 in fp32).
* **Reference**: the initial policy (frozen copy, or LoRA adapters disabled); it is never
  refreshed. No entropy bonus, no learning-rate schedule (the paper's is constant).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, get_args

import torch

from memory_r1.rl.algorithms import (
    Agg, Scale, aggregate, group_advantages, kl_k3, masked_mean, mean_stats, minibatch_indices,
    optimizer_step, policy_loss,
)
from memory_r1.rl.policy import Batch, Policy


@dataclass(frozen=True)
class GRPOConfig:
    """GRPO hyperparameters; defaults from paper.md section 9.7 (lr is the paper's, tiny)."""

    group_size: int = 8  # G completions per prompt
    beta: float = 0.01  # weight of the per-token k3 KL to the reference; 0 = no reference pass
    clip_eps: float = 0.2
    scale: Scale = "group"
    agg: Agg = "seq-mean-token-mean"
    lr: float = 1e-6
    weight_decay: float = 0.0
    num_epochs: int = 1  # passes over each rollout batch (mu in the GRPO paper)
    num_minibatches: int = 1  # optimizer steps per epoch
    max_grad_norm: float = 1.0

    def __post_init__(self) -> None:
        if self.group_size < 2:
            raise ValueError(f"group_size={self.group_size}: GRPO's baseline is the group mean, "
                             "so set group_size >= 2 (the paper-style default is 8)")
        if self.beta < 0:
            raise ValueError(f"beta={self.beta} must be >= 0 (0 switches the KL term off)")
        if not 0 < self.clip_eps < 1:
            raise ValueError(f"clip_eps={self.clip_eps} must be in (0, 1); 0.2 is usual")
        if self.scale not in get_args(Scale):
            raise ValueError(f"scale={self.scale!r}: choose one of {get_args(Scale)}")
        if self.agg not in get_args(Agg):
            raise ValueError(f"agg={self.agg!r}: choose one of {get_args(Agg)}")
        if self.lr <= 0 or self.max_grad_norm <= 0:
            raise ValueError("lr and max_grad_norm must be > 0")
        if self.num_epochs < 1 or self.num_minibatches < 1:
            raise ValueError("num_epochs and num_minibatches must be >= 1")


class GRPO:
    """GRPO updates of ``policy``: ``prepare`` a rollout batch (no grad), then ``step`` on it."""

    def __init__(self, policy: Policy, cfg: GRPOConfig) -> None:
        self.policy, self.cfg = policy, cfg
        self.optimizer: Any = torch.optim.AdamW(list(policy.actor_parameters()), lr=cfg.lr,
                                                weight_decay=cfg.weight_decay)
        self.backward: Callable[[torch.Tensor], None] | None = None  # set by the Trainer

    @property
    def samples_per_prompt(self) -> int:
        return self.cfg.group_size

    @property
    def _reuses_batch(self) -> bool:
        return self.cfg.num_epochs > 1 or self.cfg.num_minibatches > 1

    @torch.no_grad()
    def prepare(self, batch: Batch) -> None:
        """Fill ``advantages`` ``(B,)``, ``ref_logp`` (if beta > 0), ``old_logp`` (if reused)."""
        assert batch.rewards is not None, "score the batch before prepare()"
        p, args = self.policy, (batch.input_ids, batch.attention_mask, batch.completion_mask)
        batch.advantages = group_advantages(batch.rewards, self.cfg.group_size, self.cfg.scale)
        if self.cfg.beta > 0:
            batch.ref_logp = p.ref_logprobs(*args, temperature=batch.temperature)
        if self._reuses_batch:
            batch.old_logp = p.logprobs(*args, temperature=batch.temperature)
        # Share of groups whose rewards all tie: they carry no learning signal.
        grouped = batch.rewards.view(-1, self.cfg.group_size)
        batch.info["frac_zero_std_groups"] = (grouped.std(1) == 0).float().mean().item()

    def step(self, batch: Batch) -> dict[str, float]:
        """``num_epochs`` x ``num_minibatches`` optimizer steps on a prepared batch; mean stats."""
        cfg, rows = self.cfg, []
        params = list(self.policy.actor_parameters())
        for epoch in range(cfg.num_epochs):
            for i, idx in enumerate(minibatch_indices(len(batch), cfg.num_minibatches)):
                mb = batch.select(idx)
                mask = mb.completion_mask
                logp = self.policy.logprobs(mb.input_ids, mb.attention_mask, mask,
                                            temperature=mb.temperature)
                old = mb.old_logp if mb.old_logp is not None else logp.detach()
                assert mb.advantages is not None
                loss, stats = policy_loss(logp, old, mb.advantages, mask, cfg.clip_eps, cfg.agg)
                stats["policy_loss"] = loss.item()
                if cfg.beta > 0:
                    assert mb.ref_logp is not None
                    kl = kl_k3(logp, mb.ref_logp)
                    loss = loss + cfg.beta * aggregate(kl, mask, cfg.agg)
                    stats["kl"] = masked_mean(kl.detach(), mask).item()
                if epoch == 0 and i == 0:  # before any update: sampler vs recomputed log-probs
                    gap = (mb.sample_logp - logp.detach()).abs()
                    stats["logp_mismatch"] = masked_mean(gap, mask).item()
                stats["loss"] = loss.item()
                stats["grad_norm"] = optimizer_step(loss, self.optimizer, params,
                                                    cfg.max_grad_norm, self.backward)
                rows.append(stats)
        return mean_stats(rows)
