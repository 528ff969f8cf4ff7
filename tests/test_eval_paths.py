"""One evaluation path for a trained agent: the same checkpoint on the same bank answers (and
scores) the same through ``eval answer-agent`` / training validation and through
``eval locomo --answer-agent`` (the pipeline's Answer Agent on an ``HFModel``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from memory_r1.agents.answer import AnswerAgent
from memory_r1.agents.extract import FactExtractor
from memory_r1.agents.manager import MemoryManager
from memory_r1.agents.pipeline import MemoryR1Pipeline, PipelineConfig
from memory_r1.app.policy import load_policy
from memory_r1.data.locomo import parse_locomo, split_conversations
from memory_r1.data.synthetic import tiny_locomo
from memory_r1.eval.runner import LocomoEval
from memory_r1.llm.hf import HFModel
from memory_r1.rl.envs import builders as E
from memory_r1.rl.tiny import tiny_tokenizer
from memory_r1.rl.validate import answer_validation
from memory_r1.store.embedders import HashEmbedder
from memory_r1.testing import FakeChatModel

torch.set_num_threads(1)


def _checkpoint(path: Path, convs: list) -> Path:  # type: ignore[type-arg]
    """A random Llama over a word vocabulary of the conversation, with peaked logits."""
    words = {w for c in convs for t in c.turns() for w in t.text.split()}
    words |= {w for c in convs for qa in c.qa for w in qa.question.split()}
    words |= {"**Memories", "selected", "as", "relevant:**", "**Answer:**", "-", "Question:"}
    tok = tiny_tokenizer(sorted(words))
    config = transformers.LlamaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        bos_token_id=None,
        initializer_range=0.5,
    )  # peaked logits: greedy choices do not hinge on rounding
    torch.manual_seed(0)
    transformers.LlamaForCausalLM(config).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def test_a_checkpoint_scores_the_same_through_every_path(tmp_path: Path) -> None:
    conv = split_conversations(parse_locomo(tiny_locomo()), "validation")[0]
    ckpt = _checkpoint(tmp_path / "ckpt", [conv])
    store = E.answer_banks([conv], tmp_path, HashEmbedder(), "observations")
    for turn in conv.turns():  # the bank is built: the runner must not ingest anything
        store.apply_turn(conv.sample_id, [], owner=turn.speaker, marker=turn.dia_id)

    # path A: eval answer-agent / training validation (batched, on the policy's own model)
    env = E.answer_env([conv], store, answer_k=3)
    policy = load_policy(str(ckpt), lora_r=None, reference=False, dtype="float32")
    metrics, rows = answer_validation(policy, env, batch_size=4)

    # path B: eval locomo --answer-agent (the pipeline's Answer Agent, one question at a time)
    fake = FakeChatModel(["unused"])
    pipeline = MemoryR1Pipeline(
        store,
        FactExtractor(fake),
        MemoryManager(fake),
        AnswerAgent(HFModel(str(ckpt), dtype="float32")),
        PipelineConfig(answer_k=3),
    )
    scores = LocomoEval(pipeline, tmp_path / "locomo", progress=False).run([conv])
    preds = [json.loads(x) for x in (tmp_path / "locomo" / "predictions.jsonl").read_text().splitlines()]
    assert not fake.calls  # nothing was ingested: both paths read the same bank

    by_qid = {p["qid"]: p for p in preds}
    assert len(rows) == len(preds) > 3
    for row in rows:
        other = by_qid[row["qid"]]
        assert row["raw"] == other["raw"] and row["answer"] == other["prediction"]
        assert (row["f1"], row["bleu1"], row["em"]) == (other["f1"], other["bleu1"], other["em"])
    overall = scores["overall"] if "overall" in scores else scores["scores"]["overall"]
    assert overall["f1"] == pytest.approx(metrics["val_f1"])
    assert overall["bleu1"] == pytest.approx(metrics["val_bleu1"])
