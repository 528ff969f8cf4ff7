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

How a run is wired (all on 127.0.0.1, nothing leaves the machine), as :mod:`mem0_system`:

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
import os
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from memory_r1.agents.answer import AnswerAgent, AnswerResult
from memory_r1.agents.pipeline import TurnResult
from memory_r1.bench.proxy import LlamaCppServer, LLMProxy, llamacpp_sampling
from memory_r1.bench.worker import WorkerClient
from memory_r1.errors import ConfigError, ModelError
from memory_r1.types import Memory, Op, OpKind, Turn

REPO_ROOT = Path(__file__).resolve().parents[3]
WORKER = Path(__file__).with_name("amem_worker.py")
DUMMY_KEY = "sk-loopback-dummy"
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
    for log in reply.get("logs") or []:
        if log.get("level") in ("ERROR", "CRITICAL") or "not found during evolution" in str(
            log.get("message")
        ):
            ops.append(
                Op(
                    OpKind.INVALID,
                    error=f"a-mem {log.get('level')}: {log.get('message')}",
                    raw=evolution[:2000] if evolution else None,
                )
            )
    for line in reply.get("prints") or []:
        if line.startswith("Error") and "analyzing content" not in line:  # analysis: counted above
            ops.append(Op(OpKind.INVALID, error=f"a-mem printed: {line}"[:2000]))
    note = reply.get("note") or None
    if note:
        ops.insert(0, Op(OpKind.ADD, text=str(note.get("content") or ""), memory_id=note.get("id")))
    for link in reply.get("bad_links") or []:
        ops.append(
            Op(
                OpKind.INVALID,
                error=f"a-mem evolution linked unknown memory id {link!r}",
                raw=evolution[:2000] if evolution else None,
            )
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


class AMemSystem:
    """``a-mem`` 0.2.6 on the backbone; see the module docstring.

    ``ctx.options``: ``answer_k`` (60 per bank), ``max_tokens`` (per A-Mem call; default 256,
    the cap our own Memory Manager gets), ``n_ctx``
    (llama.cpp server context, default min(16384, model's)), ``n_threads``, ``venv`` (the venv
    folder), ``startup_timeout`` (seconds for llama_cpp.server).
    """

    name = SYSTEM

    def __init__(self, ctx: Any) -> None:
        self.dir = Path(ctx.out_dir) / SYSTEM
        self.dir.mkdir(parents=True, exist_ok=True)
        options = dict(ctx.options or {})
        venv = Path(options.get("venv") or REPO_ROOT / VENV)
        python = venv / "bin" / "python"
        if not python.exists():
            raise ConfigError(f"a-mem venv missing: run `make amem-venv` ({python} not found)")
        self.answer_k = int(options.get("answer_k", 60))
        self.max_tokens = int(options.get("max_tokens", 256))
        self._lock = threading.Lock()
        self._done_path = self.dir / "done.jsonl"
        self._done: dict[str, set[str]] = {}
        self._owner: dict[str, str] = {}  # note id -> speaker
        self._load_done()
        self.server: LlamaCppServer | None = None
        self.proxy: LLMProxy | None = None
        self.worker: WorkerClient | None = None
        try:
            self._start(ctx, options, python)
        except BaseException:
            self.close()
            raise

    def _start(self, ctx: Any, options: dict[str, Any], python: Path) -> None:
        from memory_r1.bench.systems import role_models, shared_embedder

        llm = ctx.llm
        embedder = shared_embedder(ctx.embedder)
        max_tokens = self.max_tokens
        if llm.backend == "openai":
            api_key = llm.options.get("api_key") or os.environ.get("OPENAI_API_KEY")
            upstream, llamacpp = llm.base_url, False
            self.llm_route = f"proxy -> {llm.base_url} (model {llm.model})"

            def inject(body: Mapping[str, Any]) -> dict[str, Any]:
                return {"max_tokens": max_tokens}
        else:
            from memory_r1.llm.models import resolve_model

            try:
                spec = resolve_model(llm.model)
            except ModelError as e:
                raise ConfigError(f"a-mem needs a GGUF backbone or --backend openai: {e}") from e
            n_ctx = int(options.get("n_ctx") or min(16384, spec.context))
            threads = options.get("n_threads") or llm.options.get("n_threads")
            self.server = LlamaCppServer(
                spec.path,
                self.dir / "llama_server.log",
                n_ctx=n_ctx,
                n_threads=int(threads) if threads else None,
                startup_timeout=float(options.get("startup_timeout", 180)),
            )
            self.server.start()
            upstream, api_key, llamacpp = self.server.url, None, True
            self.llm_route = " ".join(self.server.command)

            def inject(body: Mapping[str, Any]) -> dict[str, Any]:
                return {"max_tokens": max_tokens, **llamacpp_sampling(body)}

        self.proxy = LLMProxy(
            upstream,
            embedder,
            model=llm.model,
            api_key=api_key,
            inject=inject,
            adapt=lambda body: adapt_request(body, llamacpp=llamacpp),
        ).start()
        self.worker = WorkerClient("a-mem", WORKER, python, self._worker_env(), self.dir / "worker.log")
        self.config = {
            "storage": str(self.dir / "chroma"),
            "embed_url": self.proxy.url,
            "embed_model": embedder.name,
            "llm_model": llm.model,
            "api_key": DUMMY_KEY,
        }
        info = self.worker.request("init", config=self.config)
        self.version, self.info = info["version"], info
        if self.version != VERSION:
            raise ConfigError(
                f"{VENV} has a-mem {self.version}, the pin is {VERSION}: rerun `make amem-venv`"
            )
        self.embedder_name = embedder.name
        self.dims = int(getattr(embedder, "dim", 0) or len(embedder.embed(["x"])[0]))
        models = ctx.models if ctx.models and "answer" in ctx.models else role_models(ctx)
        self.answer_agent = AnswerAgent(models["answer"], distill=False)

    def _worker_env(self) -> dict[str, str]:
        assert self.proxy is not None
        home, tmp = self.dir / "home", self.dir / "tmp"
        for d in (home, tmp):
            d.mkdir(exist_ok=True)
        dead = "http://127.0.0.1:9"  # any non-loopback request fails at once
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "LANG": "C.UTF-8",
            "HOME": str(home),
            "TMPDIR": str(tmp),
            "XDG_CACHE_HOME": str(home / ".cache"),
            "XDG_CONFIG_HOME": str(home / ".config"),
            "OPENAI_API_KEY": DUMMY_KEY,
            "OPENAI_BASE_URL": self.proxy.url,
            "ANONYMIZED_TELEMETRY": "False",
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",
            "LITELLM_TELEMETRY": "False",
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "PYTHONUNBUFFERED": "1",
        }
        for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
            env[var] = env[var.lower()] = dead
        env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
        return env

    # -- resume ----------------------------------------------------------------------------
    def _load_done(self) -> None:
        if not self._done_path.exists():
            return
        for line in self._done_path.read_text().splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue  # a line cut by a crash: that turn is simply redone
            self._done.setdefault(row["bank"], set()).add(row["dia_id"])
            if row.get("note_id"):
                self._owner[row["note_id"]] = row["speaker"]

    def _mark_done(self, bank: str, turn: Turn, note_id: str | None) -> None:
        with self._done_path.open("a") as f:
            f.write(
                json.dumps({"bank": bank, "dia_id": turn.dia_id, "speaker": turn.speaker, "note_id": note_id})
                + "\n"
            )
            f.flush()
            os.fsync(f.fileno())
        self._done.setdefault(bank, set()).add(turn.dia_id)
        if note_id:
            self._owner[note_id] = turn.speaker

    def done_turns(self, bank: str) -> set[str]:
        return set(self._done.get(bank, ()))

    # -- System ------------------------------------------------------------------------------
    def ingest_turn(self, bank: str, turn: Turn) -> TurnResult:
        """One A-Mem ``add_note``; LLM calls / seconds / tokens are the proxy's counts for it.

        An unreachable upstream raises ``ModelError`` and the turn is not marked done (a rerun
        resumes there); any other A-Mem failure is an INVALID op of a done turn.
        """
        assert self.worker is not None and self.proxy is not None
        with self._lock:  # per-turn counters: one add at a time
            before = self.proxy.stats()
            reply = self.worker.request("add", bank=bank, text=turn.render(), timestamp=turn.date_time)
            spent = self.proxy.stats() - before
            if spent.unreachable:
                raise ModelError(
                    f"{SYSTEM}: the LLM upstream was unreachable during {bank} "
                    f"{turn.dia_id}; see {self.dir}/llama_server.log"
                )
            facts, ops = map_ops(reply)
            self._mark_done(bank, turn, (reply.get("note") or {}).get("id"))
        return TurnResult(
            turn.dia_id,
            facts=facts,
            ops=ops,
            llm_seconds=spent.seconds,
            llm_calls=spent.calls,
            tokens_in=spent.prompt_tokens,
            tokens_out=spent.completion_tokens,
        )

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

    def answer(self, bank: str, question: str, speakers: tuple[str, str]) -> tuple[AnswerResult, float]:
        """A-Mem ``search`` top ``answer_k`` in the bank, then the shared Answer Agent."""
        t0 = time.perf_counter()
        a, b = self.search(bank, question, speakers)
        search_s = time.perf_counter() - t0
        return self.answer_agent.answer(question, speakers[0], a, speakers[1], b), search_s

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

    def close(self) -> None:
        for part in (self.worker, self.proxy, self.server):
            if part is not None:
                part.close()
        self.worker = self.proxy = self.server = None


def create_amem(ctx: Any) -> AMemSystem:
    """``a-mem``: a-mem 0.2.6 (A-Mem's ``AgenticMemorySystem``, fork DiaaAj/a-mem-mcp)."""
    return AMemSystem(ctx)
