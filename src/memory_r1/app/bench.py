"""``memory-r1 bench locomo | longmemeval | msc``: several memory systems, one backbone.

:func:`run_benchmark` runs :func:`memory_r1.bench.runner.run_bench` over the conversations the
command chose: ``<out>/<system>/`` (predictions.jsonl, scores.json, report.md) and
``<out>/results.json``.
"""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from memory_r1.app.common import make_judge, same_named
from memory_r1.config import DEFAULT_MODEL, ModelConfig
from memory_r1.paths import reports_dir
from memory_r1.types import Conversation


def names(value: str | None) -> list[str] | None:
    """``"a, b"`` -> ``["a", "b"]``; None for an empty list."""
    found = [v.strip() for v in (value or "").split(",") if v.strip()]
    return found or None


@dataclass(frozen=True)
class BenchRun:
    """One ``bench`` run: the systems, where they write, the backbone and the judge."""

    systems: tuple[str, ...]
    out: Path
    fresh: bool = False
    limit: int | None = None
    max_sessions: int | None = None
    max_turns: int | None = None
    backend: str = "llamacpp"
    model: str = DEFAULT_MODEL
    base_url: str | None = None
    embedder: str = "minilm"
    answer_ckpt: str | None = None
    manager_ckpt: str | None = None
    no_distill: bool = False
    unconstrained: bool = False
    context_tokens: int | None = None
    concurrency: int | None = None
    judge_model: str | None = None
    judge_backend: str = "llamacpp"
    judge_base_url: str | None = None
    judge_runs: int = 1
    progress: bool = True

    @classmethod
    def from_options(cls, **o: Any) -> BenchRun:
        """From a ``bench`` command's click parameters (``--systems`` unset: every registered
        one; ``--out`` unset: ``reports/<timestamp>``)."""
        from memory_r1.bench.systems import SYSTEMS

        return cls(
            **{
                **same_named(cls, o),
                "systems": tuple(names(o["systems"]) or SYSTEMS),
                "out": Path(o["out_dir"] or reports_dir() / time.strftime("%Y%m%d-%H%M%S")),
                "progress": not o["no_progress"],
            }
        )

    def unknown_systems(self) -> list[str]:
        from memory_r1.bench.systems import SYSTEMS

        return [n for n in self.systems if n not in SYSTEMS]


def run_benchmark(
    run: BenchRun, convs: Sequence[Conversation], categories: tuple[int, ...] | None, info: dict[str, Any]
) -> dict[str, dict[str, Any]]:
    """Every system of ``run`` on ``convs`` (``categories`` None: all); returns the results."""
    from memory_r1.bench.runner import run_bench
    from memory_r1.eval.runner import EvalLimits

    out = run.out
    if run.fresh:
        for name in run.systems:
            shutil.rmtree(out / name, ignore_errors=True)
    options = {
        "answer_agent": run.answer_ckpt,
        "memory_manager": run.manager_ckpt,
        "distill": not run.no_distill,
        "constrained": not run.unconstrained,
        "context_tokens": run.context_tokens,
    }
    limits = EvalLimits(
        max_sessions=run.max_sessions,
        max_turns=run.max_turns,
        max_questions=run.limit,
        categories=categories,
    )
    llm = ModelConfig(backend=run.backend, model=run.model, base_url=run.base_url)
    return run_bench(
        list(run.systems),
        convs,
        limits,
        out,
        llm,
        run.embedder,
        judge=make_judge(run.judge_model, run.judge_backend, run.judge_base_url, run.judge_runs),
        options={k: v for k, v in options.items() if v is not None},
        concurrency=run.concurrency,
        progress=run.progress,
        run_config={**info, "argv": sys.argv[1:]},
    )
