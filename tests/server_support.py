"""What the server tests share: a fast scripted Memory, free ports, a real ``memory-r1 serve``.

``fake_models`` drives ``Memory(infer=True)`` without an LLM: each message is one fact, and the
Manager reads the fact as a script — ``"A -> B"`` updates the memory ``A`` to ``B``, ``"forget A"``
deletes ``A``, ``"again A"`` is a NOOP on ``A``, ``"bogus"`` names an id that does not exist (an
INVALID op) and anything else is an ADD. The Answer Agent always answers ``answer``.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from memory_r1 import Memory
from memory_r1.llm.base import Prompt, Sampling
from memory_r1.testing import FakeChatModel


def _manage(facts: list[str], memories: list[dict[str, str]]) -> list[dict[str, Any]]:
    by_text = {m["text"]: m["id"] for m in memories}
    ops: list[dict[str, Any]] = []
    for fact in facts:
        old, arrow, new = fact.partition(" -> ")
        verb, _, rest = fact.partition(" ")
        if arrow and old in by_text:
            ops.append({"id": by_text[old], "text": new, "event": "UPDATE", "old_memory": old})
        elif verb in ("forget", "again") and rest in by_text:
            ops.append({"id": by_text[rest], "text": rest, "event": "DELETE" if verb == "forget" else "NONE"})
        elif fact == "bogus":
            ops.append({"id": "99", "text": fact, "event": "UPDATE"})
        else:
            ops.append({"id": None, "text": fact, "event": "ADD"})
    return ops


def fake_models(answer: str = "Paris") -> dict[str, FakeChatModel]:
    """One ``FakeChatModel`` for extraction, the Manager and the Answer Agent (see the module)."""

    def reply(prompt: Prompt, _: Sampling) -> str:
        if "New facts: " in prompt.user:
            head, facts = prompt.user.split("\nNew facts: ", 1)
            memories = json.loads(head.removeprefix("Existing memories: "))
            return json.dumps({"memory": _manage(json.loads(facts), memories)})
        if "Question: " in prompt.user:
            return f"- a memory\n**Answer:** {answer}"
        text = prompt.user.rsplit("): ", 1)[-1].strip()
        return json.dumps({"facts": [text] if text else []})

    model = FakeChatModel(reply_fn=reply)
    return {"extract": model, "manager": model, "answer": model}


def memory_config(path: Path) -> dict[str, Any]:
    """A fast config: SQLite file at ``path``, hash embedder."""
    return {"store": {"kind": "sqlite", "path": str(path)}, "embedder": "hash"}


def fast_memory(path: Path) -> Memory:
    return Memory(memory_config(path), models=fake_models())


def write_config(tmp: Path, store: Path, **extra: Any) -> Path:
    cfg = tmp / "memory.json"
    cfg.write_text(json.dumps({**memory_config(store), **extra}), encoding="utf-8")
    return cfg


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cli_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "MEMORY_R1_API_KEYS"}
    return {**env, "PYTHONUNBUFFERED": "1", **extra}


@contextmanager
def served(
    args: list[str], log: Path, *, env: dict[str, str] | None = None, wait_s: float = 120
) -> Iterator[str]:
    """A real ``memory-r1 serve`` process on a free loopback port; yields its base URL and stops
    it afterwards. Its output goes to ``log`` (shown if it fails to start)."""
    port = free_port()
    host = args[args.index("--host") + 1] if "--host" in args else "127.0.0.1"
    cmd = [sys.executable, "-m", "memory_r1.cli", "serve", "--port", str(port), *args]
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env or cli_env())
    url = f"http://{'127.0.0.1' if host == '0.0.0.0' else host}:{port}"
    try:
        _wait_up(proc, url, log, wait_s)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def _wait_up(proc: subprocess.Popen[bytes], url: str, log: Path, wait_s: float) -> None:
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"serve exited with {proc.returncode}:\n{log.read_text(errors='replace')}")
        try:
            if httpx.get(f"{url}/openapi.json", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"serve did not start within {wait_s} s:\n{log.read_text(errors='replace')}")
