"""Mem0 itself (the ``mem0ai`` library from PyPI) as benchmark systems ``mem0`` and ``mem0-latest``.

Two pinned releases, each in its own venv so its dependencies (openai, qdrant-client, pydantic,
sqlalchemy, posthog) never enter ours (``make mem0-venv`` / ``make mem0-latest-venv``):

* ``mem0`` = **mem0ai 1.0.11**, the last release with the *classic* update step that Memory-R1
  learns: one extraction call (``{"facts": [...]}``), top-5 retrieval per fact, then the
  ``DEFAULT_UPDATE_MEMORY_PROMPT`` call answering ADD / UPDATE / DELETE / NONE per memory
  (``mem0/memory/main.py`` calls ``get_update_memory_messages``).
* ``mem0-latest`` = **mem0ai 2.2.1**, the newest release this index offers. It is *not* classic:
  since 2.0.0 ``Memory.add`` runs the "V3 phased batch pipeline", one
  ``ADDITIVE_EXTRACTION_PROMPT`` call that only ever ADDs (MD5-deduplicated). Installed without
  the ``nlp`` / ``extras`` extras (spaCy's ``en_core_web_sm`` is not on PyPI; fastembed's BM25
  model comes from the HF Hub), so it runs as Mem0 does without them: semantic search only, no
  lemmatisation, no entity linking. Its extraction prompt alone is ~8.6k tokens, more than
  SmolLM2's 8,192-token context: on that backbone every ``add`` fails (counted INVALID); it
  needs a longer-context backbone (Gemma 3 270M: 32k; the server gets up to 16k).

How a run is wired (all on 127.0.0.1, nothing leaves the machine):

    main process                                   .venv-mem0*/bin/python -I mem0_worker.py
    Mem0System --JSON lines over stdin/stdout-->   mem0.Memory (openai LLM + openai embedder
    LLMProxy  <--- /v1/chat/completions, /v1/embeddings ---  providers, local Qdrant, SQLite)
      |-> llama_cpp.server on the backbone GGUF (greedy), or the backbone's own endpoint
      |-> our embedder (MiniLM by default), so Mem0 embeds exactly as the other systems do

Telemetry is off (``MEM0_TELEMETRY=False``; HOME and ``MEM0_DIR`` point into the run folder;
proxy variables point at a dead port with only loopback exempt, so any other request fails).
Everything lives in ``<out>/<system>/`` (``mem0`` or ``mem0-latest``): Qdrant embedded in
``qdrant/`` with ``on_disk=True``, history in ``history.db`` (both survive a restart),
``done.jsonl`` the ingested turns (resume), ``worker.log`` and ``llama_server.log``.

Ingestion follows Mem0's LoCoMo harness (``evaluation/src/memzero/add.py``: ``add`` per speaker
``user_id`` with ``metadata={"timestamp": session date}``) with these deviations, so every
system of the bench sees the same input: one ``add`` per turn (the harness sends 2-message
batches) holding the speaker's own utterance as a ``user`` message ``"Speaker: text"`` (with
the image caption, as ``Turn.render``) into that speaker's memory only (the harness adds each
session twice, once per perspective); the library's default prompts (the harness sets the
hosted platform's custom instructions); the OSS library, not the hosted ``MemoryClient``.
Answering: ``search`` top 30 per speaker (the harness's and Memory-R1's 2 x 30; 2.2.1 keeps
its default score threshold 0.1), then the same backbone Answer Agent every bench system uses
(``AnswerAgent(distill=False)``: Mem0's answer prompt, no selection list).

Operation accounting (:func:`map_ops`): Mem0's applied events ADD / UPDATE / DELETE become ops;
NONE (which Mem0 does not return) is read from the update call it parsed; everything Mem0 logs
and skips (unparseable JSON, unknown event, hallucinated id, empty text) or an exception of
``add`` becomes one INVALID op each; never a silent ``[]``.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from memory_r1.agents.answer import AnswerAgent, AnswerResult
from memory_r1.agents.pipeline import TurnResult
from memory_r1.bench.proxy import LlamaCppServer, LLMProxy, llamacpp_sampling
from memory_r1.bench.worker import WorkerClient
from memory_r1.errors import ConfigError, ModelError
from memory_r1.types import Memory, Op, OpKind, Turn

REPO_ROOT = Path(__file__).resolve().parents[3]
WORKER = Path(__file__).with_name("mem0_worker.py")
DUMMY_KEY = "sk-loopback-dummy"  # the worker only ever talks to the loopback proxy


@dataclass(frozen=True)
class Mem0Pin:
    system: str
    version: str  # the mem0ai release pinned in ``requirements``
    pipeline: str  # "classic" (ADD/UPDATE/DELETE/NONE update step) or "add-only" (v3)
    venv: str  # relative to the repository root; ``options["venv"]`` overrides
    requirements: str
    note: str


PINS: dict[str, Mem0Pin] = {
    "mem0": Mem0Pin(
        "mem0",
        "1.0.11",
        "classic",
        ".venv-mem0",
        "requirements/mem0.txt",
        "last mem0ai release with the classic update step (2.0.0 switched Memory.add to the "
        "ADD-only ADDITIVE_EXTRACTION_PROMPT)",
    ),
    "mem0-latest": Mem0Pin(
        "mem0-latest",
        "2.2.1",
        "add-only",
        ".venv-mem0-latest",
        "requirements/mem0-latest.txt",
        "newest mem0ai on the package index; ADD-only v3 pipeline, without the spaCy nlp extra",
    ),
}

_EVENTS = {"ADD": OpKind.ADD, "UPDATE": OpKind.UPDATE, "DELETE": OpKind.DELETE, "NONE": OpKind.NOOP}
#: Loggers whose WARNING+ records during an ``add`` are failed or skipped update steps.
INVALID_LOGGERS = ("mem0.memory.main",)


def map_ops(reply: Mapping[str, Any], pipeline: str) -> tuple[list[str], list[Op]]:
    """(facts, ops) of one worker ``add`` reply; each action Mem0 saw counts exactly once.

    Applied events come from Mem0's results. Classic: NONE items -> NOOP; items with an unknown
    or missing ``event``, or ADD / UPDATE / DELETE without text (Mem0 skips them) -> INVALID;
    ADD / UPDATE / DELETE that failed are INVALID through the ERROR Mem0 logged for them (an
    error Mem0 both logs and raises counts once).
    ADD-only: extracted items without text -> INVALID; items not stored -> NOOP (Mem0's hash
    de-duplication). No op at all -> one NOOP (``"no facts"`` / ``"no operations"``).
    """
    calls = [c.get("text") or c.get("error") or "" for c in reply.get("calls") or []]
    raw = str(calls[-1])[:2000] if calls else None
    ops: list[Op] = []
    exception = str(reply.get("exception") or "")
    if exception:
        ops.append(Op(OpKind.INVALID, error=f"mem0 add raised {exception}", raw=raw))
    for log in reply.get("logs") or []:
        message = str(log.get("message") or "")
        if message and message in exception:
            continue  # Mem0 logged the error it then raised: one failure, one op
        if str(log.get("logger", "")).startswith(INVALID_LOGGERS):
            ops.append(Op(OpKind.INVALID, error=f"mem0 {log.get('level')}: {message}", raw=raw))
    results = [r for r in reply.get("results") or [] if isinstance(r, dict)]
    for r in results:
        kind = _EVENTS.get(str(r.get("event", "")).upper())
        if kind is None:
            ops.append(Op(OpKind.INVALID, error=f"mem0 returned event {r.get('event')!r}"))
        elif kind is not OpKind.NOOP:
            ops.append(
                Op(
                    kind,
                    text=str(r.get("memory") or ""),
                    memory_id=r.get("id"),
                    old_text=r.get("previous_memory"),
                )
            )
    stored = {r.get("memory") for r in results}
    for a in reply.get("actions") or []:
        if not isinstance(a, dict):
            ops.append(Op(OpKind.INVALID, error=f"mem0 skipped a non-object item {a!r}"[:300]))
            continue
        text, event = a.get("text"), str(a.get("event") or "").upper()
        if pipeline == "classic":
            if event == "NONE":
                ops.append(Op(OpKind.NOOP, text=str(text or ""), memory_id=a.get("id")))
            elif event not in _EVENTS:
                ops.append(
                    Op(
                        OpKind.INVALID,
                        error=f"mem0 skipped unknown event {a.get('event')!r}",
                        raw=json.dumps(a)[:2000],
                    )
                )
            elif not text:
                ops.append(
                    Op(OpKind.INVALID, error=f"mem0 skipped {event} without text", raw=json.dumps(a)[:2000])
                )
        elif not text:
            ops.append(
                Op(OpKind.INVALID, error="mem0 skipped a memory without text", raw=json.dumps(a)[:2000])
            )
        elif text not in stored:
            ops.append(Op(OpKind.NOOP, text=str(text), error="not stored (mem0 hash de-duplication)"))
    facts = reply.get("facts")
    facts = [str(f) for f in facts] if facts else [str(r.get("memory") or "") for r in results]
    if not ops:
        ops.append(Op(OpKind.NOOP, error="no operations" if facts else "no facts"))
    return facts, ops


def hit_to_memory(hit: Mapping[str, Any], owner: str) -> Memory:
    """A Mem0 search hit as our ``Memory``; ``timestamp`` is the session date from metadata."""
    meta = dict(hit.get("metadata") or {})
    return Memory(
        id=str(hit.get("id")),
        text=str(hit.get("memory") or ""),
        owner=owner,
        timestamp=str(meta.get("timestamp") or ""),
        created_at=_unix(hit.get("created_at")),
        updated_at=_unix(hit.get("updated_at") or hit.get("created_at")),
        metadata={**meta, "score": hit.get("score")},
    )


def _unix(value: Any) -> float:
    try:
        return datetime.fromisoformat(str(value)).timestamp()
    except (TypeError, ValueError):
        return 0.0


class Mem0System:
    """One pinned ``mem0ai`` release on the backbone; see the module docstring.

    ``ctx.options``: ``answer_k`` (30 per speaker), ``max_tokens`` (Mem0's LLM config; default
    256, the cap our own Memory Manager gets — Mem0's own default, 2000, lets a small model
    ramble for over a minute per call on CPU), ``n_ctx`` (llama.cpp server context, default min(16384, model's)),
    ``n_threads`` (server threads; default the backbone's ``n_threads`` option, else all CPUs),
    ``venv`` (the venv folder), ``startup_timeout`` (seconds for llama_cpp.server).
    """

    def __init__(self, ctx: Any, pin: Mem0Pin) -> None:
        self.name = pin.system
        self.pin = pin
        self.dir = Path(ctx.out_dir) / pin.system  # "mem0" / "mem0-latest": never one Qdrant lock
        self.dir.mkdir(parents=True, exist_ok=True)
        options = dict(ctx.options or {})
        venv = Path(options.get("venv") or REPO_ROOT / pin.venv)
        python = venv / "bin" / "python"
        if not python.exists():
            target = "mem0-venv" if pin.system == "mem0" else "mem0-latest-venv"
            raise ConfigError(f"mem0 venv missing: run `make {target}` ({python} not found)")
        self.answer_k = int(options.get("answer_k", 30))
        self._lock = threading.Lock()
        self._done_path = self.dir / "done.jsonl"
        self._done: dict[str, set[str]] = {}
        self._speakers: dict[str, set[str]] = {}
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
        if llm.backend == "openai":
            api_key = llm.options.get("api_key") or os.environ.get("OPENAI_API_KEY")
            upstream, inject = llm.base_url, None  # a remote server: its own sampling defaults
            self.llm_route = f"proxy -> {llm.base_url} (model {llm.model})"
        else:
            from memory_r1.llm.models import resolve_model

            try:
                spec = resolve_model(llm.model)
            except ModelError as e:
                raise ConfigError(f"mem0 needs a GGUF backbone or --backend openai: {e}") from e
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
            upstream, api_key, inject = self.server.url, None, llamacpp_sampling
            self.llm_route = " ".join(self.server.command)
        self.proxy = LLMProxy(upstream, embedder, model=llm.model, api_key=api_key, inject=inject).start()
        env = self._worker_env()
        self.worker = WorkerClient("mem0", WORKER, python, env, self.dir / "worker.log")
        dims = int(getattr(embedder, "dim", 0) or len(embedder.embed(["x"])[0]))
        self.config = {
            "vector_store": {
                "provider": "qdrant",
                "config": {
                    "collection_name": "mem0",
                    "embedding_model_dims": dims,
                    "path": str(self.dir / "qdrant"),
                    "on_disk": True,
                },
            },
            "llm": {
                "provider": "openai",
                "config": {
                    "model": llm.model,
                    "api_key": DUMMY_KEY,
                    "openai_base_url": self.proxy.url,
                    "temperature": 0.0,
                    "top_p": 1.0,
                    "max_tokens": int(options.get("max_tokens", 256)),
                },
            },
            "embedder": {
                "provider": "openai",
                "config": {
                    "model": embedder.name,
                    "api_key": DUMMY_KEY,
                    "openai_base_url": self.proxy.url,
                    "embedding_dims": dims,
                },
            },
            "history_db_path": str(self.dir / "history.db"),
        }
        info = self.worker.request("init", config=self.config)
        self.version, self.pipeline = info["version"], info["pipeline"]
        if self.version != self.pin.version:
            raise ConfigError(
                f"{self.pin.venv} has mem0ai {self.version}, the pin is {self.pin.version}: "
                f"rerun `make {'mem0-venv' if self.name == 'mem0' else 'mem0-latest-venv'}`"
            )
        self.embedder_name, self.dims = embedder.name, dims
        models = ctx.models if ctx.models and "answer" in ctx.models else role_models(ctx)
        self.answer_agent = AnswerAgent(models["answer"], distill=False)

    def _worker_env(self) -> dict[str, str]:
        assert self.proxy is not None
        home, mem0_dir, tmp = self.dir / "home", self.dir / "mem0_dir", self.dir / "tmp"
        for d in (home, mem0_dir, tmp):
            d.mkdir(exist_ok=True)
        dead = "http://127.0.0.1:9"  # any non-loopback request fails at once
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "LANG": "C.UTF-8",
            "HOME": str(home),
            "MEM0_DIR": str(mem0_dir),
            "MEM0_TELEMETRY": "False",
            "TMPDIR": str(tmp),
            "XDG_CACHE_HOME": str(home / ".cache"),
            "XDG_CONFIG_HOME": str(home / ".config"),
            "OPENAI_API_KEY": DUMMY_KEY,
            "OPENAI_BASE_URL": self.proxy.url,
            "HF_HUB_OFFLINE": "1",
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
            self._speakers.setdefault(row["bank"], set()).add(row["speaker"])

    def _mark_done(self, bank: str, turn: Turn) -> None:
        with self._done_path.open("a") as f:
            f.write(json.dumps({"bank": bank, "dia_id": turn.dia_id, "speaker": turn.speaker}) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self._done.setdefault(bank, set()).add(turn.dia_id)
        self._speakers.setdefault(bank, set()).add(turn.speaker)

    def done_turns(self, bank: str) -> set[str]:
        return set(self._done.get(bank, ()))

    # -- System ------------------------------------------------------------------------------
    def ingest_turn(self, bank: str, turn: Turn) -> TurnResult:
        """One Mem0 ``add``; LLM calls / seconds / tokens are the proxy's counts for it.

        An unreachable upstream raises ``ModelError`` and the turn is not marked done (a rerun
        resumes there); any other Mem0 failure is an INVALID op of a done turn.
        """
        assert self.worker is not None and self.proxy is not None
        with self._lock:  # per-turn counters: one add at a time
            before = self.proxy.stats()
            reply = self.worker.request(
                "add",
                bank=bank,
                speaker=turn.speaker,
                text=turn.render(),
                timestamp=turn.date_time,
                metadata={"dia_id": turn.dia_id, "session": turn.session},
            )
            spent = self.proxy.stats() - before
            if spent.unreachable:
                raise ModelError(
                    f"{self.name}: the LLM upstream was unreachable during {bank} "
                    f"{turn.dia_id}; see {self.dir}/llama_server.log"
                )
            facts, ops = map_ops(reply, self.pipeline)
            self._mark_done(bank, turn)
        return TurnResult(
            turn.dia_id,
            facts=facts,
            ops=ops,
            llm_seconds=spent.seconds,
            llm_calls=spent.calls,
            tokens_in=spent.prompt_tokens,
            tokens_out=spent.completion_tokens,
        )

    def search(self, bank: str, query: str, speaker: str) -> list[Memory]:
        assert self.worker is not None
        out = self.worker.request("search", bank=bank, speaker=speaker, query=query, limit=self.answer_k)
        return [hit_to_memory(h, speaker) for h in out["hits"]]

    def answer(self, bank: str, question: str, speakers: tuple[str, str]) -> tuple[AnswerResult, float]:
        """Mem0 ``search`` top ``answer_k`` per speaker, then the shared Answer Agent."""
        t0 = time.perf_counter()
        a, b = (self.search(bank, question, s) for s in speakers)
        search_s = time.perf_counter() - t0
        return self.answer_agent.answer(question, speakers[0], a, speakers[1], b), search_s

    def bank_size(self, bank: str) -> int:
        """Memories Mem0 holds for the bank's speakers (``get_all`` per speaker)."""
        assert self.worker is not None
        speakers = sorted(self._speakers.get(bank, ()))
        return int(self.worker.request("size", bank=bank, speakers=speakers)["size"]) if speakers else 0

    def describe(self) -> dict[str, Any]:
        """What the run config records about this system."""
        return {
            "system": self.name,
            "mem0ai": self.version,
            "pipeline": self.pipeline,
            "pin": self.pin.version,
            "pin_note": self.pin.note,
            "requirements": self.pin.requirements,
            "llm": self.llm_route,
            "sampling": "temperature 0, top_p 1 (greedy)",
            "max_tokens": self.config["llm"]["config"]["max_tokens"],
            "embedder": f"{self.embedder_name} via loopback /v1/embeddings (dim {self.dims})",
            "vector_store": "qdrant embedded, on_disk",
            "store_dir": str(self.dir),
            "ingest": "one add per turn, user_id '<bank>:<speaker>', role user, "
            "metadata {timestamp: session date, dia_id, session}",
            "answer": f"search top {self.answer_k} per speaker; AnswerAgent(distill=False)",
        }

    def close(self) -> None:
        for part in (self.worker, self.proxy, self.server):
            if part is not None:
                part.close()
        self.worker = self.proxy = self.server = None


def create_mem0(ctx: Any) -> Mem0System:
    """``mem0``: mem0ai 1.0.11, the classic ADD / UPDATE / DELETE / NONE pipeline."""
    return Mem0System(ctx, PINS["mem0"])


def create_mem0_latest(ctx: Any) -> Mem0System:
    """``mem0-latest``: mem0ai 2.2.1, the newest installable release (ADD-only)."""
    return Mem0System(ctx, PINS["mem0-latest"])


make_mem0, make_mem0_latest = create_mem0, create_mem0_latest  # the names the brief used
