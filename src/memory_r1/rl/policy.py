"""The trainable policy: an HF causal LM (+ optional LoRA, + optional value head) (L3).

:class:`Policy` does three things for the trainer and nothing else:

* ``generate(prompt_texts, n, ...)`` samples ``n`` completions per prompt in one ``generate``
  call and returns a :class:`Batch` of token ids, masks and the sampling log-probs;
* ``forward(...)`` / ``logprobs(...)`` recompute log-probs (and values) **only at completion
  positions**: ``logits_to_keep`` makes the model slice its hidden states before ``lm_head``,
  so a 262k vocabulary never meets the prompt (rl_stack.md section 5);
* ``ref_logprobs(...)`` under the frozen reference: a deep copy with ``requires_grad=False``
  for full fine-tuning, or the same model with its LoRA adapters disabled.

Token layout (every tensor in a :class:`Batch`): prompts are **left**-padded to a common width
``P`` and completions **right**-padded to ``T``, so ``input_ids`` is ``(B, P + T)`` and the
completion is always its last ``T`` columns. ``completion_mask`` ``(B, T)`` is 1 up to and
including the first EOS. Position ids are recomputed from the attention mask exactly as
``generate`` does, so recomputed log-probs match the sampling ones (to float rounding).

The model stays in ``eval()`` mode while training: dropout would make the rollout policy and
the trained policy differ, and the first PPO ratio would not be 1.
"""

from __future__ import annotations

import copy
from contextlib import nullcontext
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Iterator

import torch
from safetensors.torch import load_file, save_file
from transformers import GenerationConfig

from memory_r1.llm.base import Prompt, render_completion

_TENSORS = ("input_ids", "attention_mask", "completion_mask", "sample_logp", "rewards",
            "old_logp", "ref_logp", "values", "advantages", "returns")


@dataclass
class Batch:
    """One rollout batch; ``B = prompts x n`` rows, rows of one prompt adjacent (a group).

    Filled in three stages: :meth:`Policy.generate` (ids, masks, ``sample_logp``, texts), the
    environment (``rewards`` ``(B,)``), the algorithm's ``prepare`` (``old_logp``, ``ref_logp``,
    ``advantages`` ``(B, T)`` or ``(B,)``, and for PPO ``values`` / ``returns`` ``(B, T)``).
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    completion_mask: torch.Tensor
    sample_logp: torch.Tensor
    prompts: list[str]
    completions: list[str]
    temperature: float = 1.0
    metas: list[Any] = field(default_factory=list)
    rewards: torch.Tensor | None = None
    old_logp: torch.Tensor | None = None
    ref_logp: torch.Tensor | None = None
    values: torch.Tensor | None = None
    advantages: torch.Tensor | None = None
    returns: torch.Tensor | None = None
    info: dict[str, float] = field(default_factory=dict)  # rollout-side stats for the log

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])

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


def _eos_ids(model: Any, tokenizer: Any) -> list[int]:
    ids: list[int] = []
    for src in (getattr(model.generation_config, "eos_token_id", None), tokenizer.eos_token_id):
        for i in src if isinstance(src, list) else [src]:
            if i is not None and int(i) not in ids:
                ids.append(int(i))
    if not ids:
        raise ValueError("neither the tokenizer nor the generation config names an EOS token")
    return ids


def position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions that skip left padding, as ``generate`` computes them (pads get 0)."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


class Policy:
    """An HF causal LM and its tokenizer, ready for rollouts and updates.

    ``lora``: a ``peft.LoraConfig``; the model is wrapped with ``get_peft_model`` and only the
    adapters train. ``value_head``: adds ``Linear(hidden, 1)`` on the last hidden state (a
    critic sharing the policy's trunk; PPO). ``reference``: keep a frozen reference (a deep copy
    for full fine-tuning, memory x2; free with LoRA).
    """

    def __init__(self, model: Any, tokenizer: Any, *, lora: Any | None = None,
                 value_head: bool = False, reference: bool = True) -> None:
        self.tokenizer = tokenizer
        tokenizer.padding_side = "left"  # generation appends on the right
        self.eos_ids = _eos_ids(model, tokenizer)
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token_id = self.eos_ids[0]
        self.is_peft = lora is not None
        if lora is not None:
            from peft import get_peft_model  # optional until LoRA is asked for

            model = get_peft_model(model, lora)
        self.model = model.eval()
        self.chat = bool(getattr(tokenizer, "chat_template", None))
        hidden = int(model.config.get_text_config().hidden_size)
        self.value_head: torch.nn.Linear | None = None
        if value_head:
            self.value_head = torch.nn.Linear(hidden, 1, device=model.device, dtype=torch.float32)
            torch.nn.init.zeros_(self.value_head.weight)  # V = 0 at start: no initial bias
            torch.nn.init.zeros_(self.value_head.bias)
        self.ref: Any | None = None
        if reference and not self.is_peft:
            self.ref = copy.deepcopy(model).eval().requires_grad_(False)

    # -- parameters and placement ---------------------------------------------------------------

    def actor_parameters(self) -> Iterator[torch.nn.Parameter]:
        return (p for p in self.model.parameters() if p.requires_grad)

    def value_parameters(self) -> Iterator[torch.nn.Parameter]:
        return iter(self.value_head.parameters()) if self.value_head is not None else iter(())

    @property
    def device(self) -> torch.device:
        return self.model.device  # type: ignore[no-any-return]

    def to(self, device: torch.device | str) -> Policy:
        for m in (self.model, self.ref, self.value_head):
            if m is not None:
                m.to(device)
        return self

    # -- rollouts -------------------------------------------------------------------------------

    def render(self, prompt: Prompt) -> str:
        """The text the model reads, as :meth:`memory_r1.llm.hf.HFModel.render` builds it."""
        if not self.chat:
            return render_completion(prompt)
        messages = [{"role": m.role, "content": m.content} for m in prompt.messages()]
        text = self.tokenizer.apply_chat_template(messages, tokenize=False,
                                                  add_generation_prompt=True)
        return str(text) + prompt.response_prefix

    @torch.no_grad()
    def generate(self, prompt_texts: list[str], n: int = 1, max_new_tokens: int = 32,
                 temperature: float = 1.0) -> Batch:
        """``n`` samples per prompt (rows ``i*n .. i*n+n-1`` share prompt ``i``).

        Pure sampling from the full distribution (no top-k/top-p, whatever the model's own
        generation config says), so ``sample_logp`` is the log-prob of the distribution the
        update assumes. ``temperature <= 0`` decodes greedily. No stop strings: tokens after a
        stop string would be trained on, so the model must learn to end with EOS.
        """
        enc = self.tokenizer(prompt_texts, return_tensors="pt", padding=True,
                             add_special_tokens=not self.chat).to(self.device)
        sample = temperature > 0
        gen_cfg = GenerationConfig(
            max_new_tokens=max_new_tokens, do_sample=sample, num_return_sequences=n,
            temperature=temperature if sample else None, top_k=0 if sample else None,
            top_p=1.0 if sample else None, eos_token_id=self.eos_ids,
            pad_token_id=self.tokenizer.pad_token_id, output_logits=True,
            return_dict_in_generate=True,
        )
        out = self.model.generate(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"],
                                  generation_config=gen_cfg)
        width = enc["input_ids"].shape[1]
        completion = out.sequences[:, width:]
        is_eos = torch.isin(completion, torch.tensor(self.eos_ids, device=completion.device))
        # 1 up to and including the first EOS: stopping is an action the policy is trained on.
        after_eos = (is_eos.long().cumsum(1) - is_eos.long()) > 0
        completion_mask = (~after_eos).float()
        logits = torch.stack(out.logits, dim=1).float()  # raw logits, before any processor
        if sample:
            logits = logits / temperature
        logp = logits.gather(-1, completion.unsqueeze(-1)).squeeze(-1) - logits.logsumexp(-1)
        prompt_mask = enc["attention_mask"].repeat_interleave(n, dim=0)
        texts = [self.tokenizer.decode(row[m.bool()], skip_special_tokens=True)
                 for row, m in zip(completion, completion_mask)]
        return Batch(
            input_ids=out.sequences,
            attention_mask=torch.cat([prompt_mask, completion_mask.long()], dim=1),
            completion_mask=completion_mask,
            sample_logp=logp * completion_mask,
            prompts=[t for t in prompt_texts for _ in range(n)],
            completions=texts,
            temperature=temperature if sample else 1.0,
        )

    # -- scoring --------------------------------------------------------------------------------

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                completion_mask: torch.Tensor, *, values: bool = False, temperature: float = 1.0,
                model: Any | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Log-probs ``(B, T)`` of the completion tokens and, if ``values``, values ``(B, T)``.

        Hidden state ``P - 1 + t`` predicts completion token ``t``: the model keeps logits for
        the last ``T + 1`` positions only and the final one (after the last token) is dropped.
        ``V_t`` is read from the same hidden state, the state *before* token ``t`` is chosen.
        Both are 0 where ``completion_mask`` is 0. Gradients flow unless called under no_grad.
        """
        t = completion_mask.shape[1]
        out = (model or self.model)(
            input_ids=input_ids, attention_mask=attention_mask,
            position_ids=position_ids(attention_mask), logits_to_keep=t + 1,
            output_hidden_states=values, use_cache=False,
        )
        logits = out.logits[:, :-1].float() / temperature
        targets = input_ids[:, -t:]
        logp = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - logits.logsumexp(-1)
        vals = None
        if values:
            if self.value_head is None:
                raise ValueError("values=True needs a Policy built with value_head=True")
            hidden = out.hidden_states[-1][:, -(t + 1):-1]
            vals = self.value_head(hidden.float()).squeeze(-1) * completion_mask
        return logp * completion_mask, vals

    def logprobs(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                 completion_mask: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
        """Completion log-probs ``(B, T)`` under the trainable policy (see :meth:`forward`)."""
        return self.forward(input_ids, attention_mask, completion_mask,
                            temperature=temperature)[0]

    @torch.no_grad()
    def ref_logprobs(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                     completion_mask: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
        """Completion log-probs ``(B, T)`` under the frozen reference policy."""
        if self.is_peft:
            ctx, model = self.model.disable_adapter(), None
        elif self.ref is not None:
            ctx, model = nullcontext(), self.ref
        else:
            raise ValueError("no reference policy: build the Policy with reference=True")
        with ctx:
            return self.forward(input_ids, attention_mask, completion_mask,
                                temperature=temperature, model=model)[0]

    # -- checkpoints ----------------------------------------------------------------------------

    def save(self, path: str | Path) -> None:
        """``save_pretrained`` (safetensors; adapters only with LoRA), tokenizer, value head."""
        path = Path(path)
        self.model.save_pretrained(path, safe_serialization=True)
        self.tokenizer.save_pretrained(path)
        if self.value_head is not None:
            save_file(self.value_head.state_dict(), str(path / "value_head.safetensors"))

    def export(self, path: str | Path) -> Path:
        """A plain HF checkpoint at ``path`` (safetensors + tokenizer) that ``HFModel`` loads.

        With LoRA the adapters are merged into a deep copy (memory x2 for a moment); the
        policy itself keeps training its adapters. The value head is not exported.
        """
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        model = copy.deepcopy(self.model).merge_and_unload() if self.is_peft else self.model
        model.save_pretrained(path, safe_serialization=True)
        self.tokenizer.save_pretrained(path)
        return path

    def load(self, path: str | Path) -> None:
        """Load trained weights saved by :meth:`save` into this policy, in place.

        The policy must be built from the same base model (the reference stays that base).
        """
        path = Path(path)
        if self.is_peft:
            from peft import set_peft_model_state_dict

            state = load_file(str(path / "adapter_model.safetensors"), device=str(self.device))
            set_peft_model_state_dict(self.model, state)
        else:
            loaded = type(self.model).from_pretrained(path, dtype=self.model.dtype)
            self.model.load_state_dict(loaded.state_dict())
        if self.value_head is not None:
            self.value_head.load_state_dict(load_file(str(path / "value_head.safetensors"),
                                                      device=str(self.device)))
