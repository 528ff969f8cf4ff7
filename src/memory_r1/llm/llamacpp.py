"""In-process llama.cpp backend (llama-cpp-python): the embedded default engine (L1).

One uniform path for every model: render the prompt to TEXT, tokenize it ourselves, then call
``Llama.create_completion`` on the token ids.

* chat models: the GGUF's own ``tokenizer.chat_template`` (jinja2, ``add_generation_prompt``)
  followed by ``prompt.response_prefix``; the engine stops at the end-of-turn token.
* base models: :func:`render_completion` (which already ends with the prefix), with
  :data:`COMPLETION_STOPS` added to the caller's stops.

Tokenizing ourselves (instead of passing the string) gives exact prompt counts before any work,
avoids a second BOS when a template already writes one, and lets us refuse over-long prompts:
nothing is ever truncated silently. ``Sampling.json_schema`` becomes a GBNF grammar
(``LlamaGrammar.from_json_schema``), so the output is guaranteed to parse (unless cut off by
``max_tokens``: ``finish_reason == "length"``).

Sampling semantics follow OpenAI's: temperature and top_p only (llama.cpp's default top_k=40 and
min_p=0.05 are switched off), temperature 0 = greedy. One ``Llama`` object is not re-entrant, so
calls are serialised by a lock; run one model per thread for parallelism.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, cast

from memory_r1.errors import ModelError
from memory_r1.llm.base import COMPLETION_STOPS, Prompt, Sampling, render_completion
from memory_r1.llm.grammar_greedy import greedy_with_grammar
from memory_r1.llm.models import ModelSpec, resolve_model
from memory_r1.types import Completion

if TYPE_CHECKING:
    from llama_cpp.llama_types import ChatCompletionRequestMessage

try:  # the import error says what to install instead of a bare ModuleNotFoundError
    import llama_cpp
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter
except ModuleNotFoundError as _e:  # pragma: no cover - depends on the install
    raise ModelError(
        'the llamacpp backend needs llama-cpp-python: pip install "llama-cpp-python==0.3.36"'
    ) from _e


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))  # respects taskset / container CPU masks
    except AttributeError:  # pragma: no cover - non-Linux
        return os.cpu_count() or 1


class LlamaCppModel:
    """A GGUF model run in this process.

    ``model`` is a catalogue name (``smollm2-135m``, ``gemma3-270m``) or a path to a ``.gguf``.
    ``n_ctx`` is clamped to the model's trained context. ``n_threads=None`` uses every CPU this
    process may run on (llama-cpp-python's own default is half of them). ``load_seconds`` records
    how long the weights took to load. ``lora_path``: a GGUF LoRA adapter applied over the model
    at load time (llama.cpp's ``--lora``), e.g. a trained agent over the default GGUF.
    """

    def __init__(
        self,
        model: str = "smollm2-135m",
        n_ctx: int = 4096,
        n_threads: int | None = None,
        seed: int = 0,
        verbose: bool = False,
        lora_path: str | None = None,
    ) -> None:
        self.spec: ModelSpec = resolve_model(model)
        self.name = self.spec.name
        self.chat = self.spec.chat
        path = self.spec.locate()
        threads = n_threads or _cpu_count()
        start = time.perf_counter()
        try:
            self._llm = llama_cpp.Llama(
                model_path=str(path),
                n_ctx=min(n_ctx, self.spec.context),
                n_threads=threads,
                n_threads_batch=threads,
                seed=seed,
                verbose=verbose,
                lora_path=str(lora_path) if lora_path else None,
            )
        except (ValueError, RuntimeError) as e:
            raise ModelError(f"llama.cpp could not load {path}: {e}") from e
        self.load_seconds = time.perf_counter() - start
        self.context_window: int = self._llm.n_ctx()
        self.path = path
        self.lora_path = lora_path
        self._lock = threading.Lock()
        self._grammars: dict[str, Any] = {}
        self._bos_text = self._token_text(self._llm.token_bos())
        self._formatter: Jinja2ChatFormatter | None = None
        if self.chat:
            template = self._llm.metadata.get("tokenizer.chat_template")
            if not template:
                raise ModelError(f"{path}: catalogue says chat but the GGUF has no template")
            self._formatter = Jinja2ChatFormatter(
                template=template,
                eos_token=self._token_text(self._llm.token_eos()),
                bos_token=self._bos_text,
                add_generation_prompt=True,
            )

    def _token_text(self, token_id: int) -> str:
        return self._llm._model.token_get_text(token_id) if token_id >= 0 else ""

    # -- rendering -----------------------------------------------------------------------------

    def render(self, prompt: Prompt) -> str:
        """The exact text the model reads (template + response prefix, or completion text)."""
        if self._formatter is None:
            return render_completion(prompt)
        # roles are system/user/assistant with str content: valid request messages
        messages = cast(
            "list[ChatCompletionRequestMessage]",
            [{"role": m.role, "content": m.content} for m in prompt.messages()],
        )
        return self._formatter(messages=messages).prompt + prompt.response_prefix

    def _tokens(self, text: str) -> list[int]:
        # add_bos=True asks llama.cpp for the model's *own* special prefix (none for SmolLM2,
        # <bos> for Gemma); skip it when the template has written the BOS text already.
        add_bos = not (self._bos_text and text.startswith(self._bos_text))
        return self._llm.tokenize(text.encode("utf-8"), add_bos=add_bos, special=True)

    def tokenize_count(self, text: str) -> int:
        """Number of tokens ``text`` takes (special tokens parsed, no BOS added)."""
        return len(self._llm.tokenize(text.encode("utf-8"), add_bos=False, special=True))

    def _grammar(self, schema: Mapping[str, Any] | None) -> Any:
        if schema is None:
            return None
        key = json.dumps(schema, sort_keys=True)
        if key not in self._grammars:  # schema -> GBNF conversion is pure Python; do it once
            try:
                self._grammars[key] = llama_cpp.LlamaGrammar.from_json_schema(
                    json.dumps(schema), verbose=False
                )
            except (ValueError, KeyError, NotImplementedError) as e:
                raise ModelError(f"cannot turn this JSON schema into a grammar: {e}") from e
        return self._grammars[key]

    # -- generation ----------------------------------------------------------------------------

    def complete(self, prompt: Prompt, sampling: Sampling) -> Completion:
        """Generate one completion; ``text`` excludes ``prompt.response_prefix``.

        Raises :class:`ModelError` when the prompt does not fit the context window (with the
        counts), or when llama.cpp fails. A prompt that fits but leaves less room than
        ``max_tokens`` generates until the window is full (``finish_reason == "length"``).
        """
        start = time.perf_counter()
        text = self.render(prompt)
        tokens = self._tokens(text)
        if len(tokens) >= self.context_window:
            raise ModelError(
                f"{self.name}: prompt is {len(tokens)} tokens, context window is {self.context_window}"
            )
        stops = self._stops(sampling)
        greedy = sampling.temperature <= 0.0
        grammar = self._grammar(sampling.json_schema)
        if greedy and grammar is not None:  # fast path: grammar checked on top tokens first
            with self._lock:
                try:
                    text, n_out, finish = greedy_with_grammar(
                        self._llm, tokens, grammar, sampling.max_tokens, stops
                    )
                except (ValueError, RuntimeError) as e:
                    raise ModelError(f"{self.name}: llama.cpp generation failed: {e}") from e
            return Completion(
                text=text,
                prompt_tokens=len(tokens),
                completion_tokens=n_out,
                finish_reason=finish,
                seconds=time.perf_counter() - start,
                meta={"backend": "llamacpp", "model": self.name},
            )
        with self._lock:
            try:
                out = self._llm.create_completion(
                    tokens,
                    max_tokens=sampling.max_tokens,
                    temperature=0.0 if greedy else sampling.temperature,
                    top_p=1.0 if greedy else sampling.top_p,
                    top_k=1 if greedy else 0,  # 0 = off: plain temperature/top-p sampling
                    min_p=0.0,
                    repeat_penalty=1.0,
                    stop=stops or None,
                    seed=sampling.seed,
                    grammar=grammar,
                )
            except (ValueError, RuntimeError) as e:
                raise ModelError(f"{self.name}: llama.cpp generation failed: {e}") from e
        choice = out["choices"][0]  # type: ignore[index]
        usage = out.get("usage", {})  # type: ignore[union-attr]
        return Completion(
            text=choice["text"],
            prompt_tokens=int(usage.get("prompt_tokens", len(tokens))),
            completion_tokens=int(usage.get("completion_tokens", 0)),
            finish_reason=choice.get("finish_reason") or "stop",
            seconds=time.perf_counter() - start,
            meta={"backend": "llamacpp", "model": self.name},
        )

    def _stops(self, sampling: Sampling) -> list[str]:
        """The call's stop strings, then the model's own, then (completion mode) the turn markers."""
        stops = list(sampling.stop) + [s for s in self.spec.stops if s not in sampling.stop]
        if not self.chat:
            stops += [s for s in COMPLETION_STOPS if s not in stops]
        return stops

    def __repr__(self) -> str:
        return f"LlamaCppModel({self.name!r}, n_ctx={self.context_window}, chat={self.chat})"
