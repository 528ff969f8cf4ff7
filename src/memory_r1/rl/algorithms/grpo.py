"""GRPO (Shao et al. 2024, DeepSeekMath) as Memory-R1 uses it: G samples per state, no critic.

Objective, per group of ``G`` completions ``o_i`` of one prompt with rewards ``r_i``::

    A_i  = (r_i - mean(r)) / (std(r) + 1e-4)                 one advantage for all tokens of o_i
    loss = agg_i,t[ -min(rho_it A_i, clip(rho_it, 1-eps, 1+eps) A_i) ] + beta * agg_i,t[k3_it]
    rho_it = pi(o_it | .) / pi_old(o_it | .),  k3 = exp(ref - logp) - (ref - logp) - 1

How this departs from the textbook / paper (arXiv 2508.19828, section 5 and its training details):

* **Outcome reward only**: the EM reward is a bandit reward for the whole completion, so
  ``A_i`` is broadcast to every token (DeepSeekMath's outcome supervision); no process reward.
* **std is unbiased** (Bessel), ``eps = 1e-4`` as in TRL; ``scale="batch"`` divides by the
  batch std and ``scale="none"`` not at all (Dr.GRPO). Groups with equal rewards contribute
  nothing, whatever the scale.
* **Aggregation** defaults to the paper's per-sequence mean then mean over sequences
  (``"seq-mean-token-mean"``); ``"token-mean"`` (DAPO) and ``"dr-grpo"`` are options.
  Dr.GRPO divides by ``rows x budget``, the generation budget (``Batch.budget``, the
  rollout's ``max_new_tokens``, as TRL's ``max_completion_length``), never the batch's
  realised length. The k3 KL term is aggregated the same way as the policy term.
* **Shared prompts**: every pass reads each group's prompt once (``Batch.groups``,
  :class:`~memory_r1.rl.algorithms.policy.Policy`); minibatches are drawn as whole groups.
* **Rows without signal**: with ``beta == 0`` a row whose advantage is 0 contributes exactly
  nothing, so the update does not run it (``rows_skipped``); a batch where every group tied
  is skipped whole (``skip_no_signal``).
* **pi_old**: with one epoch and one minibatch (the default) the rollout *is* the current
  policy, so ``old_logp = logp.detach()``: rho = 1 and the clip never binds, i.e. a plain
  policy gradient with a KL penalty (as nanochat and TRL with ``num_iterations=1``). With
  more epochs or minibatches, ``old_logp`` is recomputed by one no-grad forward at rollout
  time, not taken from the sampler; the sampler's log-probs are kept only to report
  ``logp_mismatch`` (~1e-6 in fp32; bf16 autocast adds its rounding).
* **Reference**: the initial policy (frozen copy, or LoRA adapters disabled); it is never
  refreshed. No entropy bonus, no learning-rate schedule (the paper's is constant).
* **Micro-batches** (``micro_batch_size``): each minibatch runs forward + backward in chunks
  of that many rows and the gradients accumulate to one optimizer step; every term takes the
  minibatch's normalisers (its real tokens, rows, ``T``), so the update equals the
  whole-minibatch one for every ``agg`` (to float rounding) and only the peak memory drops.
  ``prepare``'s no-grad passes run in chunks of the same size. Stats are the minibatch's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, TypedDict, get_args

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
    Scale,
    aggregate,
    group_advantages,
    kl_k3,
    masked_mean,
    policy_loss,
)
from memory_r1.rl.algorithms.policy import Policy
from memory_r1.rl.algorithms.rollout_batch import Batch


@dataclass(frozen=True)
class GRPOConfig:
    """GRPO hyperparameters; defaults are the paper's (lr is the paper's, tiny)."""

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
    micro_batch_size: int | None = None  # rows per forward/backward; None = whole minibatch
    # A batch whose every group tied (all advantages 0) carries no policy signal; its KL
    # gradient is float noise while the policy still equals the reference, and Adam would
    # scale that noise up to lr-sized steps. True: skip the update (logged as skipped_update).
    skip_no_signal: bool = True

    def __post_init__(self) -> None:
        if self.group_size < 2:
            raise ValueError(
                f"group_size={self.group_size}: GRPO's baseline is the group mean, "
                "so set group_size >= 2 (the paper-style default is 8)"
            )
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
        check_passes(self.num_epochs, self.num_minibatches, self.micro_batch_size)


class _Norm(TypedDict):
    """A minibatch's loss normalisers: the keywords ``policy_loss`` and ``aggregate`` share."""

    n_rows: int
    n_tokens: float
    max_len: int | None


class GRPO:
    """GRPO updates of ``policy``: ``prepare`` a rollout batch (no grad), then ``step`` on it."""

    def __init__(self, policy: Policy, cfg: GRPOConfig) -> None:
        self.policy, self.cfg = policy, cfg
        self.optimizer: Any = torch.optim.AdamW(
            list(policy.actor_parameters()), lr=cfg.lr, weight_decay=cfg.weight_decay
        )
        self.backward: Callable[[torch.Tensor], None] | None = None  # set by the Trainer
        self.clip: Clip | None = None  # the accelerator's clip_grad_norm_, set by the Trainer

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
        p, t, size = self.policy, batch.temperature, self.cfg.micro_batch_size
        args = (batch.input_ids, batch.attention_mask, batch.completion_mask)
        batch.advantages = group_advantages(batch.rewards, self.cfg.group_size, self.cfg.scale)
        if self.cfg.beta > 0:
            with p.precision(p.ref):
                batch.ref_logp = rowwise(
                    partial(p.ref_logprobs, temperature=t), size, *args, groups=batch.groups
                )
        if self._reuses_batch:
            with p.precision():
                batch.old_logp = rowwise(partial(p.logprobs, temperature=t), size, *args, groups=batch.groups)
        # Share of groups whose rewards all tie: they carry no learning signal.
        grouped = batch.rewards.view(-1, self.cfg.group_size)
        batch.info["frac_zero_std_groups"] = (grouped.std(1) == 0).float().mean().item()

    def step(self, batch: Batch) -> dict[str, float]:
        """``num_epochs`` x ``num_minibatches`` optimizer steps on a prepared batch; mean stats."""
        cfg = self.cfg
        assert batch.advantages is not None, "prepare() the batch before step()"
        if cfg.skip_no_signal and not bool(batch.advantages.abs().gt(0).any()):
            return {"skipped_update": 1.0}
        params = list(self.policy.actor_parameters())
        return update_passes(
            batch, cfg.num_epochs, cfg.num_minibatches, lambda mb, first: self._update(mb, params, first)
        )

    def _update(self, mb: Batch, params: list[torch.nn.Parameter], first: bool) -> dict[str, float]:
        """One optimizer step on minibatch ``mb``: forward + backward per micro-batch.

        With ``beta == 0`` a row whose advantage is 0 adds exactly nothing to the loss, so it
        is not run at all (``rows_skipped``); the normalisers stay the whole minibatch's.
        """
        cfg = self.cfg
        assert mb.advantages is not None
        n_tokens = mb.completion_mask.sum().item()
        norm: _Norm = {"n_rows": len(mb), "n_tokens": n_tokens, "max_len": mb.budget}
        acc = StatsSum(n_tokens)
        live = mb.advantages != 0 if cfg.beta == 0 else torch.ones(len(mb), dtype=torch.bool)
        run = mb.select(live.nonzero().squeeze(1)) if not bool(live.all()) else mb
        acc.add_share(rows_skipped=float(len(mb) - len(run)))
        self.optimizer.zero_grad(set_to_none=True)  # the accumulation starts from nothing
        with self.policy.precision():  # weight casts shared by every micro-batch
            for sl in micro_slices(len(run), cfg.micro_batch_size, run.groups):
                mask = run.completion_mask[sl]
                ids, att = drop_left_padding(run.input_ids[sl], run.attention_mask[sl])
                groups = run.groups[sl] if run.groups is not None else None
                logp = self.policy.logprobs(ids, att, mask, temperature=run.temperature, groups=groups)
                old = run.old_logp[sl] if run.old_logp is not None else logp.detach()
                assert run.advantages is not None
                loss, stats = policy_loss(logp, old, run.advantages[sl], mask, cfg.clip_eps, cfg.agg, **norm)
                tokens = mask.sum().item()
                acc.add_mean(tokens, stats)
                acc.add_share(policy_loss=loss.item())
                if cfg.beta > 0:
                    assert run.ref_logp is not None
                    kl = kl_k3(logp, run.ref_logp[sl])
                    loss = loss + cfg.beta * aggregate(kl, mask, cfg.agg, **norm)
                    acc.add_mean(tokens, {"kl": masked_mean(kl.detach(), mask).item()})
                if first:  # before any update: sampler vs recomputed log-probs
                    gap = (run.sample_logp[sl] - logp.detach()).abs()
                    acc.add_mean(tokens, {"logp_mismatch": masked_mean(gap, mask).item()})
                acc.add_share(loss=loss.item())
                backward_only(loss, self.backward)
        stats = acc.values
        if len(run):
            stats["grad_norm"] = clip_and_step(self.optimizer, params, cfg.max_grad_norm, self.clip)
        return stats
