"""A-Mem (``a-mem`` from PyPI, the ``agentic_memory`` package) as benchmark system ``a-mem``.

Which release, and why it counts as A-Mem. The A-Mem authors never published their code on PyPI:
``agiresearch/A-mem`` (and the paper code ``WujiangXu/AgenticMemory``) declare the distribution
name ``agentic-memory`` 0.0.1, but PyPI's ``agentic-memory`` (0.1.2) is an unrelated project
(ContextOS by Aryan Thakur: NetworkX + ChromaDB + PageRank, ``ContextClient``, no
``AgenticMemorySystem``). ``a-mem`` **0.2.6** (MIT, copyright "AGI Research") is
``DiaaAj/a-mem-mcp``, a fork of ``agiresearch/A-mem`` that adds an MCP server for coding agents;
its ``agentic_memory.memory_system.AgenticMemorySystem`` is A-Mem's: the same ``add_note`` ->
LLM ``analyze_content`` (keywords / context / tags, same prompt) -> ``process_memory`` on the 5
nearest notes (the evolution prompt: ``strengthen`` links + ``update_neighbor`` context / tags),
ChromaDB with the note enriched by context / keywords / tags as the embedded document. Fork
deviations from upstream: ChromaDB is persistent (upstream resets it on start), the neighbours in
the evolution prompt are listed with their ids (upstream: positional, so its links were indices),
``consolidate_memories`` (index rebuild every 100 evolutions) is gone, ``search`` returns metadata
(we read each hit's content by id).

How a run is wired (all on 127.0.0.1, nothing leaves the machine), as :mod:`mem0_system` (the
lifecycle is :class:`memory_r1.bench.worker_system.WorkerSystem`'s):

    main process                                   .venv-amem/bin/python -I amem_worker.py
    AMemSystem --JSON lines over stdin/stdout-->   AgenticMemorySystem per bank (llm_backend
    LLMProxy  <--- /v1/chat/completions, /v1/embeddings ---  "openai", ChromaDB persistent)
      |-> llama_cpp.server on the backbone GGUF, or the backbone's own endpoint
      |-> our embedder (MiniLM = A-Mem's own all-MiniLM-L6-v2 by default)

The venv (``make amem-venv``, ``requirements/amem.txt``) installs ``a-mem`` with ``--no-deps``
and its runtime dependencies except ``sentence-transformers`` (torch) and ``mcp`` (the MCP
server, unused): the worker replaces ChromaDB's ``SentenceTransformerEmbeddingFunction`` (which
would download ``all-MiniLM-L6-v2`` from the HF Hub) with one that calls the proxy, and stubs the
absent torch-stack modules so any other use fails loudly. Telemetry is off
(``ANONYMIZED_TELEMETRY=False``; LiteLLM's cost map is read locally,
``LITELLM_LOCAL_MODEL_COST_MAP=True``); proxy variables point at a dead port with only loopback
exempt. Everything lives in ``<out>/a-mem/``: ``chroma/<bank>/`` (persistent, survives a
restart), ``done.jsonl`` (ingested turns and their note ids: resume), ``worker.log``,
``llama_server.log``.

Requests are adapted by the proxy (:func:`adapt_request`): A-Mem asks OpenAI for
``response_format`` ``json_schema`` (strict structured outputs), which llama_cpp.server rejects;
it becomes llama.cpp's ``json_object`` + ``schema`` (grammar-constrained decoding to the same
schema). A-Mem sends temperature 1.0 (OpenAI's default) and no ``max_tokens``: we force greedy
(temperature 0, as every bench system) and inject ``max_tokens`` (``options["max_tokens"]``,
default 256, the cap our own Memory Manager gets; A-Mem's SGLang backend uses 1000).

Ingestion: one ``add_note`` per turn, content ``"Speaker: text"`` (``Turn.render``), ``time`` =
the session date string (as A-Mem's LoCoMo harness), into **one memory per bank** (A-Mem has no
user scoping). Answering: ``search`` top ``answer_k`` (60 = 2 x 30) in the bank, each hit given
to the speaker whose turn wrote it (note id -> speaker from ``done.jsonl``, else the
``"Speaker:"`` prefix), then the same backbone ``AnswerAgent(distill=False)`` every bench system
uses (the note's content and session date; A-Mem's context / keywords / tags shape retrieval only).

Operation accounting (:func:`map_ops`): the stored note is one ADD; each neighbour the evolution
step rewrote is one UPDATE (context / tags; content never changes); a failed or unparseable
analysis call, an evolution error A-Mem logged and skipped, a link to a non-existent id, a failed
neighbour update, or ``add_note`` raising are one INVALID each. ``strengthen`` links to existing
notes are not ops (they change the new note only).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from memory_r1.bench.context import BenchContext
from memory_r1.bench.proxy import Inject, llamacpp_sampling
from memory_r1.bench.worker_system import DUMMY_KEY, WorkerSystem
from memory_r1.config import ModelConfig
from memory_r1.types import Memory, Op, OpKind, Turn

WORKER = Path(__file__).with_name("amem_worker.py")
VERSION = "0.2.6"  # the a-mem release pinned in requirements/amem.txt
VENV = ".venv-amem"
REQUIREMENTS = "requirements/amem.txt"
SYSTEM = "a-mem"


def adapt_request(body: Mapping[str, Any], *, llamacpp: bool = True) -> dict[str, Any]:
    """Greedy decoding; for llama.cpp, OpenAI ``json_schema`` -> ``json_object`` + ``schema``."""
    out = dict(body)
    out["temperature"] = 0.0
    fmt = out.get("response_format")
    if llamacpp and isinstance(fmt, Mapping) and fmt.get("type") == "json_schema":
        schema = (fmt.get("json_schema") or {}).get("schema")
        out["response_format"] = {"type": "json_object", **({"schema": schema} if schema else {})}
    return out


def _analysis_problem(call: Mapping[str, Any]) -> str | None:
    """Why an ``analyze_content`` reply was unusable (A-Mem falls back to empty fields), or None."""
    if call.get("error"):
        return f"a-mem analysis call failed: {call['error']}"
    try:
        data = json.loads(str(call.get("text") or ""))
    except ValueError as e:
        return f"a-mem analysis is not JSON: {e}"
    if not isinstance(data, dict) or not any(data.get(k) for k in ("keywords", "context", "tags")):
        return "a-mem analysis has no keywords, context or tags"
    return None


def _describe_note(content: Any, context: Any, tags: Any) -> str:
    return f"{content} [context: {context}; tags: {', '.join(map(str, tags or []))}]"


def map_ops(reply: Mapping[str, Any]) -> tuple[list[str], list[Op]]:
    """(facts, ops) of one worker ``add`` reply; see the module docstring. facts = [the note]."""
    calls = list(reply.get("calls") or [])
    ops: list[Op] = []
    exception = str(reply.get("exception") or "")
    if exception:
        raw = str(calls[-1].get("text") or calls[-1].get("error") or "")[:2000] if calls else None
        ops.append(Op(OpKind.INVALID, error=f"a-mem add_note raised {exception}", raw=raw))
    for call in calls:
        if call.get("kind") == "analysis" and (problem := _analysis_problem(call)):
            ops.append(Op(OpKind.INVALID, error=problem, raw=str(call.get("text") or "")[:2000] or None))
        elif call.get("kind") == "evolution" and call.get("error"):
            pass  # A-Mem logs it ("Error in memory evolution"): counted once, from the log
    evolution = next((str(c.get("text") or "") for c in calls if c.get("kind") == "evolution"), None)
    evolution_raw = evolution[:2000] if evolution else None
    for log in reply.get("logs") or []:
        if log.get("level") in ("ERROR", "CRITICAL") or "not found during evolution" in str(
            log.get("message")
        ):
            ops.append(
                Op(OpKind.INVALID, error=f"a-mem {log.get('level')}: {log.get('message')}", raw=evolution_raw)
            )
    for line in reply.get("prints") or []:
        if line.startswith("Error") and "analyzing content" not in line:  # analysis: counted above
            ops.append(Op(OpKind.INVALID, error=f"a-mem printed: {line}"[:2000]))
    note = reply.get("note") or None
    if note:
        ops.insert(0, Op(OpKind.ADD, text=str(note.get("content") or ""), memory_id=note.get("id")))
    for link in reply.get("bad_links") or []:
        ops.append(
            Op(OpKind.INVALID, error=f"a-mem evolution linked unknown memory id {link!r}", raw=evolution_raw)
        )
    for u in reply.get("updates") or []:
        if not u.get("ok"):
            ops.append(Op(OpKind.INVALID, error=f"a-mem could not update neighbour {u.get('id')}"))
            continue
        ops.append(
            Op(
                OpKind.UPDATE,
                text=_describe_note(u.get("content"), u.get("context"), u.get("tags")),
                memory_id=u.get("id"),
                old_text=_describe_note(u.get("content"), u.get("old_context"), u.get("old_tags")),
            )
        )
    if not ops:
        ops.append(Op(OpKind.NOOP, error="no operations"))
    return ([str(note.get("content") or "")] if note else []), ops


def hit_to_memory(hit: Mapping[str, Any], owner: str) -> Memory:
    """An A-Mem search hit as our ``Memory``; ``timestamp`` is the note's session date."""
    meta = {k: hit.get(k) for k in ("context", "keywords", "tags", "links")}
    return Memory(
        id=str(hit.get("id")),
        text=str(hit.get("content") or ""),
        owner=owner,
        timestamp=str(hit.get("timestamp") or ""),
        created_at=0.0,
        updated_at=0.0,
        metadata={**meta, "distance": hit.get("distance")},
    )


class AMemSystem(WorkerSystem):
    """``a-mem`` 0.2.6 on the backbone; see the module docstring.

    ``ctx.options``: ``answer_k`` (60 per bank), ``max_tokens`` (per A-Mem call; default 256,
    the cap our own Memory Manager gets), and those of :class:`WorkerSystem` (``n_ctx``,
    ``n_threads``, ``venv``, ``startup_timeout``).
    """

    label = "a-mem"
    package = "a-mem"
    script = WORKER

    def __init__(self, ctx: BenchContext) -> None:
        super().__init__(ctx, name=SYSTEM, venv=VENV, make_target="amem-venv", version=VERSION, answer_k=60)

    def _setup(self, options: Mapping[str, Any]) -> None:
        self.max_tokens = int(options.get("max_tokens", 256))
        self._owner: dict[str, str] = {}  # note id -> speaker

    def _proxy_hooks(self, llamacpp: bool) -> tuple[Inject | None, Inject | None]:
        """Inject ``max_tokens`` (and llama.cpp's greedy settings); adapt ``response_format``."""
        max_tokens = self.max_tokens

        def inject(body: Mapping[str, Any]) -> dict[str, Any]:
            return {"max_tokens": max_tokens, **(llamacpp_sampling(body) if llamacpp else {})}

        return inject, lambda body: adapt_request(body, llamacpp=llamacpp)

    def _worker_config(self, llm: ModelConfig, options: Mapping[str, Any]) -> dict[str, Any]:
        assert self.proxy is not None
        return {
            "storage": str(self.dir / "chroma"),
            "embed_url": self.proxy.url,
            "embed_model": self.embedder_name,
            "llm_model": llm.model,
            "api_key": DUMMY_KEY,
        }

    def _library_env(self) -> dict[str, str]:
        return {
            "ANONYMIZED_TELEMETRY": "False",
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",
            "LITELLM_TELEMETRY": "False",
            "TRANSFORMERS_OFFLINE": "1",
        }

    def _remember(self, row: dict[str, Any]) -> None:
        super()._remember(row)
        if row.get("note_id"):
            self._owner[row["note_id"]] = row["speaker"]

    # -- the library's side of MemorySystem --------------------------------------------------
    def _add(self, bank: str, turn: Turn) -> dict[str, Any]:
        """One A-Mem ``add_note`` into the bank's memory."""
        assert self.worker is not None
        return self.worker.request("add", bank=bank, text=turn.render(), timestamp=turn.date_time)

    def _ops(self, reply: Mapping[str, Any]) -> tuple[list[str], list[Op]]:
        return map_ops(reply)

    def _done_fields(self, reply: Mapping[str, Any]) -> dict[str, Any]:
        return {"note_id": (reply.get("note") or {}).get("id")}

    def search(self, bank: str, query: str, speakers: tuple[str, str]) -> tuple[list[Memory], list[Memory]]:
        """Top ``answer_k`` of the bank, split by the speaker whose turn wrote each note."""
        assert self.worker is not None
        out = self.worker.request("search", bank=bank, query=query, limit=self.answer_k)
        split: tuple[list[Memory], list[Memory]] = ([], [])
        for hit in out["hits"]:
            owner = self._owner.get(str(hit.get("id")))
            if owner not in speakers:
                content = str(hit.get("content") or "")
                owner = next((s for s in speakers if content.startswith(f"{s}:")), speakers[0])
            split[speakers.index(owner)].append(hit_to_memory(hit, owner))
        return split

    def _retrieve(
        self, bank: str, question: str, speakers: tuple[str, str]
    ) -> tuple[list[Memory], list[Memory]]:
        """A-Mem ``search`` top ``answer_k`` in the bank."""
        return self.search(bank, question, speakers)

    def bank_size(self, bank: str) -> int:
        """Notes A-Mem holds for the bank (ChromaDB count; A-Mem never deletes by itself)."""
        assert self.worker is not None
        return int(self.worker.request("size", bank=bank)["size"]) if bank in self._done else 0

    def describe(self) -> dict[str, Any]:
        """What the run config records about this system."""
        return {
            "system": SYSTEM,
            "a-mem": self.version,
            "pin": VERSION,
            "requirements": REQUIREMENTS,
            "package": "a-mem 0.2.6 = DiaaAj/a-mem-mcp, a fork of agiresearch/A-mem (MIT, AGI Research)",
            "chromadb": self.info.get("chromadb"),
            "stubbed_modules": self.info.get("stubbed"),
            "llm": self.llm_route,
            "llm_backend": "a-mem 'openai' controller via OPENAI_BASE_URL",
            "sampling": "temperature forced to 0 (A-Mem sends 1.0), greedy",
            "max_tokens": self.max_tokens,
            "response_format": "json_schema -> llama.cpp json_object + schema (grammar)"
            if self.server is not None
            else "as sent (json_schema)",
            "embedder": f"{self.embedder_name} via loopback /v1/embeddings (dim {self.dims})",
            "vector_store": "chromadb persistent, one collection per bank",
            "store_dir": str(self.dir),
            "ingest": "one add_note per turn, 'Speaker: text', time = session date, one memory per bank",
            "answer": f"search top {self.answer_k} per bank, split by speaker; AnswerAgent(distill=False)",
        }


def create_amem(ctx: BenchContext) -> AMemSystem:
    """``a-mem``: a-mem 0.2.6 (A-Mem's ``AgenticMemorySystem``, fork DiaaAj/a-mem-mcp)."""
    return AMemSystem(ctx)
