"""``memory-r1 eval locomo``: build each conversation's bank, answer its questions, score (L3).

Output folder (``out_dir``), all append-only while running so an interrupted run resumes:

* ``store.sqlite``      the memory banks (one bank per conversation ``sample_id``) + history;
* ``ingest.jsonl``      one row per ingested turn: facts, operations, LLM time, wall time;
* ``predictions.jsonl`` one row per answered question: prediction, raw output, per-item scores;
* ``scores.json`` / ``report.md``  recomputed from ``predictions.jsonl`` at the end.

Resume: a turn is skipped when the store holds its marker (written in the same transaction as
its operations, so no duplicates); a question is skipped when its ``qid`` is in the predictions.

Limits: with ``max_sessions`` / ``max_turns`` only a prefix of each conversation is ingested, and
(``answerable_only``) only questions whose evidence turns all lie in that prefix are asked, so a
short run is still a fair sample. Questions without evidence are then left out.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

from memory_r1.agents.pipeline import MemoryR1Pipeline
from memory_r1.eval.report import write_report
from memory_r1.metrics import aggregate, score_prediction
from memory_r1.types import QA, Conversation, Turn


@dataclass(frozen=True)
class EvalLimits:
    max_sessions: int | None = None
    max_turns: int | None = None
    max_questions: int | None = None
    answerable_only: bool = True
    categories: tuple[int, ...] = (1, 2, 3, 4)

    def limited(self) -> bool:
        return self.max_sessions is not None or self.max_turns is not None


def plan(conv: Conversation, limits: EvalLimits) -> tuple[list[Turn], list[QA]]:
    """The turns to ingest and the questions to ask for one conversation."""
    turns = [t for t in conv.turns() if limits.max_sessions is None or t.session <= limits.max_sessions]
    if limits.max_turns is not None:
        turns = turns[: limits.max_turns]
    qas = [q for q in conv.qa if q.category in limits.categories]
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
    def __init__(self, path: Path) -> None:
        self._f = path.open("a", encoding="utf-8")

    def write(self, row: dict[str, Any]) -> None:
        self._f.write(json.dumps(row, ensure_ascii=False) + "\n")
        self._f.flush()

    def close(self) -> None:
        self._f.close()


class LocomoEval:
    """Runs the pipeline over conversations with resume, progress bars and a judge (optional)."""

    def __init__(
        self,
        pipeline: MemoryR1Pipeline,
        out_dir: Path,
        judge: Any | None = None,
        progress: bool = True,
        run_config: dict[str, Any] | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.out = Path(out_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        self.judge = judge
        self.progress = progress
        self.run_config = dict(run_config or {})

    # -- the job ------------------------------------------------------------------------
    def run(self, convs: Iterable[Conversation], limits: EvalLimits = EvalLimits()) -> dict[str, Any]:
        convs = list(convs)
        plans = {c.sample_id: plan(c, limits) for c in convs}
        self.run_config["limits"] = asdict(limits)
        (self.out / "run.json").write_text(json.dumps(self.run_config, indent=2, default=str))
        n_turns = sum(len(t) for t, _ in plans.values())
        n_q = sum(len(q) for _, q in plans.values())
        with _progress(self.progress) as bar:
            t_task = bar.add_task("ingest turns", total=n_turns)
            q_task = bar.add_task("answer questions", total=n_q)
            for conv in convs:
                turns, qas = plans[conv.sample_id]
                for _ in self._ingest(conv, turns):
                    bar.advance(t_task)
                for _ in self._answer(conv, qas):
                    bar.advance(q_task)
        return self.finish()

    def _ingest(self, conv: Conversation, turns: list[Turn]) -> Iterator[None]:
        bank = conv.sample_id
        done = self.pipeline.store.markers(bank)
        log = _Jsonl(self.out / "ingest.jsonl")
        try:
            for turn in turns:
                if turn.dia_id not in done:
                    t0 = time.perf_counter()
                    r = self.pipeline.ingest_turn(bank, turn)
                    log.write({
                        "sample_id": bank, "dia_id": turn.dia_id, "speaker": turn.speaker,
                        "facts": r.facts, "ops": [op.kind.value for op in r.ops],
                        "invalid": [op.error for op in r.ops if op.error and op.kind.value == "INVALID"],
                        "llm_calls": r.llm_calls, "llm_s": round(r.llm_seconds, 4),
                        "tokens_in": r.tokens_in, "tokens_out": r.tokens_out,
                        "wall_s": round(time.perf_counter() - t0, 4),
                    })
                yield None
        finally:
            log.close()

    def _answer(self, conv: Conversation, qas: list[QA]) -> Iterator[None]:
        path = self.out / "predictions.jsonl"
        done = {r["qid"] for r in read_jsonl(path)}
        log = _Jsonl(path)
        try:
            for qa in qas:
                if qa.qid not in done:
                    log.write(self.answer_one(conv, qa))
                yield None
        finally:
            log.close()

    def answer_one(self, conv: Conversation, qa: QA) -> dict[str, Any]:
        t0 = time.perf_counter()
        result, retrieval_s = self.pipeline.answer(conv.sample_id, qa.question, conv.speakers)
        c = result.completion
        row: dict[str, Any] = {
            "qid": qa.qid, "sample_id": qa.sample_id, "question": qa.question, "gold": qa.answer,
            "category": qa.category, "category_name": qa.category_name, "evidence": list(qa.evidence),
            "prediction": result.answer, "raw": result.raw, "selected": result.selected,
            "has_marker": result.has_marker,
            "retrieval_s": round(retrieval_s, 4), "llm_s": round(c.seconds, 4) if c else 0.0,
            "tokens_in": c.prompt_tokens if c else 0, "tokens_out": c.completion_tokens if c else 0,
        }
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
        (self.out / "scores.json").write_text(json.dumps(scores, indent=2, default=str))
        write_report(self.out / "report.md", scores)
        return scores


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
        "outside_llm_share": (wall - llm) / wall if wall else 0.0,
    }


def answer_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    n = len(rows)
    llm = sum(r["llm_s"] for r in rows)
    wall = sum(r["wall_s"] for r in rows)
    return {
        "questions": n,
        "missing_answer_marker": sum(not r["has_marker"] for r in rows),
        "judge_unparseable": sum(r.get("judge_ok") is False for r in rows),
        "tokens_in": sum(r["tokens_in"] for r in rows),
        "tokens_out": sum(r["tokens_out"] for r in rows),
        "wall_s_per_question": wall / n if n else 0.0,
        "retrieval_s_per_question": sum(r["retrieval_s"] for r in rows) / n if n else 0.0,
        "outside_llm_share": (wall - llm) / wall if wall else 0.0,
    }


class _progress:
    """A rich progress display, or a silent stand-in when disabled."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    def __enter__(self) -> Any:
        if not self.enabled:
            return _NullBar()
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                   TimeElapsedColumn, TimeRemainingColumn)

        self._p = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                           TimeElapsedColumn(), TimeRemainingColumn())
        return self._p.__enter__()

    def __exit__(self, *exc: Any) -> None:
        if self.enabled:
            self._p.__exit__(*exc)


class _NullBar:
    def add_task(self, *a: Any, **k: Any) -> int:
        return 0

    def advance(self, *a: Any, **k: Any) -> None:
        pass
