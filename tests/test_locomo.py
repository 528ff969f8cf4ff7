"""LoCoMo loader, split and fixture: counts on the real file, repairs, and malformed files."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import pytest

from memory_r1.data import locomo
from memory_r1.data.locomo import (
    SPLIT_SIZES,
    SPLITS,
    category_counts,
    load_locomo,
    questions,
    repair_evidence,
    select,
    sha256_of,
    split_conversations,
)
from memory_r1.data.synthetic import tiny_locomo, write_tiny_locomo
from memory_r1.errors import ConfigError, DataError

REAL = Path("/work/shared/data/locomo10.json")
REAL_SHA256 = "79fa87e90f04081343b8c8debecb80a9a6842b76a7aa537dc9fdf651ea698ff4"


@pytest.fixture(scope="module")
def real():
    if not REAL.is_file():
        pytest.skip(f"real LoCoMo file not present at {REAL} (CC BY-NC 4.0, not shipped)")
    return load_locomo(REAL)


# ------------------------------------------------------------------------------ the real file


def test_real_file_hash():
    if not REAL.is_file():
        pytest.skip(f"real LoCoMo file not present at {REAL}")
    assert sha256_of(REAL) == REAL_SHA256


def test_split_sizes(real):
    for split, size in SPLIT_SIZES.items():
        assert len(questions(split_conversations(real, split))) == size


def test_split_category_counts(real):
    expected = {
        "train": {1: 32, 2: 37, 3: 13, 4: 70},
        "validation": {1: 11, 2: 26, 4: 44},  # no category 3 in validation
        "test": {1: 239, 2: 258, 3: 83, 4: 727},
    }
    for split, counts in expected.items():
        assert category_counts(questions(split_conversations(real, split))) == counts


def test_split_ids_and_order(real):
    assert [c.sample_id for c in split_conversations(real, "test")] == list(SPLITS["test"])
    all_ids = [c.sample_id for c in real]
    assert sorted(sum(SPLITS.values(), ())) == sorted(all_ids)


def test_turn_and_session_totals(real):
    assert len(real) == 10
    assert sum(len(c.sessions) for c in real) == 272
    assert sum(len(c.turns()) for c in real) == 5882
    assert sum(len(c.qa) for c in real) == 1986
    assert len(questions(real, categories=(5,))) == 446


def test_phantom_date_keys_ignored(real):
    conv26 = real[0]
    assert conv26.sample_id == "conv-26"
    assert [s.index for s in conv26.sessions] == list(range(1, 20))
    assert conv26.sessions[0].date_time == "1:56 pm on 8 May, 2023"
    assert conv26.sessions[0].turns[0].dia_id == "D1:1"


def test_sessions_sorted_numerically(real):
    for c in real:
        idx = [s.index for s in c.sessions]
        assert idx == list(range(1, len(idx) + 1))
        for s in c.sessions:
            assert all(t.session == s.index and t.date_time == s.date_time for t in s.turns)
            assert all(t.speaker in c.speakers for t in s.turns)


def test_int_answers_are_strings(real):
    assert all(isinstance(q.answer, str) for c in real for q in c.qa)
    answers = [q.answer for q in questions(real[:1])]
    assert answers.count("2022") == 4 and "3" in answers and "2" in answers


def test_duplicates_kept(real):
    conv48 = next(c for c in real if c.sample_id == "conv-48")
    key = lambda q: (q.question, q.answer, q.category, q.evidence)  # noqa: E731
    earlier = [key(q) for q in conv48.qa[:89]]
    dups = [q for q in conv48.qa if 89 <= q.index <= 99]
    assert len(dups) == 11 and all(key(q) in earlier for q in dups)  # repeats of earlier items
    assert len({q.qid for q in conv48.qa}) == len(conv48.qa)  # ids stay distinct


def test_category5_kept_with_empty_answer(real):
    cat5 = questions(real, categories=(5,))
    assert sum(q.answer == "" for q in cat5) == 444  # 2 conv-26 items carry both answers


def test_turns_know_their_listener(real):
    for conv in real:
        for t in conv.turns():
            assert {t.speaker, t.listener} == {conv.speaker_a, conv.speaker_b}


def test_image_turn_caption(real):
    captions = [t for c in real for t in c.turns() if t.blip_caption]
    assert len(captions) == 1226
    assert "[shares a photo of" in captions[0].render()


def test_real_evidence_repaired(real, caplog):
    by_id = {c.sample_id: c for c in real}
    assert by_id["conv-26"].qa[37].evidence == ("D8:6", "D9:17")
    assert "D11:26" in by_id["conv-43"].qa[18].evidence
    assert by_id["conv-49"].qa[31].evidence == ("D9:1", "D4:4", "D4:6")
    assert "D" not in by_id["conv-42"].qa[88].evidence
    assert all(e.startswith("D") and e.count(":") == 1 for c in real for q in c.qa for e in q.evidence)
    all_ids = {e for q in by_id["conv-50"].qa for e in q.evidence}
    assert "D30:5" in all_ids and "D30:05" not in all_ids
    with caplog.at_level(logging.WARNING, logger="memory_r1.data.locomo"):
        load_locomo(REAL)
    assert "qa[88].evidence" in caplog.text and "'D'" in caplog.text


def test_real_observations(real):
    obs = real[0].observations
    assert sorted(obs) == list(range(1, 20))
    fact, dia = obs[1]["Caroline"][0]
    assert "support group" in fact and dia == "D1:3"
    conv30 = next(c for c in real if c.sample_id == "conv-30")
    assert any(d == "D15:5" for _, d in conv30.observations[15]["Jon"])  # list id -> last


# ---------------------------------------------------------------------------- evidence repair


@pytest.mark.parametrize(
    "raw, ids, dropped",
    [
        (["D8:6; D9:17"], ("D8:6", "D9:17"), []),
        (["D:11:26"], ("D11:26",), []),
        (["D30:05"], ("D30:5",), []),
        (["D21:18 D21:22 D11:15"], ("D21:18", "D21:22", "D11:15"), []),
        (["D", "D1:2"], ("D1:2",), ["D"]),
        ([], (), []),
    ],
)
def test_repair_evidence(raw, ids, dropped):
    assert repair_evidence(raw) == (ids, dropped)


# ------------------------------------------------------------------------- synthetic fixture


def test_synthetic_fixture_loads(tmp_path, caplog):
    path = write_tiny_locomo(tmp_path / "sub" / "tiny.json")
    with caplog.at_level(logging.WARNING):
        convs = load_locomo(path)
    assert caplog.text == ""  # the fixture's malformed evidence is repairable
    assert [c.sample_id for c in convs] == ["conv-26", "conv-30"]
    c26, c30 = convs
    assert [s.index for s in c26.sessions] == [1, 2]  # phantom session_3_date_time ignored
    assert all(len(s.turns) == 4 for c in convs for s in c.sessions)
    assert sum(1 for c in convs for t in c.turns() if t.blip_caption) == 2
    assert c26.qa[1].evidence == ("D1:2", "D2:1")
    assert c30.qa[3].evidence == ("D1:1", "D1:2")
    assert c26.qa[3].answer == "3" and c30.qa[2].answer == "6"
    assert c26.qa[5].category == 5 and c26.qa[5].answer == ""
    assert c26.observations[2]["Melanie"][1] == (
        "Melanie has 3 kids and took them camping at the beach.",
        "D2:3",
    )
    assert len(questions(split_conversations(convs, "train"))) == 5
    assert len(questions(split_conversations(convs, "validation"))) == 5
    assert split_conversations(convs, "test") == []
    turn_ids = {t.dia_id for c in convs for t in c.turns()}
    assert all(e in turn_ids for q in c26.qa for e in q.evidence)


def test_synthetic_answers_grounded():
    # non-temporal gold answers share most words with their evidence turns
    for c in locomo.parse_locomo(tiny_locomo()):
        turns = {t.dia_id: t.text.lower() for t in c.turns()}
        for q in questions([c], categories=(1, 3, 4)):
            text = " ".join(turns[e] for e in q.evidence)
            words = re.findall(r"[a-z0-9]+", q.answer.lower())
            assert sum(w in text for w in words) >= len(words) / 2, q


def test_tiny_locomo_is_a_fresh_copy():
    a = tiny_locomo()
    a[0]["qa"].clear()
    assert tiny_locomo()[0]["qa"]


def test_select():
    convs = locomo.parse_locomo(tiny_locomo())
    assert select(convs) == convs
    assert [c.sample_id for c in select(convs, split="validation")] == ["conv-30"]
    assert [c.sample_id for c in select(convs, sample_ids=["conv-30"])] == ["conv-30"]
    with pytest.raises(ConfigError, match="conv-99"):
        select(convs, sample_ids=["conv-99"])
    with pytest.raises(ConfigError):
        select(convs, split="train", sample_ids=["conv-26"])
    with pytest.raises(ConfigError, match="unknown split"):
        split_conversations(convs, "dev")


# ---------------------------------------------------------------------------- default path


def test_default_path_env(tmp_path, monkeypatch):
    path = write_tiny_locomo(tmp_path / "t.json")
    monkeypatch.setenv("MEMORY_R1_LOCOMO", str(path))
    assert [c.sample_id for c in load_locomo()] == ["conv-26", "conv-30"]


def test_default_path_missing_env_names_path(tmp_path, monkeypatch):
    missing = tmp_path / "nope.json"
    monkeypatch.setenv("MEMORY_R1_LOCOMO", str(missing))
    with pytest.raises(DataError) as err:
        load_locomo()
    assert str(missing) in str(err.value) and "--data" in str(err.value)


def test_default_path_not_found(tmp_path, monkeypatch):
    monkeypatch.delenv("MEMORY_R1_LOCOMO", raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(locomo, "__file__", str(tmp_path / "a" / "b" / "c" / "locomo.py"))
    with pytest.raises(DataError, match="--data"):
        locomo.default_path()


# -------------------------------------------------------------------------- malformed files


def _write(tmp_path: Path, data) -> Path:
    path = tmp_path / "bad.json"
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def _error(tmp_path: Path, data) -> DataError:
    path = _write(tmp_path, data)
    with pytest.raises(DataError) as err:
        load_locomo(path)
    assert str(path) in str(err.value)
    return err.value


def test_bad_json(tmp_path):
    err = _error(tmp_path, "[{not json")
    assert "not valid JSON" in str(err)


def test_not_a_list(tmp_path):
    assert _error(tmp_path, {"sample_id": "x"}).field == "<root>"


def test_missing_question(tmp_path):
    data = tiny_locomo()
    del data[1]["qa"][3]["question"]
    err = _error(tmp_path, data)
    assert err.field == "[1].qa[3].question" and "[1].qa[3].question" in str(err)


def test_missing_conversation(tmp_path):
    data = tiny_locomo()
    del data[0]["conversation"]
    assert _error(tmp_path, data).field == "[0].conversation"


@pytest.mark.parametrize("category", [0, 6, "2", None, True])
def test_bad_category(tmp_path, category):
    data = tiny_locomo()
    data[0]["qa"][2]["category"] = category
    assert _error(tmp_path, data).field == "[0].qa[2].category"


def test_bad_speaker(tmp_path):
    data = tiny_locomo()
    data[1]["conversation"]["session_2"][1]["speaker"] = "Jonathan"
    err = _error(tmp_path, data)
    assert err.field == "[1].conversation.session_2[1].speaker" and "Jonathan" in str(err)


def test_missing_answer_outside_category5(tmp_path):
    data = tiny_locomo()
    del data[0]["qa"][0]["answer"]
    assert _error(tmp_path, data).field == "[0].qa[0].answer"


def test_missing_session_date(tmp_path):
    data = tiny_locomo()
    del data[0]["conversation"]["session_2_date_time"]
    assert _error(tmp_path, data).field == "[0].conversation.session_2_date_time"


def test_duplicate_sample_id(tmp_path):
    data = tiny_locomo()
    data[1]["sample_id"] = "conv-26"
    assert _error(tmp_path, data).field == "[1].sample_id"


def test_odd_observations_tolerated():
    data = tiny_locomo()
    data[0]["observation"] = {"session_1_observation": {"Caroline": [["only fact"], 3, "x"]}, "junk": 1}
    data[1]["observation"] = ["not", "a", "dict"]
    convs = locomo.parse_locomo(data)
    assert convs[0].observations == {1: {"Caroline": ()}}
    assert convs[1].observations == {}
