"""``Memory``: a Mem0-shaped memory layer whose Manager and Answer Agent are the learned ones.

>>> from memory_r1 import Memory
>>> m = Memory.from_config({"store": {"path": ":memory:"}, "embedder": "hash"})
>>> m.add("I moved to Paris", user_id="alice", infer=False)["results"][0]["event"]
'ADD'
>>> m.search("where does alice live?", user_id="alice")["results"][0]["memory"]
'I moved to Paris'

``add(infer=True)`` runs the Memory-R1 pipeline on each message (fact extraction, then the
Memory Manager's ADD / UPDATE / DELETE / NOOP over the owner's related memories), one store
transaction per message, and returns every operation it applied (``INVALID`` ones too: a bad
model output is reported, never dropped). ``infer=False`` stores the messages as they are,
without any LLM call. ``answer`` runs the Answer Agent over the owner's top memories.

Scope (see :mod:`memory_r1.api.records`): every call names an owner through ``user_id`` /
``agent_id`` / ``run_id``; calls by id (``get``, ``update``, ``delete``, ``history``) go through
the store's owner-scoped methods. ``owners=`` (a server passes its API key's owners) limits a
call to those owners: another owner's id is ``NotFoundError``, another owner's scope is
``AccessDenied``. Models are loaded on first use, so ``infer=False`` adds and searches never
load an LLM. Thread-safe: the store serialises its own writes; LLM calls take one lock.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Collection, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from memory_r1.agents.pipeline import MemoryR1Pipeline
from memory_r1.api import records as R
from memory_r1.api.config import MemoryConfig
from memory_r1.errors import AccessDenied, InvalidInput, NotFoundError
from memory_r1.llm.base import ChatModel
from memory_r1.store import create_embedder, open_store
from memory_r1.types import Memory as Entry
from memory_r1.types import Turn

Owners = Collection[str] | None


class Memory:
    """The memory layer. ``config``: a :class:`MemoryConfig`, a dict (native or Mem0-shaped), or
    None for the offline default. ``models``: role -> ``ChatModel`` (``extract``, ``manager``,
    ``answer``) instead of the configured LLM, e.g. ``memory_r1.testing.FakeChatModel``."""

    def __init__(
        self,
        config: MemoryConfig | Mapping[str, Any] | None = None,
        *,
        models: Mapping[str, ChatModel] | None = None,
    ) -> None:
        self.config = config if isinstance(config, MemoryConfig) else MemoryConfig.from_dict(config)
        self.bank = self.config.bank
        self._models = dict(models) if models is not None else None
        self._pipeline: MemoryR1Pipeline | None = None
        self._llm_lock = threading.Lock()
        self._build_lock = threading.Lock()
        self.adapters: dict[str, Any] | None = None  # which trained adapters the agents run
        embedder = create_embedder(self.config.embedder)
        self.store = open_store(self.config.store_target, embedder, kind=self.config.store_kind)

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Memory:
        return cls(MemoryConfig.from_dict(config))

    # -- the agents, built on first use -----------------------------------------------------

    def pipeline(self) -> MemoryR1Pipeline:
        with self._build_lock:
            if self._pipeline is None:
                self._pipeline = self._build()
            return self._pipeline

    def _build(self) -> MemoryR1Pipeline:
        from memory_r1.agents.answer import AnswerAgent
        from memory_r1.agents.extract import FactExtractor
        from memory_r1.agents.manager import MemoryManager
        from memory_r1.agents.pipeline import PipelineConfig
        from memory_r1.agents.system import build_models, with_shipped_adapters
        from memory_r1.config import SystemConfig

        cfg = self.config
        llm = cfg.llm
        if cfg.api_key:
            llm = replace(llm, options={**llm.options, "api_key": cfg.api_key})
        system = SystemConfig(
            llm=llm, embedder=cfg.embedder, related_k=cfg.related_k, answer_k=cfg.answer_k or 30
        )
        if cfg.adapters == "shipped" and self._models is None:
            system, self.adapters = with_shipped_adapters(system, answer_k=cfg.answer_k)
        models = self._models or build_models(system)
        return MemoryR1Pipeline(
            store=self.store,
            extractor=FactExtractor(models["extract"], constrained=system.constrained),
            manager=MemoryManager(models["manager"], constrained=system.constrained),
            answer_agent=AnswerAgent(models["answer"], distill=system.distill),
            config=PipelineConfig(related_k=system.related_k, answer_k=system.answer_k),
        )

    # -- scope ------------------------------------------------------------------------------

    def _scope(
        self, user_id: str | None, agent_id: str | None, run_id: str | None, owners: Owners
    ) -> tuple[str, dict[str, str]]:
        ids = R.scope_ids(user_id, agent_id, run_id)
        owner = R.owner_of(ids)
        if owners is not None and owner not in owners:
            raise AccessDenied(f"this caller may not touch the memories of {owner!r}")
        return owner, ids

    def _lookup(self, memory_id: str, owners: Owners) -> Entry | None:
        """The entry (deleted ones too) if the caller may see it; the store checks the owner."""
        if not isinstance(memory_id, str) or not memory_id:
            raise InvalidInput(f"memory id must be a non-empty string, got {memory_id!r}")
        if owners is None:
            return self.store.get(self.bank, memory_id)
        for owner in owners:
            found = self.store.get(self.bank, memory_id, owner=owner)
            if found is not None:
                return found
        return None

    def _live(self, memory_id: str, owners: Owners) -> Entry:
        found = self._lookup(memory_id, owners)
        if found is None or found.deleted:
            raise NotFoundError(f"no memory {memory_id!r}")
        return found

    # -- writes -----------------------------------------------------------------------------

    def add(
        self,
        messages: Any,
        *,
        user_id: str | None = None,
        agent_id: str | None = None,
        run_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        infer: bool = True,
        owners: Owners = None,
    ) -> dict[str, Any]:
        """Remember ``messages``; ``{"results": [operation, ...]}`` in the order applied."""
        owner, ids = self._scope(user_id, agent_id, run_id, owners)
        msgs = [m for m in R.parse_messages(messages) if m["role"] != "system"]
        meta = {**R.check_metadata(metadata), **ids}
        if not infer:
            items = [{"text": m["content"], "owner": owner, "metadata": meta} for m in msgs]
            added = self.store.add_many(self.bank, items) if items else []
            return {"results": [{"id": e.id, "memory": e.text, "event": "ADD"} for e in added]}
        pipeline = self.pipeline()
        names = {"user": ids.get("user_id", "User"), "assistant": ids.get("agent_id", "Assistant")}
        results: list[dict[str, Any]] = []
        for m in msgs:
            speaker = names[m["role"]]
            listener = names["assistant" if m["role"] == "user" else "user"]
            turn = Turn(f"api:{uuid.uuid4().hex}", speaker, m["content"], 0, _now(), listener=listener)
            with self._llm_lock:
                done = pipeline.ingest_turn(self.bank, turn, owner=owner, metadata=meta)
            results += [R.operation(row) for row in done.history]
        return {"results": results}

    def update(self, memory_id: str, data: str, *, owners: Owners = None) -> dict[str, Any]:
        if not isinstance(data, str) or not data.strip():
            raise InvalidInput("the new memory text must be a non-empty string")
        found = self._live(memory_id, owners)
        self.store.update(self.bank, memory_id, data, owner=found.owner)
        return {"message": "Memory updated successfully!"}

    def delete(self, memory_id: str, *, owners: Owners = None) -> dict[str, Any]:
        found = self._live(memory_id, owners)
        self.store.delete(self.bank, memory_id, owner=found.owner)
        return {"message": "Memory deleted successfully!"}

    def delete_all(
        self,
        *,
        user_id: str | None = None,
        agent_id: str | None = None,
        run_id: str | None = None,
        owners: Owners = None,
    ) -> dict[str, Any]:
        owner, ids = self._scope(user_id, agent_id, run_id, owners)
        if len(ids) == 1:
            self.store.delete_owner(self.bank, owner)
        else:  # narrowed by a second id: only the matching memories
            for e in self.store.list(self.bank, owner=owner):
                if R.matches(e, ids, None):
                    self.store.delete(self.bank, e.id, owner=owner)
        return {"message": "Memories deleted successfully!"}

    def reset(self, *, owners: Owners = None) -> dict[str, Any]:
        """Forget everything in the bank (memories and history); with ``owners``, only theirs
        (soft deletes, history kept)."""
        if owners is None:
            self.store.delete_bank(self.bank)
        else:
            for owner in owners:
                self.store.delete_owner(self.bank, owner)
        return {"message": "Memory store reset successfully!"}

    # -- reads ------------------------------------------------------------------------------

    def search(
        self,
        query: str,
        *,
        user_id: str | None = None,
        agent_id: str | None = None,
        run_id: str | None = None,
        limit: int = 100,
        filters: Mapping[str, Any] | None = None,
        owners: Owners = None,
    ) -> dict[str, Any]:
        """The owner's memories most similar to ``query``, best first (score: cosine)."""
        if not isinstance(query, str) or not query.strip():
            raise InvalidInput("query must be a non-empty string")
        owner, ids = self._scope(user_id, agent_id, run_id, owners)
        limit, filters = _limit(limit), _filters(filters)
        narrow = len(ids) > 1 or bool(filters)
        hits = self.store.search(self.bank, query, owner=owner, k=max(4 * limit, 200) if narrow else limit)
        kept = [h for h in hits if R.matches(h.memory, ids, filters)][:limit]
        return {"results": [R.item(h.memory, h.score) for h in kept]}

    def get(self, memory_id: str, *, owners: Owners = None) -> dict[str, Any] | None:
        found = self._lookup(memory_id, owners)
        return None if found is None or found.deleted else R.item(found)

    def get_all(
        self,
        *,
        user_id: str | None = None,
        agent_id: str | None = None,
        run_id: str | None = None,
        limit: int = 100,
        filters: Mapping[str, Any] | None = None,
        owners: Owners = None,
    ) -> dict[str, Any]:
        owner, ids = self._scope(user_id, agent_id, run_id, owners)
        limit, filters = _limit(limit), _filters(filters)
        entries = [e for e in self.store.list(self.bank, owner=owner) if R.matches(e, ids, filters)]
        return {"results": [R.item(e) for e in entries[:limit]]}

    def history(self, memory_id: str, *, owners: Owners = None) -> list[dict[str, Any]]:
        """Every operation on one memory, oldest first (deleted memories keep their history)."""
        if self._lookup(memory_id, owners) is None:
            raise NotFoundError(f"no memory {memory_id!r}")
        return [R.history_row(r) for r in self.store.history(self.bank, memory_id)]

    def owners(self, *, owners: Owners = None) -> list[str]:
        """Owners with memories or history in the bank (only ``owners``, when given)."""
        return [o for o in self.store.owners(self.bank) if owners is None or o in owners]

    def audit(self, owner: str, *, owners: Owners = None) -> list[dict[str, Any]]:
        """Every history row of ``owner`` (ADD / UPDATE / DELETE / NONE / INVALID), oldest first."""
        if owners is not None and owner not in owners:
            raise AccessDenied(f"this caller may not touch the memories of {owner!r}")
        return [R.history_row(r) for r in self.store.history(self.bank, owner=owner)]

    def answer(
        self,
        question: str,
        *,
        user_id: str | None = None,
        agent_id: str | None = None,
        run_id: str | None = None,
        owners: Owners = None,
    ) -> dict[str, Any]:
        """The Answer Agent over the owner's top memories: ``{"answer", "memories", "selected", "raw"}``."""
        if not isinstance(question, str) or not question.strip():
            raise InvalidInput("question must be a non-empty string")
        owner, ids = self._scope(user_id, agent_id, run_id, owners)
        pipeline = self.pipeline()
        k = pipeline.config.answer_k
        hits = self.store.search(self.bank, question, owner=owner, k=max(4 * k, 200) if len(ids) > 1 else k)
        shown = [h.memory for h in hits if R.matches(h.memory, ids, None)][:k]
        name = next(iter(ids.values()))
        with self._llm_lock:
            result = pipeline.answer_agent.answer(question, name, shown, "Assistant", [])
        return {
            "answer": result.answer,
            "memories": [R.item(m) for m in shown],
            "selected": list(result.selected),
            "raw": result.raw,
        }

    # -- lifecycle --------------------------------------------------------------------------

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> Memory:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _now() -> str:
    """Now in LoCoMo's date format ("1:56 pm on 8 May, 2023"), the one the agents were trained on."""
    t = datetime.now(UTC)
    return f"{t.strftime('%I:%M').lstrip('0')} {t.strftime('%p').lower()} on {t.day} {t.strftime('%B, %Y')}"


def _limit(limit: Any) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise InvalidInput(f"limit must be a positive integer, got {limit!r}")
    return limit


def _filters(filters: Any) -> Mapping[str, Any] | None:
    if filters is not None and not isinstance(filters, Mapping):
        raise InvalidInput(
            f"filters must be an object of metadata key -> value, got {type(filters).__name__}"
        )
    return filters
