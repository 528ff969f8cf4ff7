"""The forward passes that score completion positions of a rollout batch (L3, torch).

Both return logits and last hidden states ``(B, T, .)`` at positions ``P-1 .. P+T-2`` (the
state before each completion token is chosen), the LM head run in float32 over those positions
alone (:func:`~memory_r1.llm.hf_decode.lm_forward`), in the
:mod:`~memory_r1.rl.algorithms.rollout_batch` layout:

* :func:`completion_states` - every row read whole, or, with ``groups`` holding fewer groups
  than rows, through :func:`shared_prompt_states`;
* :func:`shared_prompt_states` - each distinct prompt run **once**: its KV cache is expanded to
  its rows and the completions run on top. Autograd flows through the shared cache, so
  log-probs and gradients equal the row-by-row computation.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from memory_r1.llm.hf_cache import expand_cache, new_cache, position_ids
from memory_r1.llm.hf_decode import lm_forward

if TYPE_CHECKING:
    from transformers import PreTrainedModel


def completion_states(
    model: PreTrainedModel,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    t: int,
    *,
    groups: torch.Tensor | None = None,
    autocast: torch.dtype | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and hidden states at the ``t`` completion positions (see the module docstring);
    ``groups=None`` reads every row whole."""
    if groups is not None and len(groups) > len(groups.unique()):
        return shared_prompt_states(model, input_ids, attention_mask, t, groups, autocast=autocast)
    logits, hidden = lm_forward(
        model,
        input_ids,
        attention_mask,
        keep=t + 1,
        position_ids=position_ids(attention_mask),
        autocast=autocast,
    )
    return logits[:, :-1], hidden[:, :-1]


def shared_prompt_states(
    model: PreTrainedModel,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    t: int,
    groups: torch.Tensor,
    *,
    autocast: torch.dtype | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and hidden states ``(B, T, .)`` at positions ``P-1 .. P+T-2``, each distinct
    prompt run once: prompt pass -> KV cache expanded to the rows -> completion pass."""
    p = input_ids.shape[1] - t
    first = torch.ones_like(groups, dtype=torch.bool)
    first[1:] = groups[1:] != groups[:-1]
    heads = first.nonzero().squeeze(1)
    index = first.long().cumsum(0) - 1  # row -> its prompt row among ``heads``
    p_ids, p_att = input_ids[heads, :p], attention_mask[heads, :p]
    attended = p_att.bool().any(0)  # drop left padding common to every prompt row
    start = int(attended.long().argmax()) if bool(attended.any()) else 0
    p_ids, p_att = p_ids[:, start:], p_att[:, start:]
    if not torch.equal(p_ids[index], input_ids[:, start:p]):
        raise ValueError("rows of one group must share their prompt tokens")
    cache = new_cache(model)
    head_logits, head_hidden = lm_forward(
        model, p_ids, p_att, keep=1, cache=cache, position_ids=position_ids(p_att), autocast=autocast
    )
    expand_cache(cache, index)
    full_att = torch.cat([p_att[index], attention_mask[:, p:]], dim=1)
    logits, hidden = lm_forward(
        model,
        input_ids[:, p:],
        full_att,
        keep=t,
        cache=cache,
        position_ids=position_ids(full_att)[:, -t:],
        autocast=autocast,
    )
    logits = torch.cat([head_logits[index], logits[:, :-1]], dim=1)
    hidden = torch.cat([head_hidden[index], hidden[:, :-1]], dim=1)
    return logits, hidden
