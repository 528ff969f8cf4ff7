"""The trainable policy: an HF causal LM (+ optional LoRA, + optional value head) (L3).

:class:`Policy` does three things for the trainer and nothing else:

* ``generate(prompt_texts, n, ...)`` samples ``n`` completions per prompt with
  :func:`memory_r1.llm.hf_decode.decode` (the loop inference uses: no logits processors, each
  prompt prefilled once for its ``n`` samples, stop strings as at inference) and returns a
  :class:`~memory_r1.rl.algorithms.rollout_batch.Batch` of token ids, masks and the sampling
  log-probs (its docstring gives the token layout). With LoRA the adapters are folded into
  temporary copies of the base weights while sampling (:func:`merged_lora`): the same
  function, without an adapter's two extra matmuls per layer and token;
* ``forward(...)`` / ``logprobs(...)`` recompute log-probs (and values) **only at completion
  positions** (:mod:`memory_r1.rl.algorithms.scoring`). With ``groups`` (rows of one prompt
  share a group id; the batch carries them) each distinct prompt runs **once**, with the same
  log-probs and gradients as the row-by-row computation (tests check both);
* ``ref_logprobs(...)`` under the frozen reference: a deep copy with ``requires_grad=False``
  for full fine-tuning, or the same model with its LoRA adapters disabled.

The model stays in ``eval()`` mode while training: dropout would make the rollout policy and
the trained policy differ, and the first PPO ratio would not be 1.

``autocast`` (e.g. ``torch.bfloat16``, :func:`memory_r1.llm.hf.resolve_precision`): every
pass (sampling, log-prob passes, the update) runs its decoder under ``torch.autocast``;
weights, LoRA adapters, optimizer states, the LM head, the value head and every log-prob stay
float32. :meth:`Policy.precision` is the region the algorithms wrap a minibatch's forward +
backward (or a no-grad pass) in, so the weight casts are made once per region, not per pass.
Sampled and recomputed log-probs then differ by bf16 rounding (``logp_mismatch`` in the
metrics; the update never uses the sampler's log-probs); with ``float32`` they agree to ~1e-6.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors.torch import load_file, save_file

from memory_r1.llm.base import Prompt, render_hf
from memory_r1.llm.hf_cache import use_grouped_attention
from memory_r1.llm.hf_decode import autocast_ctx, decode, lowp_linears
from memory_r1.rl.algorithms.rollout_batch import Batch
from memory_r1.rl.algorithms.scoring import completion_states

if TYPE_CHECKING:
    from peft import LoraConfig, PeftModel


def _eos_ids(model: Any, tokenizer: Any) -> list[int]:
    ids: list[int] = []
    for src in (getattr(model.generation_config, "eos_token_id", None), tokenizer.eos_token_id):
        for i in src if isinstance(src, list) else [src]:
            if i is not None and int(i) not in ids:
                ids.append(int(i))
    if not ids:
        raise ValueError("neither the tokenizer nor the generation config names an EOS token")
    return ids


@contextmanager
def merged_lora(model: PeftModel) -> Iterator[None]:
    """Run ``model`` (a peft LoRA model) with each active adapter folded into its base weight.

    Each LoRA layer's base weight is replaced, for the duration, by a new tensor
    ``W + delta`` and the adapters are disabled; on exit the original weight tensors are put
    back untouched (no in-place merge/unmerge, so no rounding drift of the base model across
    thousands of rollouts). Not for training: the merged copies carry no gradient.
    """
    from peft.tuners.lora import LoraLayer

    swapped: list[tuple[torch.nn.Module, torch.nn.Parameter]] = []
    try:
        with torch.no_grad():
            for module in model.modules():
                if not isinstance(module, LoraLayer) or module.merged:
                    continue
                base = module.get_base_layer()
                # peft declares get_delta_weight on each LoraLayer subclass, not on LoraLayer itself
                delta = sum(
                    module.get_delta_weight(a)  # type: ignore[operator]
                    for a in module.active_adapters
                    if a in module.lora_A
                )
                if isinstance(delta, torch.Tensor):
                    swapped.append((base, base.weight))
                    base.weight = torch.nn.Parameter(
                        base.weight + delta.to(base.weight.dtype), requires_grad=False
                    )
        with model.disable_adapter():
            yield
    finally:
        for base, weight in swapped:
            base.weight = weight


class Policy:
    """An HF causal LM and its tokenizer, ready for rollouts and updates.

    ``lora``: a ``peft.LoraConfig``; the model is wrapped with ``get_peft_model`` and only the
    adapters train; ``seed`` (when given) seeds torch right before the adapters are created, so
    one seed gives one initialisation. ``value_head``: adds ``Linear(hidden, 1)`` on the last
    hidden state (a critic sharing the policy's trunk; PPO). ``reference``: keep a frozen
    reference (a deep copy for full fine-tuning, memory x2; free with LoRA). ``autocast``: see
    the module docstring. ``shared_prefix=False`` switches prompt sharing off in the scoring
    passes (``forward``, ``logprobs``, ``ref_logprobs``: each row reads its own prompt; the
    benchmark's "old path"; sampling prefills each prompt once either way),
    ``merge_lora=False`` samples through the unmerged adapters.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        lora: LoraConfig | None = None,
        value_head: bool = False,
        reference: bool = True,
        autocast: torch.dtype | None = None,
        shared_prefix: bool = True,
        merge_lora: bool = True,
        seed: int | None = None,
    ) -> None:
        self.tokenizer = tokenizer
        tokenizer.padding_side = "left"  # generation appends on the right
        self.eos_ids = _eos_ids(model, tokenizer)
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token_id = self.eos_ids[0]
        self.is_peft = lora is not None
        self.autocast, self.shared_prefix, self.merge_lora = autocast, shared_prefix, merge_lora
        if seed is not None:
            torch.manual_seed(seed)
        if lora is not None:
            from peft import get_peft_model  # optional until LoRA is asked for

            model = get_peft_model(model, lora)
        use_grouped_attention(model)
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
        return self.model.device

    def to(self, device: torch.device | str) -> Policy:
        for m in (self.model, self.ref, self.value_head):
            if m is not None:
                m.to(device)
        return self

    # -- rollouts -------------------------------------------------------------------------------

    def render(self, prompt: Prompt) -> str:
        """The text the model reads, as :meth:`memory_r1.llm.hf.HFModel.render` builds it."""
        return render_hf(prompt, self.tokenizer, self.chat)

    def sampling_model(self) -> AbstractContextManager[None]:
        """A context in which ``self.model`` samples fastest (LoRA folded in, if any)."""
        return merged_lora(self.model) if self.is_peft and self.merge_lora else nullcontext()

    def encode(self, prompt_texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        enc = self.tokenizer(
            list(prompt_texts), return_tensors="pt", padding=True, add_special_tokens=not self.chat
        )
        return enc["input_ids"].to(self.device), enc["attention_mask"].to(self.device)

    @torch.no_grad()
    def generate(
        self,
        prompt_texts: list[str],
        n: int = 1,
        max_new_tokens: int = 32,
        temperature: float = 1.0,
        stops: Sequence[str] = (),
    ) -> Batch:
        """``n`` samples per prompt (rows ``i*n .. i*n+n-1`` share prompt ``i``: one group).

        Pure sampling from ``softmax(logits / temperature)`` (``temperature <= 0``: greedy),
        whatever the checkpoint's generation config says, so ``sample_logp`` is the log-prob
        of the distribution the update assumes. ``stops`` end a row as at inference (its
        tokens up to the stop string are trained on; the text is cut before it).
        """
        ids, att = self.encode(prompt_texts)
        with self.sampling_model():
            out = decode(
                self.model,
                self.tokenizer,
                ids,
                att,
                n=n,
                max_new_tokens=max_new_tokens,
                eos_ids=self.eos_ids,
                temperature=temperature,
                stops=stops,
                autocast=self.autocast,
            )
        rows = torch.arange(len(prompt_texts), device=self.device).repeat_interleave(n)
        sample = temperature > 0
        return Batch(
            input_ids=torch.cat([ids[rows], out.tokens], dim=1),
            attention_mask=torch.cat([att[rows], out.mask.long()], dim=1),
            completion_mask=out.mask,
            sample_logp=out.logp,
            prompts=[t for t in prompt_texts for _ in range(n)],
            completions=out.texts,
            temperature=temperature if sample else 1.0,
            groups=rows.clone(),
            budget=max_new_tokens,
        )

    # -- scoring --------------------------------------------------------------------------------

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        completion_mask: torch.Tensor,
        *,
        values: bool = False,
        temperature: float = 1.0,
        model: Any | None = None,
        groups: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Log-probs ``(B, T)`` of the completion tokens and, if ``values``, values ``(B, T)``.

        Hidden state ``P - 1 + t`` predicts completion token ``t``; ``V_t`` is read from the
        same hidden state, the state *before* token ``t`` is chosen. Both are 0 where
        ``completion_mask`` is 0; columns after the longest row's end are not computed (a
        micro-batch costs its own longest completion, not the batch's). ``groups`` (unless
        ``shared_prefix`` is off): each distinct prompt is run once
        (:func:`~memory_r1.rl.algorithms.scoring.shared_prompt_states`). Gradients flow unless
        called under no_grad.
        """
        if values and self.value_head is None:
            raise ValueError("values=True needs a Policy built with value_head=True")
        t = completion_mask.shape[1]
        longest = max(int(completion_mask.sum(1).max()), 1) if len(completion_mask) else t
        if longest < t:  # columns after every row's end: run without them, pad back with 0
            cut = input_ids.shape[1] - (t - longest)
            logp, vals = self.forward(
                input_ids[:, :cut],
                attention_mask[:, :cut],
                completion_mask[:, :longest],
                values=values,
                temperature=temperature,
                model=model,
                groups=groups,
            )
            pad = (0, t - longest)
            return (
                torch.nn.functional.pad(logp, pad),
                None if vals is None else torch.nn.functional.pad(vals, pad),
            )
        model = model or self.model
        with self.precision(model):
            logits, hidden = completion_states(
                model,
                input_ids,
                attention_mask,
                t,
                groups=groups if self.shared_prefix else None,
                autocast=self.autocast,
            )
        logits = logits / temperature
        targets = input_ids[:, -t:]
        logp = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - logits.logsumexp(-1)
        vals = None
        if values:
            assert self.value_head is not None
            with torch.autocast(device_type=hidden.device.type, enabled=False):  # float32
                vals = self.value_head(hidden.float()).squeeze(-1) * completion_mask
        return logp * completion_mask, vals

    @contextmanager
    def precision(self, model: Any | None = None) -> Iterator[None]:
        """The region scoring and updates run in: with ``autocast``, one ``torch.autocast``
        (so the bf16 casts of trainable weights are made once per region, shared by the prompt
        and completion passes and by every micro-batch; wrap forward + backward, never the
        optimizer step, or the casts go stale) and, under no_grad, the decoder's linear weights
        cast once for the region (:func:`~memory_r1.llm.hf_decode.lowp_linears`: autocast does
        not cache casts of frozen weights). Same numbers as autocast alone; a no-op in fp32."""
        if self.autocast is None:
            yield
            return
        frozen = (
            lowp_linears(model or self.model, self.autocast) if not torch.is_grad_enabled() else nullcontext()
        )
        with autocast_ctx(self.device, self.autocast), frozen:
            yield

    def logprobs(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        completion_mask: torch.Tensor,
        temperature: float = 1.0,
        groups: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Completion log-probs ``(B, T)`` under the trainable policy (see :meth:`forward`)."""
        return self.forward(
            input_ids, attention_mask, completion_mask, temperature=temperature, groups=groups
        )[0]

    @torch.no_grad()
    def ref_logprobs(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        completion_mask: torch.Tensor,
        temperature: float = 1.0,
        groups: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Completion log-probs ``(B, T)`` under the frozen reference policy."""
        if self.is_peft:
            ctx, model = self.model.disable_adapter(), None
        elif self.ref is not None:
            ctx, model = nullcontext(), self.ref
        else:
            raise ValueError("no reference policy: build the Policy with reference=True")
        with ctx:
            return self.forward(
                input_ids,
                attention_mask,
                completion_mask,
                temperature=temperature,
                model=model,
                groups=groups,
            )[0]

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
            self.value_head.load_state_dict(
                load_file(str(path / "value_head.safetensors"), device=str(self.device))
            )
