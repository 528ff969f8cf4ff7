"""The transformers backend: a tiny random Llama built in-process (fast), and SmolLM2's GGUF
loaded through ``gguf_file=`` (slow)."""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from memory_r1.llm import ChatModel, Prompt, Sampling, create_model
from memory_r1.llm.hf import HFModel

CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
SPECIALS = ["<|end|>", "<|pad|>", "<|system|>", "<|user|>", "<|assistant|>"]


def _save_tiny_llama(path: Path, chat: bool) -> Path:
    """A random 2-layer, hidden-64 Llama with a byte-level BPE (vocab 500) trained here."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=500,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    corpus = ["Caroline moved from Sweden to Boston in 2021.", "Melanie paints sunsets."] * 50
    tok.train_from_iterator(corpus, trainer)
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|end|>", pad_token="<|pad|>"
    )
    if chat:
        fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(path)
    config = transformers.LlamaConfig(
        vocab_size=tok.get_vocab_size(),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        eos_token_id=tok.token_to_id("<|end|>"),
        pad_token_id=tok.token_to_id("<|pad|>"),
        initializer_range=0.5,  # peaked logits: greedy choices do not hinge on rounding
    )
    torch.manual_seed(0)
    transformers.LlamaForCausalLM(config).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> HFModel:
    path = _save_tiny_llama(tmp_path_factory.mktemp("tiny-chat"), chat=True)
    return HFModel(str(path), dtype="float32")


def test_tiny_chat_renders_template(tiny: HFModel) -> None:
    assert isinstance(tiny, ChatModel) and tiny.chat
    assert tiny.render(Prompt("s", "u", response_prefix="{")) == (
        "<|system|>s<|end|>\n<|user|>u<|end|>\n<|assistant|>{"
    )
    assert isinstance(tiny.model, torch.nn.Module) and tiny.tokenizer.padding_side == "left"


def test_tiny_complete_and_stop_strings(tiny: HFModel) -> None:
    prompt = Prompt("Answer.", "Where did Caroline move from?")
    free = tiny.complete(prompt, Sampling(max_tokens=20))
    assert free.completion_tokens > 0 and free.prompt_tokens == tiny.tokenize_count(tiny.render(prompt))
    assert tiny.complete(prompt, Sampling(max_tokens=20)).text == free.text  # greedy
    # Pick a stop string from the free run: the stopped run must be its prefix, cut there.
    stop = next(ch for ch in free.text[1:] if ch.strip())
    cut = tiny.complete(prompt, Sampling(max_tokens=20, stop=(stop,)))
    assert cut.text == free.text[: free.text.index(stop)]
    assert cut.finish_reason == "stop" and cut.completion_tokens <= free.completion_tokens


def test_tiny_batch_matches_single_calls_in_order(tiny: HFModel) -> None:
    prompts = [Prompt("", "Sweden"), Prompt("s", "Melanie paints sunsets in Boston."), Prompt("", "x")]
    sampling = Sampling(max_tokens=8)
    batch = tiny.complete_many(prompts, sampling)
    single = [tiny.complete(p, sampling) for p in prompts]
    assert [c.prompt_tokens for c in batch] == [c.prompt_tokens for c in single]
    assert [c.text for c in batch] == [c.text for c in single]
    assert all(c.completion_tokens <= 8 for c in batch)


def test_tiny_base_model_uses_completion_rendering(tmp_path: Path) -> None:
    model = create_model("hf", model=str(_save_tiny_llama(tmp_path, chat=False)), dtype="float32")
    assert not model.chat
    assert model.render(Prompt("", "q")) == "### Input:\nq\n\n### Response:\n"  # type: ignore[attr-defined]
    out = model.complete(Prompt("", "q"), Sampling(max_tokens=6, temperature=1.0, seed=1))
    assert "### " not in out.text and out.completion_tokens <= 6


@pytest.mark.slow
def test_smollm2_gguf_through_transformers(tmp_path: Path) -> None:
    model = HFModel("smollm2-135m")  # de-quantised from the GGUF (fp32 here: no native bf16)
    assert model.chat and model.name == "smollm2-135m"
    prompt = Prompt(
        "Answer the question using the memories. Be brief.",
        "Memories: Caroline moved from Sweden.\nQuestion: Where did Caroline move from?",
    )
    out = model.complete(prompt, Sampling(max_tokens=24))
    assert "Sweden" in out.text and "<|im_end|>" not in out.text
    assert out.finish_reason == "stop"
    # A model loaded from a GGUF exports as a plain checkpoint (trained agents are saved so),
    # and the reloaded copy answers exactly the same.
    model.model.save_pretrained(tmp_path, safe_serialization=True)
    model.tokenizer.save_pretrained(tmp_path)
    again = HFModel(str(tmp_path), dtype=str(model.model.dtype).removeprefix("torch."))
    assert again.complete(prompt, Sampling(max_tokens=24)).text == out.text


@pytest.mark.slow
def test_gemma3_gguf_tokenizer_matches_llama_cpp() -> None:
    """transformers 5.17 mis-converts Gemma's SentencePiece-BPE vocab; ours must equal llama.cpp."""
    llama_cpp = pytest.importorskip("llama_cpp")
    from memory_r1.llm.hf import spm_tokenizer_from_gguf
    from memory_r1.llm.models import resolve_model

    path = resolve_model("gemma3-270m").locate()
    tok = spm_tokenizer_from_gguf(path)
    assert tok is not None and tok.bos_token == "<bos>" and tok.eos_token == "<eos>"
    ref = llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False)
    texts = [
        "Answer each question.\n\n### Input:\nWhat is the capital of France?\n\n### Response:\n",
        "  leading spaces and   multiple   gaps",
        "Caroline moved from Sweden 4 years ago; she's 32 — naïve café 😀 日本語",
        'D1:3 [2023-05-08] {"op": "ADD", "id": 3}\n\t\ttabbed\r\nend 3.14159 -42 1e-5',
        "<start_of_turn>user\nhi<end_of_turn>",
    ]
    for text in texts:
        ids = tok(text)["input_ids"]
        assert ids == ref.tokenize(text.encode(), add_bos=True, special=True), text
        assert tok.decode(ids[1:]) == text  # after <bos>, a lossless round trip
    assert spm_tokenizer_from_gguf(resolve_model("smollm2-135m").locate()) is None  # GPT-2 BPE


def test_decoding_ignores_the_checkpoints_generation_config(tmp_path: Path) -> None:
    """A checkpoint whose generation_config.json sets repetition_penalty, top_k, min_p and
    no_repeat_ngram_size: ``model.generate`` applies them; our decoding loop does not. Greedy
    output is the argmax of the raw logits step by step, and sampled tokens come with the
    log-prob of ``softmax(logits / T)`` of a plain forward pass (what the update assumes)."""
    from memory_r1.llm.hf_cache import position_ids
    from memory_r1.llm.hf_decode import decode
    from memory_r1.rl.algorithms.policy import Policy

    path = _save_tiny_llama(tmp_path / "penalised", chat=False)
    gen = transformers.GenerationConfig(
        do_sample=True,
        temperature=0.3,
        repetition_penalty=5.0,
        top_k=1,
        min_p=0.3,
        no_repeat_ngram_size=1,
        eos_token_id=None,
    )
    gen.save_pretrained(path)
    hf = HFModel(str(path), dtype="float32")
    model, tok = hf.model, hf.tokenizer
    assert model.generation_config.repetition_penalty == 5.0  # the config really is loaded
    enc = tok(["Caroline moved from Sweden"], return_tensors="pt")
    ids = enc["input_ids"]
    # reference greedy: argmax of raw logits, one full forward per step (no cache, no processor)
    ref = ids
    for _ in range(40):
        logits = model(input_ids=ref).logits[:, -1]
        ref = torch.cat([ref, logits.argmax(-1, keepdim=True)], 1)
    ref_new = ref[0, ids.shape[1] :].tolist()
    assert len(set(ref_new)) < len(ref_new)  # it repeats a token: the penalties would bite
    out = decode(model, tok, ids, enc["attention_mask"], max_new_tokens=40, eos_ids=[-1])
    assert out.tokens[0].tolist() == ref_new
    hf_gen = model.generate(**enc, max_new_tokens=40, do_sample=False)[0, ids.shape[1] :].tolist()
    assert hf_gen != ref_new  # model.generate did apply the checkpoint's processors
    # sampling: the rollout's log-probs are softmax(logits / T) of a plain forward pass
    policy = Policy(model, tok, reference=False)
    torch.manual_seed(0)
    batch = policy.generate([tok.decode(ids[0])], n=8, max_new_tokens=8, temperature=0.7)
    full = (
        model(
            input_ids=batch.input_ids,
            attention_mask=batch.attention_mask,
            position_ids=position_ids(batch.attention_mask),
        ).logits[:, -9:-1]
        / 0.7
    )
    lp = torch.log_softmax(full.float(), -1).gather(-1, batch.input_ids[:, -8:, None])[..., 0]
    assert torch.allclose(batch.sample_logp, lp * batch.completion_mask, atol=1e-5)
    assert len({tuple(r) for r in batch.input_ids[:, -8:].tolist()}) > 1  # top_k=1 not applied
