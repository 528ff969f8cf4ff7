"""``run_bench``: several memory systems, one backbone LLM and embedder, one folder each (L3).

Each system runs through the eval runner (:class:`memory_r1.eval.runner.LocomoEval`) in
``out_dir/<system>/``, so it writes what ``eval locomo`` writes (``ingest.jsonl``,
``predictions.jsonl``, ``scores.json``, ``report.md``, ``run.json``) and resumes the same way:
turns in ``system.done_turns(bank)`` and questions already in ``predictions.jsonl`` are skipped.
``scores.json`` adds ``bank_size`` per conversation; its summaries hold tokens, LLM calls and
wall time per turn / question (mean, p50, p95).

Concurrency follows the backend: with ``openai`` (a server does the work) conversations are
ingested in parallel threads and questions answered by a pool (8 in flight by default); with
the in-process ``llamacpp`` / ``hf`` backends, one thing at a time.

A system that cannot be built or fails with a ``MemoryR1Error`` gets ``{"error": ...}`` in the
results and the others still run. At the end ``memory_r1.bench.report.write_bench_report``
writes the comparison (``results.json``, ``report.md``, charts); without that module, only
``results.json`` (``{"run_config", "results"}``).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping, Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from memory_r1.bench.systems import BenchContext, create_system
from memory_r1.config import ModelConfig
from memory_r1.errors import MemoryR1Error
from memory_r1.eval.runner import EvalLimits, LocomoEval
from memory_r1.llm.base import ChatModel
from memory_r1.types import Conversation

log = logging.getLogger(__name__)

#: distribution names whose versions every run records
PACKAGES = ("memory-r1", "llama_cpp_python", "torch", "transformers")
OPENAI_CONCURRENCY = 8


def default_concurrency(llm: ModelConfig) -> int:
    """8 requests in flight for a remote (``openai``) backbone, else 1 (in-process models)."""
    return OPENAI_CONCURRENCY if llm.backend == "openai" else 1


def package_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def describe_backbone(llm: ModelConfig) -> dict[str, Any]:
    """Backend, model name and the model file's sha256 (GGUF, or an HF dir's safetensors)."""
    from memory_r1.llm.models import file_sha256, resolve_model

    out: dict[str, Any] = {
        "backend": llm.backend,
        "model": llm.model,
        "base_url": llm.base_url,
        "options": dict(llm.options),
        "file": None,
        "sha256": None,
    }
    if llm.backend == "openai":
        return out
    path: Path | None = None
    try:
        path = resolve_model(llm.model).locate()
    except MemoryR1Error:
        candidate = Path(llm.model) / "model.safetensors"
        path = candidate if candidate.is_file() else None
    if path is not None:
        try:
            out.update(file=str(path), sha256=file_sha256(path))
        except OSError as exc:
            log.warning("cannot hash %s: %s", path, exc)
    return out


def run_bench(
    systems: Sequence[str],
    convs: Sequence[Conversation],
    limits: EvalLimits,
    out_dir: Path,
    llm: ModelConfig,
    embedder: str,
    judge: Any | None = None,
    options: Mapping[str, Any] | None = None,
    concurrency: int | None = None,
    progress: bool = True,
    models: dict[str, ChatModel] | None = None,
    run_config: Mapping[str, Any] | None = None,
) -> dict[str, dict[str, Any]]:
    """Run each of ``systems`` on ``convs``; returns {system: its scores.json dict or {"error"}}.

    ``models`` (by role) are shared by every system; None builds them from ``llm`` once, when
    the first system needs them. ``options`` go to every system's ``BenchContext``;
    ``run_config`` is extra run information (data file, argv) recorded beside the backbone,
    embedder, judge, seed and package versions.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    convs = list(convs)
    workers = concurrency or default_concurrency(llm)
    config: dict[str, Any] = {
        **dict(run_config or {}),
        "backbone": describe_backbone(llm),
        "embedder": embedder,
        "judge": judge.describe() if judge is not None and hasattr(judge, "describe") else None,
        "seed": llm.options.get("seed", 0),
        "packages": package_versions(),
        "conversations": [c.sample_id for c in convs],
        "systems": list(systems),
        "options": dict(options or {}),
        "concurrency": workers,
    }
    results: dict[str, dict[str, Any]] = {}
    shared: dict[str, Any] = {"models": models}  # filled by the first system that builds them
    for name in systems:
        results[name] = _run_one(
            name,
            convs,
            limits,
            out_dir / name,
            llm,
            embedder,
            judge,
            dict(options or {}),
            workers,
            progress,
            config,
            shared,
        )
    _write_results(out_dir, results, config)
    return results


def _write_results(out_dir: Path, results: dict[str, dict[str, Any]], config: dict[str, Any]) -> None:
    """The bench report; without the report module, only ``results.json``."""
    try:
        from memory_r1.bench.report import write_bench_report
    except ImportError as exc:  # the report module is optional: keep the raw numbers at least
        (out_dir / "results.json").write_text(
            json.dumps({"run_config": config, "results": results}, indent=2, default=str)
        )
        log.warning("no bench report (%s); wrote %s only", exc, out_dir / "results.json")
    else:
        write_bench_report(out_dir, results, config)


def _run_one(
    name: str,
    convs: list[Conversation],
    limits: EvalLimits,
    out: Path,
    llm: ModelConfig,
    embedder: str,
    judge: Any,
    options: dict[str, Any],
    workers: int,
    progress: bool,
    config: dict[str, Any],
    shared: dict[str, Any],
) -> dict[str, Any]:
    """One system end to end; a ``MemoryR1Error`` becomes ``{"error": ...}``."""
    ctx = BenchContext(llm=llm, embedder=embedder, out_dir=out, models=shared["models"], options=options)
    t0 = time.perf_counter()
    try:
        system = create_system(name, ctx)
    except MemoryR1Error as exc:
        log.warning("system %s not built: %s", name, exc)
        return {"error": f"{type(exc).__name__}: {exc}"}
    finally:
        shared["models"] = ctx.models  # built by this system if it was the first to need them
    try:
        packages = dict(config["packages"])
        if getattr(system, "version", None):
            packages[name] = system.version  # type: ignore[attr-defined]
        describe = getattr(system, "describe", None)  # e.g. Mem0's pin and pipeline
        run_config = {
            **config,
            "system": name,
            "packages": packages,
            "system_info": describe() if callable(describe) else None,
            "build_s": round(time.perf_counter() - t0, 2),
        }
        runner = LocomoEval(
            system,
            out,
            judge=judge,
            progress=progress,
            run_config=run_config,
            concurrency=workers,
            label=name,
        )
        return runner.run(convs, limits)
    except MemoryR1Error as exc:
        log.warning("system %s failed: %s", name, exc)
        return {"error": f"{type(exc).__name__}: {exc}"}
    finally:
        system.close()
