"""LongMemEval loader on a tiny file in the real schema; string categories in the metrics."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from memory_r1.data.longmemeval import load_longmemeval
from memory_r1.errors import DataError
from memory_r1.eval.report import ordered_categories, render_table
from memory_r1.metrics import aggregate, category_order
from memory_r1.types import QA

TINY = Path(__file__).parent / "data" / "longmemeval_tiny.json"


@pytest.fixture(scope="module")
def convs():
    return load_longmemeval(TINY)


def test_one_conversation_per_instance(convs):
    assert [c.sample_id for c in convs] == ["e47becba", "0a995998", "118b2229_abs"]
    for c in convs:
        assert c.speakers == ("user", "assistant")
        assert len(c.qa) == 1 and c.qa[0].sample_id == c.sample_id and c.qa[0].index == 0


def test_sessions_sorted_by_date_with_dia_ids(convs):
    # the file lists the 29 May session first (oracle files are unsorted); 20 May comes first
    c = convs[0]
    assert [(s.index, s.date_time) for s in c.sessions] == [
        (1, "2023/05/20 (Sat) 02:21"),
        (2, "2023/05/29 (Mon) 15:10"),
    ]
    first = c.sessions[0].turns
    assert [t.dia_id for t in first] == ["D1:1", "D1:2", "D1:3"]
    assert [t.speaker for t in first] == ["user", "assistant", "user"]
    assert first[0].text.startswith("I graduated with a degree in Business Administration")
    assert all(t.session == 1 and t.date_time == "2023/05/20 (Sat) 02:21" for t in first)
    assert [t.dia_id for t in c.sessions[1].turns] == ["D2:1", "D2:2"]
    assert first[0].render() == f"user: {first[0].text}"


def test_qa_category_answer_and_evidence(convs):
    ssu, multi, abstain = (c.qa[0] for c in convs)
    assert (ssu.category, ssu.category_name) == ("single-session-user", "single-session-user")
    assert ssu.evidence == ("D1:1",)  # has_answer: true only; has_answer: false ignored
    assert ssu.answer == "Business Administration"
    assert multi.answer == "3"  # int answers are str()-ed
    # no has_answer labels: every turn of the answer sessions
    assert multi.evidence == ("D1:1", "D1:2", "D2:1", "D2:2")
    assert abstain.category == "abstention" and abstain.category_name == "abstention"
    assert abstain.qid == "118b2229_abs/q0"


def test_unparseable_dates_keep_file_order(tmp_path):
    data = json.loads(TINY.read_text())
    data[0]["haystack_dates"] = ["later", "earlier"]
    path = tmp_path / "lme.json"
    path.write_text(json.dumps(data))
    c = load_longmemeval(path)[0]
    assert [s.date_time for s in c.sessions] == ["later", "earlier"]
    assert c.qa[0].evidence == ("D2:1",)  # the answer session is now the second one


def _error(tmp_path: Path, data) -> DataError:
    path = tmp_path / "bad.json"
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    with pytest.raises(DataError) as info:
        load_longmemeval(path)
    assert str(path) in str(info.value)
    return info.value


def _mutated(fn):
    data = json.loads(TINY.read_text())
    fn(data)
    return data


@pytest.mark.parametrize(
    "mutate, field",
    [
        (lambda d: d[1].pop("question_id"), "[1].question_id"),
        (lambda d: d[0].__setitem__("question", None), "[0].question"),
        (lambda d: d[2].__setitem__("answer", ["a"]), "[2].answer"),
        (lambda d: d[0].__setitem__("question_type", ""), "[0].question_type"),
        (
            lambda d: d[0]["haystack_sessions"][1][0].__setitem__("role", "system"),
            "[0].haystack_sessions[1][0].role",
        ),
        (
            lambda d: d[0]["haystack_sessions"][1][2].__setitem__("has_answer", "yes"),
            "[0].haystack_sessions[1][2].has_answer",
        ),
        (lambda d: d[1]["haystack_sessions"][0][1].pop("content"), "[1].haystack_sessions[0][1].content"),
        (lambda d: d[1]["haystack_sessions"].__setitem__(0, {"role": "user"}), "[1].haystack_sessions[0]"),
        (lambda d: d[0]["haystack_dates"].pop(), "[0].haystack_dates"),
        (lambda d: d[0]["haystack_session_ids"].append("x"), "[0].haystack_session_ids"),
        (lambda d: d[2]["answer_session_ids"].__setitem__(0, 7), "[2].answer_session_ids[0]"),
        (lambda d: d[2].__setitem__("question_date", 20230402), "[2].question_date"),
        (lambda d: d[2].__setitem__("question_id", "e47becba"), "[2].question_id"),
        (lambda d: d.__setitem__(1, "not an object"), "[1]"),
    ],
)
def test_malformed_names_file_record_and_field(tmp_path, mutate, field):
    assert _error(tmp_path, _mutated(mutate)).field == field


def test_malformed_file_level(tmp_path):
    assert _error(tmp_path, "{not json").field == "<file>"
    assert _error(tmp_path, {"question_id": "x"}).field == "<root>"
    with pytest.raises(DataError, match="not found"):
        load_longmemeval(tmp_path / "missing.json")


def test_answer_session_ids_optional(tmp_path):
    data = _mutated(lambda d: d[1].pop("answer_session_ids"))
    path = tmp_path / "lme.json"
    path.write_text(json.dumps(data))
    assert load_longmemeval(path)[1].qa[0].evidence == ()


# ----------------------------------------------------------------- string categories, metrics


def test_qa_category_name_int_and_str():
    assert QA("c", 0, "q", "a", 2).category_name == "temporal"
    assert QA("c", 0, "q", "a", "knowledge-update").category_name == "knowledge-update"


def test_aggregate_string_categories_after_locomo_alphabetical():
    rows = [
        {"category": "temporal-reasoning", "f1": 1.0},
        {"category": 4, "f1": 0.5},
        {"category": "abstention", "f1": 0.0},
        {"category": "temporal-reasoning", "f1": 0.0},
        {"category": 1, "f1": 1.0},
    ]
    out = aggregate(rows, metrics=("f1",), percent=True)
    assert list(out) == ["single-hop", "open-domain", "abstention", "temporal-reasoning", "overall"]
    assert out["temporal-reasoning"] == {"n": 2, "f1": 50.0}
    assert out["overall"] == {"n": 5, "f1": 50.0}
    # the order does not depend on the order rows arrive in
    assert list(aggregate(reversed(rows), metrics=("f1",))) == list(out)


@pytest.mark.parametrize("bad", ["", "  ", "3", "overall", True, 0, 6, None, 2.0])
def test_aggregate_rejects_non_categories(bad):
    with pytest.raises(ValueError, match="category"):
        aggregate([{"category": bad, "f1": 1.0}])


def test_report_orders_other_categories_before_overall(convs):
    rows = [{"category": q.category, "f1": 1.0} for c in convs for q in c.qa]
    scores = {"scores": aggregate(rows, metrics=("f1",), percent=True)}
    table = render_table(scores)
    names = [line.split("|")[1].strip() for line in table.splitlines()[2:]]
    assert names == ["abstention", "multi-session", "single-session-user", "**overall**"]
    assert category_order(["msc", "temporal", "abstention"]) == ["temporal", "abstention", "msc"]
    assert ordered_categories(["overall", "temporal", "msc", "multi-hop"]) == [
        "multi-hop",
        "temporal",
        "msc",
        "overall",
    ]
