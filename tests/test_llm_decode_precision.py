"""The fast paths of decoding and scoring compute what the plain paths compute.

* ``attend_one`` (a decode step's attention) equals SDPA with its key/value heads repeated,
  under padding masks, on the cache's strided (transposed-key) views;
* ``sample_tokens`` (inverse CDF) draws ``exp(logp)`` and never a token of probability 0;
* ``lowp_linears`` gives bit-identical outputs to autocast over the fp32 weights and always
  puts the original weights back;
* ``Policy.precision`` (one autocast region for several passes, casts shared) gives the same
  log-probs and gradients as separate regions, and keeps the value head in float32.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from memory_r1.llm import hf_cache as K
from memory_r1.llm import hf_decode as D
from memory_r1.llm.base import Prompt
from memory_r1.rl.algorithms.accumulation import backward_only
from memory_r1.rl.tiny import toy_policy

torch.set_num_threads(1)


def _reference_attention(q, k, v, mask):
    rep = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
    out = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return out.transpose(1, 2)


@pytest.mark.parametrize("additive", [False, True], ids=["bool-mask", "additive-mask"])
def test_attend_one_equals_sdpa_on_cache_views(additive: bool) -> None:
    torch.manual_seed(0)
    b, h, kv, length, d = 3, 6, 2, 9, 8
    layer = K._BufferedLayer(reserve=4)
    keys, values = torch.randn(b, kv, length, d), torch.randn(b, kv, length, d)
    layer.update(keys[:, :, :-1], values[:, :, :-1])
    k_view, v_view = layer.update(keys[:, :, -1:], values[:, :, -1:])
    assert not k_view.is_contiguous()  # the transposed-key buffer's view
    assert torch.equal(k_view, keys) and torch.equal(v_view, values)
    mask = torch.ones(b, 1, 1, length, dtype=torch.bool)
    mask[1, ..., :3] = False  # left padding
    mask[2, ..., :5] = False
    q = torch.randn(b, h, 1, d)
    expected = _reference_attention(q, keys, values, mask)
    given = torch.zeros(mask.shape).masked_fill(~mask, float("-inf")) if additive else mask
    got = K.attend_one(q, k_view, v_view, given)
    assert got.shape == (b, 1, h, d)
    assert torch.allclose(got, expected, atol=1e-6)
    # broken on purpose: ignoring the mask changes the padded rows
    assert not torch.allclose(K.attend_one(q, k_view, v_view, None)[1:], expected[1:], atol=1e-3)


def test_sample_tokens_draws_the_distribution_and_never_a_zero() -> None:
    probs = torch.tensor([0.5, 0.3, 0.2, 0.0, 0.0])
    logp = probs.log().expand(20_000, -1)
    torch.manual_seed(0)
    draws = D.sample_tokens(logp)
    freq = torch.bincount(draws, minlength=5).float() / len(draws)
    assert torch.allclose(freq, probs, atol=0.015), freq
    assert freq[3:].sum() == 0
    torch.manual_seed(0)
    assert torch.equal(D.sample_tokens(logp), draws)  # seeded: reproducible


def _model():
    policy = toy_policy(0)
    return policy.model, policy


def test_lowp_linears_matches_autocast_and_restores_the_weights() -> None:
    model, policy = _model()
    ids, att = policy.encode([policy.render(Prompt("", "capital of france ?"))])
    before = {n: p for n, p in model.named_parameters()}
    values = {n: p.detach().clone() for n, p in before.items()}
    with torch.no_grad():
        plain, _ = D.lm_forward(
            model, ids, att, keep=3, position_ids=K.position_ids(att), autocast=torch.bfloat16
        )
        with D.lowp_linears(model, torch.bfloat16):
            dtypes = {m.weight.dtype for m in model.get_decoder().modules() if isinstance(m, torch.nn.Linear)}
            fast, _ = D.lm_forward(
                model, ids, att, keep=3, position_ids=K.position_ids(att), autocast=torch.bfloat16
            )
    assert dtypes == {torch.bfloat16}
    assert torch.equal(plain, fast)
    with pytest.raises(RuntimeError), D.lowp_linears(model, torch.bfloat16):
        raise RuntimeError("boom")
    for n, p in model.named_parameters():
        assert p is before[n] and p.dtype == torch.float32 and torch.equal(p, values[n]), n


def test_decode_under_autocast_samples_what_the_policy_scores() -> None:
    policy = toy_policy(0)
    policy.autocast = torch.bfloat16
    texts = [policy.render(Prompt("", "capital of france ?")), policy.render(Prompt("", "?"))]
    torch.manual_seed(1)
    batch = policy.generate(texts, n=3, max_new_tokens=6, temperature=1.0)
    torch.manual_seed(1)
    again = policy.generate(texts, n=3, max_new_tokens=6, temperature=1.0)
    assert torch.equal(batch.input_ids, again.input_ids)
    with torch.no_grad():
        logp = policy.logprobs(
            batch.input_ids, batch.attention_mask, batch.completion_mask, groups=batch.groups
        )
    gap = ((batch.sample_logp - logp).abs() * batch.completion_mask).max()
    assert gap < 0.05, gap  # bf16 rounding only


def test_one_precision_region_equals_separate_regions() -> None:
    torch.manual_seed(0)
    policy = toy_policy(0, value_head=True)
    policy.autocast = torch.bfloat16
    texts = [policy.render(Prompt("", "capital of france ?")), policy.render(Prompt("", "?"))]
    batch = policy.generate(texts, n=2, max_new_tokens=5, temperature=1.0)
    chunks = [slice(0, 2), slice(2, 4)]

    def grads(one_region: bool) -> list[torch.Tensor]:
        policy.model.zero_grad(set_to_none=True)
        region = policy.precision() if one_region else D.nullcontext()
        with region:
            for sl in chunks:
                logp, values = policy.forward(
                    batch.input_ids[sl],
                    batch.attention_mask[sl],
                    batch.completion_mask[sl],
                    values=True,
                    groups=batch.groups[sl],
                )
                assert values is not None and values.dtype == torch.float32
                backward_only(logp.sum() + values.sum())
        return [p.grad.clone() for p in policy.model.parameters() if p.grad is not None]

    separate, shared = grads(False), grads(True)
    assert len(separate) == len(shared) > 0
    for a, b in zip(separate, shared):
        assert torch.allclose(a, b, atol=1e-6, rtol=1e-5)
