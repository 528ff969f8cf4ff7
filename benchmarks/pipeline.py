"""Where the pipeline's wall time goes: per ingested turn, per answered question, and the share
spent outside LLM calls (goal: <= 5 %). Prints numbers; asserts nothing.

    .venv/bin/python benchmarks/pipeline.py [--model gemma3-270m] [--turns 40] [--questions 10]

Runs the real pipeline (llama.cpp in-process, MiniLM embeddings, SQLite store) on the first
turns of a LoCoMo test conversation in a temporary folder, then breaks the time down.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import statistics
import tempfile
import time
from pathlib import Path

from memory_r1.agents.system import build_models, build_pipeline
from memory_r1.config import DEFAULT_MODEL, ModelConfig, SystemConfig
from memory_r1.data.locomo import load_locomo, select
from memory_r1.eval.runner import EvalLimits, LocomoEval, read_jsonl


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--conversation", default="conv-49")
    ap.add_argument("--turns", type=int, default=40)
    ap.add_argument("--questions", type=int, default=10)
    ap.add_argument("--profile", action="store_true", help="print the top functions outside the LLM")
    args = ap.parse_args()

    conv = select(load_locomo(), sample_ids=[args.conversation])
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        cfg = SystemConfig(llm=ModelConfig(model=args.model), store_path=str(Path(tmp) / "store.sqlite"))
        pipeline = build_pipeline(cfg, build_models(cfg))
        load_s = time.perf_counter() - t0
        runner = LocomoEval(pipeline, Path(tmp), progress=False)
        limits = EvalLimits(max_turns=args.turns, max_questions=args.questions, answerable_only=False)
        prof = cProfile.Profile() if args.profile else None
        t1 = time.perf_counter()
        if prof:
            prof.enable()
        scores = runner.run(conv, limits)
        if prof:
            prof.disable()
        total = time.perf_counter() - t1
        ingest = read_jsonl(Path(tmp) / "ingest.jsonl")
        preds = read_jsonl(Path(tmp) / "predictions.jsonl")

    def breakdown(rows: list[dict], label: str) -> dict:
        wall = [r["wall_s"] for r in rows]
        llm = [r["llm_s"] for r in rows]
        out = {
            f"{label}": len(rows),
            "wall_s_mean": statistics.mean(wall),
            "wall_s_p50": statistics.median(wall),
            "wall_s_max": max(wall),
            "llm_s_mean": statistics.mean(llm),
            "outside_llm_s_mean": statistics.mean(w - m for w, m in zip(wall, llm)),
            "outside_llm_share_pct": 100 * (sum(wall) - sum(llm)) / sum(wall),
        }
        return {k: round(v, 4) if isinstance(v, float) else v for k, v in out.items()}

    report = {
        "model": args.model,
        "load_s": round(load_s, 2),
        "total_s": round(total, 2),
        "ingest": breakdown(ingest, "turns"),
        "answer": breakdown(preds, "questions"),
        "ops": scores["ingest"]["ops"],
        "overall": scores["scores"].get("overall"),
    }
    print(json.dumps(report, indent=2))
    if prof:
        pstats.Stats(prof).sort_stats("cumulative").print_stats(30)


if __name__ == "__main__":
    main()
