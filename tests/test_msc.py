"""MSC-Self-Instruct loader on a tiny JSONL file in the real schema (MemGPT's records)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from memory_r1.data.msc import load_msc
from memory_r1.errors import DataError

TINY = Path(__file__).parent / "data" / "msc_tiny.jsonl"


def _records() -> list[dict]:
    return [json.loads(line) for line in TINY.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def convs():
    return load_msc(TINY)


def test_one_conversation_per_record(convs):
    assert [c.sample_id for c in convs] == ["msc-0", "msc-1"]  # the blank line is skipped
    assert all(c.speakers == ("Speaker 1", "Speaker 2") for c in convs)


def test_previous_sessions_then_current(convs):
    c = convs[0]
    assert [(s.index, s.date_time, len(s.turns)) for s in c.sessions] == [
        (1, "session 1, 7 days ago", 4),
        (2, "session 2, 2 days ago", 3),
        (3, "session 3", 2),  # the record's own `dialog`
    ]
    first = c.sessions[0].turns
    assert [t.dia_id for t in first] == ["D1:1", "D1:2", "D1:3", "D1:4"]
    # previous sessions carry no ids: speakers alternate from Speaker 1
    assert [t.speaker for t in first] == ["Speaker 1", "Speaker 2", "Speaker 1", "Speaker 2"]
    assert first[0].text == "Hello! I just got back from a ski trip to Whistler."
    assert first[0].date_time == "session 1, 7 days ago" and first[0].session == 1
    assert [t.speaker for t in c.sessions[2].turns] == ["Speaker 1", "Speaker 2"]
    assert c.sessions[1].turns[2].dia_id == "D2:3"


def test_ids_normalised_when_present(convs):
    turns = convs[1].sessions[0].turns  # ids "speaker 1" / "speaker_2" in the file
    assert [t.speaker for t in turns] == ["Speaker 1", "Speaker 2"]
    assert convs[1].sessions[0].date_time == "session 1"  # no time_back


def test_qa_from_self_instruct(convs):
    qa = convs[0].qa[0]
    assert qa.question == "Did you ever replace the ski boots your dogs chewed?"
    assert qa.answer == "Not yet, I am still saving up for new ones."
    assert (qa.category, qa.category_name, qa.evidence, qa.qid) == ("msc", "msc", (), "msc-0/q0")
    assert convs[1].qa[0].answer == "third grade"


def test_json_list_and_without_current(tmp_path, convs):
    path = tmp_path / "msc.json"
    path.write_text(json.dumps(_records()))
    assert load_msc(path) == convs
    prev_only = load_msc(TINY, include_current=False)
    assert [len(c.sessions) for c in prev_only] == [2, 1]


def _error(tmp_path: Path, records=None, text: str | None = None) -> DataError:
    path = tmp_path / "bad.jsonl"
    path.write_text(text if text is not None else "\n".join(json.dumps(r) for r in records))
    with pytest.raises(DataError) as info:
        load_msc(path)
    assert str(path) in str(info.value)
    return info.value


@pytest.mark.parametrize(
    "mutate, field",
    [
        (lambda r: r[1].pop("self_instruct"), "[1].self_instruct"),
        (lambda r: r[0]["self_instruct"].pop("B"), "[0].self_instruct.B"),
        (lambda r: r[0]["self_instruct"].__setitem__("A", None), "[0].self_instruct.A"),
        (lambda r: r[1].pop("previous_dialogs"), "[1].previous_dialogs"),
        (
            lambda r: r[0]["previous_dialogs"][1]["dialog"][0].pop("text"),
            "[0].previous_dialogs[1].dialog[0].text",
        ),
        (lambda r: r[0]["previous_dialogs"][0].__setitem__("dialog", "hi"), "[0].previous_dialogs[0].dialog"),
        (
            lambda r: r[0]["previous_dialogs"][0].__setitem__("time_back", 7),
            "[0].previous_dialogs[0].time_back",
        ),
        (lambda r: r[1]["dialog"][0].__setitem__("id", 1), "[1].dialog[0].id"),
        (lambda r: r[1]["dialog"].__setitem__(1, "text"), "[1].dialog[1]"),
        (lambda r: r.__setitem__(0, []), "[0]"),
    ],
)
def test_malformed_names_file_record_and_field(tmp_path, mutate, field):
    records = _records()
    mutate(records)
    assert _error(tmp_path, records).field == field


def test_malformed_lines_and_files(tmp_path):
    good = json.dumps(_records()[0])
    err = _error(tmp_path, text=f"{good}\n\n{{broken\n")
    assert err.field == "[1]" and "line 3" in err.problem
    err = _error(tmp_path, text="[1, 2")
    assert err.field == "[0]" and "line 1" in err.problem
    assert _error(tmp_path, text="[1, 2]").field == "[0]"  # a list, but of non-records
    with pytest.raises(DataError, match="not found"):
        load_msc(tmp_path / "missing.jsonl")
