"""Each prompt read once per group: equal log-probs, values and gradients to the row-by-row
computation, in every pass (rollout, reference, update), with LoRA and full fine-tuning.

The tiny random Llama of ``rl.tiny``; two prompts of different lengths (so left padding
differs) x 4 samples; completions of unequal length (so right padding differs).
"""

from __future__ import annotations

from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from memory_r1.llm.base import Prompt
from memory_r1.rl.algorithms.policy import Policy, merged_lora
from memory_r1.rl.algorithms.rollout_batch import Batch
from memory_r1.rl.tiny import toy_policy

torch.set_num_threads(1)
ATOL = 1e-5


def _lora() -> Any:
    peft = pytest.importorskip("peft")
    return peft.LoraConfig(
        r=4,
        lora_alpha=8,
        lora_dropout=0.0,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "up_proj", "down_proj", "gate_proj"],
    )


def _policy(lora: bool, value_head: bool = True, shared: bool = True) -> Policy:
    p = toy_policy(0, value_head=value_head, lora=_lora() if lora else None)
    p.shared_prefix = shared
    torch.manual_seed(3)  # move the policy off its reference (adapters, or the weights)
    with torch.no_grad():
        for name, param in p.model.named_parameters():
            if "lora_B" in name:
                torch.nn.init.normal_(param, std=0.5)
            elif not lora:
                param.add_(torch.randn_like(param) * 0.05)
    if p.value_head is not None:
        torch.nn.init.normal_(p.value_head.weight, std=0.3)
    return p


def _batch(policy: Policy) -> Batch:
    torch.manual_seed(0)
    texts = [
        policy.render(Prompt("", "capital of france ? capital of france ?")),
        policy.render(Prompt("", "?")),
    ]
    batch = policy.generate(texts, n=4, max_new_tokens=10, temperature=1.5, stops=("paris",))
    lengths = batch.completion_mask.sum(1)
    assert len(set(lengths.tolist())) > 1  # unequal completions: right padding differs
    assert (batch.attention_mask[4:, 0] == 0).all()  # the short prompt is left-padded
    return batch


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_shared_prompt_pass_equals_row_by_row(lora: bool) -> None:
    policy = _policy(lora)
    batch = _batch(policy)
    args = (batch.input_ids, batch.attention_mask, batch.completion_mask)
    results = {}
    for shared in (False, True):
        policy.shared_prefix = shared
        policy.model.zero_grad(set_to_none=True)
        logp, values = policy.forward(*args, values=True, temperature=1.5, groups=batch.groups)
        assert values is not None
        ((logp * 0.7).sum() + (values**2).sum()).backward()
        grads = {n: p.grad.detach().clone() for n, p in policy.model.named_parameters() if p.grad is not None}
        with torch.no_grad():
            ref = policy.ref_logprobs(*args, temperature=1.5, groups=batch.groups)
        results[shared] = (logp.detach(), values.detach(), ref, grads)
    (l0, v0, r0, g0), (l1, v1, r1, g1) = results[False], results[True]
    assert torch.allclose(l0, l1, atol=ATOL) and torch.allclose(v0, v1, atol=ATOL)
    assert torch.allclose(r0, r1, atol=ATOL)
    assert not torch.allclose(l0, r0, atol=1e-3)  # the policy is not its reference
    assert g0.keys() == g1.keys() and g0
    for name in g0:  # float32 summation order only: relative to the gradient's scale
        err = (g0[name] - g1[name]).abs().max() / g0[name].abs().max().clamp(min=1e-12)
        assert err < 1e-5, f"{name}: relative error {float(err):.2e}"
    # and both equal what the sampler reported (merged LoRA, cached decoding, no processors)
    assert torch.allclose(batch.sample_logp, l1, atol=ATOL)


def test_a_group_with_different_prompts_is_refused() -> None:
    policy = _policy(False)
    batch = _batch(policy)
    groups = torch.zeros_like(batch.groups)  # claims all 8 rows share one prompt: they do not
    with pytest.raises(ValueError, match="share their prompt"):
        policy.logprobs(batch.input_ids, batch.attention_mask, batch.completion_mask, groups=groups)


def test_merged_lora_samples_the_same_policy_and_restores_the_base() -> None:
    policy = _policy(True, value_head=False)
    base = {n: p.detach().clone() for n, p in policy.model.named_parameters()}
    ids, att = policy.encode([policy.render(Prompt("", "capital of france ?"))])
    with torch.no_grad():
        unmerged = policy.model(input_ids=ids, attention_mask=att).logits
        with merged_lora(policy.model):
            merged = policy.model(input_ids=ids, attention_mask=att).logits
        with policy.model.disable_adapter():
            plain = policy.model(input_ids=ids, attention_mask=att).logits
    assert torch.allclose(unmerged, merged, atol=1e-5)
    assert not torch.allclose(plain, merged, atol=1e-3)  # the adapters really were folded in
    after = dict(policy.model.named_parameters())
    assert all(torch.equal(base[n], after[n]) for n in base)  # bit-identical base weights


def test_batch_cat_repads_and_keeps_groups_apart() -> None:
    policy = _policy(False, value_head=False)
    torch.manual_seed(0)
    a = policy.generate([policy.render(Prompt("", "?"))], n=2, max_new_tokens=3)
    b = policy.generate([policy.render(Prompt("", "capital of france ?"))], n=2, max_new_tokens=6)
    a.rewards, b.rewards = torch.tensor([0.0, 1.0]), torch.tensor([1.0, 0.5])
    cat = Batch.cat([a, b], policy.tokenizer.pad_token_id)
    assert cat.groups.tolist() == [0, 0, 1, 1] and cat.rewards.tolist() == [0, 1, 1, 0.5]
    assert cat.width == max(a.width, b.width)
    for part, rows in ((a, slice(0, 2)), (b, slice(2, 4))):
        alone = policy.logprobs(part.input_ids, part.attention_mask, part.completion_mask, groups=part.groups)
        joined = policy.logprobs(
            cat.input_ids[rows], cat.attention_mask[rows], cat.completion_mask[rows], groups=cat.groups[rows]
        )
        assert torch.allclose(alone, joined[:, : part.width], atol=ATOL)
        assert (joined[:, part.width :] == 0).all()
