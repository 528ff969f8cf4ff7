"""The three agents over FakeChatModel: what they send, what they return."""

from __future__ import annotations

import json

from memory_r1.agents.answer import SELECTED_HEADING, AnswerAgent
from memory_r1.agents.extract import FACTS_SCHEMA, FactExtractor
from memory_r1.agents.manager import MANAGER_SCHEMA, MemoryManager
from memory_r1.llm.base import render_completion
from memory_r1.testing import FakeChatModel
from memory_r1.types import Memory, OpKind, Turn

TURN = Turn(
    "D2:5", "Ann", "I adopted a cat yesterday!", 2, "3:00 pm on 9 June, 2023", "a photo of a grey cat"
)


def mem(real_id: str, text: str, ts: str = "3:00 pm on 9 June, 2023", owner: str = "Ann") -> Memory:
    return Memory(real_id, text, owner, ts, 0.0, 0.0)


# ---------------------------------------------------------------------------------- extract


def test_extractor_returns_facts_and_sends_the_turn() -> None:
    model = FakeChatModel(['{"facts": ["Ann adopted a grey cat on 8 June, 2023"]}'])
    result = FactExtractor(model).extract(TURN)
    assert result.facts == ["Ann adopted a grey cat on 8 June, 2023"] and result.error is None
    prompt, sampling = model.calls[0]
    assert "3:00 pm on 9 June, 2023" in prompt.user and "[shares a photo of a grey cat]" in prompt.user
    assert sampling.json_schema == FACTS_SCHEMA
    assert result.completion.text.startswith('{"facts"')


def test_extractor_surfaces_parse_errors_without_fallback_fact() -> None:
    model = FakeChatModel(["Ann adopted a cat, how lovely!"], chat=False)
    result = FactExtractor(model, constrained=False).extract(TURN)
    assert result.facts == [] and result.error == "no JSON found"
    assert model.calls[0][1].json_schema is None


def test_extractor_empty_facts_is_not_an_error() -> None:
    result = FactExtractor(FakeChatModel(['{"facts": []}'])).extract(TURN)
    assert result.facts == [] and result.error is None


# ---------------------------------------------------------------------------------- manager

RELATED = [mem("uuid-1", "Ann has a dog"), mem("uuid-2", "Ann lives in Lyon")]


def test_manager_makes_no_call_without_facts() -> None:
    model = FakeChatModel([])
    result = MemoryManager(model).decide([], RELATED)
    assert result.ops == [] and result.completion is None and result.n_invalid == 0
    assert model.calls == []


def test_manager_decides_with_remapped_ids() -> None:
    reply = json.dumps(
        {
            "memory": [
                {
                    "id": "0",
                    "text": "Ann has a dog and a cat",
                    "event": "UPDATE",
                    "old_memory": "Ann has a dog",
                },
                {"id": "7", "text": "Ann moved", "event": "DELETE"},
                {"id": None, "text": "Ann adopted a cat on 8 June, 2023", "event": "ADD"},
            ]
        }
    )
    model = FakeChatModel([reply])
    manager = MemoryManager(model)
    result = manager.decide(["Ann adopted a cat on 8 June, 2023"], RELATED)
    assert [(o.kind, o.memory_id) for o in result.ops] == [
        (OpKind.UPDATE, "uuid-1"),
        (OpKind.INVALID, None),
        (OpKind.ADD, None),
    ]
    assert result.n_invalid == 1
    prompt, sampling = model.calls[0]
    assert "uuid" not in prompt.user and "Ann lives in Lyon" in prompt.user
    schema = sampling.json_schema or {}
    assert schema["properties"]["memory"]["maxItems"] == 2  # one fact + 1
    assert schema["properties"]["memory"]["items"] == MANAGER_SCHEMA["properties"]["memory"]["items"]
    assert MANAGER_SCHEMA["properties"]["memory"]["maxItems"] == 8  # the constant is untouched
    again, idmap = manager.build_prompt(["Ann adopted a cat on 8 June, 2023"], RELATED)
    assert again == prompt and idmap.real("1") == "uuid-2"


def test_manager_unparseable_output_is_counted() -> None:
    result = MemoryManager(FakeChatModel(["ADD"]), constrained=False).decide(["f"], RELATED)
    assert [o.kind for o in result.ops] == [OpKind.INVALID] and result.n_invalid == 1
    assert result.ops[0].raw == "ADD"


def test_manager_with_empty_bank_renders_for_base_models() -> None:
    model = FakeChatModel(['{"memory": [{"id": null, "text": "f", "event": "ADD"}]}'], chat=False)
    result = MemoryManager(model).decide(["f"], [])
    assert [o.kind for o in result.ops] == [OpKind.ADD]
    text = render_completion(model.calls[0][0])
    assert "Existing memories: []" in text and text.rstrip().endswith("### Response:")


# ----------------------------------------------------------------------------------- answer


def test_answer_agent_distills_and_answers() -> None:
    reply = "- 3:00 pm on 9 June, 2023: Ann has a dog\n\n**Answer:** a dog\nQuestion"
    model = FakeChatModel([reply])
    result = AnswerAgent(model).answer(
        "What pet does Ann have?", "Ann", RELATED, "Bob", [mem("b", "Bob sold his car", owner="Bob")]
    )
    assert result.answer == "a dog" and result.has_marker
    assert result.selected == ["3:00 pm on 9 June, 2023: Ann has a dog"]
    assert result.raw == SELECTED_HEADING + "\n" + reply
    prompt, sampling = model.calls[0]
    assert sampling.max_tokens == 160 and sampling.json_schema is None
    for needle in (
        "Memories for user Ann:",
        "Memories for user Bob:",
        "3:00 pm on 9 June, 2023: Ann has a dog",
        "3:00 pm on 9 June, 2023: Bob sold his car",
    ):
        assert needle in prompt.user


def test_answer_agent_shows_the_memories_given_in_order() -> None:
    """The agent shows what retrieval gave it; how many is retrieval's k (one knob)."""
    many = [mem(str(i), f"Ann fact {i:02d}") for i in range(40)]
    model = FakeChatModel(["**Answer:** x"])
    AnswerAgent(model, distill=False).answer("q?", "Ann", many[:3], "Bob", many[5:40])
    user = model.calls[0][0].user
    block_a, block_b = user.split("\n\nMemories for user Bob:\n")
    assert [ln.split(": ", 1)[1] for ln in block_a.splitlines()[1:]] == [
        "Ann fact 00",
        "Ann fact 01",
        "Ann fact 02",
    ]
    shown_b = [ln.split(": ", 1)[1] for ln in block_b.split("\n\nQuestion:")[0].splitlines()]
    assert shown_b == [f"Ann fact {i:02d}" for i in range(5, 40)]  # all given, in order
    assert model.calls[0][1].max_tokens == 32 and model.calls[0][1].stop == ("\n",)


def test_answer_agent_without_marker_reports_it() -> None:
    model = FakeChatModel(["Lyon"])
    result = AnswerAgent(model, distill=False).answer("Where?", "Ann", RELATED, "Bob", [])
    assert result.answer == "Lyon" and not result.has_marker and result.selected == []
    assert result.raw == "Lyon"
