"""Properties of the REST server: schemathesis finds no server error (5xx) anywhere in its OpenAPI
schema, and no sequence of requests with one owner's API key reads or changes another's memories
(hypothesis). Both run over a real ``Memory`` (SQLite, hash embedder, scripted fake models)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from memory_r1.server.auth import ApiKeys
from memory_r1.server.rest import create_app
from server_support import fast_memory

KEYS = {"key-a": ["user:alice", "run:r1"], "key-b": ["user:bob"]}
A = {"Authorization": "Bearer key-a"}
B = {"Authorization": "Bearer key-b"}
SECRET = "bob-secret-7f3a"


ROUTES = [
    ("POST", "/memories"),
    ("GET", "/memories"),
    ("DELETE", "/memories"),
    ("GET", "/memories/{memory_id}"),
    ("PUT", "/memories/{memory_id}"),
    ("DELETE", "/memories/{memory_id}"),
    ("GET", "/memories/{memory_id}/history"),
    ("POST", "/search"),
    ("POST", "/answer"),
    ("POST", "/reset"),
    ("GET", "/ui"),
]


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]


@pytest.mark.parametrize("method, path", ROUTES)
def test_no_request_the_schema_allows_or_not_is_a_server_error(
    tmp_path: Path, method: str, path: str
) -> None:
    """Valid and invalid requests (and ones naming a stored memory): never a 5xx, and every
    status, content type, header and body is one the schema documents."""
    with fast_memory(tmp_path / "m.sqlite") as memory:
        mid = memory.add("I live in Paris", user_id="alice", infer=False)["results"][0]["id"]
        operation = schemathesis.openapi.from_asgi("/openapi.json", create_app(memory))[path][method]
        stored = {"path_parameters": {"memory_id": mid}} if "{memory_id}" in path else {}
        cases = st.one_of(
            operation.as_strategy(GenerationMode.POSITIVE),
            operation.as_strategy(GenerationMode.NEGATIVE),
            operation.as_strategy(GenerationMode.POSITIVE, **stored),
        )

        @settings(max_examples=40, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        @given(case=cases)
        def check(case: Any) -> None:
            case.call_and_validate(checks=CHECKS)

        check()


def test_the_schema_lists_every_route_the_property_test_covers(tmp_path: Path) -> None:
    with fast_memory(tmp_path / "m.sqlite") as memory:
        paths = create_app(memory).openapi()["paths"]
    assert sorted((m.upper(), p) for p, ops in paths.items() for m in ops) == sorted(ROUTES)


def _bodies(owner: st.SearchStrategy[dict[str, str]], ids: st.SearchStrategy[str]) -> st.SearchStrategy[Any]:
    """One request key A might send: (method, path, params, json)."""
    text = st.text(min_size=0, max_size=12)
    message = st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant"]), "content": text})
    return st.one_of(
        st.tuples(
            st.just("post"),
            st.just("/memories"),
            st.just({}),
            st.builds(
                lambda o, m, infer: {**o, "messages": m, "infer": infer},
                owner,
                st.lists(message, max_size=2),
                st.booleans(),
            ),
        ),
        st.tuples(st.sampled_from(["get", "delete"]), st.just("/memories"), owner, st.none()),
        st.tuples(
            st.just("post"),
            st.sampled_from(["/search", "/answer"]),
            st.just({}),
            st.builds(
                lambda o, q: {**o, "query": q, "question": q}, owner, st.sampled_from([SECRET, "secret", "x"])
            ),
        ),
        st.tuples(
            st.sampled_from(["get", "delete"]), ids.map(lambda i: f"/memories/{i}"), st.just({}), st.none()
        ),
        st.tuples(st.just("get"), ids.map(lambda i: f"/memories/{i}/history"), st.just({}), st.none()),
        st.tuples(
            st.just("put"),
            ids.map(lambda i: f"/memories/{i}"),
            st.just({}),
            st.builds(lambda t: {"data": t}, text),
        ),
        st.tuples(st.just("post"), st.just("/reset"), st.just({}), st.none()),
    )


def _owners() -> st.SearchStrategy[dict[str, str]]:
    names = st.sampled_from(["alice", "bob", "r1", "mallory", ""])
    return st.dictionaries(st.sampled_from(["user_id", "agent_id", "run_id"]), names, max_size=3)


def _snapshot(c: TestClient) -> tuple[Any, ...]:
    items = c.get("/memories", params={"user_id": "bob"}, headers=B).json()["results"]
    return tuple(
        (m["id"], m["memory"], m["updated_at"], str(c.get(f"/memories/{m['id']}/history", headers=B).json()))
        for m in items
    )


@settings(max_examples=40, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_no_sequence_of_requests_with_one_key_touches_another_owners_memories(data: st.DataObject) -> None:
    with (
        tempfile.TemporaryDirectory() as tmp,
        fast_memory(Path(tmp) / "m.sqlite") as memory,
        TestClient(create_app(memory, keys=ApiKeys(KEYS))) as c,
    ):
        secrets = [{"role": "user", "content": f"{SECRET} {i}"} for i in range(2)]
        bob_ids = [r["id"] for r in memory.add(secrets, user_id="bob", infer=False)["results"]]
        mine = memory.add("alice note", user_id="alice", infer=False)["results"][0]["id"]
        ids = st.sampled_from([*bob_ids, mine, "no-such-id"])
        before = _snapshot(c)
        for _ in range(data.draw(st.integers(1, 10), label="requests")):
            method, path, params, body = data.draw(_bodies(_owners(), ids))
            r = c.request(method, path, params=params, json=body, headers=A)
            assert r.status_code < 500, (method, path, params, body, r.text)
            leaked = [b for b in bob_ids if b in r.text and b not in path]  # a 404 may echo the id asked
            assert SECRET not in r.text and not leaked, (method, path, params, body, r.text)
        assert _snapshot(c) == before
