"""``memory_r1.Memory``, the Mem0-shaped memory layer, on every store backend (``store_target``)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from memory_r1 import Memory, MemoryConfig
from memory_r1.errors import AccessDenied, DataError, InvalidInput, NotFoundError
from memory_r1.llm.base import Prompt, Sampling
from memory_r1.testing import FakeChatModel

Manager = Callable[[list[str], list[dict[str, str]]], list[dict[str, object]]]


def _config(store_target: tuple[str, str]) -> dict[str, object]:
    kind, target = store_target
    return {"store": {"kind": kind, "path": target}, "embedder": "hash"}


def _add_all(facts: list[str], _: list[dict[str, str]]) -> list[dict[str, object]]:
    return [{"id": None, "text": f, "event": "ADD"} for f in facts]


def fake_models(manager: Manager = _add_all, answer: str = "Paris") -> dict[str, FakeChatModel]:
    """Extraction: the message is the fact; Manager: ``manager(facts, memories)``; Answer: fixed."""

    def reply(prompt: Prompt, _: Sampling) -> str:
        if "New facts: " in prompt.user:
            head, facts = prompt.user.split("\nNew facts: ", 1)
            memories = json.loads(head.removeprefix("Existing memories: "))
            return json.dumps({"memory": manager(json.loads(facts), memories)})
        if "Question: " in prompt.user:
            return f"- a memory\n**Answer:** {answer}"
        text = prompt.user.rsplit("): ", 1)[-1].strip()
        return json.dumps({"facts": [text] if text else []})

    model = FakeChatModel(reply_fn=reply)
    return {"extract": model, "manager": model, "answer": model}


@pytest.fixture
def memory(store_target: tuple[str, str]) -> Iterator[Memory]:
    with Memory(_config(store_target), models=fake_models()) as m:
        yield m


def test_raw_adds_search_get_update_delete_and_history(memory: Memory) -> None:
    added = memory.add(
        [{"role": "user", "content": "I live in Paris"}, {"role": "user", "content": "I like tea"}],
        user_id="alice",
        metadata={"source": "chat"},
        infer=False,
    )["results"]
    assert [r["event"] for r in added] == ["ADD", "ADD"]
    hits = memory.search("I live in Paris", user_id="alice", limit=5)["results"]
    assert hits[0]["memory"] == "I live in Paris" and hits[0]["user_id"] == "alice"
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
    first = added[0]["id"]
    got = memory.get(first)
    assert got is not None and got["metadata"] == {"source": "chat"} and got["owner"] == "user:alice"
    assert memory.update(first, "I live in Lyon") == {"message": "Memory updated successfully!"}
    assert memory.delete(first) == {"message": "Memory deleted successfully!"}
    assert memory.get(first) is None
    assert [r["memory"] for r in memory.get_all(user_id="alice")["results"]] == ["I like tea"]
    events = [(h["event"], h["old_memory"], h["new_memory"]) for h in memory.history(first)]
    assert events == [
        ("ADD", None, "I live in Paris"),
        ("UPDATE", "I live in Paris", "I live in Lyon"),
        ("DELETE", "I live in Lyon", None),
    ]
    with pytest.raises(NotFoundError):
        memory.update(first, "again")


def test_scopes_by_user_agent_and_run(memory: Memory) -> None:
    memory.add("run one fact", user_id="alice", run_id="r1", infer=False)
    memory.add("run two fact", user_id="alice", run_id="r2", infer=False)
    memory.add("the agent's own note", agent_id="helper", infer=False)
    assert len(memory.get_all(user_id="alice")["results"]) == 2
    assert [r["memory"] for r in memory.get_all(user_id="alice", run_id="r2")["results"]] == ["run two fact"]
    assert [r["memory"] for r in memory.search("fact", user_id="alice", run_id="r1")["results"]] == [
        "run one fact"
    ]
    assert [r["owner"] for r in memory.get_all(agent_id="helper")["results"]] == ["agent:helper"]
    assert memory.get_all(user_id="bob")["results"] == []
    memory.delete_all(user_id="alice", run_id="r1")
    assert [r["memory"] for r in memory.get_all(user_id="alice")["results"]] == ["run two fact"]
    memory.delete_all(user_id="alice")
    assert memory.get_all(user_id="alice")["results"] == []
    assert memory.owners() == ["agent:helper", "user:alice"]
    memory.reset()
    assert memory.get_all(agent_id="helper")["results"] == [] and memory.owners() == []


def test_a_scoped_caller_never_reaches_another_owners_memory(memory: Memory) -> None:
    bob = memory.add("Bob's secret", user_id="bob", infer=False)["results"][0]["id"]
    alice_only = {"user:alice"}
    assert memory.get(bob, owners=alice_only) is None
    for call in (
        lambda: memory.update(bob, "hacked", owners=alice_only),
        lambda: memory.delete(bob, owners=alice_only),
        lambda: memory.history(bob, owners=alice_only),
    ):
        with pytest.raises(NotFoundError):
            call()
    for call in (
        lambda: memory.search("secret", user_id="bob", owners=alice_only),
        lambda: memory.add("x", user_id="bob", infer=False, owners=alice_only),
        lambda: memory.delete_all(user_id="bob", owners=alice_only),
        lambda: memory.audit("user:bob", owners=alice_only),
    ):
        with pytest.raises(AccessDenied):
            call()
    memory.reset(owners=alice_only)
    assert memory.get(bob) is not None and memory.get(bob)["memory"] == "Bob's secret"  # type: ignore[index]
    assert memory.owners(owners=alice_only) == []


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda m: m.add("x", infer=False), "at least one of user_id"),
        (lambda m: m.add([], user_id="a"), "messages"),
        (lambda m: m.add([{"role": "robot", "content": "x"}], user_id="a"), "role"),
        (lambda m: m.add([{"role": "user"}], user_id="a"), "content"),
        (lambda m: m.add("x", user_id="a", metadata={"user_id": "b"}), "metadata may not set user_id"),
        (lambda m: m.add("x", user_id="", infer=False), "user_id"),
        (lambda m: m.search("x", user_id="a", limit=0), "limit"),
        (lambda m: m.search(" ", user_id="a"), "query"),
        (lambda m: m.search("x", user_id="a", filters=[1]), "filters"),
        (lambda m: m.update("some-id", " "), "non-empty"),
        (lambda m: m.get(""), "memory id"),
    ],
)
def test_bad_input_is_a_clear_error(memory: Memory, call: Callable[[Memory], object], message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        call(memory)


def _rename(facts: list[str], memories: list[dict[str, str]]) -> list[dict[str, object]]:
    """A Manager that knows a name changes: UPDATE the old name, else ADD."""
    old = next((m for m in memories if m["text"].startswith("My name is")), None)
    if old is not None and facts[0].startswith("My name is"):
        return [{"id": old["id"], "text": facts[0], "event": "UPDATE", "old_memory": old["text"]}]
    return _add_all(facts, memories)


def test_add_runs_the_manager_and_a_contradiction_updates(store_target: tuple[str, str]) -> None:
    with Memory(_config(store_target), models=fake_models(_rename)) as m:
        first = m.add("My name is Ann", user_id="u")["results"]
        second = m.add([{"role": "user", "content": "My name is Bea"}], user_id="u")["results"]
        assert [r["event"] for r in first] == ["ADD"]
        assert second == [
            {
                "id": first[0]["id"],
                "memory": "My name is Bea",
                "event": "UPDATE",
                "previous_memory": "My name is Ann",
            }
        ]
        assert [r["memory"] for r in m.get_all(user_id="u")["results"]] == ["My name is Bea"]


def test_a_bad_manager_output_is_reported_not_dropped(store_target: tuple[str, str]) -> None:
    def broken(facts: list[str], memories: list[dict[str, str]]) -> list[dict[str, object]]:
        return [{"id": "7", "text": facts[0], "event": "DELETE"}] if memories else _add_all(facts, memories)

    with Memory(_config(store_target), models=fake_models(broken)) as m:
        m.add("I like tea", user_id="u")
        results = m.add("I like green tea", user_id="u")["results"]
        assert [r["event"] for r in results] == ["INVALID"] and "id" in results[0]["error"]
        assert [h["event"] for h in m.audit("user:u")] == ["ADD", "INVALID"]


def test_answer_reads_only_the_owners_memories(store_target: tuple[str, str]) -> None:
    models = fake_models(answer="Paris")
    with Memory(_config(store_target), models=models) as m:
        m.add("Alice lives in Paris", user_id="alice", infer=False)
        m.add("Bob lives in Rome", user_id="bob", infer=False)
        out = m.answer("Where does Alice live?", user_id="alice")
        assert out["answer"] == "Paris" and [r["memory"] for r in out["memories"]] == ["Alice lives in Paris"]
        prompt = models["answer"].calls[-1][0]
        assert "Alice lives in Paris" in prompt.user and "Rome" not in prompt.user


def test_config_takes_mem0s_shape_and_names_bad_keys(tmp_path: Path) -> None:
    cfg = MemoryConfig.from_dict(
        {
            "vector_store": {"provider": "pgvector", "config": {"connection_string": "postgresql://h/db"}},
            "llm": {
                "provider": "ollama",
                "config": {"model": "llama3", "ollama_base_url": "http://h:11434/v1"},
            },
        }
    )
    assert (cfg.store_kind, cfg.store_target) == ("postgres", "postgresql://h/db")
    assert (cfg.llm.backend, cfg.llm.model, cfg.llm.base_url) == ("openai", "llama3", "http://h:11434/v1")
    with pytest.raises(DataError, match=r"llm\.temprature"):
        MemoryConfig.from_dict({"llm": {"backend": "llamacpp", "temprature": 0}})
    bad = tmp_path / "memory.toml"
    bad.write_text("store = [")
    with pytest.raises(DataError, match=r"memory\.toml"):
        MemoryConfig.from_file(bad)


_DEFAULT_RUN = """
import json, sys
from memory_r1 import Memory
with Memory({"store": {"path": sys.argv[1]}}) as m:
    ops = m.add("I just adopted a golden retriever called Max.", user_id="jon")["results"]
    hits = m.search("What is the dog's name?", user_id="jon")["results"]
    out = m.answer("What is the name of Jon's dog?", user_id="jon")
    print(json.dumps({"ops": ops, "hits": len(hits), "answer": out["answer"], "raw": out["raw"],
                      "adapters": sorted(m.adapters or {}), "torch": "torch" in sys.modules}))
"""


@pytest.mark.slow
def test_the_default_memory_runs_the_shipped_agents_offline_without_torch(tmp_path: Path) -> None:
    """Real llama.cpp + shipped adapters + MiniLM, in a fresh process: add with inference,
    search, answer; torch is never imported."""
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-c", _DEFAULT_RUN, str(tmp_path / "m.sqlite")],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["adapters"] == ["answer", "memory"] and out["torch"] is False
    events = [op["event"] for op in out["ops"]]
    assert events and set(events) <= {"ADD", "UPDATE", "DELETE", "NONE", "INVALID"}
    if "ADD" in events:
        assert out["hits"] >= 1  # what was added is found
    assert isinstance(out["answer"], str) and out["raw"]
