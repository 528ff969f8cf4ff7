"""The arithmetic of PPO and GRPO on tensors (L3; pure torch, no model code).

Shapes: ``B`` sequences (rollouts), ``T`` completion positions. Every per-token tensor is
``(B, T)`` and aligned with a ``mask`` of the same shape (1 on real completion tokens, 0 on
the right padding after EOS; each row's ones are contiguous from position 0). Log-probs are
natural logs of the sampled token under a policy. Rewards are "higher is better".

Conventions shared with :mod:`~memory_r1.rl.algorithms.ppo` / :mod:`~memory_r1.rl.algorithms.grpo`
(where they depart from textbook formulas):

* the scalar episode reward sits on the **last real completion token** (a bandit reward for a
  single-turn episode), and the per-token KL penalty, when PPO uses one, is added to every
  token's reward (PPO);
* losses are *minimised*: ``policy_loss`` returns the negated clipped surrogate;
* ``approx_kl`` in the stats is the k3 estimator of KL(old || new) over the minibatch, a
  drift monitor rather than a penalty.

Gradient accumulation (:mod:`memory_r1.rl.algorithms.accumulation`): when a minibatch is
split into micro-batches, the losses take the minibatch's normalisers (``n_rows``,
``n_tokens``, ``max_len`` of ``aggregate`` / ``policy_loss`` / ``value_loss``), so each
micro-batch's loss is its exact share of the minibatch loss and the accumulated gradient is
the minibatch gradient.
"""

from __future__ import annotations

from typing import Literal

import torch

Agg = Literal["token-mean", "seq-mean-token-mean", "dr-grpo"]
Scale = Literal["group", "batch", "none"]


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """``sum(x * mask) / sum(mask)`` over ``dim`` (all elements when None); 0 where mask is empty.

    >>> masked_mean(torch.tensor([[1., 2., 9.]]), torch.tensor([[1., 1., 0.]])).item()
    1.5
    """
    mask = mask.to(x.dtype)
    total = (x * mask).sum() if dim is None else (x * mask).sum(dim)
    count = mask.sum() if dim is None else mask.sum(dim)
    return total / count.clamp(min=1.0)


def masked_var(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Unbiased variance of the masked elements (Bessel's correction, as in TRL/verl)."""
    mean = masked_mean(x, mask)
    n = mask.sum()
    var = masked_mean((x - mean) ** 2, mask)
    return var * n / (n - 1).clamp(min=1.0)


def masked_whiten(
    x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8
) -> torch.Tensor:
    """``(x - mean) / sqrt(var + eps)`` with mean and variance over masked elements only.

    Masked-out positions come back as 0 so they can never leak into a loss. With
    ``shift_mean=False`` the mean is added back (scale only).
    """
    mean, var = masked_mean(x, mask), masked_var(x, mask)
    out = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        out = out + mean
    return out * mask.to(x.dtype)


def gae(
    rewards_per_token: torch.Tensor,
    values: torch.Tensor,
    mask: torch.Tensor,
    gamma: float = 1.0,
    lam: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation over completion tokens: ``(advantages, returns)``.

    ``delta_t = r_t + gamma * V_{t+1} * m_{t+1} - V_t`` and
    ``A_t = delta_t + gamma * lam * A_{t+1}`` (0 past the end), ``returns = A + V``.
    The state after the last real token is terminal (its value is 0). With
    ``gamma = lam = 1``: ``A_t = sum_{k >= t} r_k - V_t`` (reward-to-go minus value).
    Inputs and outputs are ``(B, T)``; outputs are 0 where ``mask`` is 0.
    """
    mask = mask.to(values.dtype)
    r, v = rewards_per_token * mask, values * mask
    adv = torch.zeros_like(v)
    last = torch.zeros_like(v[:, 0])
    for t in reversed(range(v.shape[1])):
        next_v = v[:, t + 1] * mask[:, t + 1] if t + 1 < v.shape[1] else torch.zeros_like(last)
        delta = r[:, t] + gamma * next_v - v[:, t]
        last = (delta + gamma * lam * last) * mask[:, t]  # padding resets the recursion
        adv[:, t] = last
    return adv, (adv + v) * mask


def group_advantages(
    rewards: torch.Tensor, group_size: int, scale: Scale = "group", eps: float = 1e-4
) -> torch.Tensor:
    """GRPO's outcome advantages, ``(B,)`` -> ``(B,)``; rows ``[i*G, (i+1)*G)`` are one group.

    ``A_i = r_i - mean(group)``, then divided by ``std(group) + eps`` (``"group"``, the paper's
    ``(r - mean) / std``), by the std over the whole batch (``"batch"``), or not at all
    (``"none"``, Dr.GRPO). The std is unbiased (as in TRL); a group whose rewards are all equal
    gets zero advantage whatever the scale, so it contributes no policy gradient.

    >>> group_advantages(torch.tensor([1., 0., 0., 0.]), 2, "none").tolist()
    [0.5, -0.5, 0.0, 0.0]
    """
    if rewards.dim() != 1 or rewards.numel() % group_size:
        raise ValueError(
            f"rewards must be 1-D with a multiple of group_size={group_size} rows, "
            f"got shape {tuple(rewards.shape)}"
        )
    grouped = rewards.view(-1, group_size)
    centred = (grouped - grouped.mean(dim=1, keepdim=True)).view(-1)
    if scale == "none":
        return centred
    if scale == "group":
        std = grouped.std(dim=1, keepdim=True).expand_as(grouped).reshape(-1)
    elif scale == "batch":
        std = rewards.std().expand_as(rewards)
    else:
        raise ValueError(f"scale must be 'group', 'batch' or 'none', got {scale!r}")
    return centred / (std + eps)


def kl_k1(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Per-token k1 estimate of KL(pi || ref): ``log pi - log ref`` (unbiased, can be < 0)."""
    return logp - ref_logp


def kl_k3(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Per-token k3 estimate of KL(pi || ref) (Schulman): ``exp(d) - d - 1``, ``d = ref - log pi``.

    Always >= 0 and exactly 0 where the two log-probs agree; unbiased for samples from pi.
    ``d`` is clamped to [-20, 20] so one extreme token cannot overflow ``exp``.
    """
    d = (ref_logp - logp).clamp(-20.0, 20.0)
    return torch.exp(d) - d - 1.0


def aggregate(
    x: torch.Tensor,
    mask: torch.Tensor,
    agg: Agg,
    max_len: int | None = None,
    *,
    n_rows: int | None = None,
    n_tokens: float | None = None,
) -> torch.Tensor:
    """Reduce a per-token loss ``(B, T)`` to a scalar.

    * ``"token-mean"``: mean over all real tokens of the batch (long answers weigh more; DAPO);
    * ``"seq-mean-token-mean"``: mean per sequence, then over sequences (original GRPO);
    * ``"dr-grpo"``: ``sum / (B * max_len)``, a constant normaliser (Dr.GRPO), so neither the
      length nor the batch's padding rescales a token's gradient. ``max_len`` defaults to ``T``;
      pass the generation budget to keep it constant across minibatches.

    When ``x`` is one micro-batch of a larger minibatch, ``n_rows`` (``B``) and ``n_tokens``
    (real tokens) of the *minibatch* replace the micro-batch's own: the micro-batch's result
    is then its share, and the shares of all micro-batches sum to the minibatch's value.

    >>> x, m = torch.tensor([[1., 2.], [3., 0.]]), torch.tensor([[1., 1.], [1., 0.]])
    >>> parts = [aggregate(x[i:i + 1], m[i:i + 1], "token-mean", n_rows=2, n_tokens=3)
    ...          for i in range(2)]
    >>> (sum(parts) - aggregate(x, m, "token-mean")).abs().item() < 1e-7
    True
    """
    mask = mask.to(x.dtype)
    if agg == "token-mean":
        if n_tokens is None:
            return masked_mean(x, mask)
        return (x * mask).sum() / max(float(n_tokens), 1.0)
    if agg == "seq-mean-token-mean":
        per_seq = masked_mean(x, mask, dim=1)
        return per_seq.mean() if n_rows is None else per_seq.sum() / n_rows
    if agg == "dr-grpo":
        rows = x.shape[0] if n_rows is None else n_rows
        return (x * mask).sum() / (rows * (max_len or x.shape[1]))
    raise ValueError(f"agg must be 'token-mean', 'seq-mean-token-mean' or 'dr-grpo', got {agg!r}")


def policy_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    adv: torch.Tensor,
    mask: torch.Tensor,
    clip_eps: float = 0.2,
    agg: Agg = "token-mean",
    max_len: int | None = None,
    *,
    n_rows: int | None = None,
    n_tokens: float | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """PPO's clipped surrogate, negated: ``-min(rho * A, clip(rho, 1-eps, 1+eps) * A)``.

    ``rho = exp(logp - old_logp)`` per token; ``adv`` is ``(B, T)`` or ``(B,)`` (one outcome
    advantage per sequence, broadcast over its tokens). Only ``logp`` carries gradient. Where the
    clipped branch is the minimum (ratio outside the trust region in the direction the
    advantage pushes), the token contributes no gradient.

    Returns ``(loss, stats)``: ``clipfrac`` = fraction of real tokens whose clipped branch was
    taken, ``approx_kl`` = k3 estimate of KL(old || new), ``ratio_mean``. ``n_rows`` /
    ``n_tokens``: a micro-batch's share of a minibatch's loss (see :func:`aggregate`); the
    stats are always token means over the tensors given.
    """
    if adv.dim() == 1:
        adv = adv.unsqueeze(1).expand_as(logp)
    log_ratio = logp - old_logp.detach()
    ratio = torch.exp(log_ratio)
    unclipped = -adv * ratio
    clipped = -adv * torch.clamp(ratio, 1.0 - clip_eps, 1.0 + clip_eps)
    per_token = torch.maximum(unclipped, clipped)
    loss = aggregate(per_token, mask, agg, max_len, n_rows=n_rows, n_tokens=n_tokens)
    with torch.no_grad():
        stats = {
            "clipfrac": masked_mean((clipped > unclipped).to(logp.dtype), mask).item(),
            "approx_kl": masked_mean(ratio - 1.0 - log_ratio, mask).item(),
            "ratio_mean": masked_mean(ratio, mask).item(),
        }
    return loss, stats


def value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    clip: float = 0.2,
    *,
    n_tokens: float | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Clipped value loss: ``0.5 * max((V - R)^2, (old_V + clip(V - old_V, -c, c) - R)^2)``.

    Token-mean over the mask (over ``n_tokens`` real tokens of the minibatch when given: a
    micro-batch's share). ``old_values`` are the rollout-time estimates; the clip keeps the
    critic near them, as the policy's clip does. Stats: ``vf_clipfrac`` (over the tensors given).
    """
    v_clipped = old_values + torch.clamp(values - old_values, -clip, clip)
    loss_unclipped = (values - returns) ** 2
    loss_clipped = (v_clipped - returns) ** 2
    loss = 0.5 * aggregate(torch.maximum(loss_unclipped, loss_clipped), mask, "token-mean", n_tokens=n_tokens)
    with torch.no_grad():
        frac = masked_mean((loss_clipped > loss_unclipped).to(values.dtype), mask).item()
    return loss, {"vf_clipfrac": frac}
