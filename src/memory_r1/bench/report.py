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

Charts draw on a private Agg canvas (``FigureCanvasAgg``); the global matplotlib backend is
never touched.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from memory_r1.eval.report import LABELS, ordered_categories
from memory_r1.eval.runner import read_jsonl
from memory_r1.metrics import METRIC_NOTES, aggregate

PUBLISHED_TITLE = (
    "Published numbers (the paper's, LLaMA-3.1-8B / Qwen-2.5-7B scale — not comparable with a 135M backbone)"
)
PUBLISHED_SOURCE = (
    "Memory-R1 (arXiv 2508.19828 v5) Table 1: LoCoMo test split (8 conversations, 1,307 "
    "questions, category 5 excluded), F1 / BLEU-1 / J x100, Mem0's metrics and category names; "
    "J with an unnamed judge. Zep (v4 only) left out."
)
_PAPER_COLUMNS = ("single-hop", "multi-hop", "open-domain", "temporal", "overall")

# Copied cell by cell from arXiv 2508.19828 v5 Table 1 (LoCoMo test, 1,307 questions;
# F1 / B1 / J; identical in v4 for Memory-R1's rows). Columns: single-hop, multi-hop, open-domain, temporal, overall.
_PAPER_TABLE1_CELLS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    (
        "LLaMA-3.1-8B",
        "LoCoMo (RAG)",
        ("12.25/9.77/13.81", "13.69/10.96/20.48", "11.59/8.30/15.96", "9.38/8.15/4.65", "11.41/8.71/13.62"),
    ),
    (
        "LLaMA-3.1-8B",
        "A-Mem",
        (
            "21.62/16.93/44.76",
            "13.82/11.45/34.93",
            "34.67/29.13/49.38",
            "25.77/22.14/36.43",
            "29.20/24.40/44.76",
        ),
    ),
    (
        "LLaMA-3.1-8B",
        "Mem0",
        (
            "27.29/18.63/43.93",
            "18.59/13.86/37.35",
            "34.03/24.77/52.27",
            "26.90/21.06/31.40",
            "30.41/22.22/45.68",
        ),
    ),
    (
        "LLaMA-3.1-8B",
        "MemoryOS",
        (
            "31.89/23.05/52.72",
            "13.80/12.78/31.33",
            "40.74/33.67/57.36",
            "28.74/21.44/23.64",
            "35.04/27.99/48.20",
        ),
    ),
    (
        "LLaMA-3.1-8B",
        "Memory-SFT",
        (
            "34.64/23.73/56.90",
            "20.80/16.26/37.35",
            "46.47/37.35/63.27",
            "47.18/34.58/54.65",
            "42.81/32.98/58.76",
        ),
    ),
    (
        "LLaMA-3.1-8B",
        "Memory-R1-PPO",
        (
            "32.52/24.47/53.56",
            "26.86/23.47/42.17",
            "45.30/39.18/64.10",
            "41.57/26.11/47.67",
            "41.05/32.91/57.54",
        ),
    ),
    (
        "LLaMA-3.1-8B",
        "Memory-R1-GRPO",
        (
            "35.73/27.70/59.83",
            "35.65/30.77/53.01",
            "47.42/41.24/68.78",
            "49.86/38.27/51.55",
            "45.02/37.51/62.74",
        ),
    ),
    (
        "Qwen-2.5-7B",
        "LoCoMo (RAG)",
        ("9.57/7.00/15.06", "11.84/10.02/19.28", "8.67/6.52/12.79", "8.35/8.74/5.43", "8.97/7.27/12.17"),
    ),
    (
        "Qwen-2.5-7B",
        "A-Mem",
        (
            "18.96/12.86/40.78",
            "14.73/12.66/31.32",
            "30.58/26.14/46.90",
            "23.67/20.67/28.68",
            "26.08/21.78/40.78",
        ),
    ),
    (
        "Qwen-2.5-7B",
        "Mem0",
        (
            "24.96/18.05/61.92",
            "20.31/15.82/48.19",
            "32.74/25.27/65.20",
            "33.16/26.28/38.76",
            "30.61/23.55/53.30",
        ),
    ),
    (
        "Qwen-2.5-7B",
        "MemoryOS",
        (
            "29.55/22.59/48.12",
            "21.03/18.41/38.55",
            "40.85/36.26/63.14",
            "26.26/19.70/24.81",
            "34.64/29.36/51.26",
        ),
    ),
    (
        "Qwen-2.5-7B",
        "Memory-SFT",
        (
            "27.81/20.25/57.74",
            "24.62/22.28/46.99",
            "43.33/34.06/66.85",
            "44.41/34.32/52.71",
            "39.51/30.84/61.13",
        ),
    ),
    (
        "Qwen-2.5-7B",
        "Memory-R1-PPO",
        (
            "34.22/23.61/57.74",
            "32.87/29.48/53.01",
            "44.78/38.72/66.99",
            "42.88/30.30/42.25",
            "41.72/33.70/59.53",
        ),
    ),
    (
        "Qwen-2.5-7B",
        "Memory-R1-GRPO",
        (
            "33.64/26.06/62.34",
            "23.55/20.71/40.96",
            "46.86/40.92/67.81",
            "47.75/38.49/49.61",
            "43.14/36.44/61.51",
        ),
    ),
)


def _published() -> list[dict[str, Any]]:
    rows = []
    for backbone, method, cells in _PAPER_TABLE1_CELLS:
        per = {}
        for cat, cell in zip(_PAPER_COLUMNS, cells):
            f1, b1, j = (float(x) for x in cell.split("/"))
            per[cat] = {"f1": f1, "bleu1": b1, "j": j}
        rows.append({"backbone": backbone, "method": method, "scores": per})
    return rows


#: ``[{"backbone", "method", "scores": {category: {"f1", "bleu1", "j"}}}]``, Table 1 rows.
PUBLISHED_TABLE1: list[dict[str, Any]] = _published()


# ----------------------------------------------------------------------------------- numbers


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
    charts = _write_charts(out, systems, metrics, categories)
    written[1].write_text(
        _render_markdown(systems, failed, metrics, categories, run_config, charts), encoding="utf-8"
    )
    return written + charts


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _table(head: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _score_cell(row: Mapping[str, Any] | None, metric: str) -> str:
    if not row or metric not in row:
        return "–"
    cell = _fmt(row[metric])
    n_m = row.get(f"n_{metric}")
    return f"{cell} (n={n_m})" if n_m is not None else cell


def render_score_tables(
    systems: Mapping[str, Mapping[str, Any]], metrics: Sequence[str], categories: Sequence[str]
) -> str:
    """The question-count table, then one systems x categories table per metric."""
    head = ["system", *categories]
    counts = [
        [name, *(_fmt(s["scores"].get(c, {}).get("n")) for c in categories)] for name, s in systems.items()
    ]
    parts = ["### Questions per category (n)\n", _table(head, counts)]
    for m in metrics:
        rows = [
            [name, *(_score_cell(s["scores"].get(c), m) for c in categories)] for name, s in systems.items()
        ]
        parts += [f"\n### {LABELS[m]}\n", _table(head, rows)]
    return "\n".join(parts)


def render_latency_table(systems: Mapping[str, Mapping[str, Any]]) -> str:
    head = [
        "system",
        "s/turn p50",
        "s/turn p95",
        "s/question p50",
        "s/question p95",
        "LLM calls",
        "tokens in",
        "tokens out",
        "bank size",
        "ingest INVALID ops",
        "missing `Answer:` markers",
    ]
    rows = []
    for name, s in systems.items():
        lat, cost = s["latency"], s["cost"]
        rows.append([name, *(_fmt(lat[k], 3) for k in lat), *(_fmt(v) for v in cost.values())])
    return _table(head, rows)


def render_published(systems: Mapping[str, Mapping[str, Any]], run_config: Mapping[str, Any]) -> str:
    """Ours beside the paper's (overall), then the paper's Table 1 per category."""
    ours = backbone_name(run_config)
    trio = ("f1", "bleu1", "j")
    side = [
        ["this run", ours, name, *(_fmt(s["scores"].get("overall", {}).get(m)) for m in trio)]
        for name, s in systems.items()
    ]
    side += [
        ["paper, Table 1", r["backbone"], r["method"], *(_fmt(r["scores"]["overall"][m]) for m in trio)]
        for r in PUBLISHED_TABLE1
    ]
    per = [
        [
            r["backbone"],
            r["method"],
            *("/".join(_fmt(r["scores"][c][m]) for m in trio) for c in _PAPER_COLUMNS),
        ]
        for r in PUBLISHED_TABLE1
    ]
    dataset = run_config.get("benchmark") or run_config.get("dataset")
    caveat = (
        f" This run's dataset is {dataset!r}: the paper's LoCoMo numbers are context only."
        if dataset and "locomo" not in str(dataset).lower()
        else ""
    )
    return "\n".join(
        [
            f"## {PUBLISHED_TITLE}\n",
            PUBLISHED_SOURCE + caveat,
            "",
            "Overall, this run's systems beside the paper's (F1 / BLEU-1 / J ×100):\n",
            _table(["source", "backbone", "system", "F1", "BLEU-1", "J"], side),
            "",
            "The paper's Table 1 per category, F1 / BLEU-1 / J:\n",
            _table(["backbone", "method", *_PAPER_COLUMNS], per),
        ]
    )


def backbone_name(run_config: Mapping[str, Any]) -> str:
    """``run_config["backbone"]`` as a short label: a string, or a dict's ``model`` entry."""
    backbone = run_config.get("backbone")
    if isinstance(backbone, Mapping):
        backbone = backbone.get("model") or backbone.get("name")
    return str(backbone) if backbone else "this run"


def render_run_config(run_config: Mapping[str, Any], systems: Mapping[str, Mapping[str, Any]]) -> str:
    """Top-level keys as bullets (one level of nesting spelled out, e.g. the backbone's sha256)."""
    lines = []
    for key, value in run_config.items():
        if isinstance(value, Mapping) and value:
            lines.append(f"- **{key}**:")
            lines += [f"  - {k}: `{_short(v)}`" for k, v in value.items()]
        else:
            lines.append(f"- **{key}**: `{_short(value)}`")
    if "limits" not in run_config:  # the eval runner records them in each system's config
        found = {n: s.get("config", {}).get("limits") for n, s in systems.items()}
        found = {n: lim for n, lim in found.items() if lim is not None}
        if found:
            name, limits = next(iter(found.items()))
            same = all(lim == limits for lim in found.values())
            lines.append(f"- **limits** ({'every system' if same else name}): `{_short(limits)}`")
    info = {n: s.get("config", {}).get("system_info") for n, s in systems.items()}
    info = {n: i for n, i in info.items() if i}
    if info:  # what a wrapped library reports about itself (Mem0's / A-Mem's pin and pipeline)
        lines.append("- **system info** (per system):")
        for name, i in info.items():
            keys = [k for k in ("mem0ai", "a-mem", "version", "pin", "pipeline", "pin_note") if k in i]
            lines.append(
                f"  - {name}: " + ", ".join(f"{k} `{_short(i[k])}`" for k in keys)
                if keys
                else f"  - {name}: `{_short(i)}`"
            )
    return "\n".join(lines)


def _render_markdown(
    systems: dict[str, dict[str, Any]],
    failed: dict[str, str],
    metrics: list[str],
    categories: list[str],
    run_config: dict[str, Any],
    charts: list[Path],
) -> str:
    chart_names = {p.name for p in charts}
    figs = " ".join(f"![{LABELS[m]}]({m}.png)" for m in metrics if f"{m}.png" in chart_names)
    differ = [n for n, s in systems.items() if s.get("scores_given_differ")]
    parts = [
        "# Benchmark report\n",
        "Scores ×100, micro means over questions, per category and overall, recomputed from each "
        "system's `predictions.jsonl` (see `results.json`). LoCoMo categories use Mem0's / the "
        "Memory-R1 tables' names (category 5 excluded); other datasets' categories follow.\n",
        f"Systems: {', '.join(systems) or 'none'}; failed: {', '.join(failed) or 'none'}.\n",
        "## Scores\n",
        render_score_tables(systems, metrics, categories) if systems else "No system finished.",
        "",
        figs,
    ]
    if differ:
        parts.append(
            f"\nNote: the scores passed in for {', '.join(differ)} differ from their "
            "predictions.jsonl; the recomputed ones are shown."
        )
    parts += [
        "\n## Latency and cost\n",
        "Wall seconds per ingested turn and per answered question (p50 / p95); LLM calls and "
        "tokens over ingestion and answering; bank size = the run's `bank_size`, summed over banks.\n",
        render_latency_table(systems) if systems else "–",
    ]
    if "latency.png" in chart_names:
        parts.append("\n![latency](latency.png)")
    parts.append("\n## Failed systems\n")
    parts.append("\n".join(f"- **{n}**: {e}" for n, e in failed.items()) if failed else "None.")
    parts += ["", render_published(systems, run_config), "", "## Run configuration\n"]
    parts.append(render_run_config(run_config, systems))
    parts += [
        "",
        "```json",
        json.dumps(run_config, indent=2, default=str),
        "```",
        "",
        "## Metric definitions\n",
        METRIC_NOTES,
        "",
    ]
    return "\n".join(parts)


def _short(value: Any, limit: int = 160) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


# ------------------------------------------------------------------------------------ charts


def _write_charts(
    out: Path, systems: Mapping[str, Mapping[str, Any]], metrics: Sequence[str], categories: Sequence[str]
) -> list[Path]:
    if not systems:
        return []
    paths = []
    for m in metrics:
        series = {name: [s["scores"].get(c, {}).get(m) for c in categories] for name, s in systems.items()}
        paths.append(
            _grouped_bars(
                out / f"{m}.png", f"{LABELS[m]} (×100) per category", list(categories), series, LABELS[m]
            )
        )
    paths.append(_latency_chart(out / "latency.png", systems))
    return paths


def _figure(width: float, height: float) -> Any:
    # Our own Agg canvas: no pyplot, no global backend switch (safe inside any host process).
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _grouped_bars(
    path: Path,
    title: str,
    groups: list[str],
    series: Mapping[str, list[float | None]],
    ylabel: str,
    errors: Mapping[str, list[float | None]] | None = None,
) -> Path:
    """Bars per group (x) and series (colour); ``None`` values are left out, not drawn as 0.

    A series with no value at all gets no bar slot; colours follow the series' position in
    ``series`` so that a system keeps its colour from chart to chart.
    """
    fig = _figure(min(14.0, max(6.0, 1.1 * len(groups) * max(1, len(series)) ** 0.5 + 2)), 4.2)
    ax = fig.add_subplot(1, 1, 1)
    colours = {name: f"C{k % 10}" for k, name in enumerate(series)}
    drawn = {name: v for name, v in series.items() if any(x is not None for x in v)}
    width = 0.8 / max(1, len(drawn))
    for k, (name, values) in enumerate(drawn.items()):
        xs = [i + (k - (len(drawn) - 1) / 2) * width for i, v in enumerate(values) if v is not None]
        ys = [float(v) for v in values if v is not None]
        yerr = None
        if errors is not None:
            tops = [e for e, v in zip(errors[name], values) if v is not None]
            yerr = [[0.0] * len(ys), [max(0.0, (t if t is not None else y) - y) for t, y in zip(tops, ys)]]
        bars = ax.bar(
            xs, ys, width=width * 0.95, label=name, color=colours[name], yerr=yerr, capsize=3 if yerr else 0
        )
        if yerr is None and len(xs) * len(drawn) <= 40:  # values on the bars while legible
            ax.bar_label(bars, fmt="%.1f", fontsize="x-small", padding=1)
    ax.set_xticks(range(len(groups)))
    crowded = len(groups) > 5
    ax.set_xticklabels(groups, rotation=20 if crowded else 0, ha="right" if crowded else "center")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    ax.margins(y=0.18)  # headroom for the legend and labels
    if drawn:
        ax.legend(fontsize="small", ncols=min(4, len(drawn)))
    fig.tight_layout()
    fig.savefig(path)
    return path


def _latency_chart(path: Path, systems: Mapping[str, Mapping[str, Any]]) -> Path:
    names = list(systems)
    lat = [systems[n]["latency"] for n in names]
    series = {
        "s / turn (p50)": [x["s_per_turn_p50"] for x in lat],
        "s / question (p50)": [x["s_per_question_p50"] for x in lat],
    }
    p95 = {
        "s / turn (p50)": [x["s_per_turn_p95"] for x in lat],
        "s / question (p50)": [x["s_per_question_p95"] for x in lat],
    }
    return _grouped_bars(
        path, "Wall time per system (bars p50, whiskers up to p95)", names, series, "seconds", errors=p95
    )
