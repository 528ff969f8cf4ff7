"""The stage-by-stage table: full-pipeline runs and Memory-Manager evaluations side by side.

    .venv/bin/python benchmarks/stages.py \
        --pipeline "untrained=runs/locomo-validation-smollm2-135m" \
        --pipeline "trained=runs/locomo-validation-smollm2-135m-trained" \
        --manager runs/train/eval-memory [--manager-run runs/grpo-memory] \
        [--out benchmarks/results/stages]                                    # -> .json, .md

``--pipeline LABEL=DIR``: a folder written by ``memory-r1 eval locomo`` (its ``scores.json``
is recomputed from ``predictions.jsonl`` by the runner; the operation mix and wall times come
from ``ingest.jsonl``). ``--manager DIR``: a folder written by ``memory-r1 eval memory-manager``
(mean reward of the Manager beside always-ADD / always-NOOP, winnable and decisive shares).
``--manager-run DIR``: a ``memory-r1 train memory-manager`` run (validation reward per step,
informative groups, wall time). Asserts nothing; prints the Markdown.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from memory_r1.metrics import aggregate

_METRICS = ("f1", "bleu1", "em")
_OPS = ("ADD", "UPDATE", "DELETE", "NOOP", "INVALID")


def _jsonl(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def pipeline_row(label: str, run: Path) -> dict:
    preds = _jsonl(run / "predictions.jsonl")
    ingest = _jsonl(run / "ingest.jsonl")
    ops = {k: 0 for k in _OPS}
    for row in ingest:
        for op in row["ops"]:
            ops[op] = ops.get(op, 0) + 1
    config = json.loads((run / "run.json").read_text(encoding="utf-8"))
    return {
        "label": label,
        "run": str(run),
        "scores": aggregate(preds, _METRICS, percent=True),
        "ops": ops,
        "turns": len(ingest),
        "questions": len(preds),
        "turns_adding": sum("ADD" in r["ops"] for r in ingest),
        "s_per_turn": sum(r["wall_s"] for r in ingest) / max(1, len(ingest)),
        "s_per_question": sum(p["wall_s"] for p in preds) / max(1, len(preds)),
        "adapters": {k: v.get("sha256") for k, v in (config.get("adapters") or {}).items()},
    }


def manager_rows(scores: Path, run: Path | None) -> dict:
    doc = json.loads((scores / "scores.json").read_text(encoding="utf-8"))
    out = {
        "episodes": doc["episodes"],
        "facts": doc["facts"],
        "trivial": doc["trivial"],
        "winnable": doc["winnable"],
        "decisive": doc["decisive"],
        "add_beats_noop": doc["add_beats_noop"],
        "model": doc.get("model"),
        "model_name": doc["config"]["model"],
    }
    if run is not None:
        rows = _jsonl(run / "metrics.jsonl")
        train = [r for r in rows if "reward_mean" in r]
        out["run"] = {
            "dir": str(run),
            "validation": [
                {k: r[k] for k in r if k == "step" or k.startswith("val_")} for r in rows if "val_reward" in r
            ],
            "steps": len(train),
            "informative_frac": sum(r.get("informative_frac", 0) for r in train) / max(1, len(train)),
            "prompts_drawn": sum(r.get("prompts_drawn", 0) for r in train),
            "train_s": sum(r.get("rollout_s", 0) + r.get("update_s", 0) for r in train),
            "validation_s": sum(r.get("val_s", 0) for r in rows),
        }
    return out


def markdown(pipes: list[dict], manager: dict | None) -> str:
    cats = [
        c
        for c in ("single-hop", "multi-hop", "temporal", "open-domain")
        if any(c in p["scores"] for p in pipes)
    ]
    head = [
        "stage",
        "F1",
        "BLEU-1",
        "EM",
        *(f"{c} F1 / EM" for c in cats),
        "ops (" + " / ".join(_OPS) + ")",
        "turns adding",
        "s / turn",
        "s / question",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for p in pipes:
        s = p["scores"]
        cells = [
            p["label"],
            *(f"{s['overall'][m]:.2f}" for m in _METRICS),
            *(f"{s[c]['f1']:.2f} / {s[c]['em']:.2f} ({s[c]['n']})" if c in s else "" for c in cats),
            " / ".join(str(p["ops"].get(k, 0)) for k in _OPS),
            f"{p['turns_adding']} of {p['turns']}",
            f"{p['s_per_turn']:.2f}",
            f"{p['s_per_question']:.2f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    if manager is not None:
        m = manager
        lines += [
            "",
            f"Memory Manager on {m['episodes']} validation episodes ({m['facts']} facts): "
            f"winnable {100 * m['winnable']:.0f} %, decisive {100 * m['decisive']:.0f} %, "
            f"ADD beats NOOP in {100 * m['add_beats_noop']:.0f} %.",
            "",
            "| policy | mean reward | ADD / UPDATE / DELETE / NOOP / INVALID |",
            "|---|---|---|",
            f"| always NOOP | {m['trivial']['noop']:.4f} | |",
            f"| always ADD | {m['trivial']['add']:.4f} | |",
        ]
        if m.get("run"):
            for v in m["run"]["validation"]:
                mix = " / ".join(f"{100 * v.get('val_op_' + k.lower(), 0):.0f} %" for k in _OPS)
                lines.append(f"| training run, step {v['step']} | {v['val_reward']:.4f} | {mix} |")
        if m.get("model"):
            c = m["model"]["counts"]
            lines.append(
                f"| `{m['model_name']}` | {m['model']['val_reward']:.4f} | "
                + " / ".join(str(c.get(k, 0)) for k in _OPS)
                + " |"
            )
        if m.get("run"):
            r = m["run"]
            lines += [
                "",
                f"Training: {r['steps']} steps, {r['prompts_drawn']} prompts drawn, "
                f"informative groups {100 * r['informative_frac']:.0f} % on average, "
                f"{r['train_s'] / 60:.1f} min training + {r['validation_s'] / 60:.1f} min validation.",
            ]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pipeline", action="append", default=[], metavar="LABEL=DIR")
    ap.add_argument("--manager", type=Path, default=None)
    ap.add_argument("--manager-run", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/stages"))
    a = ap.parse_args()
    pipes = []
    for spec in a.pipeline:
        label, sep, folder = spec.partition("=")
        if not sep:
            ap.error(f"--pipeline {spec!r}: expected LABEL=DIR")
        pipes.append(pipeline_row(label, Path(folder)))
    manager = manager_rows(a.manager, a.manager_run) if a.manager else None
    md = markdown(pipes, manager)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.with_suffix(".json").write_text(
        json.dumps({"pipelines": pipes, "manager": manager}, indent=2) + "\n", encoding="utf-8"
    )
    a.out.with_suffix(".md").write_text(md, encoding="utf-8")
    print(md)


if __name__ == "__main__":
    main()
