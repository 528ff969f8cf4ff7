"""One rollout batch of token ids, masks and the tensors the updates fill in (L3, torch).

Token layout (every tensor in a :class:`Batch`): prompts are **left**-padded to a common width
``P`` and completions **right**-padded to ``T``, so ``input_ids`` is ``(B, P + T)`` and the
completion is always its last ``T`` columns. ``completion_mask`` ``(B, T)`` is 1 up to and
including the token that ended the row (EOS, or the last token of a stop string). Position
ids come from the attention mask exactly as decoding computes them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any

import torch

_TENSORS = (
    "input_ids",
    "attention_mask",
    "completion_mask",
    "sample_logp",
    "rewards",
    "old_logp",
    "ref_logp",
    "values",
    "advantages",
    "returns",
    "groups",
)


@dataclass
class Batch:
    """One rollout batch; ``B = prompts x n`` rows, rows of one prompt adjacent (a group).

    Filled in three stages: :meth:`Policy.generate` (ids, masks, ``sample_logp``, texts,
    ``groups``), the environment (``rewards`` ``(B,)``), the algorithm's ``prepare``
    (``old_logp``, ``ref_logp``, ``advantages`` ``(B, T)`` or ``(B,)``, and for PPO ``values``
    / ``returns`` ``(B, T)``). ``groups`` ``(B,)``: one id per prompt, non-decreasing; rows with
    the same id share their prompt tokens. ``budget``: the generation budget
    (``max_new_tokens``), Dr.GRPO's constant normaliser.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    completion_mask: torch.Tensor
    sample_logp: torch.Tensor
    prompts: list[str]
    completions: list[str]
    temperature: float = 1.0
    metas: list[Any] = field(default_factory=list)
    groups: torch.Tensor | None = None
    budget: int | None = None
    rewards: torch.Tensor | None = None
    old_logp: torch.Tensor | None = None
    ref_logp: torch.Tensor | None = None
    values: torch.Tensor | None = None
    advantages: torch.Tensor | None = None
    returns: torch.Tensor | None = None
    info: dict[str, float] = field(default_factory=dict)  # rollout-side stats for the log

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])

    @property
    def width(self) -> int:
        """``T``, the completion width."""
        return int(self.completion_mask.shape[1])

    def select(self, idx: torch.Tensor) -> Batch:
        """Rows ``idx`` (a minibatch): tensors indexed, text lists re-ordered alike."""
        rows = idx.tolist()
        kw: dict[str, Any] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name in _TENSORS and v is not None:
                kw[f.name] = v[idx.to(v.device)]
            elif isinstance(v, list) and len(v) == len(self):
                kw[f.name] = [v[i] for i in rows]
        return replace(self, **kw)

    @staticmethod
    def cat(parts: Sequence[Batch], pad_id: int) -> Batch:
        """Rows of several generated (not yet scored or scored) batches, re-padded to one layout.

        Prompts are left-padded to the widest ``P``, completions right-padded to the widest
        ``T``; group ids are renumbered so groups stay distinct. Tensors filled by ``prepare``
        are not carried (concatenate before ``prepare``).
        """
        if len(parts) == 1:
            return parts[0]
        p = max(b.input_ids.shape[1] - b.width for b in parts)
        t = max(b.width for b in parts)
        ids, att, cm, lp, groups, rewards = [], [], [], [], [], []
        offset = 0
        for b in parts:
            bp, bt = b.input_ids.shape[1] - b.width, b.width
            left, right = p - bp, t - bt
            ids.append(torch.nn.functional.pad(b.input_ids[:, :bp], (left, 0), value=pad_id))
            ids[-1] = torch.cat(
                [ids[-1], torch.nn.functional.pad(b.input_ids[:, bp:], (0, right), value=pad_id)], 1
            )
            att.append(torch.nn.functional.pad(b.attention_mask, (left, right), value=0))
            cm.append(torch.nn.functional.pad(b.completion_mask, (0, right), value=0.0))
            lp.append(torch.nn.functional.pad(b.sample_logp, (0, right), value=0.0))
            g = b.groups if b.groups is not None else torch.arange(len(b))
            g = g - g.min()
            groups.append(g + offset)
            offset += int(g.max()) + 1
            if b.rewards is not None:
                rewards.append(b.rewards)
        first = parts[0]
        budgets = [b.budget for b in parts if b.budget is not None]
        return Batch(
            input_ids=torch.cat(ids),
            attention_mask=torch.cat(att),
            completion_mask=torch.cat(cm),
            sample_logp=torch.cat(lp),
            prompts=[x for b in parts for x in b.prompts],
            completions=[x for b in parts for x in b.completions],
            temperature=first.temperature,
            metas=[m for b in parts for m in b.metas],
            groups=torch.cat(groups),
            budget=max(budgets) if budgets else None,
            rewards=torch.cat(rewards) if len(rewards) == len(parts) else None,
            info=dict(first.info),
        )
