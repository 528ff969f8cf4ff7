"""The PNG charts of a bench report (L3): grouped bars per metric, and latency.

``<metric>.png``: systems x categories, one bar per system and category; ``latency.png``:
s/turn and s/question per system (p50 bars, p95 whiskers). Charts draw on a private Agg
canvas (``FigureCanvasAgg``); the global matplotlib backend is never touched.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from memory_r1.eval.report import LABELS


def write_charts(
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
