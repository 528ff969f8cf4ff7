"""One decoding loop for transformers models: inference, validation and RL rollouts (L1, torch).

Why not ``model.generate``: transformers fills every sampling field a caller leaves unset
(``repetition_penalty``, ``min_p``, ``no_repeat_ngram_size``, ...) from the checkpoint's
``generation_config.json``, so a rollout could be drawn from a distribution other than the
one the update assumes, and the returned scores would not show it. This loop has no logits
processors at all: token ``t`` is drawn from ``softmax(logits_t / temperature)`` of the raw
model logits (greedy: their argmax), and ``logp`` is the log-prob of that token under that
very distribution. Everything that calls a transformers model to produce text goes through
:func:`decode` (``HFModel``, greedy validation, ``Policy.generate``), so a checkpoint reads and
writes alike on every path.

* **Prefix sharing**: ``n`` samples per prompt read the prompt once. The prompt is prefilled
  once per distinct prompt, then its KV cache is expanded to the ``n`` rows
  (:func:`expand_cache`); decoding continues from there.
* **Stop strings** end a row like EOS does: the row's tokens up to the one that completed the
  stop string are kept (``mask`` 1, so RL trains on them), the text is cut before the stop
  string, ``finish`` says ``"stop"``. EOS is kept in ``mask`` too (stopping is an action) and
  never appears in the text.
* **Finished rows leave the batch** (their cache rows are dropped), so a batch is as wide as
  its longest-running rows only.
* **Precision**: ``autocast`` (e.g. ``torch.bfloat16``) runs the prefill and every decode
  step under ``torch.autocast``, where CPUs with native bf16 are ~2x faster on matmuls. For
  the decode loop the decoder's linear weights are cast once (:func:`lowp_linears`, restored
  after) instead of by autocast at every step, and the KV cache is kept in that dtype: the
  same numbers as autocast over the fp32 weights, without re-casting 100M weights per token.
  The LM head and the sampling distribution stay float32 (:func:`lm_forward`).
* **One query token** (a decode step) attends with two small matmuls (:func:`attend_one`):
  torch's CPU flash-attention kernel at query length 1 took 7.2 ms per layer in bf16 and
  1.4 ms in fp32 (16 rows, 600 cached positions) against 0.8 / 1.2 ms.
* **Sampling** draws by inverse CDF (a float64 cumulative sum and ``searchsorted`` over one
  uniform per row), exactly ``softmax(logits / temperature)``: ``torch.multinomial`` spent
  ~17 ms per step on 16 x 49,152 exponentials.

Token layout of the result: ``tokens``, ``mask`` and ``logp`` are ``(B, T)``, rows
``i*n .. i*n+n-1`` belong to prompt ``i``; ``T`` is the longest row (at most
``max_new_tokens``); padding after a row's end has ``mask`` 0, ``logp`` 0 and the pad id.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

import torch

from memory_r1.llm.hf_cache import cast_cache, expand_cache, new_cache, position_ids


@dataclass
class Decoded:
    tokens: torch.Tensor  # (B, T) long
    mask: torch.Tensor  # (B, T) float: 1 on kept tokens (EOS / the stop string's tokens included)
    logp: torch.Tensor  # (B, T) float32: log-prob of each token under the sampling distribution
    texts: list[str]  # decoded completion, cut before the first stop string
    finish: list[str]  # "eos" | "stop" | "length"


@contextmanager
def lowp_linears(model: Any, dtype: torch.dtype | None) -> Iterator[None]:
    """Within the block, the decoder's ``nn.Linear`` weights are ``dtype`` copies (no-op for
    None or when they already are); the original tensors are put back on exit, whatever
    happens. Under ``torch.autocast(dtype)`` this computes exactly what autocast over the
    original weights computes, minus the per-call cast. No-grad use only."""
    linears = (
        [
            m
            for m in model.get_decoder().modules()
            if isinstance(m, torch.nn.Linear) and m.weight.dtype != dtype
        ]
        if dtype is not None
        else []
    )
    saved = [m.weight.data for m in linears]
    try:
        for m in linears:
            m.weight.data = m.weight.data.to(dtype)
        yield
    finally:
        for m, w in zip(linears, saved):
            m.weight.data = w


def sample_tokens(logp: torch.Tensor) -> torch.Tensor:
    """One token per row drawn from ``exp(logp)`` (rows of log-probs, ``-inf`` = never), by
    inverse CDF on torch's global RNG: ``(B,)`` long."""
    cdf = logp.double().exp().cumsum(-1)
    u = torch.rand(logp.shape[0], 1, dtype=torch.float64, device=logp.device) * cdf[:, -1:]
    tok = torch.searchsorted(cdf, u, right=True).squeeze(1)
    return tok.clamp(max=logp.shape[-1] - 1)


def autocast_ctx(device: torch.device, dtype: torch.dtype | None) -> Any:
    """``torch.autocast`` for ``dtype`` on ``device`` (a no-op context when None)."""
    if dtype is None:
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def lm_forward(
    model: Any,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    *,
    position_ids: torch.Tensor,
    keep: int,
    cache: Any | None = None,
    autocast: torch.dtype | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(logits, hidden)`` of the last ``keep`` positions: logits float32 ``(B, keep, V)``.

    The decoder runs under ``autocast`` (when given; inside an enclosing autocast region its
    weight casts are shared with the rest of the region); the LM head always runs with autocast
    off, in float32, so log-probs never pass through bf16 logits (their 8-bit mantissa would put
    ~1e-2 of noise on every log-prob). ``hidden`` is the final (normed) hidden state of those
    positions in the decoder's output dtype; ``cache`` is filled when given.
    """
    with autocast_ctx(attention_mask.device, autocast):
        out = model.get_decoder()(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=cache,
            use_cache=cache is not None,
        )
    hidden = out.last_hidden_state[:, -keep:]
    head = model.get_output_embeddings()
    with torch.autocast(device_type=hidden.device.type, enabled=False):
        logits = torch.nn.functional.linear(
            hidden.to(head.weight.dtype), head.weight, getattr(head, "bias", None)
        ).float()
    cap = getattr(model.config.get_text_config(), "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return logits, hidden


class _StopTexts:
    """Per-row check whether the generated text now contains a stop string (tail window)."""

    def __init__(self, tokenizer: Any, stops: Sequence[str]) -> None:
        self.tokenizer, self.stops = tokenizer, [s for s in stops if s]
        self.window = max((len(s) for s in self.stops), default=0) + 2

    def hit(self, rows: list[list[int]]) -> list[bool]:
        if not self.stops:
            return [False] * len(rows)
        tails = self.tokenizer.batch_decode([r[-self.window :] for r in rows], skip_special_tokens=False)
        return [any(s in t for s in self.stops) for t in tails]

    def cut(self, text: str) -> str:
        cuts = [k for k in (text.find(s) for s in self.stops) if k >= 0]
        return text[: min(cuts)] if cuts else text


def _nucleus(lp: torch.Tensor, top_p: float) -> torch.Tensor:
    """Log-probs renormalised over the top-p set of each row (others -inf)."""
    sorted_lp, order = lp.sort(dim=-1, descending=True)
    before = sorted_lp.exp().cumsum(-1) - sorted_lp.exp()  # mass of the tokens ranked above
    drop = torch.zeros_like(lp, dtype=torch.bool).scatter(-1, order, before >= top_p)
    return torch.log_softmax(lp.masked_fill(drop, float("-inf")), dim=-1)


@torch.no_grad()
def decode(
    model: Any,
    tokenizer: Any,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    *,
    max_new_tokens: int,
    eos_ids: Sequence[int],
    n: int = 1,
    temperature: float = 0.0,
    top_p: float = 1.0,
    stops: Sequence[str] = (),
    autocast: torch.dtype | None = None,
    pad_id: int | None = None,
) -> Decoded:
    """``n`` completions per (left-padded) prompt row; see the module docstring.

    ``temperature <= 0``: greedy (``logp`` then under ``softmax(logits)``). Sampling draws from
    torch's global RNG (:func:`sample_tokens`), so a seeded run is reproducible. ``top_p < 1``
    samples from the smallest set of tokens whose probability reaches ``top_p`` (OpenAI
    semantics, for inference; RL keeps 1.0) and ``logp`` is under that renormalised set.
    ``autocast``: see the module docstring (prefill and decode steps under it).
    """
    if max_new_tokens < 1 or n < 1:
        raise ValueError("max_new_tokens and n must be >= 1")
    device = input_ids.device
    pad = int(tokenizer.pad_token_id if pad_id is None else pad_id)
    eos = torch.tensor(list(eos_ids), device=device)
    stop = _StopTexts(tokenizer, stops)
    cache = new_cache(model, reserve=max_new_tokens)
    logits, _ = lm_forward(
        model,
        input_ids,
        attention_mask,
        keep=1,
        cache=cache,
        position_ids=position_ids(attention_mask),
        autocast=autocast,
    )
    logits = logits[:, -1]
    cast_cache(cache, autocast or next(model.parameters()).dtype)
    with lowp_linears(model, autocast):
        return _decode_loop(
            model,
            tokenizer,
            cache,
            logits,
            attention_mask,
            n=n,
            pad=pad,
            eos=eos,
            stop=stop,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_p=top_p,
            autocast=autocast,
        )


def _decode_loop(
    model: Any,
    tokenizer: Any,
    cache: Any,
    logits: torch.Tensor,
    attention_mask: torch.Tensor,
    *,
    n: int,
    pad: int,
    eos: torch.Tensor,
    stop: _StopTexts,
    max_new_tokens: int,
    temperature: float,
    top_p: float,
    autocast: torch.dtype | None,
) -> Decoded:
    device = logits.device
    att = attention_mask
    next_pos = position_ids(attention_mask)[:, -1] + 1
    if n > 1:
        rows = torch.arange(attention_mask.shape[0], device=device).repeat_interleave(n)
        expand_cache(cache, rows)
        logits, att, next_pos = logits[rows], att[rows], next_pos[rows]
    b = logits.shape[0]
    tokens = torch.full((b, max_new_tokens), pad, dtype=torch.long, device=device)
    logps = torch.zeros((b, max_new_tokens), dtype=torch.float32, device=device)
    lengths = torch.zeros(b, dtype=torch.long, device=device)
    finish = ["length"] * b
    active = torch.arange(b, device=device)  # original row of each row still in the batch
    generated: list[list[int]] = [[] for _ in range(b)]
    for step in range(max_new_tokens):
        tok, tok_logp = _next_token(logits, temperature, top_p)
        tokens[active, step] = tok
        logps[active, step] = tok_logp
        lengths[active] = step + 1
        done = _record(tok, active, generated, eos, stop, finish)
        if step + 1 == max_new_tokens or bool(done.all()):
            break
        keep = (~done).nonzero().squeeze(1)
        if len(keep) < len(active):
            expand_cache(cache, keep)
            active, tok, att, next_pos = active[keep], tok[keep], att[keep], next_pos[keep]
        att = torch.cat([att, att.new_ones((len(active), 1))], dim=1)
        logits, _ = lm_forward(
            model,
            tok.unsqueeze(1),
            att,
            keep=1,
            cache=cache,
            position_ids=next_pos.unsqueeze(1),
            autocast=autocast,
        )
        logits = logits[:, -1]
        next_pos = next_pos + 1
    width = int(lengths.max())
    mask = (torch.arange(width, device=device).unsqueeze(0) < lengths.unsqueeze(1)).float()
    texts = [stop.cut(tokenizer.decode(g, skip_special_tokens=True)) for g in generated]
    return Decoded(tokens[:, :width], mask, logps[:, :width] * mask, texts, finish)


def _next_token(logits: torch.Tensor, temperature: float, top_p: float) -> tuple[torch.Tensor, torch.Tensor]:
    """One token per row (greedy at ``temperature`` 0) and its log-prob under the distribution
    it was drawn from."""
    sample = temperature > 0
    lp = torch.log_softmax(logits / temperature if sample else logits, dim=-1)
    if sample and top_p < 1.0:
        lp = _nucleus(lp, top_p)
    tok = sample_tokens(lp) if sample else lp.argmax(-1)
    return tok, lp.gather(-1, tok.unsqueeze(1)).squeeze(1)


def _record(
    tok: torch.Tensor,
    active: torch.Tensor,
    generated: list[list[int]],
    eos: torch.Tensor,
    stop: _StopTexts,
    finish: list[str],
) -> torch.Tensor:
    """Append ``tok`` to the active rows' tokens; mark rows ended by EOS or a stop string
    (``finish``) and return which of the active rows are done."""
    rows, tok_list = active.tolist(), tok.tolist()
    for j, r in enumerate(rows):
        generated[r].append(tok_list[j])
    ended = torch.isin(tok, eos)
    hits = stop.hit([generated[r] for r in rows])
    for j, r in enumerate(rows):
        if bool(ended[j]):
            finish[r] = "eos"
        elif hits[j]:
            finish[r] = "stop"
    return ended | torch.tensor(hits, dtype=torch.bool, device=tok.device)
