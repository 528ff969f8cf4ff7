"""Markdown report and console table from a run's ``scores.json`` content (L3)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from memory_r1.metrics import METRIC_NOTES, category_order

ORDER = ("single-hop", "multi-hop", "open-domain", "temporal", "overall")  # Memory-R1 Table 1 order
LABELS = {"f1": "F1", "bleu1": "BLEU-1", "em": "EM", "j": "J"}


def ordered_categories(names: Iterable[str]) -> list[str]:
    """Table order: LoCoMo's categories as in Memory-R1 Table 1, then any other category
    (LongMemEval's question types, ``"msc"``: see ``metrics.category_order``), ``overall`` last.

    >>> ordered_categories(["overall", "temporal", "msc", "single-hop"])
    ['single-hop', 'temporal', 'msc', 'overall']
    """
    present = set(names)
    main = [c for c in ORDER if c in present and c != "overall"]
    rest = category_order(present - set(ORDER))
    return main + rest + (["overall"] if "overall" in present else [])


def render_table(scores: dict[str, Any]) -> str:
    """A Markdown table: one row per category (as in the paper's tables) plus overall."""
    per = scores["scores"]
    metrics = [m for m in LABELS if any(m in row for row in per.values())]
    head = "| category | n | " + " | ".join(LABELS[m] for m in metrics) + " |"
    lines = [head, "|" + "---|" * (len(metrics) + 2)]
    for cat in ordered_categories(per):
        row = per[cat]
        cells = [f"{row[m]:.2f}" if m in row else "–" for m in metrics]
        name = f"**{cat}**" if cat == "overall" else cat
        lines.append(f"| {name} | {row['n']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_report(path: Path, scores: dict[str, Any]) -> None:
    ing, ans, cfg = scores["ingest"], scores["answer"], scores.get("config", {})
    ops = ", ".join(f"{k} {v}" for k, v in ing["ops"].items()) or "none"
    text = f"""# Memory-R1 on LoCoMo

Scores ×100, mean over questions (per category, and overall = micro mean). Category names as
in Mem0 and the Memory-R1 tables (1 single-hop, 2 temporal, 3 multi-hop, 4 open-domain);
category 5 (adversarial) is excluded.

{render_table(scores)}

## Memory bank construction

- turns ingested: {ing["turns"]}; LLM calls: {ing["llm_calls"]}; tokens in/out: {ing["tokens_in"]} / {ing["tokens_out"]}
- operations: {ops}
- invalid operations (unparseable or impossible model output, recorded in history): {ing["invalid"]}
- wall time per turn: {ing["wall_s_per_turn"]:.3f} s; share outside LLM calls: {100 * ing["outside_llm_share"]:.1f} %

## Answering

- questions: {ans["questions"]}; outputs without an `Answer:` marker: {ans["missing_answer_marker"]}; unparseable judge verdicts (scored 0): {ans.get("judge_unparseable", 0)}
- tokens in/out: {ans["tokens_in"]} / {ans["tokens_out"]}
- wall time per question: {ans["wall_s_per_question"]:.3f} s (retrieval {ans["retrieval_s_per_question"]:.4f} s); share outside LLM calls: {100 * ans["outside_llm_share"]:.1f} %

## Metric definitions

{METRIC_NOTES}

## Configuration

```json
{json.dumps(cfg, indent=2, default=str)}
```
"""
    Path(path).write_text(text, encoding="utf-8")
