"""Greedy validation for checkpoint choice, and the scoring behind ``memory-r1 eval answer-agent``.

The paper decodes greedily (tau = 0) for validation and test and keeps the checkpoint with the
best validation score (EM on the 81 conv-30 questions).

**One path for a trained agent**: validation answers with the very objects inference uses,
an :class:`~memory_r1.agents.answer.AnswerAgent` over an
:class:`~memory_r1.llm.hf.HFModel` (``HFModel.wrap`` around the policy's model: no copy),
so the prompts, the decoding loop (:func:`memory_r1.llm.hf_decode.decode`), the token budget,
the stop strings and the parser are those of ``memory-r1 eval locomo --answer-agent``. A
checkpoint scores the same through either command on the same bank (a test checks it).

* :func:`answer_validation` - the first ``max_questions`` :class:`~memory_r1.rl.envs.answer.AnswerEnv`
  episodes (conversation order), each answer scored with
  ``metrics.score_prediction(answer, gold)``: ``val_f1``, ``val_bleu1``, ``val_em`` in
  percent, plus ``val_n`` and ``val_format_failure_rate`` (no ``Answer:`` marker). Unlike the
  training reward, a missing marker is not scored 0 here: the parser's reading is scored, as
  ``eval/runner.py`` does. No LLM judge (J) is run.
* :func:`manager_validation` - mean greedy reward (``val_reward``, in [0, 1]) over the first
  ``max_episodes`` :class:`~memory_r1.rl.envs.manager.ManagerEnv` episodes: ops applied to a copy of
  the snapshot bank, the frozen Answer Agent answers, the env's reward; plus
  ``val_invalid_rate`` and the operation mix (``val_op_add`` ... ``val_op_invalid``: shares of
  all parsed operations).
* :class:`Validator` - runs one of those for the :class:`~memory_r1.rl.algorithms.trainer.Trainer`, keeps
  ``<out>/validation.json`` (every validation row and the best), the predictions of each
  validation in ``<out>/validation/step-<step>.jsonl`` (and, for answer validation, its
  per-category F1 / BLEU-1 / EM, ``metrics.aggregate`` in percent, in
  ``step-<step>.scores.json``: the table ``eval answer-agent`` writes), and exports the best step (highest
  ``key``, e.g. EM then F1; ties keep the earlier step) to ``<out>/best`` as a plain HF
  checkpoint (:meth:`Policy.export`), with ``best/validation_row.json`` naming its step.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from memory_r1.agents.answer import AnswerAgent
from memory_r1.agents.manager import manager_sampling
from memory_r1.llm.base import complete_many
from memory_r1.llm.hf import HFModel
from memory_r1.metrics import aggregate, score_prediction

if TYPE_CHECKING:
    from memory_r1.rl.algorithms.policy import Policy
    from memory_r1.rl.envs.answer import AnswerEnv
    from memory_r1.rl.envs.manager import ManagerEnv

Rows = list[dict[str, Any]]
Evaluate = Callable[["Policy"], tuple[dict[str, float], Rows]]
ANSWER_KEY = ("val_em", "val_f1")
MANAGER_KEY = ("val_reward",)


def chat_model(policy: Policy, batch_size: int = 16) -> HFModel:
    """The policy's model as an inference backend (``HFModel``), sharing its weights."""
    return HFModel.wrap(policy.model, policy.tokenizer, autocast=policy.autocast, batch_size=batch_size)


def _mean(values: Sequence[float]) -> float:
    return math.fsum(values) / len(values) if values else 0.0


def _chunks(items: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [items[i : i + size] for i in range(0, len(items), max(size, 1))]


def answer_validation(
    policy: Policy,
    env: AnswerEnv,
    *,
    max_questions: int | None = None,
    batch_size: int = 16,
    on_batch: Callable[[int], None] | None = None,
) -> tuple[dict[str, float], Rows]:
    """Greedy answers to ``env``'s episodes, scored (see the module docstring).

    Rows: ``qid, category, question, gold, raw, answer, has_marker, f1, bleu1, em`` (metrics in
    [0, 1]), the input of ``metrics.aggregate``. ``on_batch(n)`` after each batch of ``n``.
    """
    episodes = env.episodes[:max_questions] if max_questions is not None else env.episodes
    agent = AnswerAgent(chat_model(policy, batch_size), distill=getattr(env, "distill", True))
    rows: Rows = []
    with policy.sampling_model():
        for chunk in _chunks(episodes, batch_size * 4):
            for (_, meta), res in zip(chunk, agent.answer_prompts([p for p, _ in chunk])):
                rows.append(
                    {
                        "qid": meta["qid"],
                        "category": meta.get("category"),
                        "question": meta.get("question"),
                        "gold": meta["answer"],
                        "raw": res.raw,
                        "answer": res.answer,
                        "has_marker": res.has_marker,
                        **score_prediction(res.answer, meta["answer"]),
                    }
                )
            if on_batch is not None:
                on_batch(len(chunk))
    metrics = {f"val_{m}": 100.0 * _mean([r[m] for r in rows]) for m in ("f1", "bleu1", "em")}
    metrics["val_n"] = float(len(rows))
    metrics["val_format_failure_rate"] = _mean([0.0 if r["has_marker"] else 1.0 for r in rows])
    return metrics, rows


def manager_validation(
    policy: Policy,
    env: ManagerEnv,
    *,
    max_episodes: int | None = None,
    batch_size: int = 16,
    on_batch: Callable[[int], None] | None = None,
) -> tuple[dict[str, float], Rows]:
    """Mean greedy reward over ``env``'s first ``max_episodes`` episodes.

    Rows: ``episode, dia_id, raw, reward``.
    """
    n = len(env.episodes) if max_episodes is None else min(max_episodes, len(env.episodes))
    model = chat_model(policy, batch_size)
    with policy.sampling_model():
        raws = [
            c.text
            for c in complete_many(
                model, [env.episodes[i].prompt for i in range(n)], manager_sampling(constrained=False)
            )
        ]
    if on_batch is not None:
        on_batch(n)
    return score_manager_outputs(env, raws)


def score_manager_outputs(env: ManagerEnv, raws: Sequence[str]) -> tuple[dict[str, float], Rows]:
    """(metrics, rows) of the Manager outputs ``raws`` for ``env``'s first ``len(raws)``
    episodes: ``val_reward`` (mean), ``val_invalid_rate`` and the operation mix."""
    metas = [{"episode": i, "dia_id": env.episodes[i].snapshot.turn.dia_id} for i in range(len(raws))]
    rewards = env.score(list(raws), metas)
    stats = env.stats() if hasattr(env, "stats") else {}
    mix = {f"val_{k}": v for k, v in stats.items() if k.startswith("op_")}
    rows = [{**m, "raw": r, "reward": w} for m, r, w in zip(metas, raws, rewards)]
    return {
        "val_reward": _mean(rewards),
        "val_invalid_rate": stats.get("invalid_rate", 0.0),
        "val_n": float(len(raws)),
        **mix,
    }, rows


class Validator:
    """Runs ``evaluate(policy) -> (metrics, rows)`` when the trainer asks; keeps the best.

    ``key``: metric names compared in order (higher is better). Writes under ``out_dir``
    (main process only: the caller builds no Validator elsewhere).
    """

    def __init__(self, evaluate: Evaluate, out_dir: str | Path, key: Sequence[str]) -> None:
        self.evaluate, self.out_dir, self.key = evaluate, Path(out_dir), tuple(key)
        self.rows: Rows = []
        self.best: dict[str, Any] | None = None

    def _score(self, row: dict[str, Any]) -> tuple[float, ...]:
        return tuple(float(row.get(k, float("-inf"))) for k in self.key)

    def run(self, policy: Policy, step: int) -> dict[str, float]:
        """Validate ``policy`` as of ``step``; export it to ``best/`` if it beats the best."""
        metrics, preds = self.evaluate(policy)
        row = {"step": step, **metrics}
        pred_dir = self.out_dir / "validation"
        pred_dir.mkdir(parents=True, exist_ok=True)
        with open(pred_dir / f"step-{step}.jsonl", "w", encoding="utf-8") as f:
            f.writelines(json.dumps(p, ensure_ascii=False) + "\n" for p in preds)
        if preds and all("category" in p and "f1" in p for p in preds):
            scores = aggregate(preds, metrics=("f1", "bleu1", "em"), percent=True)
            (pred_dir / f"step-{step}.scores.json").write_text(json.dumps(scores, indent=1), encoding="utf-8")
        self.rows = [r for r in self.rows if r["step"] != step] + [row]
        if self.best is None or self._score(row) > self._score(self.best):
            self.best = row
            best = policy.export(self.out_dir / "best")
            (best / "validation_row.json").write_text(json.dumps(row, indent=1), encoding="utf-8")
        self._save()
        return metrics

    def _save(self) -> None:
        doc = {"key": list(self.key), "best": self.best, "rows": self.rows}
        (self.out_dir / "validation.json").write_text(json.dumps(doc, indent=1), encoding="utf-8")

    def restore(self, step: int) -> None:
        """After a resume at ``step``: reload ``validation.json``, drop rows past ``step``.

        The best is recomputed over the kept rows. ``best/`` may still hold a later step of
        the crashed run (its ``validation_row.json`` says so) until a validation beats the
        kept best; a resumed CPU run replays the same steps, so that step comes back.
        """
        path = self.out_dir / "validation.json"
        if not path.exists():
            return
        doc = json.loads(path.read_text(encoding="utf-8"))
        self.rows = [r for r in doc.get("rows", []) if r["step"] <= step]
        # rows are in step order and max() keeps the first of equals: the earlier step
        self.best = max(self.rows, key=self._score, default=None)
        self._save()
