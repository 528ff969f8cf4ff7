"""Prompts and parsers of the agents (agents.extract / manager / answer) against the broken output small models really produce."""

from __future__ import annotations

import json

import pytest

from memory_r1.agents import answer, extract, manager
from memory_r1.agents.answer import AnswerParse, parse_answer
from memory_r1.agents.extract import parse_facts
from memory_r1.agents.manager import IdMap, parse_operations
from memory_r1.llm.base import Prompt, render_completion
from memory_r1.types import Memory, OpKind, Turn


def mem(
    real_id: str, text: str, ts: str = "1:56 pm on 8 May, 2023", owner: str = "Ann", deleted: bool = False
) -> Memory:
    return Memory(real_id, text, owner, ts, 0.0, 0.0, deleted=deleted)


MEMS = [mem("uuid-aaa", "Ann likes jazz"), mem("uuid-bbb", "Ann lives in Lyon")]


def ops_of(text: str, facts: tuple[str, ...] = ("a fact",)) -> list[tuple[str, str | None, str]]:
    return [(o.kind.value, o.memory_id, o.text) for o in parse_operations(text, IdMap(MEMS), facts)]


# ------------------------------------------------------------------------------------ facts


@pytest.mark.parametrize(
    "text, facts",
    [
        ('{"facts": ["Ann adopted a cat", "Ann is 30"]}', ["Ann adopted a cat", "Ann is 30"]),
        ('```json\n{"facts": ["Ann adopted a cat"]}\n```', ["Ann adopted a cat"]),
        ('{"facts": ["Ann adopted a cat"]}\nThese are the facts I found.', ["Ann adopted a cat"]),
        ("Sure! Here you go: {'facts': ['Ann adopted a cat']}", ["Ann adopted a cat"]),
        ('["Ann adopted a cat", "Ann adopted a cat"]', ["Ann adopted a cat"]),  # bare list, deduped
        ('{"facts": "Ann adopted a cat"}', ["Ann adopted a cat"]),
        ('{"facts": [{"fact": "Ann adopted a cat"}, ""]}', ["Ann adopted a cat"]),
        ('{"facts": []}', []),
    ],
)
def test_parse_facts_accepts_messy_but_meaningful_output(text: str, facts: list[str]) -> None:
    assert parse_facts(text) == (facts, None)


@pytest.mark.parametrize(
    "text", ["", "   ", "Sure, I can help with that!", '{"summary": 1, "x": 2}', "{'facts': ['Ann's cat']}"]
)
def test_parse_facts_unparseable_is_an_error_not_empty(text: str) -> None:
    facts, error = parse_facts(text)
    assert facts == [] and error


def test_parse_facts_truncated_keeps_complete_facts_and_reports() -> None:
    facts, error = parse_facts('{"facts": ["Ann adopted a cat", "Ann is thirty", "Ann wor')
    assert facts == ["Ann adopted a cat", "Ann is thirty"]
    assert error is not None and "truncated" in error


def test_extract_prompt_has_date_and_speaker_and_non_locomo_examples() -> None:
    turn = Turn(
        "D1:3", "Caroline", "I went hiking yesterday", 1, "1:56 pm on 8 May, 2023", "a photo of a lake"
    )
    p = extract.extract_prompt(turn)
    assert p.user == (
        "Date: 1:56 pm on 8 May, 2023\nCaroline: I went hiking yesterday [shares a photo of a lake]"
    )
    for user, assistant in p.examples:
        json.loads(assistant)
        assert "Caroline" not in user and "Melanie" not in user
    # every example names the person spoken to, so "you" never borrows an example's name
    assert all("(talking to " in user for user, _ in p.examples)
    assert "Lena" not in repr(p.examples)  # the name the untrained model copied for Gina
    assert extract.extract_sampling().json_schema == extract.FACTS_SCHEMA
    assert extract.extract_sampling(constrained=False).json_schema is None


def test_extract_prompt_names_the_listener_when_the_turn_knows_it() -> None:
    turn = Turn("D1:4", "Jon", "How's your store doing?", 1, "", None, listener="Gina")
    assert extract.extract_prompt(turn).user == "Jon (talking to Gina): How's your store doing?"


# ---------------------------------------------------------------------------------- id map


def test_idmap_round_trip_skips_deleted_and_duplicates() -> None:
    mems = [mem("uuid-x", "A"), mem("uuid-y", "B", deleted=True), mem("uuid-x", "A"), mem("uuid-z", "C")]
    idmap = IdMap(mems)
    assert len(idmap) == 2
    assert [idmap.small(m.id) for m in idmap.memories] == ["0", "1"]
    assert idmap.real("0") == "uuid-x" and idmap.real(1) == "uuid-z" and idmap.real(" 1 ") == "uuid-z"
    assert idmap.real("2") is None and idmap.real("uuid-x") is None and idmap.real(None) is None
    assert idmap.real(True) is None and idmap.real("²") is None and idmap.real(0.0) is None
    assert json.loads(idmap.to_json()) == [{"id": "0", "text": "A"}, {"id": "1", "text": "C"}]


def test_manager_prompt_shows_small_ids_only() -> None:
    p = manager.manager_prompt(["Ann likes blues"], IdMap(MEMS))
    assert "uuid" not in p.user and '"id": "0"' in p.user and '"id": "1"' in p.user
    assert "Ann likes blues" in p.user
    assert "ADD|UPDATE" not in p.system  # small models copy a placeholder like that literally
    for _, assistant in p.examples:
        json.loads(assistant)
    assert manager.manager_sampling().json_schema == manager.MANAGER_SCHEMA
    assert manager.manager_sampling(constrained=False).json_schema is None


# ------------------------------------------------------------------------------ operations


def test_parse_operations_maps_ids_back() -> None:
    text = json.dumps(
        {
            "memory": [
                {"id": "0", "text": "Ann likes jazz and blues", "event": "UPDATE", "old_memory": "whatever"},
                {"id": "1", "text": "Ann lives in Lyon", "event": "DELETE"},
                {"id": None, "text": "Ann has a parrot", "event": "ADD"},
            ]
        }
    )
    ops = parse_operations(text, IdMap(MEMS), ["f1", "f2"])
    assert [(o.kind, o.memory_id) for o in ops] == [
        (OpKind.UPDATE, "uuid-aaa"),
        (OpKind.DELETE, "uuid-bbb"),
        (OpKind.ADD, None),
    ]
    assert ops[0].old_text == "Ann likes jazz"  # from the store, not the model's old_memory
    assert ops[1].text == "Ann lives in Lyon"


def test_add_ignores_any_id_the_model_gave() -> None:
    assert ops_of(
        '{"memory": [{"id": "0", "text": "Ann has a parrot", "event": "ADD"},'
        ' {"id": "17", "text": "Ann has a dog", "event": "add"}]}'
    ) == [("ADD", None, "Ann has a parrot"), ("ADD", None, "Ann has a dog")]


def test_one_invalid_per_bad_item_others_kept() -> None:
    text = json.dumps(
        {
            "memory": [
                {"id": "0", "text": "Ann likes jazz", "event": "NONE"},
                {"id": "17", "text": "Ann moved", "event": "UPDATE"},  # hallucinated id
                {"id": "1", "text": "x", "event": "ADD|UPDATE|DELETE|NOOP"},  # copied placeholder
                {"id": "1", "text": "Ann lives in Oslo"},  # no event key
                {"id": None, "text": "", "event": "ADD"},  # empty ADD
                {"id": "1", "text": "", "event": "UPDATE"},  # empty UPDATE
                {"text": "Ann moved", "event": "DELETE"},  # DELETE without id
                "ADD Ann has a parrot",  # not an object
                {"id": None, "text": "Ann has a parrot", "event": "ADD"},
            ]
        }
    )
    ops = parse_operations(text, IdMap(MEMS), ["f"])
    kinds = [o.kind for o in ops]
    assert kinds == [OpKind.NOOP] + [OpKind.INVALID] * 7 + [OpKind.ADD]
    errors = [o.error for o in ops[1:8]]
    assert errors == [
        "UPDATE with unknown id",
        "unknown event 'ADD|UPDATE|DELETE|NOOP'",
        "missing event",
        "ADD without text",
        "UPDATE without text",
        "DELETE with missing id",
        "malformed item",
    ]
    assert json.loads(ops[1].raw or "")["id"] == "17"  # raw = the item's JSON


def test_none_and_noop_are_the_same() -> None:
    for event in ("NONE", "none", "NOOP", "noop", "No-Op"):
        assert ops_of(f'{{"memory": [{{"id": "1", "text": "t", "event": "{event}"}}]}}') == [
            ("NOOP", "uuid-bbb", "Ann lives in Lyon")
        ]


def test_none_without_id_is_a_noop_of_the_fact_but_unknown_id_is_invalid() -> None:
    assert ops_of('{"memory": [{"id": null, "text": "Ann said hi", "event": "NONE"}]}') == [
        ("NOOP", None, "Ann said hi")
    ]
    assert ops_of('{"memory": [{"id": "9", "text": "Ann said hi", "event": "NONE"}]}')[0][0] == "INVALID"


def test_mem0_style_full_listing_parses() -> None:
    text = (
        '{"memory": [{"id": "0", "text": "Ann likes jazz", "event": "NONE"}, '
        '{"id": "1", "text": "Ann lives in Lyon", "event": "NONE"}, '
        '{"id": "2", "text": "Ann has a parrot", "event": "ADD"}]}'
    )
    assert ops_of(text) == [
        ("NOOP", "uuid-aaa", "Ann likes jazz"),
        ("NOOP", "uuid-bbb", "Ann lives in Lyon"),
        ("ADD", None, "Ann has a parrot"),
    ]


@pytest.mark.parametrize(
    "text",
    [
        '```json\n{"memory": [{"id": "0", "text": "Ann likes blues", "event": "UPDATE"}]}\n```',
        '{"memory": [{"id": "0", "text": "Ann likes blues", "event": "UPDATE"}]}\nI updated memory 0.',
        "{'memory': [{'id': '0', 'text': 'Ann likes blues', 'event': 'UPDATE'}]}",
        '[{"id": 0, "text": "Ann likes blues", "event": "UPDATE"}]',  # bare list
        '{"id": "0", "text": "Ann likes blues", "event": "UPDATE"}',  # bare item
        '{"operations": [{"id": "0", "text": "Ann likes blues", "event": "UPDATE"}]}',  # other key
    ],
)
def test_parse_operations_tolerates_wrappers(text: str) -> None:
    assert ops_of(text) == [("UPDATE", "uuid-aaa", "Ann likes blues")]


def test_truncated_and_malformed_items_salvaged() -> None:
    text = (
        '{"memory": [{"id": "0", "text": "Ann likes blues", "event": "UPDATE"}, '
        '{"id": "1" "text": "broken", "event": "DELETE"}, '
        '{"id": null, "text": "Ann has a parr'
    )
    ops = parse_operations(text, IdMap(MEMS), ["f"])
    assert [o.kind for o in ops] == [OpKind.UPDATE, OpKind.INVALID, OpKind.INVALID]
    assert ops[1].error == "malformed item" and "truncated" in (ops[2].error or "")


@pytest.mark.parametrize("text", ["", "ADD", "I would ADD this fact.", '{"memory": [{"id": "0", "te'])
def test_unusable_output_is_one_invalid_with_raw_text(text: str) -> None:
    ops = parse_operations(text, IdMap(MEMS), ["f"])
    assert len(ops) == 1 and ops[0].kind is OpKind.INVALID and ops[0].raw == text


def test_empty_list_is_invalid_only_when_there_were_facts() -> None:
    assert parse_operations('{"memory": []}', IdMap(MEMS), []) == []
    ops = parse_operations('{"memory": []}', IdMap(MEMS), ["f"])
    assert [o.kind for o in ops] == [OpKind.INVALID]


def test_duplicates_and_conflicts() -> None:
    text = json.dumps(
        {
            "memory": [
                {"id": None, "text": "ann likes  JAZZ", "event": "ADD"},  # already stored
                {"id": None, "text": "Ann has a parrot", "event": "ADD"},
                {"id": None, "text": "Ann has a parrot", "event": "ADD"},  # repeated in output
                {"id": "0", "text": "Ann likes jazz", "event": "UPDATE"},  # unchanged text
                {"id": "1", "text": "Ann lives in Oslo", "event": "UPDATE"},
                {"id": "1", "text": "", "event": "DELETE"},  # second change of id 1
            ]
        }
    )
    ops = parse_operations(text, IdMap(MEMS), ["f"])
    assert [(o.kind.value, o.memory_id) for o in ops] == [
        ("NOOP", "uuid-aaa"),
        ("ADD", None),
        ("NOOP", None),
        ("NOOP", "uuid-aaa"),
        ("UPDATE", "uuid-bbb"),
        ("INVALID", None),
    ]


# ---------------------------------------------------------------------------------- answers


@pytest.mark.parametrize(
    "text, answer, selected, marker",
    [
        (
            "**Memories selected as relevant:**\n- 8 May, 2023: Ann adopted a cat\n* Ann likes jazz\n"
            "**Answer:** a cat",
            "a cat",
            ["8 May, 2023: Ann adopted a cat", "Ann likes jazz"],
            True,
        ),
        ("- Ann adopted a cat\n\nAnswer: a cat\nQuestion: what else?", "a cat", ["Ann adopted a cat"], True),
        ("**Answer**: first\n**answer:** **second**", "second", [], True),  # several -> last
        ("**Answer:**\n  Lyon  \nBecause she moved.", "Lyon", [], True),
        ("Lyon", "Lyon", [], False),  # no marker: whole text
        ("She lives\nin Lyon", "She lives\nin Lyon", [], False),
        (
            "**Memories selected as relevant:**\n- 8 May: Ann adopted a cat\n\nThe answer is a cat.",
            "The answer is a cat.",
            ["8 May: Ann adopted a cat"],
            False,
        ),  # list is not the answer
        (
            "**Memories selected as relevant:**\n1. 8 May: Ann adopted a cat\n**Answer:** cat",
            "cat",
            ["8 May: Ann adopted a cat"],
            True,
        ),
    ],
)
def test_parse_answer(text: str, answer: str, selected: list[str], marker: bool) -> None:
    assert parse_answer(text) == AnswerParse(answer, selected, marker)


def test_answer_prompt_renders_both_speakers_with_timestamps() -> None:
    a = [mem("1", "Ann adopted a cat", "7:20 pm on 16 June, 2023"), mem("2", "Ann likes\njazz", "")]
    b = [mem("3", "Bob sold his car", "1:00 pm on 2 July, 2023", owner="Bob")]
    p = answer.answer_prompt("What pet does Ann have?", "Ann", a, "Bob", b)
    assert p.user.startswith(
        "Memories for user Ann:\n7:20 pm on 16 June, 2023: Ann adopted a cat\n"
        "Ann likes jazz\n\nMemories for user Bob:\n"
        "1:00 pm on 2 July, 2023: Bob sold his car\n\n"
    )
    assert p.user.endswith("Question: What pet does Ann have?")
    assert p.response_prefix == answer.SELECTED_HEADING + "\n"
    assert "**Answer:**" not in p.response_prefix  # the completion alone must carry the marker
    for prompt in (p, answer.answer_prompt("q", "Ann", [], "Bob", [], distill=False)):
        chat = prompt.messages()
        assert chat[0].role == "system" and chat[-1].content == prompt.user
        text = render_completion(prompt)
        assert "Memories for user Ann:" in text and "Memories for user Bob:" in text
        assert text.endswith(prompt.response_prefix)
    plain = answer.answer_prompt("q", "Ann", [], "Bob", [], distill=False)
    assert "(none)" in plain.user and "Memories selected" not in plain.system
    assert plain.response_prefix == ""


def test_answer_examples_avoid_dates_and_parse() -> None:
    for examples in (answer.ANSWER_EXAMPLES, answer.ANSWER_EXAMPLES_PLAIN):
        for _, assistant in examples:
            parsed = parse_answer(assistant)
            assert parsed.has_marker and not any(ch.isdigit() for ch in parsed.answer)


def test_answer_sampling() -> None:
    assert answer.answer_sampling(True).max_tokens == 160 and answer.answer_sampling(False).max_tokens == 32
    assert answer.answer_sampling(False).stop == ("\n",)
    assert all("Answer" not in s for s in answer.answer_sampling(True).stop)


def test_system_prompts_stay_short() -> None:
    for system in (
        extract.EXTRACT_SYSTEM,
        manager.MANAGER_SYSTEM,
        answer.ANSWER_SYSTEM,
        answer.ANSWER_SYSTEM_PLAIN,
    ):
        assert len(system) / 4 <= 260, system[:40]


def test_completion_rendering_of_json_prompts() -> None:
    turn = Turn("D1:1", "Ann", "hi", 1, "")
    for p in (extract.extract_prompt(turn), manager.manager_prompt(["x"], IdMap([]))):
        assert isinstance(p, Prompt) and p.response_prefix == ""
        text = render_completion(p)
        assert text.count("### Input:") == len(p.examples) + 1
    assert extract.extract_prompt(turn).user == "Ann: hi"  # no empty "Date:" line


def test_a_fact_left_without_an_operation_is_an_invalid_op_naming_it() -> None:
    text = '{"memory": [{"id": null, "text": "Ann has a parrot", "event": "ADD"}]}'
    ops = parse_operations(text, IdMap(MEMS), ["Ann has a parrot", "Ann is 30", "Ann sings"])
    assert [o.kind for o in ops] == [OpKind.ADD, OpKind.INVALID, OpKind.INVALID]
    assert [o.raw for o in ops[1:]] == ["Ann is 30", "Ann sings"]
    assert all(o.error == "no operation for a fact" for o in ops[1:])
    # One item per fact (a DELETE beside an ADD may make one more) is complete.
    two = (
        '{"memory": [{"id": "1", "text": "x", "event": "DELETE"}, {"id": null, "text": "y", "event": "ADD"}]}'
    )
    assert OpKind.INVALID not in [o.kind for o in parse_operations(two, IdMap(MEMS), ["y"])]


def test_manager_grammar_asks_for_one_item_per_fact() -> None:
    items = manager.manager_sampling(True, n_facts=3).json_schema["properties"]["memory"]
    assert (items["minItems"], items["maxItems"]) == (3, 4)
    assert manager.manager_sampling(False, n_facts=3).json_schema is None
