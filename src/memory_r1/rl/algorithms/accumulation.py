"""Gradient accumulation for the PPO and GRPO updates (L3; pure torch, no model code).

A rollout batch is cut into minibatches (:func:`minibatch_indices`, whole groups kept
together), each minibatch into micro-batches (:func:`micro_slices`), and each micro-batch runs
forward + backward on its own (:func:`backward_only`), with one optimizer step per minibatch
(:func:`clip_and_step`). The losses take the minibatch's normalisers
(:mod:`memory_r1.rl.algorithms.losses`), so the accumulated gradient is the minibatch gradient;
:class:`StatsSum` gathers the minibatch's stats over its micro-batches and :func:`mean_stats`
averages them over minibatches. :func:`rowwise` runs a no-grad pass in chunks of rows.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import torch

from memory_r1.rl.algorithms.rollout_batch import Batch


def minibatch_indices(n: int, num_minibatches: int, groups: torch.Tensor | None = None) -> list[torch.Tensor]:
    """A random partition of ``range(n)`` into ``num_minibatches`` near-equal index tensors
    (fewer when the batch holds fewer groups: dynamic sampling can leave only one).

    With ``groups`` (one id per row, rows of a group adjacent) whole groups are shuffled and
    split, and the rows of a group stay together and adjacent in their minibatch, so the
    group's prompt is still read once there. Without, every row is its own group. Draws from
    torch's global RNG (saved in checkpoints), so a resumed run shuffles alike.
    """
    starts = _group_starts(n, groups)
    k = len(starts) - 1
    if num_minibatches < 1 or k < 1:
        raise ValueError(f"num_minibatches={num_minibatches} and the batch's {k} groups must be >= 1")
    parts = torch.randperm(k).tensor_split(min(num_minibatches, k))
    return [torch.cat([torch.arange(starts[g], starts[g + 1]) for g in part.tolist()]) for part in parts]


def _group_starts(n: int, groups: torch.Tensor | None) -> list[int]:
    """Row offsets where each group starts, plus ``n``."""
    if groups is None:
        return list(range(n + 1))
    g = groups.tolist()
    return [i for i in range(n) if i == 0 or g[i] != g[i - 1]] + [n]


def mean_stats(rows: list[dict[str, float]]) -> dict[str, float]:
    """Key-wise mean of per-minibatch stats (keys missing from a row are averaged without it)."""
    keys = dict.fromkeys(k for row in rows for k in row)
    return {k: sum(r[k] for r in rows if k in r) / sum(1 for r in rows if k in r) for k in keys}


def check_passes(num_epochs: int, num_minibatches: int, micro_batch_size: int | None) -> None:
    """The ValueError of a PPO / GRPO config with no epoch, minibatch or micro-batch row."""
    if num_epochs < 1 or num_minibatches < 1:
        raise ValueError("num_epochs and num_minibatches must be >= 1")
    if micro_batch_size is not None and micro_batch_size < 1:
        raise ValueError(
            f"micro_batch_size={micro_batch_size} must be >= 1 (or None for the whole minibatch at once)"
        )


def update_passes(
    batch: Batch, num_epochs: int, num_minibatches: int, update: Callable[[Batch, bool], dict[str, float]]
) -> dict[str, float]:
    """``update(minibatch, first)`` on ``num_minibatches`` random minibatches of ``batch`` (whole
    groups), ``num_epochs`` times (``first``: the very first); the mean stats, not skipped."""
    rows = []
    for epoch in range(num_epochs):
        for i, idx in enumerate(minibatch_indices(len(batch), num_minibatches, batch.groups)):
            rows.append(update(batch.select(idx), epoch == 0 and i == 0))
    return {**mean_stats(rows), "skipped_update": 0.0}


def micro_slices(n: int, size: int | None, groups: torch.Tensor | None = None) -> list[slice]:
    """Consecutive row slices of at most ``size`` rows covering ``range(n)`` (one when None).

    With ``groups``, slices end on group boundaries where a group fits (whole groups are
    packed up to ``size`` rows), so a group's prompt is read once per micro-batch; a group
    larger than ``size`` is split.

    >>> micro_slices(5, 2)
    [slice(0, 2, None), slice(2, 4, None), slice(4, 5, None)]
    >>> micro_slices(6, 4, torch.tensor([0, 0, 0, 1, 1, 1]))
    [slice(0, 3, None), slice(3, 6, None)]
    """
    step = size or max(n, 1)
    if groups is None or size is None:
        return [slice(i, min(i + step, n)) for i in range(0, n, step)]
    starts = _group_starts(n, groups)
    out, begin = [], 0
    for lo, hi in itertools.pairwise(starts):
        if hi - begin > step and lo > begin:  # this group does not fit: close the slice
            out.append(slice(begin, lo))
            begin = lo
        while hi - begin > step:  # a group wider than ``size``
            out.append(slice(begin, begin + step))
            begin += step
    if begin < n:
        out.append(slice(begin, n))
    return out


def drop_left_padding(
    input_ids: torch.Tensor, attention_mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Drop the leading columns that no row attends to (left padding common to every row).

    Exact for the :class:`~memory_r1.rl.algorithms.rollout_batch.Batch` layout: position ids come from the
    attention mask and those columns are masked keys for every query, so the remaining
    positions compute the same values; a micro-batch of short prompts then costs less.
    """
    attended = attention_mask.bool().any(0)
    first = int(attended.long().argmax()) if bool(attended.any()) else 0
    return input_ids[:, first:], attention_mask[:, first:]


def rowwise(
    fn: Callable[..., Any],
    size: int | None,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    completion_mask: torch.Tensor,
    groups: torch.Tensor | None = None,
) -> Any:
    """``fn(input_ids, attention_mask, completion_mask, groups=...)`` on chunks of ``size`` rows
    (all at once when None; group-aligned, see :func:`micro_slices`; each chunk without its
    common left padding), outputs concatenated along rows.

    ``fn`` returns a tensor or a tuple of tensors / None (as ``Policy.forward``); for no-grad
    passes, where only the peak memory of one chunk matters.
    """
    outs = []
    for sl in micro_slices(int(input_ids.shape[0]), size, groups):
        ids, att = drop_left_padding(input_ids[sl], attention_mask[sl])
        outs.append(fn(ids, att, completion_mask[sl], groups=None if groups is None else groups[sl]))
    if len(outs) == 1:
        return outs[0]
    if isinstance(outs[0], torch.Tensor):
        return torch.cat(outs)
    return tuple(None if parts[0] is None else torch.cat(parts) for parts in zip(*outs))


class StatsSum:
    """Accumulates one minibatch's stats over its micro-batches.

    ``add_share`` sums values that are already shares of the minibatch (the losses, built with
    its normalisers); ``add_mean`` sums a micro-batch's token mean weighted by its share of the
    minibatch's real tokens, giving the minibatch's token mean. Keys keep first-seen order.
    """

    def __init__(self, n_tokens: float) -> None:
        self.n_tokens = max(float(n_tokens), 1.0)
        self.values: dict[str, float] = {}

    def add_share(self, **shares: float) -> None:
        for k, v in shares.items():
            self.values[k] = self.values.get(k, 0.0) + float(v)

    def add_mean(self, tokens: float, means: dict[str, float]) -> None:
        w = float(tokens) / self.n_tokens
        self.add_share(**{k: w * v for k, v in means.items()})


def backward_only(loss: torch.Tensor, backward: Callable[[torch.Tensor], None] | None = None) -> None:
    """Accumulate ``loss``'s gradient into ``.grad`` (``accelerate``'s backward when given).

    Always with autocast off, also inside an autocast region (``Policy.precision``): each
    backward op then runs in the dtype its forward op ran in, so float32 parts (the LM head)
    keep float32 gradients; under autocast the head's backward matmuls ran in bf16."""
    with torch.autocast(device_type=loss.device.type, enabled=False):
        (backward or torch.Tensor.backward)(loss)


Clip = Callable[[list[torch.nn.Parameter], float], Any]


def clip_and_step(
    optimizer: torch.optim.Optimizer,
    params: list[torch.nn.Parameter],
    max_grad_norm: float,
    clip: Clip | None = None,
) -> float:
    """Clip the global grad norm of the accumulated gradients, step, zero; returns the norm.

    ``clip`` is ``accelerator.clip_grad_norm_`` under accelerate: with fp16 mixed precision
    the gradients are still multiplied by the loss scale here, and only the accelerator's clip
    unscales them first (plain ``clip_grad_norm_`` would clip scaled gradients, i.e. almost
    always, and report the scaled norm).
    """
    norm = (clip or torch.nn.utils.clip_grad_norm_)(params, max_grad_norm)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return float(norm)
