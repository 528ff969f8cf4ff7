"""Mem0 itself (the ``mem0ai`` library from PyPI) as benchmark systems ``mem0`` and ``mem0-latest``.

Two pinned releases, each in its own venv so its dependencies (openai, qdrant-client, pydantic,
sqlalchemy, posthog) never enter ours (``make mem0-venv`` / ``make mem0-latest-venv``):

* ``mem0`` = **mem0ai 1.0.11**, the last release with the *classic* update step that Memory-R1
  learns: one extraction call (``{"facts": [...]}``), top-5 retrieval per fact, then the
  ``DEFAULT_UPDATE_MEMORY_PROMPT`` call answering ADD / UPDATE / DELETE / NONE per memory
  (Mem0's ``Memory.add`` builds it with ``get_update_memory_messages``).
* ``mem0-latest`` = **mem0ai 2.2.1**, the newest release this index offers. It is *not* classic:
  since 2.0.0 ``Memory.add`` runs the "V3 phased batch pipeline", one
  ``ADDITIVE_EXTRACTION_PROMPT`` call that only ever ADDs (MD5-deduplicated). Installed without
  the ``nlp`` / ``extras`` extras (spaCy's ``en_core_web_sm`` is not on PyPI; fastembed's BM25
  model comes from the HF Hub), so it runs as Mem0 does without them: semantic search only, no
  lemmatisation, no entity linking. Its extraction prompt alone is ~8.6k tokens, more than
  SmolLM2's 8,192-token context: on that backbone every ``add`` fails (counted INVALID); it
  needs a longer-context backbone (Gemma 3 270M: 32k; the server gets up to 16k).

How a run is wired (all on 127.0.0.1, nothing leaves the machine; the lifecycle is
:class:`memory_r1.bench.worker_system.WorkerSystem`'s, shared with A-Mem):

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

Ingestion follows Mem0's own LoCoMo evaluation harness (its ``memzero`` add step: ``add`` per
speaker ``user_id`` with ``metadata={"timestamp": session date}``) with these deviations, so every
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
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from memory_r1.bench.context import BenchContext
from memory_r1.bench.proxy import Inject, llamacpp_sampling
from memory_r1.bench.worker_system import DUMMY_KEY, WorkerSystem
from memory_r1.config import ModelConfig
from memory_r1.types import Memory, Op, OpKind, Turn

WORKER = Path(__file__).with_name("mem0_worker.py")


@dataclass(frozen=True)
class Mem0Pin:
    system: str
    version: str  # the mem0ai release pinned in ``requirements``
    pipeline: str  # "classic" (ADD/UPDATE/DELETE/NONE update step) or "add-only" (v3)
    venv: str  # relative to the repository root; ``options["venv"]`` overrides
    requirements: str
    note: str

    @property
    def make_target(self) -> str:
        """The ``make`` target that builds this pin's venv."""
        return "mem0-venv" if self.system == "mem0" else "mem0-latest-venv"


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
    ops = _failure_ops(reply, str(calls[-1])[:2000] if calls else None)
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
        op = _action_op(a, pipeline, stored)
        if op is not None:
            ops.append(op)
    facts = reply.get("facts")
    facts = [str(f) for f in facts] if facts else [str(r.get("memory") or "") for r in results]
    if not ops:
        ops.append(Op(OpKind.NOOP, error="no operations" if facts else "no facts"))
    return facts, ops


def _failure_ops(reply: Mapping[str, Any], raw: str | None) -> list[Op]:
    """INVALID ops for an ``add`` that raised and for each failure Mem0 logged and skipped."""
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
    return ops


def _action_op(a: Any, pipeline: str, stored: set[Any]) -> Op | None:
    """The op of one parsed update-step item that Mem0's results do not account for, if any."""
    if not isinstance(a, dict):
        return Op(OpKind.INVALID, error=f"mem0 skipped a non-object item {a!r}"[:300])
    text, event = a.get("text"), str(a.get("event") or "").upper()
    if pipeline == "classic":
        if event == "NONE":
            return Op(OpKind.NOOP, text=str(text or ""), memory_id=a.get("id"))
        if event not in _EVENTS:
            return Op(
                OpKind.INVALID,
                error=f"mem0 skipped unknown event {a.get('event')!r}",
                raw=json.dumps(a)[:2000],
            )
        if not text:
            return Op(OpKind.INVALID, error=f"mem0 skipped {event} without text", raw=json.dumps(a)[:2000])
        return None
    if not text:
        return Op(OpKind.INVALID, error="mem0 skipped a memory without text", raw=json.dumps(a)[:2000])
    if text not in stored:
        return Op(OpKind.NOOP, text=str(text), error="not stored (mem0 hash de-duplication)")
    return None


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


class Mem0System(WorkerSystem):
    """One pinned ``mem0ai`` release on the backbone; see the module docstring.

    ``ctx.options``: ``answer_k`` (30 per speaker), ``max_tokens`` (Mem0's LLM config; default
    256, the cap our own Memory Manager gets — Mem0's own default, 2000, lets a small model
    ramble for over a minute per call on CPU), and those of :class:`WorkerSystem` (``n_ctx``,
    ``n_threads``, ``venv``, ``startup_timeout``).
    """

    label = "mem0"
    package = "mem0ai"
    script = WORKER

    def __init__(self, ctx: BenchContext, pin: Mem0Pin) -> None:
        self.pin = pin  # the folder is named after the system: never one Qdrant lock for two pins
        super().__init__(
            ctx, name=pin.system, venv=pin.venv, make_target=pin.make_target, version=pin.version, answer_k=30
        )

    def _setup(self, options: Mapping[str, Any]) -> None:
        self._speakers: dict[str, set[str]] = {}

    def _proxy_hooks(self, llamacpp: bool) -> tuple[Inject | None, Inject | None]:
        return (llamacpp_sampling if llamacpp else None), None

    def _worker_config(self, llm: ModelConfig, options: Mapping[str, Any]) -> dict[str, Any]:
        assert self.proxy is not None
        return {
            "vector_store": {
                "provider": "qdrant",
                "config": {
                    "collection_name": "mem0",
                    "embedding_model_dims": self.dims,
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
                    "model": self.embedder_name,
                    "api_key": DUMMY_KEY,
                    "openai_base_url": self.proxy.url,
                    "embedding_dims": self.dims,
                },
            },
            "history_db_path": str(self.dir / "history.db"),
        }

    def _check_init(self, info: dict[str, Any]) -> None:
        self.pipeline = info["pipeline"]
        super()._check_init(info)

    def _library_env(self) -> dict[str, str]:
        mem0_dir = self.dir / "mem0_dir"
        mem0_dir.mkdir(exist_ok=True)
        return {"MEM0_DIR": str(mem0_dir), "MEM0_TELEMETRY": "False"}

    def _remember(self, row: dict[str, Any]) -> None:
        super()._remember(row)
        self._speakers.setdefault(row["bank"], set()).add(row["speaker"])

    # -- the library's side of MemorySystem --------------------------------------------------
    def _add(self, bank: str, turn: Turn) -> dict[str, Any]:
        """One Mem0 ``add`` into the speaker's memory."""
        assert self.worker is not None
        return self.worker.request(
            "add",
            bank=bank,
            speaker=turn.speaker,
            text=turn.render(),
            timestamp=turn.date_time,
            metadata={"dia_id": turn.dia_id, "session": turn.session},
        )

    def _ops(self, reply: Mapping[str, Any]) -> tuple[list[str], list[Op]]:
        return map_ops(reply, self.pipeline)

    def search(self, bank: str, query: str, speaker: str) -> list[Memory]:
        assert self.worker is not None
        out = self.worker.request("search", bank=bank, speaker=speaker, query=query, limit=self.answer_k)
        return [hit_to_memory(h, speaker) for h in out["hits"]]

    def _retrieve(
        self, bank: str, question: str, speakers: tuple[str, str]
    ) -> tuple[list[Memory], list[Memory]]:
        """Mem0 ``search`` top ``answer_k`` per speaker."""
        return self.search(bank, question, speakers[0]), self.search(bank, question, speakers[1])

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


def create_mem0(ctx: BenchContext) -> Mem0System:
    """``mem0``: mem0ai 1.0.11, the classic ADD / UPDATE / DELETE / NONE pipeline."""
    return Mem0System(ctx, PINS["mem0"])


def create_mem0_latest(ctx: BenchContext) -> Mem0System:
    """``mem0-latest``: mem0ai 2.2.1, the newest installable release (ADD-only)."""
    return Mem0System(ctx, PINS["mem0-latest"])
