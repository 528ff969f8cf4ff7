"""transformers backend: the torch model that training updates (L1; the only torch import here).

``HFModel(model)`` loads ``AutoTokenizer`` + ``AutoModelForCausalLM`` from

* a Hugging Face directory (``save_pretrained`` output), or
* a catalogue name / ``.gguf`` path, via ``gguf_file=``: transformers de-quantises the GGUF to
  ``dtype`` (~13 s for SmolLM2, ~45 s for Gemma 3 270M; save a bf16 copy for repeated use).
  GPT-2-style vocabularies (SmolLM2) get transformers' own GGUF tokenizer; SentencePiece-BPE
  ones (Gemma) get :func:`spm_tokenizer_from_gguf`, because transformers 5.17 mis-converts them.

Rendering matches the other backends: ``tokenizer.apply_chat_template`` (+ ``response_prefix``)
when the tokenizer has a template (``chat=True``), else :func:`render_completion` with
:data:`COMPLETION_STOPS`. Decoding is :func:`memory_r1.llm.hf_decode.decode` (no logits
processors, whatever the checkpoint's ``generation_config.json`` says; stop strings end a row
and cut its text; the same loop RL rollouts and validation use). ``complete_many`` batches
with left padding. ``Sampling.json_schema`` is **not** enforced: callers parse and penalise invalid
output (that is what RL trains away). ``.model`` and ``.tokenizer`` are public for training.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from memory_r1.errors import ModelError, UnknownModelError
from memory_r1.llm.base import COMPLETION_STOPS, Prompt, Sampling, render_hf
from memory_r1.llm.hf_cache import use_grouped_attention
from memory_r1.llm.hf_decode import decode
from memory_r1.llm.models import gguf_metadata, resolve_model
from memory_r1.types import Completion


def _source(model: str) -> tuple[str, dict[str, Any], str, Path | None]:
    """(from_pretrained path, extra kwargs, display name, GGUF file or None) for ``model``."""
    path = Path(model).expanduser()
    if path.is_dir():
        return str(path), {"local_files_only": True}, path.name, None
    try:
        spec = resolve_model(model)
    except UnknownModelError:
        return model, {}, model, None  # a hub id: works when the hub (or its cache) is reachable
    gguf = spec.locate()
    return str(gguf.parent), {"gguf_file": gguf.name, "local_files_only": True}, spec.name, gguf


def _peft_dir(model: str) -> Path | None:
    """The PEFT adapter directory ``model`` names (a path, or ``adapter:<name>`` for a
    shipped adapter's PEFT files), else None."""
    if model.startswith("adapter:"):  # resolved and its files checked by load_adapter
        from memory_r1.llm.adapters import ADAPTER_NAMES, load_adapter

        name = model.removeprefix("adapter:")
        if name not in ADAPTER_NAMES:
            raise ModelError(f"{model!r}: no shipped adapter {name!r} (shipped: {', '.join(ADAPTER_NAMES)})")
        return load_adapter(name, check_base=False).directory
    path = Path(model).expanduser()
    return path if (path / "adapter_config.json").is_file() else None


def _peft_base(adapter: Path) -> str:
    """The base model a PEFT adapter directory was trained over (its adapter_config.json)."""
    cfg_file = adapter / "adapter_config.json"
    try:
        base = json.loads(cfg_file.read_text(encoding="utf-8"))["base_model_name_or_path"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ModelError(f"{cfg_file}: no readable base_model_name_or_path ({e})") from e
    if not isinstance(base, str) or not base:
        raise ModelError(f"{cfg_file}: base_model_name_or_path must be a model name or path")
    return base


def spm_tokenizer_from_gguf(gguf: Path) -> Any | None:
    """A fast BPE tokenizer equal to llama.cpp's for a SentencePiece-BPE GGUF, else None.

    Why: transformers 5.17 converts such a vocabulary (``tokenizer.ggml.model == "llama"``,
    e.g. Gemma 3) to a *Unigram* model over the GGUF's rank-like scores, which splits
    "Answer" into "An|sw|er" and adds no <bos>, so the model reads garbage. SentencePiece BPE
    merges the adjacent pair whose merged piece has the highest score; the same ranking as BPE
    merges reproduces llama.cpp's ids (checked on unicode, bytes, digits, JSON; see tests).
    """
    keys = ("tokenizer.ggml.tokens", "tokenizer.ggml.scores", "tokenizer.ggml.token_type")
    meta = gguf_metadata(gguf, arrays=keys)
    if meta.get("tokenizer.ggml.model") != "llama":
        return None
    from tokenizers import AddedToken, Tokenizer, decoders, normalizers, processors
    from tokenizers.models import BPE
    from transformers import PreTrainedTokenizerFast

    tokens, scores, types = (meta[k] for k in keys)
    vocab = {tok: i for i, tok in enumerate(tokens)}
    normal = (1, 6)  # token types: 1 normal, 3 control, 4 user-defined, 6 byte (<0x0A>)
    ranked = []
    for piece, idx in vocab.items():
        if types[idx] != 1:
            continue
        for k in range(1, len(piece)):
            left, right = vocab.get(piece[:k]), vocab.get(piece[k:])
            if left is not None and right is not None and types[left] in normal and types[right] in normal:
                ranked.append((-scores[idx], idx, left, right))
    ranked.sort()
    merges = [(tokens[left], tokens[right]) for _, _, left, right in ranked]
    unk = tokens[int(meta.get("tokenizer.ggml.unknown_token_id", 0))]
    tok = Tokenizer(BPE(vocab=vocab, merges=merges, byte_fallback=True, fuse_unk=True, unk_token=unk))
    steps: list[normalizers.Normalizer] = [normalizers.Replace(" ", "\u2581")]
    if meta.get("tokenizer.ggml.add_space_prefix", False):
        steps.insert(0, normalizers.Prepend("\u2581"))  # Llama-2 style dummy prefix
    tok.normalizer = normalizers.Sequence(steps)
    tok.decoder = decoders.Sequence(
        [decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse()]
    )
    tok.add_special_tokens([AddedToken(tokens[i], special=True, normalized=False)
                            for i, t in enumerate(types) if t == 3])  # fmt: skip
    tok.add_tokens([AddedToken(tokens[i], normalized=False) for i, t in enumerate(types) if t == 4])
    special = {name: tokens[int(meta[f"tokenizer.ggml.{name}_token_id"])]
               for name in ("bos", "eos", "padding") if f"tokenizer.ggml.{name}_token_id" in meta}  # fmt: skip
    if meta.get("tokenizer.ggml.add_bos_token", False) and "bos" in special:
        bos = special["bos"]
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A $B", special_tokens=[(bos, vocab[bos])]
        )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=special.get("bos"),
        eos_token=special.get("eos"),
        pad_token=special.get("padding"),
        unk_token=unk,
    )
    if meta.get("tokenizer.chat_template"):
        fast.chat_template = meta["tokenizer.chat_template"]
    return fast


def _cpu_has_bf16() -> bool:
    """True when the CPU has native bf16 matmuls (AVX512_BF16 or AMX); Linux flags only."""
    try:
        flags = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def _forget_gguf_quantizer(model: Any) -> None:
    """Drop the GGUF "quantizer" transformers attaches to a model loaded from a GGUF file.

    The loader de-quantizes every tensor into ordinary torch weights, but keeps a
    ``GgufHfQuantizer`` that makes ``save_pretrained`` refuse ("not serializable"), so a
    model trained from a GGUF could never be exported. The weights are plain tensors: forget it.
    """
    model.hf_quantizer = None
    for attr in ("is_quantized", "quantization_method"):
        if hasattr(model, attr):
            with contextlib.suppress(AttributeError):  # a read-only property in some versions
                setattr(model, attr, False if attr == "is_quantized" else None)
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config


def resolve_precision(dtype: str, device: str) -> tuple[str, torch.dtype | None]:
    """``(weights dtype, autocast dtype or None)`` for a ``--dtype`` choice on ``device``.

    ``"auto"``: on CUDA bf16 weights; on a CPU with native bf16 (AVX512_BF16 / AMX) fp32
    weights with **bf16 autocast** for every pass (prefill, decode steps, log-prob passes, the
    update): measured here, SmolLM2 forward+backward over 4 x 512 tokens took 17.4 s in fp32
    and 7.4 s under bf16 autocast, and a 64-token decode of 16 rows 15.2 s vs 10.8 s (the
    decode loop casts the decoder's linears once, see :mod:`memory_r1.llm.hf_decode`); LoRA
    adapters, the LM head and AdamW states stay fp32. On a CPU without bf16 units, plain fp32
    (emulated bf16 was slower: a 512x576x1536 matmul 52 ms vs 32 ms). Any explicit dtype means
    those weights and no autocast (``float32``: exact fp32 everywhere).
    """
    if dtype != "auto":
        return dtype, None
    if device.startswith("cuda"):
        return "bfloat16", None
    return ("float32", torch.bfloat16) if _cpu_has_bf16() else ("float32", None)


def resolve_dtype(dtype: str, device: str) -> str:
    """The weights dtype of :func:`resolve_precision`."""
    return resolve_precision(dtype, device)[0]


class HFModel:
    """A causal LM in transformers, satisfying ``ChatModel`` (with real batching).

    ``dtype`` is a torch dtype name or ``"auto"`` (:func:`resolve_precision`: weights dtype and
    bf16 autocast where the CPU has native bf16). ``device=None`` picks CUDA when available.
    ``batch_size`` bounds one decoding call in ``complete_many``. Calls are serialised by a lock
    (one model, one forward at a time). :meth:`wrap` gives the same object over a model already
    in memory (the policy being trained), so validation decodes exactly as inference does.
    """

    def __init__(
        self,
        model: str,
        dtype: str = "auto",
        device: str | None = None,
        batch_size: int = 8,
    ) -> None:
        torch.set_num_threads(os.cpu_count() or 1)  # torch's default can be lower in containers
        adapter = _peft_dir(model)
        base = model if adapter is None else _peft_base(adapter)
        src, kwargs, self.name, gguf = _source(base)
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.batch_size = batch_size
        dtype, self.autocast = resolve_precision(dtype, self.device)
        torch_dtype = getattr(torch, dtype, None)
        if not isinstance(torch_dtype, torch.dtype):
            raise ModelError(f"unknown dtype {dtype!r}: use bfloat16, float16 or float32")
        start = time.perf_counter()
        try:
            spm = spm_tokenizer_from_gguf(gguf) if gguf is not None else None
            self.tokenizer = spm or AutoTokenizer.from_pretrained(src, **kwargs)
            self.model = AutoModelForCausalLM.from_pretrained(src, dtype=torch_dtype, **kwargs)
        except (OSError, ValueError, KeyError) as e:
            raise ModelError(f"transformers could not load {model!r}: {e}") from e
        if gguf is not None:
            _forget_gguf_quantizer(self.model)
        if adapter is not None:  # a PEFT LoRA dir (e.g. a shipped adapter): merged over its base
            from peft import PeftModel

            self.model = PeftModel.from_pretrained(self.model, str(adapter)).merge_and_unload()
            self.name = f"{self.name}+{adapter.name}"
        # transformers types PreTrainedModel.to as @wraps(torch.nn.Module.to), which mypy binds wrongly
        self.model.to(self.device).eval()  # type: ignore[arg-type]
        self.load_seconds = time.perf_counter() - start
        self._setup()

    @classmethod
    def wrap(
        cls,
        model: Any,
        tokenizer: Any,
        *,
        name: str = "policy",
        autocast: torch.dtype | None = None,
        batch_size: int = 8,
    ) -> HFModel:
        """An ``HFModel`` over an already loaded model and tokenizer (nothing is copied)."""
        self = cls.__new__(cls)
        self.model, self.tokenizer, self.name = model, tokenizer, name
        self.device = str(next(model.parameters()).device)
        self.batch_size, self.autocast, self.load_seconds = batch_size, autocast, 0.0
        self._setup()
        return self

    def _setup(self) -> None:
        use_grouped_attention(self.model)
        self.chat = bool(getattr(self.tokenizer, "chat_template", None))
        self.tokenizer.padding_side = "left"  # generation appends on the right
        self._eos_ids = self._collect_eos_ids()
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token_id = self._eos_ids[0]
        self.context_window: int | None = (
            int(getattr(self.model.config, "max_position_embeddings", 0) or 0) or None
        )
        self._lock = threading.Lock()

    def _collect_eos_ids(self) -> list[int]:
        ids: list[int] = []
        for source in (self.model.generation_config.eos_token_id, self.tokenizer.eos_token_id):
            for i in source if isinstance(source, list) else [source]:
                if i is not None and i not in ids:
                    ids.append(int(i))
        if not ids:
            raise ModelError(f"{self.name}: neither tokenizer nor generation config names an EOS")
        return ids

    # -- rendering -----------------------------------------------------------------------------

    def render(self, prompt: Prompt) -> str:
        """The exact text the model reads (same contract as the llama.cpp backend)."""
        return render_hf(prompt, self.tokenizer, self.chat)

    def _encode(self, texts: list[str]) -> dict[str, torch.Tensor]:
        # A chat template writes its own special tokens; completion text needs the tokenizer's
        # (Gemma's <bos>), as in the llama.cpp backend.
        enc = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=not self.chat)
        return {k: v.to(self.device) for k, v in enc.items()}

    def tokenize_count(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _stops(self, sampling: Sampling) -> list[str]:
        stops = list(sampling.stop)
        if not self.chat:
            stops += [s for s in COMPLETION_STOPS if s not in stops]
        return stops

    # -- generation ----------------------------------------------------------------------------

    def complete(self, prompt: Prompt, sampling: Sampling) -> Completion:
        return self.complete_many([prompt], sampling)[0]

    def complete_many(self, prompts: Sequence[Prompt], sampling: Sampling) -> list[Completion]:
        """Batched decoding, results in prompt order.

        Prompts are grouped by rendered length (batches of similar width pad little);
        ``Completion.seconds`` is the wall time of the batch the prompt was in;
        ``completion_tokens`` counts generated tokens up to (not including) EOS.
        """
        order = sorted(range(len(prompts)), key=lambda i: len(self.render(prompts[i])))
        done: dict[int, Completion] = {}
        for i in range(0, len(order), self.batch_size):
            idx = order[i : i + self.batch_size]
            done.update(zip(idx, self._batch([prompts[j] for j in idx], sampling)))
        return [done[i] for i in range(len(prompts))]

    def _batch(self, prompts: list[Prompt], sampling: Sampling) -> list[Completion]:
        start = time.perf_counter()
        stops = self._stops(sampling)
        enc = self._encode([self.render(p) for p in prompts])
        n_in = enc["input_ids"].shape[1]
        if self.context_window and n_in >= self.context_window:
            raise ModelError(f"{self.name}: prompt is {n_in} tokens, context is {self.context_window}")
        with self._lock:
            if sampling.seed is not None and sampling.temperature > 0:
                torch.manual_seed(sampling.seed)  # global RNG: reproducible, not thread-isolated
            try:
                out = decode(
                    self.model,
                    self.tokenizer,
                    enc["input_ids"],
                    enc["attention_mask"],
                    max_new_tokens=sampling.max_tokens,
                    eos_ids=self._eos_ids,
                    temperature=sampling.temperature,
                    top_p=sampling.top_p,
                    stops=stops,
                    autocast=self.autocast,
                )
            except (RuntimeError, ValueError) as e:
                raise ModelError(f"{self.name}: decoding failed: {e}") from e
        seconds = time.perf_counter() - start
        results = []
        n_prompt = enc["attention_mask"].sum(1).tolist()
        for i, text in enumerate(out.texts):
            kept = int(out.mask[i].sum())
            results.append(
                Completion(
                    text=text,
                    prompt_tokens=int(n_prompt[i]),
                    completion_tokens=kept - (out.finish[i] == "eos"),  # EOS is not output
                    finish_reason="length" if out.finish[i] == "length" else "stop",
                    seconds=seconds,
                    meta={"backend": "hf", "model": self.name},
                )
            )
        return results

    def __repr__(self) -> str:
        return f"HFModel({self.name!r}, device={self.device!r}, chat={self.chat})"
