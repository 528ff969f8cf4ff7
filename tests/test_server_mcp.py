"""``memory-r1 mcp``: a real MCP client session (the official SDK's ``stdio_client``) against the
command run as a subprocess: initialize, list the tools, then add, search, list, delete, and a
refused call as a tool error; and the agents' tools (add with the Manager, answer) in-process."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import anyio
from mcp import Client, ClientSession, StdioServerParameters, stdio_client

from memory_r1 import Memory
from memory_r1.server.mcp import build_server
from server_support import cli_env, fast_memory, write_config

TOOLS = {"add", "search", "list", "delete", "answer"}


async def _session(cfg: Path, errlog: Any) -> dict[str, Any]:
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "memory_r1.cli", "mcp", "--config", str(cfg)], env=cli_env()
    )
    seen: dict[str, Any] = {}
    async with stdio_client(params, errlog=errlog) as (read, write), ClientSession(read, write) as session:
        init = await session.initialize()
        seen["server"] = init.server_info.name
        seen["tools"] = {t.name: t for t in (await session.list_tools()).tools}

        async def call(name: str, **args: Any) -> Any:
            result = await session.call_tool(name, args)
            return result if result.is_error else result.structured_content

        owner = {"user_id": "alice"}
        seen["add"] = await call("add", messages="I live in Paris", infer=False, **owner)
        await call("add", messages=[{"role": "user", "content": "I like green tea"}], infer=False, **owner)
        seen["search"] = await call("search", query="I like green tea", limit=1, **owner)
        seen["list"] = await call("list", **owner)
        seen["delete"] = await call("delete", memory_id=seen["add"]["results"][0]["id"])
        seen["after"] = await call("list", **owner)
        seen["unknown"] = await call("delete", memory_id="no-such-id")
        seen["no_owner"] = await call("search", query="tea")
    return seen


def test_an_mcp_client_adds_searches_lists_and_deletes(tmp_path: Path) -> None:
    store = tmp_path / "m.sqlite"
    cfg = write_config(tmp_path, store)
    with (tmp_path / "mcp.log").open("w") as errlog:
        seen = anyio.run(_session, cfg, errlog)
    assert seen["server"] == "memory-r1" and set(seen["tools"]) == TOOLS
    schema = seen["tools"]["search"].input_schema
    assert schema["required"] == ["query"] and {"user_id", "agent_id", "run_id", "limit"} <= set(
        schema["properties"]
    )
    assert [op["event"] for op in seen["add"]["results"]] == ["ADD"]
    assert [h["memory"] for h in seen["search"]["results"]] == ["I like green tea"]
    assert sorted(m["memory"] for m in seen["list"]["results"]) == ["I like green tea", "I live in Paris"]
    assert seen["delete"] == {"message": "Memory deleted successfully!"}
    assert [m["memory"] for m in seen["after"]["results"]] == ["I like green tea"]
    for refused, says in ((seen["unknown"], "no-such-id"), (seen["no_owner"], "user_id")):
        assert refused.is_error and says in refused.content[0].text
    with Memory({"store": {"path": str(store)}, "embedder": "hash"}) as m:  # written to the configured store
        assert [r["event"] for r in m.audit("user:alice")] == ["ADD", "ADD", "DELETE"]
    json.dumps(seen["list"])  # structured content is plain JSON


async def _answer(memory: Memory) -> tuple[Any, Any]:
    async with Client(build_server(memory)) as client:
        added = await client.call_tool(
            "add", {"messages": [{"role": "user", "content": "I live in Paris"}], "user_id": "bo"}
        )
        answered = await client.call_tool("answer", {"question": "Where do I live?", "user_id": "bo"})
    return added.structured_content, answered.structured_content


def test_add_with_the_manager_and_answer_in_process(tmp_path: Path) -> None:
    """The tools that need the agents (scripted fake models, in-process client)."""
    with fast_memory(tmp_path / "m.sqlite") as memory:
        added, answered = anyio.run(_answer, memory)
    assert [op["event"] for op in added["results"]] == ["ADD"]
    assert answered["answer"] == "Paris" and [m["memory"] for m in answered["memories"]] == [
        "I live in Paris"
    ]
