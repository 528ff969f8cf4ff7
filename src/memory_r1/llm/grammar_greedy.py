"""Greedy decoding under a llama.cpp grammar, checking the grammar only where it is needed.

llama-cpp-python's sampler chain applies a grammar to the *whole vocabulary* at every step:
262,144 candidates for Gemma 3, 49,152 for SmolLM2 (measured: three constrained extraction
calls took 10.9 s that way on Gemma and 5.4 s with this loop; SmolLM2 6.3 s vs 5.1 s). Greedy decoding needs only the best token the grammar accepts, so this loop asks the
grammar about the model's top ``k`` tokens first and falls back to the whole vocabulary only
when none of them fits (llama.cpp's own server samples first and verifies after, the same idea).
The output is the same as full-vocabulary constrained greedy decoding.
"""

from __future__ import annotations

import ctypes
from collections.abc import Sequence
from typing import Any

import llama_cpp
import numpy as np


def _prefill(llm: Any, tokens: Sequence[int]) -> None:
    """Evaluate ``tokens``, reusing the KV cache of the longest common prefix with the last call."""
    n = 0
    for a, b in zip(llm._input_ids, tokens[:-1]):  # keep >= 1 token to evaluate (fresh logits)
        if a != b:
            break
        n += 1
    if n > 0 and llm._ctx.kv_cache_seq_rm(-1, n, -1):
        llm.n_tokens = n
    else:
        llm.reset()
    llm.eval(list(tokens[n:]))


_TOKEN_DATA = np.dtype([("id", np.int32), ("logit", np.float32), ("p", np.float32)], align=True)


def _first_accepted(smpl: Any, logits: np.ndarray, candidates: np.ndarray) -> int | None:
    """The first token of ``candidates`` (ordered best first) that the grammar accepts."""
    buf = np.zeros(len(candidates), dtype=_TOKEN_DATA)  # llama_token_data[], built vectorised
    buf["id"] = candidates
    buf["logit"] = logits[candidates]
    data = llama_cpp.llama_token_data_array(
        data=buf.ctypes.data_as(ctypes.POINTER(llama_cpp.llama_token_data)),
        size=len(candidates),
        selected=-1,
        sorted=True,
    )
    llama_cpp.llama_sampler_apply(smpl, ctypes.byref(data))  # rejected tokens -> logit -inf
    ok = np.flatnonzero(buf["logit"][: data.size] != -np.inf)
    return int(buf["id"][ok[0]]) if len(ok) else None


def greedy_with_grammar(
    llm: Any, tokens: Sequence[int], grammar: Any, max_tokens: int, stops: Sequence[str], k: int = 40
) -> tuple[str, int, str]:
    """Decode greedily under ``grammar`` (a ``llama_cpp.LlamaGrammar``).

    Returns ``(text, completion_tokens, finish_reason)``; text is cut before the first stop.
    """
    vocab = llm._model.vocab
    n_vocab = llm.n_vocab()
    smpl = llama_cpp.llama_sampler_init_grammar(
        vocab, grammar._grammar.encode("utf-8"), grammar._root.encode("utf-8")
    )
    out: list[int] = []
    text, finish = "", "length"
    try:
        _prefill(llm, tokens)
        for _ in range(max_tokens):
            ptr = llama_cpp.llama_get_logits_ith(llm._ctx.ctx, -1)
            logits = np.ctypeslib.as_array(ptr, shape=(n_vocab,))
            tok = None
            for width in (k, 50 * k, n_vocab):  # widen only when the favourites are off-grammar
                top = np.argpartition(-logits, width - 1)[:width] if width < n_vocab else np.arange(n_vocab)
                top = top[np.argsort(-logits[top], kind="stable")]
                tok = _first_accepted(smpl, logits, top)
                if tok is not None:
                    break
            if tok is None or llama_cpp.llama_vocab_is_eog(vocab, tok):
                finish = "stop"
                break
            llama_cpp.llama_sampler_accept(smpl, tok)
            out.append(tok)
            text = llm.detokenize(out).decode("utf-8", errors="ignore")
            cut = min((i for i in (text.find(s) for s in stops if s) if i >= 0), default=-1)
            if cut >= 0:
                text, finish = text[:cut], "stop"
                break
            llm.eval([tok])
    finally:
        llama_cpp.llama_sampler_free(smpl)
    return text, len(out), finish
