"""The grammar fast path (top tokens checked first) equals llama.cpp's full-vocabulary grammar
sampling, token for token, on real model outputs."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("llama_cpp")

from memory_r1.agents.extract import extract_prompt, extract_sampling
from memory_r1.agents.manager import IdMap, manager_prompt, manager_sampling
from memory_r1.llm.llamacpp import LlamaCppModel
from memory_r1.types import Memory, Turn

pytestmark = pytest.mark.slow


def _reference(m: LlamaCppModel, prompt, sampling) -> str:
    """llama-cpp-python's own constrained decoding (grammar over the whole vocabulary)."""
    out = m._llm.create_completion(
        m._tokens(m.render(prompt)),
        max_tokens=sampling.max_tokens,
        temperature=0.0,
        top_k=1,
        top_p=1.0,
        min_p=0.0,
        repeat_penalty=1.0,
        stop=list(sampling.stop) + list(m.spec.stops),
        grammar=m._grammar(sampling.json_schema),
    )
    return out["choices"][0]["text"]


def test_fast_grammar_path_matches_full_vocabulary_sampling() -> None:
    m = LlamaCppModel("smollm2-135m", n_ctx=2048)
    turn = Turn(
        "D1:3",
        "Caroline",
        "I moved here from Sweden four years ago, and I love painting.",
        1,
        "1:56 pm on 8 May, 2023",
    )
    mem = Memory("m1", "Caroline likes painting", "Caroline", "", 0.0, 0.0)
    cases = [
        (extract_prompt(turn), extract_sampling(True)),
        (
            manager_prompt(["Caroline moved from Sweden", "Caroline loves painting"], IdMap([mem])),
            manager_sampling(True, n_facts=2),
        ),
    ]
    for prompt, sampling in cases:
        fast = m.complete(prompt, sampling).text
        assert fast == _reference(m, prompt, sampling)
        json.loads(fast)  # and it is valid JSON
