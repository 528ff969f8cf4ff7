"""A tiny random Llama with a whole-word tokenizer, and a toy answer task (L3; tests, smoke runs).

Built in-process, nothing from the Hub (the recipe of ``tests/test_llm_hf.py``, with a
word-level vocabulary instead of BPE): every word of the toy task, ``**Answer:**`` included,
is one token. With 12 tokens and three-token completions, the rewarded output
``**Answer:** paris`` is reachable by chance from a random model (~3 % of samples), so PPO
and GRPO can be seen to learn within tens of steps on a CPU (~3 s for 80 steps of 128
rollouts).

:class:`ToyAnswerEnv` satisfies :class:`memory_r1.rl.algorithms.trainer.Env`; its reward is the real
:func:`memory_r1.rl.envs.rewards.score_answers` (parse_answer, then exact match).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from memory_r1.llm.base import Prompt
from memory_r1.rl.algorithms.policy import Policy
from memory_r1.rl.envs.rewards import score_answers

if TYPE_CHECKING:
    from peft import LoraConfig
    from transformers import LlamaForCausalLM, PreTrainedTokenizerFast

CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
SPECIALS = ("<|end|>", "<|pad|>", "<|unk|>", "<|user|>", "<|assistant|>")

#: question -> gold answer of the toy task. One question learns reliably within ~60 steps on
#: any seed; with two questions the tiny model often settles on one answer for both (0.5).
TOY_QA: dict[str, str] = {"capital of france ?": "paris"}
#: wrong answers in the vocabulary, so the answer slot is a real choice
TOY_DISTRACTORS: tuple[str, ...] = ("rome", "oslo")


def tiny_tokenizer(words: Sequence[str], chat: bool = True) -> PreTrainedTokenizerFast:
    """A word-level fast tokenizer: ``SPECIALS`` then ``words``, split on whitespace only.

    Decoding joins words with single spaces, so ``"**Answer:** paris"`` round-trips.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(dict.fromkeys([*SPECIALS, *words]))}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<|unk|>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|end|>", pad_token="<|pad|>", unk_token="<|unk|>"
    )
    fast.add_special_tokens({"additional_special_tokens": ["<|user|>", "<|assistant|>"]})
    if chat:
        fast.chat_template = CHAT_TEMPLATE
    return fast


def tiny_llama(
    tokenizer: PreTrainedTokenizerFast, hidden: int = 32, layers: int = 2, seed: int = 0
) -> LlamaForCausalLM:
    """A random ``LlamaForCausalLM`` (2 layers, hidden 32: ~30k parameters) for ``tokenizer``."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(config).eval()


def toy_words(qa: dict[str, str] = TOY_QA, distractors: Sequence[str] = TOY_DISTRACTORS) -> list[str]:
    """The toy vocabulary: the marker, every question word, every answer, the distractors."""
    words = ["**Answer:**"]
    for question, answer in qa.items():
        words += question.split() + answer.split()
    return list(dict.fromkeys([*words, *distractors]))


def toy_policy(
    seed: int = 0, *, value_head: bool = False, lora: LoraConfig | None = None, qa: dict[str, str] = TOY_QA
) -> Policy:
    """A :class:`Policy` over a fresh tiny Llama for the toy task (same ``seed``, same weights)."""
    tok = tiny_tokenizer(toy_words(qa))
    return Policy(tiny_llama(tok, seed=seed), tok, value_head=value_head, lora=lora)


class ToyAnswerEnv:
    """Questions whose gold answer is one word; reward = EM of the parsed ``**Answer:**``.

    ``prompts`` draws questions uniformly with the caller's ``rng``; each meta is
    ``{"answer": gold}``. ``stats()`` reports the last batch's format failures.
    """

    def __init__(self, qa: dict[str, str] = TOY_QA) -> None:
        self.qa = dict(qa)
        self._last_failures = 0.0

    def prompts(self, batch_size: int, rng: random.Random) -> list[tuple[Prompt, dict[str, str]]]:
        keys = sorted(self.qa)
        picks = [rng.choice(keys) for _ in range(batch_size)]
        return [(Prompt("", q), {"answer": self.qa[q]}) for q in picks]

    def score(self, completions: list[str], metas: list[dict[str, str]]) -> list[float]:
        stats = score_answers(completions, [m["answer"] for m in metas])
        self._last_failures = stats.format_failure_rate
        return stats.rewards

    def stats(self) -> dict[str, float]:
        return {"format_failure_rate": self._last_failures}
