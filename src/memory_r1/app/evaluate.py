"""``memory-r1 eval answer-agent`` / ``eval memory-manager``: one trained agent on a split.

* :func:`eval_answer_agent` - the training validation function on any model and split:
  ``out/predictions.jsonl`` and ``out/scores.json`` (``metrics.aggregate``, percent).
* :func:`eval_memory_manager` - the Manager's reward beside the trivial policies:
  ``out/episodes.jsonl`` and ``out/scores.json``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from memory_r1.app import policy as P
from memory_r1.app.common import frozen_answer_model, same_named
from memory_r1.config import ModelConfig
from memory_r1.errors import ConfigError


@dataclass(frozen=True)
class AnswerEvalRun:
    """One ``eval answer-agent`` run; ``max_questions``: at most that many per conversation."""

    model: str
    out: str
    split: str = "validation"
    data: str | None = None
    bank_source: str = "observations"
    answer_k: int = 30
    max_questions: int | None = None
    dtype: str = "auto"
    embedder: str = "minilm"
    bank_model: ModelConfig | None = None
    batch_size: int = 16
    progress: bool = True

    @classmethod
    def from_options(cls, **o: Any) -> AnswerEvalRun:
        """From the ``eval answer-agent`` command's click parameters."""
        bank = ModelConfig(backend=o["bank_backend"], model=o["bank_model"], base_url=o["base_url"])
        return cls(
            **{
                **same_named(cls, o),
                "out": o["out_dir"],
                "bank_model": bank,
                "progress": not o["no_progress"],
            }
        )


@dataclass(frozen=True)
class ManagerEvalRun:
    """One ``eval memory-manager`` run; ``model`` None scores the trivial policies only."""

    model: str | None
    out: str
    answer_model: ModelConfig
    split: str = "validation"
    data: str | None = None
    bank_source: str = "observations"
    answer_k: int = 10
    reward: str = "f1"
    max_episodes: int | None = None
    dtype: str = "auto"
    embedder: str = "minilm"
    bank_model: ModelConfig | None = None
    batch_size: int = 16
    lora: str | None = None

    @classmethod
    def from_options(cls, **o: Any) -> ManagerEvalRun:
        """From the ``eval memory-manager`` command's click parameters."""
        answer = frozen_answer_model(
            o["answer_model"], backend=o["answer_backend"], base_url=o["base_url"], lora=o["answer_lora"]
        )
        return cls(**{**same_named(cls, o), "out": o["out_dir"], "answer_model": answer})


def _first_per_conversation(episodes: Sequence[Any], limit: int | None) -> list[Any]:
    """At most ``limit`` episodes per conversation (qid ``<sample_id>/q<i>``), order kept."""
    seen: dict[str, int] = {}
    kept = []
    for ep in episodes:
        conv = ep[1]["qid"].rsplit("/", 1)[0]
        seen[conv] = seen.get(conv, 0) + 1
        if limit is None or seen[conv] <= limit:
            kept.append(ep)
    return kept


def _write_jsonl(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def _answer_env(run: AnswerEvalRun, out: Path) -> Any:
    from memory_r1.rl.envs import builders as E
    from memory_r1.store import create_embedder

    if run.max_questions is not None and run.max_questions < 1:
        raise ConfigError("--max-questions must be >= 1")
    convs = E.split_convs(run.data, run.split)
    store = E.answer_banks(convs, out, create_embedder(run.embedder), run.bank_source, run.bank_model)
    try:
        env = E.answer_env(convs, store, run.answer_k)
    except ValueError as e:
        raise ConfigError(str(e)) from e
    env.episodes = _first_per_conversation(env.episodes, run.max_questions)
    return env


def _answer_config(run: AnswerEvalRun, policy: Any) -> dict[str, Any]:
    bank = run.bank_model
    return {
        "model": run.model,
        "split": run.split,
        "bank_source": run.bank_source,
        "answer_k": run.answer_k,
        "max_questions": run.max_questions,
        "dtype": run.dtype,
        "dtype_resolved": str(policy.model.dtype).removeprefix("torch."),
        "autocast": str(policy.autocast).removeprefix("torch.") if policy.autocast else None,
        "embedder": run.embedder,
        "bank_model": None
        if run.bank_source != "pipeline" or bank is None
        else bank.kwargs() | {"backend": bank.backend},
    }


def eval_answer_agent(run: AnswerEvalRun) -> dict[str, Any]:
    """Greedy Answer-Agent scores of ``run.model`` on ``run.split`` (the training validation).

    Writes ``out/predictions.jsonl`` (one row per question, metrics in [0, 1]) and
    ``out/scores.json`` (``{"scores": aggregate(percent=True), "config", ...}``); returns it.
    """
    from memory_r1.metrics import aggregate
    from memory_r1.rl.monitor import ProgressBar
    from memory_r1.rl.validate import answer_validation

    out = Path(run.out)
    env = _answer_env(run, out)
    policy = P.load_policy(run.model, lora_r=None, reference=False, dtype=run.dtype)
    with ProgressBar(len(env.episodes), enabled=run.progress, description="answer") as bar:
        done = [0]

        def advance(n: int) -> None:
            done[0] += n
            bar.update(done[0])

        metrics, rows = answer_validation(policy, env, batch_size=run.batch_size, on_batch=advance)
    _write_jsonl(out / "predictions.jsonl", rows)
    scores = {
        "scores": aggregate(rows, ("f1", "bleu1", "em"), percent=True),
        "format_failure_rate": metrics["val_format_failure_rate"],
        "config": _answer_config(run, policy),
    }
    (out / "scores.json").write_text(json.dumps(scores, indent=2, default=str), encoding="utf-8")
    return scores


def _manager_env(run: ManagerEvalRun, out: Path) -> Any:
    from memory_r1.agents.answer import AnswerAgent
    from memory_r1.rl.envs import builders as E
    from memory_r1.store import create_embedder

    convs = E.split_convs(run.data, run.split)
    snaps, emb = E.snapshots_for(
        convs, out, create_embedder(run.embedder), run.bank_source, run.bank_model or ModelConfig()
    )
    agent = AnswerAgent(E.make_chat_model(run.answer_model))
    try:
        env = E.manager_env(convs, snaps, agent, emb, run.answer_k, reward=run.reward)
    except ValueError as e:
        raise ConfigError(str(e)) from e
    n = len(env.episodes) if run.max_episodes is None else min(run.max_episodes, len(env.episodes))
    env.episodes = env.episodes[:n]
    return env


def _trivial(env: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(summary, one row per episode) of the always-ADD / always-NOOP policies."""
    n = len(env.episodes)
    start = time.perf_counter()
    trivial = env.trivial_rewards()
    trivial_s = time.perf_counter() - start
    add, noop = trivial["add"], trivial["noop"]
    result: dict[str, Any] = {
        "episodes": n,
        "skipped": env.skipped,
        "trivial": {"add": sum(add) / n, "noop": sum(noop) / n},
        "winnable": sum(a > 0 or b > 0 for a, b in zip(add, noop)) / n,
        "decisive": sum(a != b for a, b in zip(add, noop)) / n,
        "add_beats_noop": sum(a > b for a, b in zip(add, noop)) / n,
        "facts": sum(len(e.snapshot.facts) for e in env.episodes),
        "trivial_seconds": trivial_s,
    }
    rows: list[dict[str, Any]] = [
        {
            "episode": i,
            "dia_id": e.snapshot.turn.dia_id,
            "questions": [qa.qid for qa in e.qas],
            "add": add[i],
            "noop": noop[i],
        }
        for i, e in enumerate(env.episodes)
    ]
    return result, rows


def _manager_as_it_runs(run: ManagerEvalRun, env: Any) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """The Manager as the pipeline runs it: ``run.model`` (a GGUF / catalogue name) with the
    GGUF LoRA ``run.lora`` (``"shipped"``: the shipped memory adapter) on llama.cpp, greedy,
    with the pipeline's grammar (one item per fact)."""
    from memory_r1.agents.manager import manager_sampling
    from memory_r1.llm.adapters import load_adapter
    from memory_r1.rl.envs import builders as E
    from memory_r1.rl.validate import score_manager_outputs

    assert run.model is not None and run.lora is not None
    lora = str(load_adapter("memory").gguf) if run.lora == "shipped" else run.lora
    if not Path(lora).is_file():
        raise ConfigError(f"--lora {lora}: no such GGUF LoRA adapter file")
    model = E.make_chat_model(ModelConfig(backend="llamacpp", model=run.model, options={"lora_path": lora}))
    raws = [
        model.complete(ep.prompt, manager_sampling(True, n_facts=len(ep.snapshot.facts))).text
        for ep in env.episodes
    ]
    return score_manager_outputs(env, raws)


def eval_memory_manager(run: ManagerEvalRun) -> dict[str, Any]:
    """Greedy Memory-Manager reward of ``run.model`` on the split's episodes beside the two
    trivial policies (ADD every fact / change nothing), scored by the frozen ``answer_model``.

    Also: ``winnable`` (share of episodes where ADD or NOOP earns a reward > 0: some
    operation list can win), ``decisive`` (ADD and NOOP earn different rewards: the reward
    depends on what the Manager does at t), and the operation mix. Writes
    ``out/episodes.jsonl`` and ``out/scores.json``.
    """
    from memory_r1.rl.validate import manager_validation

    out = Path(run.out)
    out.mkdir(parents=True, exist_ok=True)
    env = _manager_env(run, out)
    result, rows = _trivial(env)
    if run.model is not None:
        start = time.perf_counter()
        if run.lora is not None:
            metrics, vrows = _manager_as_it_runs(run, env)
        else:
            policy = P.load_policy(run.model, lora_r=None, reference=False, dtype=run.dtype)
            metrics, vrows = manager_validation(policy, env, batch_size=run.batch_size)
        result["model"] = {**metrics, "counts": dict(env.op_counts), "seconds": time.perf_counter() - start}
        for row, v in zip(rows, vrows):
            row.update(raw=v["raw"], reward=v["reward"])
    result["config"] = {
        "model": run.model,
        "lora": run.lora,
        "split": run.split,
        "bank_source": run.bank_source,
        "answer_model": run.answer_model.kwargs() | {"backend": run.answer_model.backend},
        "answer_k": run.answer_k,
        "reward": run.reward,
        "max_episodes": run.max_episodes,
        "embedder": run.embedder,
    }
    _write_jsonl(out / "episodes.jsonl", rows)
    (out / "scores.json").write_text(json.dumps(result, indent=2, default=str), encoding="utf-8")
    return result
