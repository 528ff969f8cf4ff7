"""Benchmark report: several systems side by side, from their run folders (L3).

``write_bench_report(out_dir, results, run_config)`` reads one sub-folder per system
(``out_dir/<system>/predictions.jsonl`` and, when present, ``ingest.jsonl``) and writes into
``out_dir``:

* ``results.json``: the run config, every system's scores, summaries and latency, the failed
  systems with their errors, and the published numbers shown beside ours;
* ``report.md``: per metric a systems x categories table (Memory-R1 Table 1 order, then any
  other dataset's categories, then overall; question counts in their own table), a latency and
  cost table, the failed systems, the paper's Table 1 clearly labelled, and the run config;
* ``f1.png``, ``bleu1.png``, ``em.png`` (and ``j.png`` when some system has J): grouped bars,
  systems x categories; ``latency.png``: s/turn and s/question (p50 bars, p95 whiskers).

Scores are never taken on trust: whenever a system's ``predictions.jsonl`` exists they are
recomputed from it with :func:`memory_r1.metrics.aggregate` (:func:`recompute`), and a
``scores`` dict that disagrees is flagged. ``results[system]`` is what ``LocomoEval.finish()``
writes to ``scores.json`` (``scores``, ``ingest``, ``answer``, ``config``, optional
``bank_size``) or ``{"error": message}`` for a system that failed. Latency percentiles come
from the summaries' ``wall_s_p50`` / ``wall_s_p95`` when given, else from the JSONL rows'
``wall_s`` (linear interpolation, numpy's default).

The Markdown is :mod:`memory_r1.bench.report_markdown`'s, the charts
:mod:`memory_r1.bench.report_charts`'s, the published numbers :mod:`memory_r1.bench.published`'s.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from memory_r1.bench.published import PUBLISHED_SOURCE, PUBLISHED_TABLE1, PUBLISHED_TITLE
from memory_r1.bench.report_charts import write_charts
from memory_r1.bench.report_markdown import render_markdown
from memory_r1.eval.report import LABELS, ordered_categories
from memory_r1.eval.runner import read_jsonl
from memory_r1.metrics import METRIC_NOTES, aggregate


def recompute(out_dir: Path) -> dict[str, dict[str, Any]]:
    """``{system: aggregate(predictions, percent=True)}`` for each ``out_dir/<system>/predictions.jsonl``."""
    out: dict[str, dict[str, Any]] = {}
    for folder in sorted(p for p in Path(out_dir).iterdir() if p.is_dir()):
        preds = folder / "predictions.jsonl"
        if preds.is_file():
            out[folder.name] = aggregate(read_jsonl(preds), percent=True)
    return out


def _percentiles(summary: Mapping[str, Any], jsonl: Path) -> tuple[float | None, float | None]:
    p50, p95 = summary.get("wall_s_p50"), summary.get("wall_s_p95")
    if p50 is None or p95 is None:
        walls = [float(r["wall_s"]) for r in read_jsonl(jsonl) if r.get("wall_s") is not None]
        if walls:
            p50 = p50 if p50 is not None else float(np.percentile(walls, 50))
            p95 = p95 if p95 is not None else float(np.percentile(walls, 95))
    return p50, p95


def _close(a: Any, b: Any) -> bool:
    """Recursive equality with float tolerance (a scores.json rounding is not a disagreement)."""
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)
    return bool(a == b)


def _sum(*values: Any) -> int | None:
    present = [v for v in values if isinstance(v, (int, float))]
    return int(sum(present)) if present else None


def _system_entry(folder: Path, res: Mapping[str, Any], recomputed: dict[str, Any] | None) -> dict[str, Any]:
    entry = dict(res)
    ing, ans = dict(res.get("ingest") or {}), dict(res.get("answer") or {})
    given = res.get("scores")
    if recomputed is not None:
        entry["scores"] = recomputed
        entry["scores_source"] = f"{folder.name}/predictions.jsonl"
        entry["scores_given_differ"] = given is not None and not _close(given, recomputed)
        if entry["scores_given_differ"]:
            entry["scores_given"] = given  # kept for the audit trail; never shown as the result
    else:
        entry["scores"] = dict(given or {})
        entry["scores_source"] = "given (no predictions.jsonl)"
    turn = _percentiles(ing, folder / "ingest.jsonl")
    question = _percentiles(ans, folder / "predictions.jsonl")
    bank = res.get("bank_size")
    entry["latency"] = {
        "s_per_turn_p50": turn[0],
        "s_per_turn_p95": turn[1],
        "s_per_question_p50": question[0],
        "s_per_question_p95": question[1],
    }
    entry["cost"] = {
        "llm_calls": _sum(ing.get("llm_calls"), ans.get("llm_calls")),
        "tokens_in": _sum(ing.get("tokens_in"), ans.get("tokens_in")),
        "tokens_out": _sum(ing.get("tokens_out"), ans.get("tokens_out")),
        "bank_size": _sum(*bank.values()) if isinstance(bank, Mapping) else _sum(bank),
        "invalid_ops": ing.get("invalid"),
        "missing_answer_marker": ans.get("missing_answer_marker"),
    }
    return entry


def _metrics_present(systems: Mapping[str, Mapping[str, Any]]) -> list[str]:
    return [m for m in LABELS if any(m in row for s in systems.values() for row in s["scores"].values())]


# ------------------------------------------------------------------------------------ report


def write_bench_report(out_dir: Path, results: dict[str, dict], run_config: dict) -> list[Path]:
    """Write results.json, report.md and the PNG charts into ``out_dir``; returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    recomputed = recompute(out)
    systems: dict[str, dict[str, Any]] = {}
    failed: dict[str, str] = {}
    for name, res in results.items():
        if "error" in res:
            failed[name] = str(res["error"])
        else:
            systems[name] = _system_entry(out / name, res, recomputed.get(name))
    metrics = _metrics_present(systems)
    categories = ordered_categories(c for s in systems.values() for c in s["scores"])

    written = [out / "results.json", out / "report.md"]
    payload = {
        "run_config": run_config,
        "systems": systems,
        "failed": failed,
        "metrics": metrics,
        "categories": categories,
        "published": {"title": PUBLISHED_TITLE, "source": PUBLISHED_SOURCE, "table1": PUBLISHED_TABLE1},
        "metric_notes": METRIC_NOTES,
    }
    written[0].write_text(json.dumps(payload, indent=2, default=str), encoding="utf-8")
    charts = write_charts(out, systems, metrics, categories)
    written[1].write_text(
        render_markdown(systems, failed, metrics, categories, run_config, charts), encoding="utf-8"
    )
    return written + charts
