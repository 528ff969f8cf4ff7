"""The seam every LLM backend satisfies (L1; stdlib and ``memory_r1.types`` only; ``Completion``,
what a backend returns, lives in the types layer).

A ``Prompt`` is backend-neutral: a system message, optional few-shot (user, assistant) pairs and
the final user message, plus an optional ``response_prefix`` the answer must start with. Each
backend renders it in one of two ways (``render_completion`` below is the shared one):

* **chat**: the model's own chat template (SmolLM2's ChatML, an OpenAI endpoint's messages);
  few-shot pairs become earlier turns;
* **completion**: for base models without a template (Gemma 3 270M base) a plain few-shot text
  with ``### Instruction / ### Input / ### Response`` blocks, stopped at the next block header.

``Sampling.json_schema`` asks for schema-constrained decoding where the backend offers it
(llama.cpp grammars, ``response_format`` on OpenAI-compatible servers); backends that cannot
constrain ignore it, and the caller's parser copes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

from memory_r1.types import Completion

Role = Literal["system", "user", "assistant"]


@dataclass(frozen=True)
class Message:
    role: Role
    content: str


@dataclass(frozen=True)
class Prompt:
    system: str
    user: str
    examples: tuple[tuple[str, str], ...] = ()  # few-shot (user, assistant) pairs
    response_prefix: str = ""  # text the response is forced to start with (prefilled)

    def messages(self) -> list[Message]:
        """Chat rendering: system, the examples as earlier turns, then the user message."""
        out = [Message("system", self.system)] if self.system else []
        for user, assistant in self.examples:
            out += [Message("user", user), Message("assistant", assistant)]
        out.append(Message("user", self.user))
        return out


#: Block headers of the completion rendering; generation stops at the next header.
COMPLETION_STOPS: tuple[str, ...] = ("\n### ", "\n###", "<eos>", "<end_of_turn>")


def render_completion(prompt: Prompt) -> str:
    """Few-shot completion text for a model without a chat template.

    The prefix (if any) is part of the returned text; the model continues after it.
    """
    parts = []
    if prompt.system:
        parts.append(prompt.system.strip() + "\n")
    for user, assistant in prompt.examples:
        parts.append(f"### Input:\n{user.strip()}\n\n### Response:\n{assistant.strip()}\n")
    parts.append(f"### Input:\n{prompt.user.strip()}\n\n### Response:\n{prompt.response_prefix}")
    return "\n".join(parts)


def render_hf(prompt: Prompt, tokenizer: Any, chat: bool) -> str:
    """The text an HF model reads (``HFModel`` and the RL policy): with ``chat`` the tokenizer's
    ``apply_chat_template`` (generation prompt added) + ``response_prefix``, else
    :func:`render_completion`."""
    if not chat:
        return render_completion(prompt)
    messages = [{"role": m.role, "content": m.content} for m in prompt.messages()]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return str(text) + prompt.response_prefix


@dataclass(frozen=True)
class Sampling:
    max_tokens: int = 256
    temperature: float = 0.0  # 0 = greedy, as the paper evaluates
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = 0
    json_schema: Mapping[str, Any] | None = None


@runtime_checkable
class ChatModel(Protocol):
    """One LLM. ``chat`` says which rendering the backend uses for this model;
    ``context_window`` is its prompt + completion limit in tokens (None: the backend cannot tell,
    e.g. a remote endpoint not told it)."""

    name: str
    chat: bool
    context_window: int | None

    def complete(self, prompt: Prompt, sampling: Sampling) -> Completion: ...


def complete_many(model: ChatModel, prompts: Sequence[Prompt], sampling: Sampling) -> list[Completion]:
    """Default batched call: one at a time. Backends with real batching override via a method."""
    batched = getattr(model, "complete_many", None)
    if batched is not None:
        return list(batched(prompts, sampling))
    return [model.complete(p, sampling) for p in prompts]
