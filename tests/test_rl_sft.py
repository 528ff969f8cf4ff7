"""Memory-SFT: LoCoMo-annotation teacher examples (parsed with the real parsers) and sft_train."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from memory_r1.agents.answer import ANSWER_SYSTEM, SELECTED_HEADING, parse_answer
from memory_r1.agents.extract import EXTRACT_EXAMPLES, extract_prompt, parse_facts
from memory_r1.agents.manager import parse_operations
from memory_r1.data.locomo import parse_locomo
from memory_r1.data.synthetic import tiny_locomo
from memory_r1.llm.base import Prompt
from memory_r1.rl.algorithms.trainer import latest_checkpoint
from memory_r1.rl.monitor import read_metrics, read_tensorboard
from memory_r1.rl.sft.data import (
    SFTExample,
    build_sft_examples,
    completion_text,
    from_teacher_jsonl,
)
from memory_r1.rl.sft.train import sft_loss, sft_train
from memory_r1.rl.tiny import toy_policy
from memory_r1.types import OpKind

torch.set_num_threads(1)


def _convs(raw=None):  # type: ignore[no-untyped-def]
    return parse_locomo(raw if raw is not None else tiny_locomo())


def test_extract_examples_match_observations() -> None:
    conv = _convs()[0]  # conv-26: 8 turns, every one with exactly one observation fact
    exs = build_sft_examples([conv], roles=("extract",))
    assert len(exs) == 8
    for ex in exs:
        facts, err = parse_facts(ex.target)
        assert err is None and facts == ex.meta["facts"] and len(facts) == 1
    turns = {t.dia_id: t for t in conv.turns()}
    assert all(ex.prompt == extract_prompt(turns[ex.meta["dia_id"]]) for ex in exs)
    assert parse_facts(exs[0].target)[0] == [
        "Caroline attended an LGBTQ support group and found the transgender stories inspiring."
    ]


def test_empty_turns_are_subsampled() -> None:
    conv = _convs()[1]  # conv-30: D1:4 and D2:2 (its fact is tied to D2:4) have no facts
    with_facts = 6
    all_kept = build_sft_examples([conv], roles=("extract",), empty_ratio=1.0)
    none_kept = build_sft_examples([conv], roles=("extract",), empty_ratio=0.0)
    assert len(all_kept) == with_facts + 2 and len(none_kept) == with_facts
    empties = [ex for ex in all_kept if ex.meta["facts"] == []]
    assert {ex.meta["dia_id"] for ex in empties} == {"D1:4", "D2:2"}
    assert all(parse_facts(ex.target) == ([], None) for ex in empties)


def test_manager_targets_parse_and_add_everything_new() -> None:
    exs = build_sft_examples(_convs(), roles=("manager",))
    assert len(exs) == 8 + 6  # one per (turn, speaker) with facts
    for ex in exs:
        assert ex.idmap is not None
        ops = parse_operations(ex.target, ex.idmap, ex.meta["facts"])
        assert [op.kind for op in ops] == [OpKind.ADD] * len(ex.meta["facts"])
    # the bank grows: later examples of a speaker show earlier memories
    last = [ex for ex in exs if ex.meta["owner"] == "Melanie"][-1]
    assert len(last.idmap) == 3 and all(m.owner == "Melanie" for m in last.idmap.memories)


def test_readded_identical_fact_becomes_none() -> None:
    raw = tiny_locomo()
    obs = raw[0]["observation"]["session_2_observation"]["Caroline"]
    fact = "Caroline is considering a career in counseling."  # already said at D1:3
    obs.append(["caroline is considering a  career in counseling", "D2:4"])  # normalised equal
    obs.append([fact, "D2:4"])  # and again in the same turn
    exs = build_sft_examples(_convs(raw)[:1], roles=("manager",))
    ex = next(e for e in exs if e.meta["dia_id"] == "D2:4")
    ops = parse_operations(ex.target, ex.idmap, ex.meta["facts"])
    assert [op.kind for op in ops] == [OpKind.ADD, OpKind.NOOP, OpKind.NOOP]
    item = json.loads(ex.target)["memory"][1]
    assert item["event"] == "NONE" and ex.idmap.memory(item["id"]).text == fact
    assert ops[1].memory_id == ex.idmap.real(item["id"])


def test_answer_examples_parse_to_gold() -> None:
    convs = _convs()
    exs = build_sft_examples(convs, roles=("answer",), answer_k=2)
    gold = {qa.qid: qa.answer for c in convs for qa in c.qa}
    assert exs and len(exs) <= 10  # at most the non-adversarial QAs (evidence must be shown)
    for ex in exs:
        parsed = parse_answer(ex.target)
        assert parsed.has_marker and parsed.answer == gold[ex.meta["qid"]]
        assert ex.target.startswith(SELECTED_HEADING)
        assert not completion_text(ex).startswith(SELECTED_HEADING)
        assert ex.prompt.response_prefix + completion_text(ex) == ex.target
        assert parsed.selected and all(sel in ex.prompt.user for sel in parsed.selected)
        # at most k = 2 memories per speaker, as retrieval gave them
        assert ex.prompt.user.count("\n") <= 2 * 2 + 6


def test_answer_sft_prompts_are_the_rl_and_eval_prompts() -> None:
    """Train exactly what you run: an SFT answer prompt IS the AnswerEnv prompt (same bank,
    same retrieval, same k), which validation and eval answer-agent use too."""
    from memory_r1.rl.envs.answer import AnswerEnv
    from memory_r1.rl.sft.data import answer_examples, observation_bank
    from memory_r1.store.embedders import HashEmbedder

    conv = _convs()[0]
    store = observation_bank(conv, HashEmbedder())
    exs, skipped = answer_examples(conv, store, k=3)
    env = AnswerEnv([conv], store=store, split=None, k=3)
    by_qid = {meta["qid"]: prompt for prompt, meta in env.episodes}
    assert exs and skipped + len(exs) == len(env.episodes)
    for ex in exs:
        assert ex.prompt == by_qid[ex.meta["qid"]]


def test_build_is_seeded_and_validates_roles() -> None:
    a = build_sft_examples(_convs(), seed=3, empty_ratio=0.5)
    b = build_sft_examples(_convs(), seed=3, empty_ratio=0.5)
    assert [(e.role, e.prompt, e.target) for e in a] == [(e.role, e.prompt, e.target) for e in b]
    assert {e.role for e in a} == {"extract", "manager", "answer"}
    with pytest.raises(ValueError):
        build_sft_examples(_convs(), roles=("critic",))


def test_from_teacher_jsonl(tmp_path: Path) -> None:
    from memory_r1.agents.extract import EXTRACT_SYSTEM

    rows = [
        {"role": "extract", "system": EXTRACT_SYSTEM, "user": "Date: x\nA: hi", "target": '{"facts": []}'},
        {
            "role": "answer",
            "system": ANSWER_SYSTEM,
            "user": "Question: q",
            "target": f"{SELECTED_HEADING}\n- m\n\n**Answer:** yes",
        },
        {"role": "manager", "system": "custom", "user": "u", "target": '{"memory": []}'},
    ]
    path = tmp_path / "teacher.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + "\n", encoding="utf-8")
    exs = from_teacher_jsonl(path)
    assert [e.role for e in exs] == ["extract", "answer", "manager"]
    assert exs[0].prompt.examples == EXTRACT_EXAMPLES
    assert exs[1].prompt.response_prefix == SELECTED_HEADING + "\n"
    assert completion_text(exs[1]) == "- m\n\n**Answer:** yes"
    assert exs[2].prompt.examples == () and exs[2].prompt.response_prefix == ""
    path.write_text(json.dumps({"role": "judge", "system": "", "user": "", "target": ""}))
    with pytest.raises(ValueError):
        from_teacher_jsonl(path)


# --------------------------------------------------------------------------------- training

QA = {"capital of france ?": "paris", "capital of italy ?": "rome", "capital of norway ?": "oslo"}


def _toy_examples() -> list[SFTExample]:
    return [SFTExample("answer", Prompt("", q), f"**Answer:** {a}") for q, a in QA.items()]


def test_sft_train_lowers_loss_and_logs(tmp_path: Path) -> None:
    policy = toy_policy(seed=0, qa=QA)
    exs = _toy_examples()
    before = sft_loss(policy, exs)
    history = sft_train(
        policy, exs, steps=40, batch_size=3, lr=1e-2, out_dir=tmp_path, seed=0, save_every=20, progress=False
    )
    after = sft_loss(policy, exs)
    assert len(history) == 40
    assert after < 0.3 * before, (before, after)
    rows = read_metrics(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in rows] == list(range(1, 41)) and rows[0]["n_answer"] == 3
    assert latest_checkpoint(tmp_path) == tmp_path / "checkpoint-40"
    assert (tmp_path / "checkpoint-20" / "policy").is_dir()
    assert (tmp_path / "sft_loss.png").exists()
    tb = read_tensorboard(tmp_path / "tb")  # the same scalars in TensorBoard
    assert {"loss", "tokens", "n_answer"} <= tb.keys()
    assert [s for s, _ in tb["loss"]] == list(range(1, 41))
    assert tb["loss"][-1][1] == pytest.approx(rows[-1]["loss"], rel=1e-6)
    # greedy decoding now produces the gold answers
    batch = policy.generate([policy.render(e.prompt) for e in exs], 1, max_new_tokens=3, temperature=0)
    assert [parse_answer(c).answer for c in batch.completions] == list(QA.values())


def test_sft_train_masks_prompt_and_is_seeded() -> None:
    exs = _toy_examples()
    kw = {"steps": 5, "batch_size": 2, "lr": 1e-2, "seed": 1, "progress": False}
    h1 = sft_train(toy_policy(seed=0, qa=QA), exs, **kw)
    h2 = sft_train(toy_policy(seed=0, qa=QA), exs, **kw)
    assert h1 == h2
    # prompt-only changes do not change which tokens are scored: same token count
    from memory_r1.rl.sft.train import _encode

    pol = toy_policy(seed=0, qa=QA)
    ((_p, c),) = _encode(pol, exs[:1])
    assert c[-1] == pol.eos_ids[0] and len(c) == 3  # "**Answer:** paris" + EOS
    with pytest.raises(ValueError):
        sft_train(pol, exs, steps=1, max_tokens=2, progress=False)


def test_sft_train_with_lora() -> None:
    """Only the adapters train (the random tiny model's frozen embeddings and head cap how far
    its loss can fall, hence the mild margin); the base weights stay as they were."""
    peft = pytest.importorskip("peft")
    lora = peft.LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj", "up_proj"])
    policy = toy_policy(seed=0, qa=QA, lora=lora)
    base = {k: v.clone() for k, v in policy.model.named_parameters() if "lora_" not in k}
    exs = _toy_examples()
    before = sft_loss(policy, exs)
    sft_train(policy, exs, steps=40, batch_size=3, lr=1e-1, seed=0, progress=False)
    assert sft_loss(policy, exs) < 0.9 * before
    assert all(torch.equal(v, base[k]) for k, v in policy.model.named_parameters() if k in base)
