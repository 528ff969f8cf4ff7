"""A-Mem worker: the ``a-mem`` library (``agentic_memory``) behind a JSON-lines pipe (runs in ``.venv-amem``).

Started by :mod:`memory_r1.bench.amem_system` as ``.venv-amem/bin/python -I amem_worker.py``; it
imports only the standard library, ``worker_serve`` beside it (stdlib only), ``agentic_memory``
and what that imports (never the ``memory_r1`` package: it lives in another venv). One request
per stdin line, one reply per stdout line::

    {"id": 1, "op": "init", "config": {"storage": "<dir>", "embed_url": "http://127.0.0.1:P/v1",
                                       "embed_model": "minilm", "llm_model": "...", "api_key": "..."}}
    {"id": 2, "op": "add", "bank": "conv-26", "text": "Caroline: ...", "timestamp": "1:56 pm on 8 May, 2023"}
    {"id": 3, "op": "search", "bank": "conv-26", "query": "...", "limit": 60}
    {"id": 4, "op": "size", "bank": "conv-26"}      {"id": 5, "op": "version"}      {"id": 6, "op": "close"}

    reply: {"id": 2, "ok": true, "result": {...}}  or  {"id": 2, "ok": false, "error": "..."}

One ``AgenticMemorySystem`` per bank (A-Mem has no user scoping; its own LoCoMo harness keeps
one memory per conversation), each with its persistent ChromaDB in ``<storage>/<bank>``.

Offline by construction: ``sentence-transformers`` / ``transformers`` are not installed in the
venv (they pull torch); when absent, import stubs stand in for them and raise if ever used. The
only thing A-Mem uses them for, ChromaDB's ``SentenceTransformerEmbeddingFunction`` (which loads
``all-MiniLM-L6-v2`` from the HF Hub), is replaced by :class:`ProxyEmbedding`, which asks the
loopback proxy's ``/v1/embeddings`` (our own MiniLM). The LLM is A-Mem's ``openai`` backend; the
OpenAI client reads ``OPENAI_BASE_URL`` (the proxy) from the environment.

``add`` never fails for an A-Mem error; it reports what happened (``result``): the note A-Mem
stored (``note``: id, content, keywords, context, tags, links), ``bad_links`` (links to ids that
do not exist), ``calls`` (every LLM call: kind ``analysis`` / ``evolution``, raw text or error),
``updates`` (neighbours the evolution step rewrote, with old and new context / tags), ``logs``
(WARNING+ of the ``agentic_memory`` loggers), ``prints`` (what A-Mem printed: it reports some
failures with ``print``) and ``exception``. The request loop is
:func:`memory_r1.bench.worker_serve.serve` (stdlib only, loaded from this folder); the library's
stdout goes to stderr (the log).
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import io
import json
import logging
import os
import re
import sys
import time
import traceback
import types
import urllib.request
from typing import Any

if __package__:  # imported as part of memory_r1 (the tests)
    from memory_r1.bench import worker_serve
else:  # the venv's python runs this file with -I: put this folder on sys.path for one import
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import worker_serve  # type: ignore[no-redef]

    del sys.path[0]

STUBBED = ("sentence_transformers", "transformers")


def install_stubs() -> list[str]:
    """Stand-ins for the absent torch stack; any use raises (nothing may load a Hub model)."""
    stubbed = []
    for name in STUBBED:
        if name in sys.modules or importlib.util.find_spec(name) is not None:
            continue

        def blocked(*_args: Any, _name: str = name, **_kwargs: Any) -> Any:
            raise RuntimeError(
                f"{_name} is not installed in the a-mem venv: embeddings come from "
                "the loopback proxy, no model is loaded or downloaded here"
            )

        class Blocked:
            __init__ = blocked
            from_pretrained = staticmethod(blocked)

        def module_getattr(attr: str) -> Any:
            if attr.startswith("__"):
                raise AttributeError(attr)
            return Blocked

        module = types.ModuleType(name)
        module.__getattr__ = module_getattr  # type: ignore[method-assign]  # PEP 562
        sys.modules[name] = module
        stubbed.append(name)
    return stubbed


def make_embedding_class() -> type:
    """A ChromaDB embedding function that embeds through the proxy's ``/v1/embeddings``."""
    from chromadb.api.types import Documents, EmbeddingFunction

    class ProxyEmbedding(EmbeddingFunction[Documents]):
        def __init__(self, url: str, model: str) -> None:
            self.url, self.model = url.rstrip("/"), model
            self._open = urllib.request.build_opener(urllib.request.ProxyHandler({})).open

        def __call__(self, input: Documents) -> Any:
            import numpy as np

            body = json.dumps({"input": list(input), "model": self.model}).encode()
            request = urllib.request.Request(
                f"{self.url}/embeddings", data=body, headers={"Content-Type": "application/json"}
            )
            with self._open(request, timeout=600) as response:
                data = json.loads(response.read())["data"]
            return [
                np.asarray(d["embedding"], dtype=np.float32) for d in sorted(data, key=lambda d: d["index"])
            ]

        @staticmethod
        def name() -> str:
            return "memory-r1-loopback"

        def get_config(self) -> dict[str, Any]:
            return {"model": self.model}

        @staticmethod
        def build_from_config(config: dict[str, Any]) -> ProxyEmbedding:
            return ProxyEmbedding(os.environ.get("AMEM_EMBED_URL", ""), str(config.get("model", "")))

    return ProxyEmbedding


def call_kind(prompt: str) -> str:
    if "memory evolution agent" in prompt:
        return "evolution"
    if "structured analysis" in prompt:
        return "analysis"
    return "other"


class Worker:
    def __init__(self) -> None:
        self.config: dict[str, Any] | None = None
        self.systems: dict[str, Any] = {}
        self.capture = worker_serve.LogCapture()
        self.calls: list[dict[str, Any]] = []
        self.updates: list[dict[str, Any]] = []
        self.stubbed: list[str] = []

    # -- ops -----------------------------------------------------------------------------------
    def op_version(self) -> dict[str, Any]:
        return {
            "version": importlib.metadata.version("a-mem"),
            "python": sys.version.split()[0],
            "chromadb": importlib.metadata.version("chromadb"),
            "stubbed": self.stubbed,
        }

    def op_init(self, config: dict[str, Any]) -> dict[str, Any]:
        self.config = dict(config)
        os.environ["AMEM_EMBED_URL"] = self.config["embed_url"]
        self.stubbed = install_stubs()
        import agentic_memory.memory_system  # noqa: F401 - fails here, not in the first add
        import agentic_memory.retrievers as retrievers

        embedding = make_embedding_class()
        url, model = self.config["embed_url"], self.config["embed_model"]
        retrievers.SentenceTransformerEmbeddingFunction = lambda model_name=None: embedding(url, model)
        logging.getLogger("agentic_memory").addHandler(self.capture)
        return self.op_version()

    def op_add(self, bank: str, text: str, timestamp: str | None = None) -> dict[str, Any]:
        memory = self._system(bank)
        self.calls, self.updates = [], []
        self.capture.take()
        printed = io.StringIO()
        note_id, exception = None, None
        start = time.perf_counter()
        try:
            with contextlib.redirect_stdout(printed):
                note_id = memory.add_note(text, time=timestamp)
        except Exception as e:
            exception = f"{type(e).__name__}: {e}"
            traceback.print_exc()
        prints = [line for line in printed.getvalue().splitlines() if line.strip()]
        for line in prints:
            print(line, file=sys.stderr)
        note, bad_links = None, []
        if note_id is not None:
            note = memory.retriever.get_by_id(note_id) or {"id": note_id}
            for link in note.get("links") or []:
                if not isinstance(link, str) or memory.retriever.get_by_id(link) is None:
                    bad_links.append(link)
        return {
            "note": note,
            "bad_links": bad_links,
            "calls": self.calls,
            "updates": self.updates,
            "logs": self.capture.take(),
            "prints": prints,
            "exception": exception,
            "seconds": time.perf_counter() - start,
        }

    def op_search(self, bank: str, query: str, limit: int = 60) -> dict[str, Any]:
        memory = self._system(bank)
        start = time.perf_counter()
        count = memory.retriever.count()
        hits = []
        if count:
            for hit in memory.search(query, k=min(int(limit), count)):
                meta = memory.retriever.get_by_id(hit["id"]) or {}
                hits.append(
                    {
                        "id": hit["id"],
                        "distance": hit.get("score"),
                        **{
                            k: meta.get(k)
                            for k in ("content", "timestamp", "context", "keywords", "tags", "links")
                        },
                    }
                )
        return {"hits": hits, "seconds": time.perf_counter() - start}

    def op_size(self, bank: str) -> dict[str, int]:
        return {"size": int(self._system(bank).retriever.count())}

    def op_close(self) -> dict[str, bool]:
        self.systems.clear()
        return {"closed": True}

    # -- helpers -------------------------------------------------------------------------------
    def _system(self, bank: str) -> Any:
        if self.config is None:
            raise RuntimeError("send init first")
        if bank not in self.systems:
            from agentic_memory.memory_system import AgenticMemorySystem

            path = os.path.join(self.config["storage"], re.sub(r"[^A-Za-z0-9_.-]", "_", bank))
            memory = AgenticMemorySystem(
                model_name=self.config["embed_model"],
                llm_backend="openai",
                llm_model=self.config["llm_model"],
                api_key=self.config["api_key"],
                storage_path=path,
            )
            self._record(memory)
            self.systems[bank] = memory
        return self.systems[bank]

    def _record(self, memory: Any) -> None:
        """Record every LLM call and every neighbour update A-Mem makes (instance attributes)."""
        llm = memory.llm_controller.llm
        complete, update = llm.get_completion, memory.update

        def recorded(prompt: str, *args: Any, **kwargs: Any) -> Any:
            entry: dict[str, Any] = {"kind": call_kind(prompt), "text": None, "error": None}
            self.calls.append(entry)
            try:
                entry["text"] = out = complete(prompt, *args, **kwargs)
            except Exception as e:
                entry["error"] = f"{type(e).__name__}: {e}"[:2000]
                raise
            return out

        def recorded_update(memory_id: str, **kwargs: Any) -> bool:
            old = memory.retriever.get_by_id(memory_id) or {}
            ok = update(memory_id, **kwargs)
            self.updates.append(
                {
                    "id": memory_id,
                    "ok": bool(ok),
                    "content": old.get("content"),
                    "old_context": old.get("context"),
                    "old_tags": old.get("tags"),
                    "context": kwargs.get("context", old.get("context")),
                    "tags": kwargs.get("tags", old.get("tags")),
                }
            )
            return ok

        llm.get_completion = recorded
        memory.update = recorded_update


if __name__ == "__main__":
    worker_serve.serve(Worker)
