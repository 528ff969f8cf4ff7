"""The published numbers a bench report shows beside its own (L3): Memory-R1's Table 1.

``PUBLISHED_TABLE1`` holds the paper's LoCoMo results cell by cell (F1 / BLEU-1 / J x100 per
category and overall, for the LLaMA-3.1-8B and Qwen-2.5-7B backbones); ``PUBLISHED_TITLE`` and
``PUBLISHED_SOURCE`` say where they come from and why they are not comparable with a small
backbone. :mod:`memory_r1.bench.report_markdown` renders them.
"""

from __future__ import annotations

from typing import Any

PUBLISHED_TITLE = (
    "Published numbers (the paper's, LLaMA-3.1-8B / Qwen-2.5-7B scale — not comparable with a 135M backbone)"
)
PUBLISHED_SOURCE = (
    "Memory-R1 (arXiv 2508.19828 v5) Table 1: LoCoMo test split (8 conversations, 1,307 "
    "questions, category 5 excluded), F1 / BLEU-1 / J x100, Mem0's metrics and category names; "
    "J with an unnamed judge. Zep (v4 only) left out."
)
PAPER_COLUMNS = ("single-hop", "multi-hop", "open-domain", "temporal", "overall")

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
        for cat, cell in zip(PAPER_COLUMNS, cells):
            f1, b1, j = (float(x) for x in cell.split("/"))
            per[cat] = {"f1": f1, "bleu1": b1, "j": j}
        rows.append({"backbone": backbone, "method": method, "scores": per})
    return rows


#: ``[{"backbone", "method", "scores": {category: {"f1", "bleu1", "j"}}}]``, Table 1 rows.
PUBLISHED_TABLE1: list[dict[str, Any]] = _published()
