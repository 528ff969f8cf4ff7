"""Mem0 worker: the real ``mem0ai`` library behind a JSON-lines pipe (runs in ``.venv-mem0*``).

Started by :mod:`memory_r1.bench.mem0_system` as ``<venv>/bin/python -I mem0_worker.py``; it
imports only the standard library, ``worker_serve`` beside it (stdlib only) and ``mem0`` (never
the ``memory_r1`` package: it lives in another venv). One request per stdin line, one reply per
stdout line, in order::

    {"id": 1, "op": "init", "config": {...Memory.from_config dict...}}
    {"id": 2, "op": "add", "bank": "conv-26", "speaker": "Caroline", "text": "Caroline: ...",
     "timestamp": "1:56 pm on 8 May, 2023", "metadata": {"dia_id": "D1:1"}}
    {"id": 3, "op": "search", "bank": "conv-26", "speaker": "Caroline", "query": "...", "limit": 30}
    {"id": 4, "op": "size", "bank": "conv-26", "speakers": ["Caroline", "Melanie"]}
    {"id": 5, "op": "version"}      {"id": 6, "op": "close"}

    reply: {"id": 2, "ok": true, "result": {...}}  or  {"id": 2, "ok": false, "error": "..."}

``user_id`` is ``"{bank}:{speaker}"``. ``add`` never fails for a Mem0 error: it reports what
happened so the caller can count it (``result``):

* ``results``: Mem0's own return value (applied events: ADD / UPDATE / DELETE);
* ``calls``: the raw text of every LLM call Mem0 made (order: extraction, then update);
* ``facts`` / ``actions``: those calls parsed with Mem0's own helpers, as Mem0 saw them
  (classic: extracted facts and the update step's ``{"memory": [...]}`` items, NONE included,
  which Mem0 does not return; ADD-only: the extracted memory items); ``None`` = unparseable;
* ``logs``: WARNING+ records Mem0's loggers emitted during the call (parse errors, skipped or
  failed actions: Mem0 logs these and carries on);
* ``exception``: set when ``Memory.add`` raised.

The request loop is :func:`memory_r1.bench.worker_serve.serve` (stdlib only, loaded from this
folder): the library's stdout goes to stderr (the log), so nothing but replies reaches the pipe.
"""

from __future__ import annotations

import importlib.metadata
import inspect
import json
import logging
import os
import sys
import time
import traceback
from typing import Any

if __package__:  # imported as part of memory_r1 (the tests)
    from memory_r1.bench import worker_serve
else:  # the venv's python runs this file with -I: put this folder on sys.path for one import
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import worker_serve  # type: ignore[no-redef]

    del sys.path[0]


def pipeline_kind() -> str:
    """``"add-only"`` (v3 single extraction call) or ``"classic"`` (extract + update prompt)."""
    import mem0.memory.main as main

    return "add-only" if hasattr(main, "ADDITIVE_EXTRACTION_PROMPT") else "classic"


class Worker:
    def __init__(self) -> None:
        self.memory: Any = None
        self.kind = ""
        self.capture = worker_serve.LogCapture()
        self.calls: list[dict[str, Any]] = []
        self.legacy_scope = True  # 1.x: search(user_id=...); 2.x: search(filters={"user_id": ...})

    # -- ops -----------------------------------------------------------------------------------
    def op_version(self) -> dict[str, str]:
        return {
            "version": importlib.metadata.version("mem0ai"),
            "pipeline": pipeline_kind(),
            "python": sys.version.split()[0],
        }

    def op_init(self, config: dict[str, Any]) -> dict[str, str]:
        from mem0 import Memory

        mem0_logger = logging.getLogger("mem0")
        mem0_logger.addHandler(self.capture)
        self.memory = Memory.from_config(config)
        self.kind = pipeline_kind()
        self.legacy_scope = "user_id" in inspect.signature(self.memory.search).parameters
        llm = self.memory.llm
        original = llm.generate_response

        def recorded(*args: Any, **kwargs: Any) -> Any:
            entry: dict[str, Any] = {"text": None, "error": None}
            self.calls.append(entry)
            try:
                entry["text"] = out = original(*args, **kwargs)
            except Exception as e:
                entry["error"] = f"{type(e).__name__}: {e}"
                raise
            return out

        llm.generate_response = recorded  # instance attribute shadows the method
        self.capture.take()  # init-time notices are in the log, not in the first turn
        return self.op_version()

    def op_add(
        self, bank: str, speaker: str, text: str, timestamp: str, metadata: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        self._need_init()
        self.calls = []
        self.capture.take()
        exception = None
        start = time.perf_counter()
        try:
            out = self.memory.add(
                [{"role": "user", "content": text}],
                user_id=f"{bank}:{speaker}",
                metadata={"timestamp": timestamp, **(metadata or {})},
            )
            results = out.get("results", []) if isinstance(out, dict) else list(out or [])
        except Exception as e:
            results = []
            exception = f"{type(e).__name__}: {e}"
            traceback.print_exc()
        facts, actions = self._parse_calls()
        return {
            "results": results,
            "calls": self.calls,
            "facts": facts,
            "actions": actions,
            "logs": self.capture.take(),
            "exception": exception,
            "pipeline": self.kind,
            "seconds": time.perf_counter() - start,
        }

    def op_search(self, bank: str, speaker: str, query: str, limit: int = 30) -> dict[str, Any]:
        self._need_init()
        user_id = f"{bank}:{speaker}"
        start = time.perf_counter()
        if self.legacy_scope:
            out = self.memory.search(query, user_id=user_id, limit=limit)
        else:
            out = self.memory.search(query, top_k=limit, filters={"user_id": user_id})
        hits = out.get("results", []) if isinstance(out, dict) else list(out or [])
        return {"hits": hits, "seconds": time.perf_counter() - start}

    def op_size(self, bank: str, speakers: list[str]) -> dict[str, int]:
        self._need_init()
        total = 0
        for speaker in speakers:
            user_id = f"{bank}:{speaker}"
            if self.legacy_scope:
                out = self.memory.get_all(user_id=user_id, limit=1_000_000)
            else:
                out = self.memory.get_all(filters={"user_id": user_id}, top_k=1_000_000)
            total += len(out.get("results", []) if isinstance(out, dict) else out or [])
        return {"size": total}

    def op_close(self) -> dict[str, bool]:
        if self.memory is not None and hasattr(self.memory, "close"):
            self.memory.close()
        return {"closed": True}

    # -- helpers -------------------------------------------------------------------------------
    def _need_init(self) -> None:
        if self.memory is None:
            raise RuntimeError("send init first")

    def _parse_calls(self) -> tuple[list[str] | None, list[Any] | None]:
        """Parse the recorded calls the way Mem0 does (its own helpers), for op accounting."""
        texts = [c["text"] for c in self.calls]
        if self.kind == "add-only":
            actions = _parse(texts[0], "memory") if texts else None
            added = [t for a in actions or [] if isinstance(a, dict) and (t := a.get("text"))]
            return (added if actions is not None else None), actions
        facts = _parse(texts[0], "facts") if texts else None
        if facts is not None:
            try:
                from mem0.memory.utils import normalize_facts

                facts = normalize_facts(facts)
            except Exception:
                pass  # older releases: facts are plain strings already
        actions = _parse(texts[1], "memory") if len(texts) > 1 else None
        return facts, actions


def _parse(text: Any, key: str) -> list[Any] | None:
    from mem0.memory.utils import extract_json, remove_code_blocks

    if not isinstance(text, str):
        return None
    if not text.strip():
        return []
    try:
        try:
            data = json.loads(remove_code_blocks(text), strict=False)
        except json.JSONDecodeError:
            data = json.loads(extract_json(text), strict=False)
        value = data.get(key, []) if isinstance(data, dict) else None
        return value if isinstance(value, list) else None
    except Exception:
        return None


if __name__ == "__main__":
    worker_serve.serve(Worker)
