"""Summarise one RL run directory: validation per category per step, signal and cost per step.

    .venv/bin/python benchmarks/rl_run.py runs/grpo-answer [--sft runs/sft-answer]
        [--out benchmarks/results/grpo_answer]                      # -> .json, .md

Reads what ``memory-r1 train`` wrote: ``run_config.json``, ``metrics.jsonl`` (one row per
step; validation rows carry ``val_*``) and ``validation/step-N.jsonl`` (the greedy predictions
of step N, each row scored by the evaluation metric code), and recomputes the per-category
F1 / BLEU-1 / EM of each validated step with :func:`memory_r1.metrics.aggregate`. Step 0 is
the starting checkpoint (the SFT model). Asserts nothing; prints the Markdown.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from memory_r1.metrics import aggregate

_METRICS = ("f1", "bleu1", "em")


def _jsonl(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def summarise(run: Path, sft: Path | None = None) -> dict:
    config = json.loads((run / "run_config.json").read_text(encoding="utf-8"))
    rows = _jsonl(run / "metrics.jsonl")
    train = [r for r in rows if "reward_mean" in r]
    val_s = [r["val_s"] for r in rows if "val_s" in r]
    validation = {}
    for path in sorted((run / "validation").glob("step-*.jsonl"), key=lambda p: int(p.stem.split("-")[1])):
        step = int(path.stem.split("-")[1])
        validation[step] = aggregate(_jsonl(path), _METRICS, percent=True)
    best = json.loads((run / "validation.json").read_text(encoding="utf-8")).get("best")
    out = {
        "run": str(run),
        "config": config,
        "steps": len(train),
        "validation": validation,
        "best": best,
        "per_step": [
            {
                k: r.get(k)
                for k in (
                    "step",
                    "reward_mean",
                    "informative_frac",
                    "prompts_drawn",
                    "draws",
                    "format_failure_rate",
                    "grad_norm",
                    "approx_kl",
                    "rollout_s",
                    "update_s",
                )
            }
            for r in train
        ],
        "rollouts_drawn": int(sum(r.get("prompts_drawn", 0) for r in train) * config.get("group_size", 1)),
        "train_s": sum(r.get("rollout_s", 0.0) + r.get("update_s", 0.0) for r in train),
        "validation_s": sum(val_s),
    }
    if sft is not None and (sft / "metrics.jsonl").exists():
        sft_rows = _jsonl(sft / "metrics.jsonl")
        out["sft"] = {
            "dir": str(sft),
            "steps": len(sft_rows),
            "final_loss": sft_rows[-1].get("loss") if sft_rows else None,
            "train_s": sum(r.get("step_s", 0.0) for r in sft_rows),
        }
    return out


def markdown(s: dict) -> str:
    lines = [f"# RL run `{s['run']}`", ""]
    c = s["config"]
    lines.append(
        f"{c['role']}, {c['algo']}, model `{c['model']}`, {s['steps']} steps x "
        f"{c['batch_size']} prompts x G={c['group_size']}, lr {c['lr']}, "
        f"beta {c['beta']}, LoRA r={c['lora_r']}, options {json.dumps(c.get('options'))}"
    )
    lines.append("")
    if s.get("sft"):
        f = s["sft"]
        lines.append(
            f"starting checkpoint: `{f['dir']}` ({f['steps']} SFT steps, final loss "
            f"{f['final_loss']:.3f}, {f['train_s'] / 60:.1f} min); it is step 0 below"
        )
        lines.append("")
    lines.append("| step | category | n | F1 | BLEU-1 | EM |")
    lines.append("|---|---|---|---|---|---|")
    for step, cats in s["validation"].items():
        for name, m in cats.items():
            lines.append(f"| {step} | {name} | {m['n']} | {m['f1']:.2f} | {m['bleu1']:.2f} | {m['em']:.2f} |")
    lines.append("")
    if s.get("best"):
        b = s["best"]
        lines.append(f"best (by EM, then F1): step {b['step']}, F1 {b['val_f1']:.2f}, EM {b['val_em']:.2f}")
        lines.append("")
    informative = [r["informative_frac"] for r in s["per_step"] if r["informative_frac"] is not None]
    if informative:
        lines.append(
            f"informative groups per step: mean {sum(informative) / len(informative):.2f}, "
            f"min {min(informative):.2f}; rollouts drawn: {s['rollouts_drawn']}; "
            f"train {s['train_s'] / 60:.1f} min + validation {s['validation_s'] / 60:.1f} min"
        )
        lines.append("")
    lines.append(
        "| step | reward | informative | prompts drawn | draws | format fail | grad norm | "
        "rollout s | update s |"
    )
    lines.append("|---|---|---|---|---|---|---|---|---|")
    for r in s["per_step"]:
        lines.append(
            f"| {r['step']} | {r['reward_mean']:.3f} | {r['informative_frac']:.2f} | "
            f"{r['prompts_drawn']:.0f} | {r['draws']:.0f} | {r['format_failure_rate']:.3f} | "
            f"{r['grad_norm']:.3f} | {r['rollout_s']:.0f} | {r['update_s']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--sft", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=None, help="write <out>.json and <out>.md")
    args = parser.parse_args()
    s = summarise(args.run, args.sft)
    md = markdown(s)
    print(md)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_suffix(".json").write_text(json.dumps(s, indent=1) + "\n", encoding="utf-8")
        args.out.with_suffix(".md").write_text(md, encoding="utf-8")


if __name__ == "__main__":
    main()
