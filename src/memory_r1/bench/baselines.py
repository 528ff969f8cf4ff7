"""The baselines of the Memory-R1 tables, as bench systems (L3).

* ``locomo-rag`` (:class:`RawTurnRAG`): LoCoMo's RAG baseline. Every turn is stored verbatim
  (``turn.render()``, owner = speaker, timestamp = session date-time), no LLM call at ingest;
  the Answer Agent prompt *without* distillation answers over the top 30 turns per speaker.
* ``full-context`` (:class:`FullContext`): no memory at all; the prompt holds the whole
  conversation ingested so far, cut from the oldest turn to fit the context window.
* ``vanilla``: Mem0's classic loop without a learned manager: the pipeline's LLM fact
  extraction, then :class:`HeuristicManager` (similarity thresholds) instead of the Memory
  Manager, and the Answer Agent without distillation.

All of them answer with the backbone's ``answer`` model, like ``memory-r1``.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from memory_r1.agents.answer import AnswerAgent, answer_sampling, parse_answer
from memory_r1.agents.extract import FactExtractor
from memory_r1.agents.manager import ManagerResult
from memory_r1.agents.pipeline import MemoryR1Pipeline, PipelineConfig, answer_from_bank
from memory_r1.bench.context import BenchContext, role_models, shared_embedder
from memory_r1.errors import ConfigError
from memory_r1.eval.runner import read_jsonl
from memory_r1.llm.base import ChatModel, Prompt
from memory_r1.store import Embedder, MemoryStore, open_store
from memory_r1.types import AnswerResult, Memory, Op, OpKind, Turn, TurnResult

# ------------------------------------------------------------------------------- locomo-rag


class RawTurnRAG:
    """Raw dialogue turns in a ``MemoryStore``; answers over the top ``k`` turns per speaker."""

    def __init__(
        self, store: MemoryStore, answer_agent: AnswerAgent, k: int = 30, name: str = "locomo-rag"
    ) -> None:
        self.name, self.store, self.answer_agent, self.k = name, store, answer_agent, k

    def done_turns(self, bank: str) -> set[str]:
        return self.store.markers(bank)

    def ingest_turn(self, bank: str, turn: Turn) -> TurnResult:
        op = Op(OpKind.ADD, text=turn.render())
        self.store.apply_turn(
            bank,
            [op],
            owner=turn.speaker,
            timestamp=turn.date_time,
            metadata={"dia_id": turn.dia_id, "session": turn.session},
            marker=turn.dia_id,
        )  # the turn and its marker in one transaction
        return TurnResult(turn.dia_id, ops=[op])

    def answer(self, bank: str, question: str, speakers: tuple[str, str]) -> tuple[AnswerResult, float]:
        return answer_from_bank(self.store, self.answer_agent, self.k, bank, question, speakers)

    def bank_size(self, bank: str) -> int:
        return len(self.store.list(bank))

    def close(self) -> None:
        self.store.close()


def create_locomo_rag(ctx: BenchContext) -> RawTurnRAG:
    store = open_store(ctx.out_dir / "store.sqlite", shared_embedder(ctx.embedder))
    return RawTurnRAG(store, AnswerAgent(role_models(ctx)["answer"], distill=False))


# ---------------------------------------------------------------------------------- vanilla


_EPS = 1e-6


def _norm(text: str) -> str:
    return " ".join(text.casefold().split())


class HeuristicManager:
    """Mem0's classic loop with similarity thresholds in place of a learned manager.

    For each fact, the most similar related memory (the pipeline passes the same speaker's top
    ``related_k`` per fact) decides, by cosine similarity of the embeddings:

    * ``cosine >= noop_at`` (0.95) or the same text (case and spaces ignored) -> NOOP of it;
    * ``update_at <= cosine < noop_at`` (0.80 .. 0.95) -> UPDATE it with the fact's text;
    * otherwise (or no related memory) -> ADD the fact.

    Never DELETE. Within one turn a memory is updated at most once (a second close fact is
    added instead) and a fact equal to one already added is a NOOP. No model call is made.
    Cosines are float32, so a threshold is met within ``1e-6`` (0.95 itself is 0.9499999881
    in float32).
    """

    def __init__(self, embedder: Embedder, noop_at: float = 0.95, update_at: float = 0.80) -> None:
        if not 0.0 <= update_at <= noop_at <= 1.0:
            raise ConfigError(f"need 0 <= update_at ({update_at}) <= noop_at ({noop_at}) <= 1")
        self.embedder, self.noop_at, self.update_at = embedder, noop_at, update_at

    def decide(self, facts: Sequence[str], related: Sequence[Memory]) -> ManagerResult:
        live = [m for m in related if not m.deleted]
        sims = np.zeros((len(facts), len(live)), dtype=np.float32)
        if facts and live:
            sims = self.embedder.embed(list(facts)) @ self.embedder.embed([m.text for m in live]).T
        ops: list[Op] = []
        updated: set[str] = set()
        added: set[str] = set()
        for i, fact in enumerate(facts):
            same = next((m for m in live if _norm(m.text) == _norm(fact)), None)
            j = int(np.argmax(sims[i])) if live else -1
            best, cos = (live[j], float(sims[i, j])) if j >= 0 else (None, -1.0)
            if same is not None or (best is not None and cos >= self.noop_at - _EPS):
                target = same or best
                assert target is not None
                ops.append(Op(OpKind.NOOP, text=target.text, memory_id=target.id))
            elif best is not None and cos >= self.update_at - _EPS and best.id not in updated:
                updated.add(best.id)
                ops.append(Op(OpKind.UPDATE, text=fact, memory_id=best.id, old_text=best.text))
            elif _norm(fact) in added:
                ops.append(Op(OpKind.NOOP, text=fact))
            else:
                added.add(_norm(fact))
                ops.append(Op(OpKind.ADD, text=fact))
        return ManagerResult(ops, None, 0)


def create_vanilla(ctx: BenchContext) -> MemoryR1Pipeline:
    models, o = role_models(ctx), ctx.options
    embedder = shared_embedder(ctx.embedder)
    manager = HeuristicManager(embedder, noop_at=o.get("noop_at", 0.95), update_at=o.get("update_at", 0.80))
    return MemoryR1Pipeline(
        open_store(ctx.out_dir / "store.sqlite", embedder),
        FactExtractor(models["extract"], constrained=o.get("constrained", True)),
        manager,
        AnswerAgent(models["answer"], distill=False),
        PipelineConfig(),
        name="vanilla",
    )


# ----------------------------------------------------------------------------- full-context

FULL_CONTEXT_SYSTEM = """\
You are an intelligent memory assistant. Answer a question about a conversation between two \
speakers. The whole conversation is given; each session starts with its date-time in brackets.
Instructions:
1. Look for direct evidence in what both speakers said.
2. Use the session dates to turn relative times ("last year", "two months ago") into dates, \
months or years.
3. If statements contradict each other, trust the most recent one.
4. The answer should be less than 5-6 words.
5. Give only the final answer after **Answer:**"""

# Invented, outside LoCoMo's answer space (small models copy example answers).
FULL_CONTEXT_EXAMPLES: tuple[tuple[str, str], ...] = (
    (
        "Conversation:\n[10:02 am on 4 April, 2019]\nAna: I started a pottery class!\n"
        "Ben: Nice. I named my sailboat Kestrel.\n\nQuestion: What did Ben name his boat?",
        "**Answer:** Kestrel",
    ),
)

#: The window assumed for a model that cannot tell its own (``context_window`` None); the
#: llama.cpp backend's default ``n_ctx``.
DEFAULT_CONTEXT_TOKENS = 4096


@dataclass(frozen=True)
class ContextAnswer(AnswerResult):
    """An ``AnswerResult`` whose ``extra`` items go into the prediction row."""

    extra: Mapping[str, Any] = field(default_factory=dict)


def conversation_prompt(turns: Sequence[Turn], question: str) -> Prompt:
    """The turns as lines, a ``[date-time]`` line before each session's first kept turn."""
    lines: list[str] = []
    last: tuple[int, str] | None = None
    for t in turns:
        if (t.session, t.date_time) != last:
            lines.append(f"[{t.date_time}]" if t.date_time else f"[session {t.session}]")
            last = (t.session, t.date_time)
        lines.append(" ".join(t.render().split()))
    body = "\n".join(lines) or "(empty)"
    return Prompt(
        FULL_CONTEXT_SYSTEM, f"Conversation:\n{body}\n\nQuestion: {question}", FULL_CONTEXT_EXAMPLES
    )


class FullContext:
    """No memory: the answer prompt holds every ingested turn of the conversation.

    Budget: prompt tokens + the answer's ``max_tokens`` (32) must fit ``context_tokens``
    (default: the model's ``context_window``, which the llama.cpp and transformers backends
    know, else 4096). Turns are dropped from the oldest until they do; ``truncated_turns`` in the
    prediction row says how many. Token counts: exact when the model exposes its tokenizer
    (``render`` + ``tokenize_count``: the llama.cpp and transformers backends), otherwise an
    estimate of one token per 4 characters of the prompt's text (OpenAI-compatible endpoints).

    Ingest records each turn (no LLM) in memory and in ``turns.jsonl``, which a resumed run
    reads back.
    """

    name = "full-context"

    def __init__(self, model: ChatModel, out_dir: Path, context_tokens: int | None = None) -> None:
        self.model = model
        self.context_tokens = int(context_tokens or model.context_window or DEFAULT_CONTEXT_TOKENS)
        self.sampling = answer_sampling(distill=False)
        self.exact = callable(getattr(model, "tokenize_count", None)) and callable(
            getattr(model, "render", None)
        )
        self._path = Path(out_dir) / "turns.jsonl"
        self._lock = threading.Lock()
        self._turns: dict[str, list[Turn]] = {}
        for row in read_jsonl(self._path):
            self._turns.setdefault(row.pop("bank"), []).append(Turn(**row))

    def count_tokens(self, prompt: Prompt) -> int:
        if self.exact:
            return int(self.model.tokenize_count(self.model.render(prompt)))  # type: ignore[attr-defined]
        text = prompt.system + "".join(u + a for u, a in prompt.examples) + prompt.user
        return math.ceil(len(text) / 4)

    def done_turns(self, bank: str) -> set[str]:
        with self._lock:
            return {t.dia_id for t in self._turns.get(bank, [])}

    def ingest_turn(self, bank: str, turn: Turn) -> TurnResult:
        row = {
            "bank": bank,
            "dia_id": turn.dia_id,
            "speaker": turn.speaker,
            "text": turn.text,
            "session": turn.session,
            "date_time": turn.date_time,
            "blip_caption": turn.blip_caption,
        }
        with self._lock:
            with self._path.open("a", encoding="utf-8") as f:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
            self._turns.setdefault(bank, []).append(turn)
        return TurnResult(turn.dia_id)

    def fit(self, turns: Sequence[Turn], question: str) -> tuple[Prompt, int]:
        """The prompt with the most recent turns that fit, and how many old turns were dropped.

        Dropping a turn never adds tokens, so a binary search over the number dropped finds
        the fewest drops that fit (all of them if not even the bare prompt fits).
        """
        room = self.context_tokens - self.sampling.max_tokens
        lo, hi = 0, len(turns)
        while lo < hi:
            mid = (lo + hi) // 2
            if self.count_tokens(conversation_prompt(turns[mid:], question)) <= room:
                hi = mid
            else:
                lo = mid + 1
        return conversation_prompt(turns[lo:], question), lo

    def answer(self, bank: str, question: str, speakers: tuple[str, str]) -> tuple[AnswerResult, float]:
        t0 = time.perf_counter()
        with self._lock:
            turns = list(self._turns.get(bank, []))
        prompt, dropped = self.fit(turns, question)
        build_s = time.perf_counter() - t0  # the "retrieval" of this system: fitting the window
        completion = self.model.complete(prompt, self.sampling)
        p = parse_answer(completion.text)
        return ContextAnswer(
            p.answer,
            p.selected,
            completion.text,
            p.has_marker,
            completion,
            extra={"truncated_turns": dropped, "context_turns": len(turns) - dropped},
        ), build_s

    def bank_size(self, bank: str) -> int:
        with self._lock:
            return len(self._turns.get(bank, []))

    def close(self) -> None:
        pass


def create_full_context(ctx: BenchContext) -> FullContext:
    return FullContext(role_models(ctx)["answer"], ctx.out_dir, ctx.options.get("context_tokens"))
