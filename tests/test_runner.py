"""The eval runner end to end with scripted models: files, scores, resume, interrupts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from memory_r1.agents.answer import ANSWER_SYSTEM, AnswerAgent
from memory_r1.agents.extract import EXTRACT_SYSTEM, FactExtractor
from memory_r1.agents.manager import MANAGER_SYSTEM, MemoryManager
from memory_r1.agents.pipeline import MemoryR1Pipeline
from memory_r1.data.locomo import load_locomo, select
from memory_r1.eval.runner import EvalLimits, LocomoEval, plan, read_jsonl
from memory_r1.llm.base import Prompt, Sampling
from memory_r1.metrics import aggregate
from memory_r1.store import create_embedder, open_store
from memory_r1.testing import FakeChatModel


class Interrupt(Exception):
    pass


def scripted(fail_after: int | None = None):
    """Extraction: the utterance itself is the fact; manager: ADD it (or the 2nd turn's garbage);
    answer: the first selected memory's last word."""
    calls = {"n": 0}

    def reply(prompt: Prompt, sampling: Sampling) -> str:
        calls["n"] += 1
        if fail_after is not None and calls["n"] > fail_after:
            raise Interrupt()
        if prompt.system == EXTRACT_SYSTEM:
            utterance = prompt.user.split("\n", 1)[-1]
            if "thanks" in utterance.lower():
                return '{"facts": []}'
            return json.dumps({"facts": [utterance]})
        if prompt.system == MANAGER_SYSTEM:
            facts = json.loads(prompt.user.split("New facts: ", 1)[1])
            return json.dumps({"memory": [{"id": None, "text": f, "event": "ADD"} for f in facts]})
        assert prompt.system == ANSWER_SYSTEM
        return "- something\n\n**Answer:** Sweden"

    return reply


def make_pipeline(store_path: Path, fail_after: int | None = None) -> MemoryR1Pipeline:
    model = FakeChatModel(reply_fn=scripted(fail_after))
    store = open_store(store_path, create_embedder("hash"))
    return MemoryR1Pipeline(store, FactExtractor(model), MemoryManager(model), AnswerAgent(model))


def test_run_writes_files_whose_numbers_match_predictions(tiny_locomo_path: Path, tmp_path: Path) -> None:
    convs = load_locomo(tiny_locomo_path)
    out = tmp_path / "run"
    scores = LocomoEval(make_pipeline(out / "store.sqlite"), out, progress=False).run(convs)
    preds = read_jsonl(out / "predictions.jsonl")
    n_q = sum(len(plan(c, EvalLimits())[1]) for c in convs)
    assert len(preds) == n_q > 0
    assert json.loads((out / "scores.json").read_text())["scores"] == aggregate(preds, percent=True)
    assert scores["ingest"]["turns"] == sum(len(c.turns()) for c in convs)
    assert "| **overall** |" in (out / "report.md").read_text()
    # every answer was "Sweden": F1 is 100 exactly on questions whose gold is Sweden
    for p in preds:
        assert p["prediction"] == "Sweden"
        assert p["em"] == (1.0 if p["gold"].strip().lower() == "sweden" else 0.0)


def test_interrupted_run_resumes_without_duplicates(tiny_locomo_path: Path, tmp_path: Path) -> None:
    convs = load_locomo(tiny_locomo_path)
    ref = tmp_path / "ref"
    LocomoEval(make_pipeline(ref / "store.sqlite"), ref, progress=False).run(convs)
    ref_store = open_store(ref / "store.sqlite", create_embedder("hash"))
    ref_texts = sorted(m.text for c in convs for m in ref_store.list(c.sample_id))

    out = tmp_path / "run"
    with pytest.raises(Interrupt):  # dies in the middle of ingestion (mid-turn)
        LocomoEval(make_pipeline(out / "store.sqlite", fail_after=5), out, progress=False).run(convs)
    resumed = make_pipeline(out / "store.sqlite")
    LocomoEval(resumed, out, progress=False).run(convs)
    LocomoEval(resumed, out, progress=False).run(convs)  # a third run changes nothing
    texts = sorted(m.text for c in convs for m in resumed.store.list(c.sample_id))
    assert texts == ref_texts
    preds = read_jsonl(out / "predictions.jsonl")
    assert len(preds) == len({p["qid"] for p in preds}) == len(read_jsonl(ref / "predictions.jsonl"))


def test_limits_keep_only_answerable_questions(tiny_locomo_path: Path) -> None:
    conv = select(load_locomo(tiny_locomo_path), sample_ids=["conv-26"])[0]
    turns, qas = plan(conv, EvalLimits(max_sessions=1))
    ingested = {t.dia_id for t in turns}
    assert all(t.session == 1 for t in turns)
    assert all(q.evidence and set(q.evidence) <= ingested for q in qas)
    _, everything = plan(conv, EvalLimits(max_sessions=1, answerable_only=False))
    assert len(everything) >= len(qas)
    _, capped = plan(conv, EvalLimits(max_questions=1))
    assert len(capped) == 1


def test_judge_scores_are_recorded_and_aggregated(tiny_locomo_path: Path, tmp_path: Path) -> None:
    from memory_r1.eval.judge import Judge

    convs = select(load_locomo(tiny_locomo_path), sample_ids=["conv-30"])
    verdicts = iter(['{"reasoning": "same", "label": "CORRECT"}', "garbage"] * 10)
    judge = Judge(FakeChatModel(reply_fn=lambda p, s: next(verdicts)))
    out = tmp_path / "run"
    scores = LocomoEval(make_pipeline(out / "store.sqlite"), out, judge=judge, progress=False).run(convs)
    preds = read_jsonl(out / "predictions.jsonl")
    assert [p["j"] for p in preds] == [1.0 if i % 2 == 0 else 0.0 for i in range(len(preds))]
    assert [p["judge_ok"] for p in preds] == [i % 2 == 0 for i in range(len(preds))]
    assert scores["answer"]["judge_unparseable"] == len(preds) // 2
    assert scores["scores"]["overall"]["j"] == pytest.approx(100 * sum(p["j"] for p in preds) / len(preds))
