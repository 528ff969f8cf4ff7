"""``memory-r1 eval locomo``: build memory banks for LoCoMo conversations, answer, score.

The run folder (default ``$MEMORY_R1_RUNS/locomo-<split>-<model>``, ``./runs`` when unset,
``-trained`` with the shipped adapters) holds ``store.sqlite``, ``ingest.jsonl``, ``predictions.jsonl``, ``scores.json``,
``report.md`` and ``run.json``; re-running resumes it.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from memory_r1.app.common import data_sha256, make_judge, same_named
from memory_r1.config import ModelConfig, SystemConfig
from memory_r1.errors import ConfigError
from memory_r1.paths import runs_dir

#: what ``--fresh`` deletes from the run folder
RUN_FILES = (
    "store.sqlite",
    "store.sqlite-wal",
    "store.sqlite-shm",
    "ingest.jsonl",
    "predictions.jsonl",
    "scores.json",
    "report.md",
    "run.json",
)


@dataclass(frozen=True)
class LocomoRun:
    """One ``eval locomo`` run; ``model_opts``: the shared model options (``system_config``)."""

    data: str | None = None
    split: str = "test"
    conversations: tuple[str, ...] = ()
    max_sessions: int | None = None
    max_turns: int | None = None
    max_questions: int | None = None
    all_questions: bool = False
    out_dir: str | None = None
    fresh: bool = False
    judge_model: str | None = None
    judge_backend: str = "llamacpp"
    judge_base_url: str | None = None
    judge_runs: int = 1
    progress: bool = True
    model_opts: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_options(cls, **o: Any) -> LocomoRun:
        """From the ``eval locomo`` command's click parameters."""
        own = same_named(cls, o)
        rest = {k: v for k, v in o.items() if k not in own and k != "no_progress"}
        return cls(**own, progress=not o["no_progress"], model_opts=rest)


def system_config(store_path: str, **o: Any) -> tuple[SystemConfig, dict[str, Any] | None]:
    """The pipeline's config and the shipped adapters it uses (None: ``--untrained``, or no
    role on the default model through llama.cpp)."""
    from memory_r1.agents.system import with_shipped_adapters

    llm = ModelConfig(backend=o["backend"], model=o["model"], base_url=o["base_url"])
    ckpt = lambda p: ModelConfig(backend="hf", model=p) if p else None  # noqa: E731
    cfg = SystemConfig(
        llm=llm,
        manager_llm=ckpt(o["manager_ckpt"]),
        answer_llm=ckpt(o["answer_ckpt"]),
        embedder=o["embedder"],
        store_path=store_path,
        distill=not o["no_distill"],
        constrained=not o["unconstrained"],
    )
    if o["untrained"]:
        return (cfg if o["answer_k"] is None else replace(cfg, answer_k=o["answer_k"])), None
    return with_shipped_adapters(cfg, o["answer_k"])


def check_same_system(out: Path, adapters: dict[str, Any] | None) -> None:
    """Refuse to resume a run folder that another system (trained / untrained) started."""
    try:
        before = json.loads((out / "run.json").read_text()).get("adapters")
    except (OSError, ValueError):
        return
    sha = lambda a: {k: v.get("sha256") for k, v in (a or {}).items()}  # noqa: E731
    if sha(before) != sha(adapters):
        raise ConfigError(
            f"{out} holds a run of another system (adapters {sha(before) or 'none'}, "
            f"now {sha(adapters) or 'none'}): pass --fresh or another --out"
        )


def describe(cfg: SystemConfig, models: dict[str, Any]) -> dict[str, Any]:
    """The system's settings and each role's model, as ``run.json`` records them."""
    out: dict[str, Any] = {
        "embedder": cfg.embedder,
        "related_k": cfg.related_k,
        "answer_k": cfg.answer_k,
        "distill": cfg.distill,
        "constrained": cfg.constrained,
    }
    for role, m in models.items():
        describe = getattr(m, "describe", None)
        out[f"{role}_model"] = describe() if callable(describe) else {"name": m.name}
    return out


def _run_folder(run: LocomoRun) -> tuple[Path, SystemConfig, dict[str, Any] | None]:
    """(run folder, system config, shipped adapters); ``--fresh`` clears the folder first."""
    model = run.model_opts["model"]
    model_tag = Path(model).stem if model else "model"
    out = Path(run.out_dir or runs_dir() / f"locomo-{run.split}-{model_tag}")
    cfg, adapters = system_config(str(out / "store.sqlite"), **run.model_opts)
    if adapters and not run.out_dir:  # the trained system never resumes an untrained run
        out = out.with_name(out.name + "-trained")
        cfg = replace(cfg, store_path=str(out / "store.sqlite"))
    if run.fresh and out.exists():
        for name in RUN_FILES:
            (out / name).unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    check_same_system(out, adapters)
    return out, cfg, adapters


def run_locomo(run: LocomoRun) -> tuple[dict[str, Any], Path]:
    """Ingest, answer and score the chosen conversations; returns (scores, run folder)."""
    from memory_r1.agents.system import build_models, build_pipeline
    from memory_r1.data.locomo import load_locomo, select
    from memory_r1.eval.runner import EvalLimits, LocomoEval

    convs = load_locomo(run.data)
    ids: Sequence[str] | None = run.conversations or None
    chosen = select(convs, split=None if run.conversations else run.split, sample_ids=ids)
    out, cfg, adapters = _run_folder(run)
    t0 = time.perf_counter()
    models = build_models(cfg)
    pipeline = build_pipeline(cfg, models)
    judge = make_judge(run.judge_model, run.judge_backend, run.judge_base_url, run.judge_runs)
    run_config = {
        "split": run.split,
        "conversations": [c.sample_id for c in chosen],
        "data": {"path": str(run.data or "default"), "sha256": data_sha256(run.data)},
        "system": describe(cfg, models),
        "adapters": adapters,
        "judge": judge.describe() if judge else None,
        "load_s": round(time.perf_counter() - t0, 2),
        "argv": sys.argv[1:],
    }
    limits = EvalLimits(
        max_sessions=run.max_sessions,
        max_turns=run.max_turns,
        max_questions=run.max_questions,
        answerable_only=not run.all_questions,
    )
    runner = LocomoEval(pipeline, out, judge=judge, progress=run.progress, run_config=run_config)
    return runner.run(chosen, limits), out
