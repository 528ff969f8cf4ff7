"""LLM judge with a FakeChatModel: prompt shape, parsing fallbacks, failures, runs."""

from __future__ import annotations

import hashlib

import pytest

from memory_r1.errors import ConfigError
from memory_r1.eval.judge import JUDGE_PROMPT, JUDGE_SCHEMA, Judge, parse_verdict
from memory_r1.testing import FakeChatModel

CORRECT = '{"reasoning": "Both name the same city.", "label": "CORRECT"}'
WRONG = '{"reasoning": "Different city.", "label": "WRONG"}'


def test_prompt_and_sampling():
    model = FakeChatModel([CORRECT])
    Judge(model).judge("Where did Caroline move from?", "Sweden", "She moved from Sweden.")
    ((prompt, sampling),) = model.calls
    assert prompt.system == "" and prompt.examples == ()
    assert "Question: Where did Caroline move from?" in prompt.user
    assert "Gold answer: Sweden" in prompt.user
    assert "Generated answer: She moved from Sweden." in prompt.user
    assert '{"reasoning":' in prompt.user  # escaped braces survive .format
    assert sampling.temperature == 0 and sampling.max_tokens == 128
    assert sampling.json_schema == JUDGE_SCHEMA
    assert list(JUDGE_SCHEMA["properties"]) == ["reasoning", "label"]


def test_valid_json_correct_and_wrong():
    judge = Judge(FakeChatModel([CORRECT, WRONG]))
    r = judge.judge("q", "Paris", "Paris")
    assert (r.score, r.label, r.ok, r.failures) == (1.0, "CORRECT", True, 0)
    assert r.raw == CORRECT and r.verdicts[0].reasoning == "Both name the same city."
    r = judge.judge("q", "Paris", "London")
    assert (r.score, r.label, r.ok) == (0.0, "WRONG", True)


def test_int_gold_is_stringified():
    model = FakeChatModel([CORRECT])
    Judge(model).judge("How many kids?", 3, "three")
    assert "Gold answer: 3\n" in model.calls[0][0].user


@pytest.mark.parametrize(
    "text, label",
    [
        ('```json\n{"reasoning": "same", "label": "CORRECT"}\n```', "CORRECT"),
        ('```\n{"label": "WRONG"}\n```', "WRONG"),
        ('Sure! {"reasoning": "same", "label": "CORRECT"} Hope that helps.', "CORRECT"),
        ('{"reasoning": "unterminated, "label": "CORRECT"', "CORRECT"),  # regex fallback
        ('{"reasoning": "x", "label": "correct"}', None),  # exact label, as Mem0
        ('{"reasoning": "x", "label": "MAYBE"}', None),
        ('["CORRECT"]', None),
        ("CORRECT", None),  # bare word: no "label" key, not trusted
        ("", None),
    ],
)
def test_parse_fallbacks(text, label):
    assert parse_verdict(text).label == label


def test_garbage_counted_as_failure():
    r = Judge(FakeChatModel(["I cannot grade this."])).judge("q", "a", "b")
    assert (r.score, r.label, r.ok, r.failures) == (0.0, None, False, 1)
    assert r.raw == "I cannot grade this."


def test_runs_average_with_distinct_seeds():
    model = FakeChatModel([CORRECT, WRONG, CORRECT, "garbage"])
    judge = Judge(model, runs=4, temperature=0.7)
    r = judge.judge("q", "gold", "gen")
    assert r.score == pytest.approx(0.5)
    assert r.label == "CORRECT" and r.failures == 1 and not r.ok
    assert len(r.verdicts) == 4
    assert [s.seed for _, s in model.calls] == [0, 1, 2, 3]
    assert all(s.temperature == 0.7 for _, s in model.calls)


def test_runs_tie_is_wrong():
    r = Judge(FakeChatModel([CORRECT, WRONG]), runs=2, temperature=1.0).judge("q", "g", "a")
    assert r.score == 0.5 and r.label == "WRONG"


def test_judge_many_keeps_item_order():
    judge = Judge(FakeChatModel([CORRECT, WRONG, "junk"]))
    results = judge.judge_many([("q1", "a", "a"), ("q2", "a", "b"), ("q3", "a", "c")])
    assert [r.label for r in results] == ["CORRECT", "WRONG", None]


def test_runs_need_temperature():
    with pytest.raises(ConfigError, match="temperature"):
        Judge(FakeChatModel(), runs=3)
    with pytest.raises(ConfigError):
        Judge(FakeChatModel(), runs=0)


def test_describe():
    d = Judge(FakeChatModel(name="judge-x")).describe()
    assert d["model"] == "judge-x" and d["runs"] == 1 and d["temperature"] == 0.0
    assert d["prompt_sha256"] == hashlib.sha256(JUDGE_PROMPT.encode()).hexdigest()


def test_prompt_has_placeholders_only_once():
    for key in ("{question}", "{gold_answer}", "{generated_answer}"):
        assert JUDGE_PROMPT.count(key) == 1
