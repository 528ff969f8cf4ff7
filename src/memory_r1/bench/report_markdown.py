"""The Markdown of a bench report (L3): score, latency and published tables, run config.

:func:`render_markdown` assembles ``report.md`` from the per-system entries that
:func:`memory_r1.bench.report.write_bench_report` computed; the ``render_*`` functions are its
sections.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from memory_r1.bench.published import PAPER_COLUMNS, PUBLISHED_SOURCE, PUBLISHED_TABLE1, PUBLISHED_TITLE
from memory_r1.eval.report import LABELS
from memory_r1.metrics import METRIC_NOTES


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
            *("/".join(_fmt(r["scores"][c][m]) for m in trio) for c in PAPER_COLUMNS),
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
            _table(["backbone", "method", *PAPER_COLUMNS], per),
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


def render_markdown(
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
