"""The REST server (``memory_r1.server.rest``) through FastAPI's TestClient over a real ``Memory``
(SQLite, hash embedder, scripted fake models): every endpoint, Mem0's shapes, errors as 4xx,
API keys and owner scope."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from memory_r1.server.auth import ApiKeys
from memory_r1.server.rest import create_app
from server_support import fast_memory

A = {"Authorization": "Bearer key-alice"}
B = {"Authorization": "Bearer key-bob"}
KEYS = {"key-alice": ["user:alice"], "key-bob": ["user:bob", "agent:bob-bot"]}

# mem0ai/mem0 server/main.py: (method, path) of every route it serves, and each body's fields
MEM0_ROUTES = {
    ("post", "/memories"),
    ("get", "/memories"),
    ("get", "/memories/{memory_id}"),
    ("put", "/memories/{memory_id}"),
    ("get", "/memories/{memory_id}/history"),
    ("delete", "/memories/{memory_id}"),
    ("delete", "/memories"),
    ("post", "/search"),
    ("post", "/reset"),
}


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    with fast_memory(tmp_path / "m.sqlite") as memory, TestClient(create_app(memory)) as c:
        yield c


@pytest.fixture
def keyed(tmp_path: Path) -> Iterator[TestClient]:
    with (
        fast_memory(tmp_path / "m.sqlite") as memory,
        TestClient(create_app(memory, keys=ApiKeys(KEYS))) as c,
    ):
        yield c


def _add(c: TestClient, text: str, headers: dict[str, str] | None = None, **ids: str) -> str:
    body = {"messages": [{"role": "user", "content": text}], **(ids or {"user_id": "alice"}), "infer": False}
    r = c.post("/memories", json=body, headers=headers)
    assert r.status_code == 200, r.text
    return str(r.json()["results"][0]["id"])


def test_every_endpoint_in_mem0_shapes(client: TestClient) -> None:
    r = client.post(
        "/memories",
        json={
            "messages": [{"role": "user", "content": "I live in Paris"}],
            "user_id": "alice",
            "metadata": {"src": "chat"},
        },
    )
    assert r.status_code == 200 and [op["event"] for op in r.json()["results"]] == ["ADD"]
    mid = r.json()["results"][0]["id"]
    item = client.get(f"/memories/{mid}").json()
    assert (
        item["memory"] == "I live in Paris"
        and item["user_id"] == "alice"
        and item["metadata"] == {"src": "chat"}
    )
    listed = client.get("/memories", params={"user_id": "alice"}).json()["results"]
    assert [m["id"] for m in listed] == [mid]
    hits = client.post(
        "/search", json={"query": "I live in Paris", "user_id": "alice", "filters": {"src": "chat"}}
    )
    assert hits.json()["results"][0]["id"] == mid and hits.json()["results"][0]["score"] > 0.9
    assert client.put(f"/memories/{mid}", json={"data": "I live in Lyon"}).status_code == 200
    assert client.get(f"/memories/{mid}").json()["memory"] == "I live in Lyon"
    history = client.get(f"/memories/{mid}/history").json()
    assert [(h["event"], h["old_memory"], h["new_memory"]) for h in history] == [
        ("ADD", None, "I live in Paris"),
        ("UPDATE", "I live in Paris", "I live in Lyon"),
    ]
    assert client.delete(f"/memories/{mid}").json() == {"message": "Memory deleted successfully"}
    assert client.get(f"/memories/{mid}").status_code == 404
    _add(client, "I like tea")
    r = client.delete("/memories", params={"user_id": "alice"})
    assert r.json() == {"message": "All relevant memories deleted"}
    assert client.get("/memories", params={"user_id": "alice"}).json() == {"results": []}
    _add(client, "I like jazz", agent_id="planner")
    assert client.post("/reset").json() == {"message": "All memories reset"}
    assert client.get("/memories", params={"agent_id": "planner"}).json() == {"results": []}


def test_add_runs_the_manager_and_answer_runs_the_answer_agent(client: TestClient) -> None:
    def say(text: str) -> Any:
        return client.post(
            "/memories", json={"messages": [{"role": "user", "content": text}], "user_id": "u"}
        )

    assert [op["event"] for op in say("I live in Paris").json()["results"]] == ["ADD"]
    update = say("I live in Paris -> I live in Lyon").json()["results"]
    assert update[0]["event"] == "UPDATE" and update[0]["previous_memory"] == "I live in Paris"
    assert say("bogus").json()["results"][0]["event"] == "INVALID"
    r = client.post("/answer", json={"question": "Where do I live?", "user_id": "u"})
    assert r.status_code == 200 and r.json()["answer"] == "Paris"
    assert [m["memory"] for m in r.json()["memories"]] == ["I live in Lyon"]


@pytest.mark.parametrize(
    "method, path, body, status, message",
    [
        (
            "post",
            "/memories",
            {"messages": [{"role": "user", "content": "x"}]},
            400,
            "At least one identifier",
        ),
        ("post", "/memories", {"messages": [], "user_id": "a"}, 400, "messages"),
        ("post", "/memories", {"messages": [{"role": "robot", "content": "x"}], "user_id": "a"}, 400, "role"),
        ("post", "/memories", {"messages": "not a list", "user_id": "a"}, 422, "list"),
        ("post", "/memories", {"user_id": "a"}, 422, "messages"),
        (
            "post",
            "/memories",
            {"messages": [{"role": "user", "content": "x"}], "user_id": "a", "metadata": {"user_id": "b"}},
            400,
            "metadata",
        ),
        ("get", "/memories", None, 400, "At least one identifier"),
        ("get", "/memories?user_id=a&limit=0", None, 422, "limit"),
        ("delete", "/memories", None, 400, "At least one identifier"),
        ("post", "/search", {"query": "x"}, 400, "At least one identifier"),
        ("post", "/search", {"query": "  ", "user_id": "a"}, 400, "query"),
        ("post", "/search", {"user_id": "a"}, 422, "query"),
        ("post", "/answer", {"question": "", "user_id": "a"}, 400, "question"),
        ("get", "/memories/no-such-id", None, 404, "no-such-id"),
        ("get", "/memories/no-such-id/history", None, 404, "no-such-id"),
        ("delete", "/memories/no-such-id", None, 404, "no-such-id"),
        ("put", "/memories/no-such-id", {"data": "x"}, 404, "no-such-id"),
        ("put", "/memories/no-such-id", {"data": 3}, 422, "new text"),
        ("put", "/memories/no-such-id", ["x"], 422, "dict"),
    ],
)
def test_bad_input_is_a_4xx_that_says_what_is_wrong(
    client: TestClient, method: str, path: str, body: object, status: int, message: str
) -> None:
    r = client.request(method, path, json=body)
    assert r.status_code == status, r.text
    assert message in r.text


def test_keys_are_required_and_checked(keyed: TestClient) -> None:
    for headers in (
        None,
        {"Authorization": "Bearer nope"},
        {"Authorization": "key-alice"},
        {"Authorization": "Basic a2V5LWFsaWNl"},
    ):
        r = keyed.get("/memories", params={"user_id": "alice"}, headers=headers)
        assert r.status_code == 401 and "API key" in r.json()["detail"]
        assert r.headers["www-authenticate"] == "Bearer"
    assert keyed.get("/memories", params={"user_id": "alice"}, headers=A).status_code == 200


def test_a_key_for_one_owner_cannot_read_or_change_anothers_memories(keyed: TestClient) -> None:
    bob = _add(keyed, "Bob's secret", B, user_id="bob")
    bot = _add(keyed, "the bot's plan", B, agent_id="bob-bot")
    mine = _add(keyed, "Alice's note", A, user_id="alice")
    for mid in (bob, bot):
        assert keyed.get(f"/memories/{mid}", headers=A).status_code == 404
        assert keyed.get(f"/memories/{mid}/history", headers=A).status_code == 404
        assert keyed.put(f"/memories/{mid}", json={"data": "hacked"}, headers=A).status_code == 404
        assert keyed.delete(f"/memories/{mid}", headers=A).status_code == 404
    scoped = [
        keyed.get("/memories", params={"user_id": "bob"}, headers=A),
        keyed.delete("/memories", params={"agent_id": "bob-bot"}, headers=A),
        keyed.post("/search", json={"query": "secret", "user_id": "bob"}, headers=A),
        keyed.post("/answer", json={"question": "secret?", "user_id": "bob"}, headers=A),
        keyed.post(
            "/memories", json={"messages": [{"role": "user", "content": "x"}], "user_id": "bob"}, headers=A
        ),
    ]
    assert all(r.status_code == 403 and ("user:bob" in r.text or "agent:bob-bot" in r.text) for r in scoped)
    assert keyed.post("/reset", headers=A).status_code == 200  # resets alice only
    assert keyed.get(f"/memories/{mine}", headers=A).status_code == 404
    assert keyed.get(f"/memories/{bob}", headers=B).json()["memory"] == "Bob's secret"
    assert keyed.get(f"/memories/{bot}", headers=B).json()["memory"] == "the bot's plan"
    assert [h["event"] for h in keyed.get(f"/memories/{bob}/history", headers=B).json()] == ["ADD"]


def test_openapi_has_mem0s_routes_and_bodies(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    routes = {(m, p) for p, ops in schema["paths"].items() for m in ops}
    assert routes >= MEM0_ROUTES | {("post", "/answer")}
    bodies = schema["components"]["schemas"]
    assert set(bodies["MemoryCreate"]["properties"]) >= {
        "messages",
        "user_id",
        "agent_id",
        "run_id",
        "metadata",
    }
    assert set(bodies["SearchRequest"]["properties"]) >= {"query", "user_id", "agent_id", "run_id", "filters"}
    assert bodies["MemoryCreate"]["required"] == ["messages"] and bodies["SearchRequest"]["required"] == [
        "query"
    ]
    assert client.get("/docs").status_code == 200
    assert client.get("/", follow_redirects=False).headers["location"] == "/docs"


def test_the_server_never_imports_torch() -> None:
    code = (
        "import sys, memory_r1.server.rest, memory_r1.server.mcp, memory_r1.cli.serve; "
        "bad = [m for m in ('torch', 'transformers', 'peft', 'accelerate') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
