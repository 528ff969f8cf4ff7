"""``memory-r1 serve``: refused beyond loopback without API keys, started with them, API keys from
a file and the environment, and a Mem0 REST client's call sequence against a real served process
(fast: hash embedder, ``infer: false``; slow: the real default model, Mem0's exact requests)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from memory_r1.cli import main
from memory_r1.errors import ConfigError, DataError
from memory_r1.server.auth import ApiKeys, check_exposure, is_loopback, load_keys
from server_support import cli_env, served, write_config


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.20", "example.org"])
def test_serve_beyond_loopback_without_keys_is_refused(host: str) -> None:
    result = CliRunner().invoke(main, ["serve", "--host", host], env={"MEMORY_R1_API_KEYS": ""})
    assert result.exit_code == 1
    assert f"refusing to serve on {host} without API keys" in result.output and "--keys-file" in result.output


@pytest.mark.parametrize(
    "content, suffix, says",
    [
        ("{not json", ".json", "not valid JSON"),
        ('k = "user:a"', ".toml", "must map to a list of owners"),
        ('{"k": ["alice"]}', ".json", "user:<id>, agent:<id> or run:<id>"),
        ("{}", ".json", "no API keys"),
    ],
)
def test_a_bad_keys_file_is_a_clean_error(tmp_path: Path, content: str, suffix: str, says: str) -> None:
    keys = tmp_path / f"keys{suffix}"
    keys.write_text(content)
    result = CliRunner().invoke(main, ["serve", "--keys-file", str(keys)], env={"MEMORY_R1_API_KEYS": ""})
    assert result.exit_code == 1 and says in result.output and str(keys) in result.output


def test_keys_from_a_toml_file_and_the_environment_merge(tmp_path: Path) -> None:
    toml = tmp_path / "keys.toml"
    toml.write_text('k-file = ["user:alice", "run:r1"]\n')
    keys = load_keys(toml, {"MEMORY_R1_API_KEYS": '{"k-env": ["agent:bot"]}'})
    assert keys is not None and len(keys) == 2
    assert keys.owners_of("k-file") == {"user:alice", "run:r1"} and keys.owners_of("k-env") == {"agent:bot"}
    assert keys.owners_of("k-fil") is None and keys.owners_of("") is None
    assert load_keys(None, {}) is None
    with pytest.raises(DataError, match="different owners"):
        load_keys(toml, {"MEMORY_R1_API_KEYS": '{"k-file": ["user:bob"]}'})


def test_bearer_and_basic_authentication() -> None:
    keys = ApiKeys({"s3cret": ["user:alice"]})
    assert keys.authenticate("Bearer s3cret") == keys.authenticate("bearer  s3cret ")
    assert keys.authenticate("Bearer s3cret").owners == {"user:alice"}  # type: ignore[union-attr]
    for header in (None, "", "Bearer", "Bearer s3cre", "s3cret", "Basic czNjcmV0", "Token s3cret"):
        assert keys.authenticate(header) is None
    assert keys.authenticate("Basic dTpzM2NyZXQ=", basic=True) is not None  # u:s3cret
    assert keys.authenticate("Basic !!", basic=True) is None


def test_loopback_hosts() -> None:
    assert all(is_loopback(h) for h in ("127.0.0.1", "127.5.0.1", "::1", "[::1]", "localhost"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "::", "10.0.0.1", "example.org", ""))
    check_exposure("127.0.0.1", None)
    check_exposure("0.0.0.0", ApiKeys({"k": ["user:a"]}))
    with pytest.raises(ConfigError):
        check_exposure("0.0.0.0", None)


def test_serve_with_keys_listens_beyond_loopback_and_requires_them(tmp_path: Path) -> None:
    keys = tmp_path / "keys.json"
    keys.write_text(json.dumps({"k-alice": ["user:alice"]}))
    cfg = write_config(tmp_path, tmp_path / "m.sqlite")
    env = cli_env(MEMORY_R1_API_KEYS=json.dumps({"k-bob": ["user:bob"]}))
    args = ["--host", "0.0.0.0", "--keys-file", str(keys), "--config", str(cfg)]
    with served(args, tmp_path / "serve.log", env=env) as url, httpx.Client(base_url=url) as c:
        assert c.get("/memories", params={"user_id": "alice"}).status_code == 401
        assert c.get(
            "/memories", params={"user_id": "alice"}, headers={"Authorization": "Bearer k-alice"}
        ).json() == {"results": []}
        bob = c.get("/memories", params={"user_id": "alice"}, headers={"Authorization": "Bearer k-bob"})
        assert bob.status_code == 403 and "user:alice" in bob.json()["detail"]
    assert "2 API key(s)" in (tmp_path / "serve.log").read_text()


def mem0_client_sequence(c: httpx.Client, extra: dict[str, Any], *, answer: bool = False) -> dict[str, Any]:
    """The requests a Mem0 REST client sends, in Mem0's shapes (``extra``: added to the add;
    ``answer``: also ask ours, ``POST /answer``, after the search)."""
    out: dict[str, Any] = {}
    messages = [
        {"role": "user", "content": "Hi, I'm Alice. I live in Paris and I work as a nurse."},
        {"role": "assistant", "content": "Nice to meet you, Alice!"},
    ]
    r = c.post(
        "/memories", json={"messages": messages, "user_id": "alice", "metadata": {"source": "chat"}, **extra}
    )
    out["add"] = r.raise_for_status().json()
    out["all"] = c.get("/memories", params={"user_id": "alice"}).raise_for_status().json()
    out["search"] = (
        c.post("/search", json={"query": "Where does Alice live?", "user_id": "alice"})
        .raise_for_status()
        .json()
    )
    if answer:
        out["answer"] = (
            c.post("/answer", json={"question": "Where does Alice live?", "user_id": "alice"})
            .raise_for_status()
            .json()
        )
    ids = [m["id"] for m in out["all"]["results"]]
    if ids:
        out["get"] = c.get(f"/memories/{ids[0]}").raise_for_status().json()
        out["update"] = (
            c.put(f"/memories/{ids[0]}", json={"data": "Alice lives in Lyon"}).raise_for_status().json()
        )
        out["history"] = c.get(f"/memories/{ids[0]}/history").raise_for_status().json()
        out["delete"] = c.delete(f"/memories/{ids[0]}").raise_for_status().json()
        out["gone"] = c.get(f"/memories/{ids[0]}").status_code
    out["delete_all"] = c.delete("/memories", params={"user_id": "alice"}).raise_for_status().json()
    out["after"] = c.get("/memories", params={"user_id": "alice"}).raise_for_status().json()
    out["reset"] = c.post("/reset").raise_for_status().json()
    return out


def _check_mem0_answers(out: dict[str, Any]) -> None:
    assert all(op["event"] in ("ADD", "UPDATE", "DELETE", "NONE", "INVALID") for op in out["add"]["results"])
    for item in out["all"]["results"] + out["search"]["results"]:
        assert {"id", "memory", "created_at", "updated_at", "user_id", "metadata"} <= set(item)
        assert item["user_id"] == "alice" and item["metadata"] == {"source": "chat"}
    if "get" in out:
        assert out["update"] == {"message": "Memory updated successfully!"}
        assert [h["event"] for h in out["history"]][-1] == "UPDATE" and out["history"][-1][
            "new_memory"
        ] == "Alice lives in Lyon"
        assert out["delete"] == {"message": "Memory deleted successfully"} and out["gone"] == 404
    assert out["delete_all"] == {"message": "All relevant memories deleted"} and out["after"] == {
        "results": []
    }
    assert out["reset"] == {"message": "All memories reset"}


def test_a_mem0_rest_client_against_a_served_process(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, tmp_path / "m.sqlite")
    with (
        served(["--config", str(cfg)], tmp_path / "serve.log") as url,
        httpx.Client(base_url=url, timeout=30) as c,
    ):
        assert c.get("/docs").status_code == 200
        out = mem0_client_sequence(c, {"infer": False})
    assert out["add"]["results"][0]["memory"].startswith("Hi, I'm Alice")
    assert out["search"]["results"][0]["score"] >= out["search"]["results"][-1]["score"]
    _check_mem0_answers(out)
    assert "get" in out


@pytest.mark.slow
def test_a_mem0_rest_client_with_the_real_default_model(tmp_path: Path) -> None:
    """Mem0's exact requests (the Memory Manager decides) and an answer: the embedded llama.cpp
    model with the shipped adapters, and MiniLM."""
    cfg = write_config(tmp_path, tmp_path / "m.sqlite", embedder="minilm")
    with (
        served(["--config", str(cfg)], tmp_path / "serve.log", wait_s=300) as url,
        httpx.Client(base_url=url, timeout=300) as c,
    ):
        out = mem0_client_sequence(c, {}, answer=True)
    assert out["add"]["results"] and out["all"]["results"], out  # the trained Manager keeps a fact
    assert isinstance(out["answer"]["answer"], str) and out["answer"]["memories"], out["answer"]
    _check_mem0_answers(out)
