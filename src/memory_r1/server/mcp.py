"""The MCP server (official ``mcp`` SDK, stdio): tools over ``memory_r1.api.Memory``.

Tools: ``add`` (a text or chat messages; the Memory Manager decides ADD / UPDATE / DELETE /
NOOP), ``search`` (most similar first, ``score`` higher = more similar), ``list`` (an owner's
memories), ``delete`` (one memory by id) and ``answer`` (the Answer Agent over an owner's
memories). Each names its owner with ``user_id`` / ``agent_id`` / ``run_id``, as the REST server
does. stdio is local, so there are no API keys. A refusal of the memory layer (unknown id, bad
input) is a tool error whose text says what is wrong; the tools are sync and the SDK runs them on
a worker thread.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError

from memory_r1.errors import MemoryR1Error

if TYPE_CHECKING:
    from memory_r1.api import Memory

INSTRUCTIONS = (
    "A long-term memory. Name an owner in every call with user_id (or agent_id, or run_id). "
    "Call add with what was said, search or answer before replying, delete to forget one memory."
)


def _ids(user_id: str | None, agent_id: str | None, run_id: str | None) -> dict[str, Any]:
    ids = {k: v for k, v in {"user_id": user_id, "agent_id": agent_id, "run_id": run_id}.items() if v}
    if not ids:
        raise ToolError("name an owner: user_id, agent_id or run_id")
    return ids


def _call(fn: Callable[[], Any]) -> Any:
    """``fn()``, with a memory-layer refusal as a tool error the client reads."""
    try:
        return fn()
    except (MemoryR1Error, ValueError) as err:
        raise ToolError(f"{type(err).__name__}: {err}") from err


def build_server(memory: Memory) -> MCPServer:
    """An MCP server whose tools call ``memory``."""
    server = MCPServer("memory-r1", instructions=INSTRUCTIONS)

    @server.tool(name="add")
    def add(
        messages: str | list[dict[str, str]],
        user_id: str | None = None,
        agent_id: str | None = None,
        run_id: str | None = None,
        metadata: dict[str, Any] | None = None,
        infer: bool = True,
    ) -> dict[str, Any]:
        """Remember what was said: a text, or chat messages [{"role", "content"}]. Returns each
        operation the Memory Manager carried out (event ADD / UPDATE / DELETE / NONE)."""
        ids = _ids(user_id, agent_id, run_id)
        return _call(lambda: memory.add(messages, **ids, metadata=metadata, infer=infer))

    @server.tool(name="search")
    def search(
        query: str,
        user_id: str | None = None,
        agent_id: str | None = None,
        run_id: str | None = None,
        limit: int = 10,
    ) -> dict[str, Any]:
        """The owner's memories most similar to the query, most similar first (score: higher =
        more similar)."""
        ids = _ids(user_id, agent_id, run_id)
        return _call(lambda: memory.search(query, **ids, limit=limit))

    @server.tool(name="list")
    def list_memories(
        user_id: str | None = None, agent_id: str | None = None, run_id: str | None = None, limit: int = 100
    ) -> dict[str, Any]:
        """Every live memory of the owner."""
        ids = _ids(user_id, agent_id, run_id)
        return _call(lambda: memory.get_all(**ids, limit=limit))

    @server.tool(name="delete")
    def delete(memory_id: str) -> dict[str, Any]:
        """Forget one memory by its id (its history stays)."""
        return _call(lambda: memory.delete(memory_id))

    @server.tool(name="answer")
    def answer(
        question: str, user_id: str | None = None, agent_id: str | None = None, run_id: str | None = None
    ) -> dict[str, Any]:
        """Answer a question from the owner's memories (the Answer Agent); returns the answer and
        the memories it read."""
        ids = _ids(user_id, agent_id, run_id)
        return _call(lambda: memory.answer(question, **ids))

    return server


@contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """Point fd 1 at stderr for a while: stdout is the MCP wire, so whatever a model loader
    prints must not reach it."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def run_stdio(open_memory: Callable[[], Memory]) -> None:
    """Open the memory (stdout diverted), then serve MCP on stdin / stdout until the client
    closes them; the memory is closed on the way out."""
    with stdout_to_stderr():
        memory = open_memory()
    try:
        build_server(memory).run("stdio")
    finally:
        memory.close()
