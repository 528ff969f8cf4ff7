"""``memory-r1 eval locomo``: build each conversation's bank, answer its questions, score (L3).

The runner drives any :class:`memory_r1.types.MemorySystem` (``done_turns`` / ``ingest_turn`` /
``answer``): the Memory-R1 pipeline here, every memory system of ``memory_r1.bench`` there.

Output folder (``out_dir``), all append-only while running so an interrupted run resumes:

* ``store.sqlite``      the memory banks (one bank per conversation ``sample_id``) + history;
* ``ingest.jsonl``      one row per ingested turn: facts, operations, LLM time, wall time;
* ``predictions.jsonl`` one row per answered question: prediction, raw output, per-item scores;
* ``scores.json`` / ``report.md``  recomputed from ``predictions.jsonl`` at the end.

Resume: a turn is skipped when the system reports it done (the pipeline: the store's marker,
written in the same transaction as its operations, so no duplicates); a question is skipped
when its ``qid`` is in the predictions.

Concurrency (``concurrency > 1``, for thread-safe systems behind a remote LLM): conversations are
processed by parallel threads, each ingesting its own turns in order; questions go to one shared
pool of ``concurrency`` threads. Rows are appended as they finish (file order may then differ
between runs; every number is recomputed from the files, so scores do not).

Limits: with ``max_sessions`` / ``max_turns`` only a prefix of each conversation is ingested, and
(``answerable_only``) only questions whose evidence turns all lie in that prefix are asked, so a
short run is still a fair sample. Questions without evidence are then left out.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

from memory_r1.eval.report import write_report
from memory_r1.metrics import aggregate, score_prediction
from memory_r1.types import QA, Conversation, MemorySystem, Turn

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class EvalLimits:
    """``categories=None`` keeps every category (LongMemEval / MSC use string names)."""

    max_sessions: int | None = None
    max_turns: int | None = None
    max_questions: int | None = None
    answerable_only: bool = True
    categories: tuple[int | str, ...] | None = (1, 2, 3, 4)

    def limited(self) -> bool:
        return self.max_sessions is not None or self.max_turns is not None


def plan(conv: Conversation, limits: EvalLimits) -> tuple[list[Turn], list[QA]]:
    """The turns to ingest and the questions to ask for one conversation."""
    turns = [t for t in conv.turns() if limits.max_sessions is None or t.session <= limits.max_sessions]
    if limits.max_turns is not None:
        turns = turns[: limits.max_turns]
    qas = [q for q in conv.qa if limits.categories is None or q.category in limits.categories]
    if limits.limited() and limits.answerable_only:
        seen = {t.dia_id for t in turns}
        qas = [q for q in qas if q.evidence and all(e in seen for e in q.evidence)]
    if limits.max_questions is not None:
        qas = qas[: limits.max_questions]
    return turns, qas


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Rows of a JSONL file; a torn last line (killed mid-write) is dropped."""
    if not path.exists():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


class _Jsonl:
    """Append-only JSONL writer; each row is flushed, and writes from threads never interleave."""

    def __init__(self, path: Path) -> None:
        self._f = path.open("a", encoding="utf-8")
        self._lock = threading.Lock()

    def write(self, row: dict[str, Any]) -> None:
        line = json.dumps(row, ensure_ascii=False) + "\n"
        with self._lock:
            self._f.write(line)
            self._f.flush()

    def close(self) -> None:
        self._f.close()


def _each(fn: Callable[[T], R], items: Sequence[T], pool: ThreadPoolExecutor | None) -> Iterator[R]:
    """``fn`` over ``items``: in order in this thread (``pool`` None), else on the pool, yielding
    results as they finish. The first failure cancels what has not started and is re-raised."""
    if pool is None:
        for item in items:
            yield fn(item)
        return
    futures: list[Future[R]] = [pool.submit(fn, item) for item in items]
    try:
        for fut in as_completed(futures):
            yield fut.result()
    finally:
        for fut in futures:
            fut.cancel()


class LocomoEval:
    """Runs a system over conversations with resume, progress bars and a judge (optional)."""

    def __init__(
        self,
        system: MemorySystem,
        out_dir: Path,
        judge: Any | None = None,
        progress: bool = True,
        run_config: dict[str, Any] | None = None,
        concurrency: int = 1,
        label: str = "",
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be >= 1")
        self.system = system
        self.out = Path(out_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        self.judge = judge
        self.progress = progress
        self.run_config = dict(run_config or {})
        self.concurrency = concurrency
        self.label = f"{label} " if label else ""  # prefixes the progress bars' descriptions
        self._banks: list[str] = []

    # -- the job ------------------------------------------------------------------------
    def run(self, convs: Iterable[Conversation], limits: EvalLimits = EvalLimits()) -> dict[str, Any]:
        convs = list(convs)
        plans = {c.sample_id: plan(c, limits) for c in convs}
        self._banks = [c.sample_id for c in convs]
        self.run_config["limits"] = asdict(limits)
        self.run_config["concurrency"] = self.concurrency
        (self.out / "run.json").write_text(json.dumps(self.run_config, indent=2, default=str))
        n_turns = sum(len(t) for t, _ in plans.values())
        n_q = sum(len(q) for _, q in plans.values())
        answered = {r["qid"] for r in read_jsonl(self.out / "predictions.jsonl")}
        parallel = self.concurrency > 1
        conv_pool = ThreadPoolExecutor(min(self.concurrency, len(convs) or 1)) if parallel else None
        q_pool = ThreadPoolExecutor(self.concurrency) if parallel else None
        stop = threading.Event()  # set on exit: threads still running stop at their next item
        ingest_log = _Jsonl(self.out / "ingest.jsonl")
        pred_log = _Jsonl(self.out / "predictions.jsonl")
        try:
            with _progress(self.progress) as bar:
                t_task = bar.add_task(f"{self.label}ingest turns", total=n_turns)
                q_task = bar.add_task(f"{self.label}answer questions", total=n_q)

                def one_conversation(conv: Conversation) -> None:
                    turns, qas = plans[conv.sample_id]
                    done = self.system.done_turns(conv.sample_id)
                    for turn in turns:  # in order: a bank is built turn after turn
                        if stop.is_set():
                            return
                        if turn.dia_id not in done:
                            ingest_log.write(self.ingest_one(conv.sample_id, turn))
                        bar.advance(t_task)
                    todo = [q for q in qas if q.qid not in answered]
                    bar.advance(q_task, len(qas) - len(todo))
                    ask = lambda qa: None if stop.is_set() else self.answer_one(conv, qa)  # noqa: E731
                    for row in _each(ask, todo, q_pool):
                        if row is not None:
                            pred_log.write(row)
                            bar.advance(q_task)

                for _ in _each(one_conversation, convs, conv_pool):
                    pass
        finally:
            stop.set()
            for pool in (conv_pool, q_pool):
                if pool is not None:
                    pool.shutdown(wait=True, cancel_futures=True)
            ingest_log.close()
            pred_log.close()
        return self.finish()

    def ingest_one(self, bank: str, turn: Turn) -> dict[str, Any]:
        """Ingest one turn; its ``ingest.jsonl`` row."""
        t0 = time.perf_counter()
        r = self.system.ingest_turn(bank, turn)
        return {
            "sample_id": bank,
            "dia_id": turn.dia_id,
            "speaker": turn.speaker,
            "facts": r.facts,
            "ops": [op.kind.value for op in r.ops],
            "invalid": [op.error for op in r.ops if op.error and op.kind.value == "INVALID"],
            "llm_calls": r.llm_calls,
            "llm_s": round(r.llm_seconds, 4),
            "tokens_in": r.tokens_in,
            "tokens_out": r.tokens_out,
            "wall_s": round(time.perf_counter() - t0, 4),
        }

    def answer_one(self, conv: Conversation, qa: QA) -> dict[str, Any]:
        """Answer (and score, and judge) one question; its ``predictions.jsonl`` row."""
        t0 = time.perf_counter()
        result, retrieval_s = self.system.answer(conv.sample_id, qa.question, conv.speakers)
        c = result.completion
        row: dict[str, Any] = {
            "qid": qa.qid,
            "sample_id": qa.sample_id,
            "question": qa.question,
            "gold": qa.answer,
            "category": qa.category,
            "category_name": _category_label(qa),
            "evidence": list(qa.evidence),
            "prediction": result.answer,
            "raw": result.raw,
            "selected": result.selected,
            "has_marker": result.has_marker,
            "retrieval_s": round(retrieval_s, 4),
            "llm_s": round(c.seconds, 4) if c else 0.0,
            "llm_calls": 1 if c else 0,
            "tokens_in": c.prompt_tokens if c else 0,
            "tokens_out": c.completion_tokens if c else 0,
        }
        row.update(getattr(result, "extra", None) or {})
        row.update(score_prediction(result.answer, qa.answer))
        if self.judge is not None:
            verdict = self.judge.judge(qa.question, qa.answer, result.answer)
            row["j"] = verdict.score
            row["judge_ok"] = verdict.ok
        row["wall_s"] = round(time.perf_counter() - t0, 4)
        return row

    # -- results ------------------------------------------------------------------------
    def finish(self) -> dict[str, Any]:
        """Recompute every number from the JSONL files and write scores.json + report.md."""
        preds = read_jsonl(self.out / "predictions.jsonl")
        ingest = read_jsonl(self.out / "ingest.jsonl")
        scores = {
            "scores": aggregate(preds, percent=True),
            "ingest": ingest_summary(ingest),
            "answer": answer_summary(preds),
            "config": self.run_config,
        }
        bank_size = getattr(self.system, "bank_size", None)
        if callable(bank_size):
            scores["bank_size"] = {bank: bank_size(bank) for bank in self._banks}
        (self.out / "scores.json").write_text(json.dumps(scores, indent=2, default=str))
        write_report(self.out / "report.md", scores)
        return scores


def _category_label(qa: QA) -> str:
    """LoCoMo's name for an int category; string categories (LongMemEval, MSC) are their name."""
    return qa.category if isinstance(qa.category, str) else qa.category_name


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) with linear interpolation (numpy's default); 0 if empty.

    >>> percentile([1.0, 2.0, 3.0, 4.0], 50), percentile([1.0, 2.0, 3.0, 4.0], 95)
    (2.5, 3.85)
    """
    if not values:
        return 0.0
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return round(xs[lo] + (xs[hi] - xs[lo]) * (pos - lo), 10)


def ingest_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    ops = Counter(op for r in rows for op in r["ops"])
    n = len(rows)
    llm = sum(r["llm_s"] for r in rows)
    wall = sum(r["wall_s"] for r in rows)
    return {
        "turns": n,
        "ops": dict(sorted(ops.items())),
        "invalid": ops.get("INVALID", 0),
        "llm_calls": sum(r["llm_calls"] for r in rows),
        "tokens_in": sum(r["tokens_in"] for r in rows),
        "tokens_out": sum(r["tokens_out"] for r in rows),
        "wall_s_per_turn": wall / n if n else 0.0,
        "wall_s_p50": percentile([r["wall_s"] for r in rows], 50),
        "wall_s_p95": percentile([r["wall_s"] for r in rows], 95),
        "outside_llm_share": (wall - llm) / wall if wall else 0.0,
    }


def answer_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-question costs; ``truncated`` only when rows carry ``truncated_turns`` (full context)."""
    n = len(rows)
    llm = sum(r["llm_s"] for r in rows)
    wall = sum(r["wall_s"] for r in rows)
    out = {
        "questions": n,
        "missing_answer_marker": sum(not r["has_marker"] for r in rows),
        "judge_unparseable": sum(r.get("judge_ok") is False for r in rows),
        "tokens_in": sum(r["tokens_in"] for r in rows),
        "tokens_out": sum(r["tokens_out"] for r in rows),
        "llm_calls": sum(r.get("llm_calls", 1) for r in rows),
        "wall_s_per_question": wall / n if n else 0.0,
        "wall_s_p50": percentile([r["wall_s"] for r in rows], 50),
        "wall_s_p95": percentile([r["wall_s"] for r in rows], 95),
        "retrieval_s_per_question": sum(r["retrieval_s"] for r in rows) / n if n else 0.0,
        "outside_llm_share": (wall - llm) / wall if wall else 0.0,
    }
    dropped = [r["truncated_turns"] for r in rows if "truncated_turns" in r]
    if dropped:
        out["truncated"] = {
            "questions": sum(d > 0 for d in dropped),
            "turns_mean": sum(dropped) / len(dropped),
            "turns_max": max(dropped),
        }
    return out


class _progress:
    """A rich progress display, or a silent stand-in when disabled."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    def __enter__(self) -> Any:
        if not self.enabled:
            return _NullBar()
        from memory_r1.progress import rich_progress

        self._p = rich_progress()
        return self._p.__enter__()

    def __exit__(self, *exc: Any) -> None:
        if self.enabled:
            self._p.__exit__(*exc)


class _NullBar:
    def add_task(self, *a: Any, **k: Any) -> int:
        return 0

    def advance(self, *a: Any, **k: Any) -> None:
        pass
