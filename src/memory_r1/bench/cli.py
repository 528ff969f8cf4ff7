"""``memory-r1 bench``: compare memory systems on one benchmark with one backbone (L4 commands).

``memory-r1 bench locomo | longmemeval | msc`` run :func:`memory_r1.bench.runner.run_bench`
and print one row per system (overall F1 / BLEU-1 / EM (/ J), bank size, seconds per turn and
per question). Backbone and agent-checkpoint options are ``eval locomo``'s own
(:func:`memory_r1.cli.model_options`).
"""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import click


@click.group("bench")
def bench() -> None:
    """Benchmark several memory systems with the same backbone LLM and embedder."""


# Imported after ``bench`` exists: memory_r1.cli imports this module at its very end, so
# whichever of the two is imported first, the other finds what it needs already defined.
from memory_r1.cli import _data_sha256, _fail, model_options  # noqa: E402
from memory_r1.config import ModelConfig  # noqa: E402
from memory_r1.errors import MemoryR1Error  # noqa: E402
from memory_r1.types import Conversation  # noqa: E402


def _names(value: str | None) -> list[str] | None:
    names = [v.strip() for v in (value or "").split(",") if v.strip()]
    return names or None


def bench_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """The options every ``bench`` command shares (plus ``eval locomo``'s model options)."""
    opts = [
        click.option(
            "--systems",
            default=None,
            help="Comma-separated systems (default: all registered): memory-r1 (trained), "
            "memory-r1-untrained, locomo-rag, full-context, vanilla, mem0, mem0-latest, a-mem.",
        ),
        click.option(
            "--conversations", default=None, help="Comma-separated sample ids, e.g. conv-48,conv-49."
        ),
        click.option(
            "--limit",
            type=int,
            default=None,
            help="At most N questions per conversation (after the answerable filter).",
        ),
        click.option("--max-sessions", type=int, default=None, help="Ingest only the first N sessions."),
        click.option("--max-turns", type=int, default=None, help="Ingest only the first N turns."),
        click.option(
            "--out",
            "out_dir",
            type=click.Path(file_okay=False),
            default=None,
            help="Report folder (default reports/<timestamp>); one sub-folder per system. Re-running resumes.",
        ),
        click.option("--fresh", is_flag=True, help="Delete the chosen systems' previous results first."),
        click.option("--judge-model", default=None, help="LLM-as-judge model; off by default."),
        click.option("--judge-backend", type=click.Choice(["llamacpp", "openai", "hf"]), default="llamacpp"),
        click.option("--judge-base-url", default=None),
        click.option("--judge-runs", type=int, default=1, show_default=True),
        click.option(
            "--concurrency",
            type=int,
            default=None,
            help="Requests in flight (default: 8 with --backend openai, else 1).",
        ),
        click.option(
            "--context-tokens",
            type=int,
            default=None,
            help="full-context: prompt + answer budget (default: the model's window, else 4096).",
        ),
        click.option("--no-progress", is_flag=True),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return model_options(f)


@bench.command("locomo")
@click.option(
    "--data",
    type=click.Path(dir_okay=False),
    default=None,
    help="LoCoMo JSON (default: ../shared/data/locomo10.json or $MEMORY_R1_LOCOMO).",
)
@click.option(
    "--split", type=click.Choice(["test", "validation", "train", "all"]), default="test", show_default=True
)
@bench_options
def bench_locomo(data: str | None, split: str, **o: Any) -> None:
    """LoCoMo categories 1-4 (adversarial excluded), as the Memory-R1 tables."""
    from memory_r1.data.locomo import load_locomo, select

    try:
        convs = load_locomo(data)
        ids = _names(o["conversations"])
        chosen = (
            select(convs, sample_ids=ids) if ids else select(convs, split=None if split == "all" else split)
        )
    except MemoryR1Error as err:
        raise _fail(err) from err
    info = {
        "benchmark": "locomo",
        "split": None if ids else split,
        "data": {"path": str(data or "default"), "sha256": _data_sha256(data)},
    }
    _run(chosen, (1, 2, 3, 4), info, **o)


@bench.command("longmemeval")
@click.option(
    "--data",
    type=click.Path(exists=True, dir_okay=False),
    required=True,
    help="LongMemEval JSON (e.g. longmemeval_s.json).",
)
@bench_options
def bench_longmemeval(data: str, **o: Any) -> None:
    """LongMemEval: every question type (string categories)."""
    from memory_r1.data.longmemeval import load_longmemeval

    _run_file("longmemeval", data, load_longmemeval, **o)


@bench.command("msc")
@click.option(
    "--data",
    type=click.Path(exists=True, dir_okay=False),
    required=True,
    help="Multi-Session Chat file, as memory_r1.data.msc reads it.",
)
@bench_options
def bench_msc(data: str, **o: Any) -> None:
    """Multi-Session Chat: every question type (string categories)."""
    from memory_r1.data.msc import load_msc

    _run_file("msc", data, load_msc, **o)


def _run_file(benchmark: str, data: str, load: Callable[[str], list[Conversation]], **o: Any) -> None:
    from memory_r1.data.locomo import select, sha256_of

    try:
        chosen = select(load(data), sample_ids=_names(o["conversations"]))
    except MemoryR1Error as err:
        raise _fail(err) from err
    _run(chosen, None, {"benchmark": benchmark, "data": {"path": data, "sha256": sha256_of(data)}}, **o)


def _run(
    convs: Sequence[Conversation], categories: tuple[int, ...] | None, info: dict[str, Any], **o: Any
) -> None:
    from memory_r1.bench.runner import run_bench
    from memory_r1.bench.systems import SYSTEMS
    from memory_r1.eval.runner import EvalLimits

    names = _names(o["systems"]) or list(SYSTEMS)
    unknown = [n for n in names if n not in SYSTEMS]
    if unknown:
        raise click.BadParameter(f"unknown {unknown}; known: {', '.join(SYSTEMS)}", param_hint="--systems")
    out = Path(o["out_dir"] or f"reports/{time.strftime('%Y%m%d-%H%M%S')}")
    if o["fresh"]:
        for name in names:
            shutil.rmtree(out / name, ignore_errors=True)
    options = {
        "answer_agent": o["answer_ckpt"],
        "memory_manager": o["manager_ckpt"],
        "distill": not o["no_distill"],
        "constrained": not o["unconstrained"],
        "context_tokens": o["context_tokens"],
    }
    limits = EvalLimits(
        max_sessions=o["max_sessions"],
        max_turns=o["max_turns"],
        max_questions=o["limit"],
        categories=categories,
    )
    try:
        llm = ModelConfig(backend=o["backend"], model=o["model"], base_url=o["base_url"])
        results = run_bench(
            names,
            convs,
            limits,
            out,
            llm,
            o["embedder"],
            judge=_judge(**o),
            options={k: v for k, v in options.items() if v is not None},
            concurrency=o["concurrency"],
            progress=not o["no_progress"],
            run_config={**info, "argv": sys.argv[1:]},
        )
    except MemoryR1Error as err:
        raise _fail(err) from err
    render_results(results)
    click.echo(f"\nwrote {out}/<system>/ (predictions.jsonl, scores.json, report.md) and {out}/results.json")


def _judge(
    judge_model: str | None, judge_backend: str, judge_base_url: str | None, judge_runs: int, **_: Any
) -> Any:
    if not judge_model:
        return None
    from memory_r1.eval.judge import Judge
    from memory_r1.llm import create_model

    jm = ModelConfig(backend=judge_backend, model=judge_model, base_url=judge_base_url)
    return Judge(create_model(jm.backend, **jm.kwargs()), runs=judge_runs)


def render_results(results: dict[str, dict[str, Any]]) -> None:
    """One row per system: overall scores, bank size (all conversations), s/turn, s/question."""
    from rich.console import Console
    from rich.table import Table

    judged = any("j" in r.get("scores", {}).get("overall", {}) for r in results.values())
    table = Table(title="memory systems (overall, x100)")
    for col in (
        ["system", "n", "F1", "B1", "EM"]
        + (["J"] if judged else [])
        + ["bank", "s/turn", "s/question", "note"]
    ):
        table.add_column(col, justify="left" if col in ("system", "note") else "right")
    for name, r in results.items():
        if "error" in r:
            table.add_row(name, *[""] * (len(table.columns) - 2), r["error"][:80])
            continue
        ov = r["scores"]["overall"]
        cells = [
            f"{ov[m]:.2f}" if m in ov else "-" for m in ("f1", "bleu1", "em") + (("j",) if judged else ())
        ]
        trunc = r["answer"].get("truncated")
        note = f"{trunc['questions']} questions truncated" if trunc and trunc["questions"] else ""
        table.add_row(
            name,
            str(ov["n"]),
            *cells,
            str(sum(r.get("bank_size", {}).values())),
            f"{r['ingest']['wall_s_per_turn']:.2f}",
            f"{r['answer']['wall_s_per_question']:.2f}",
            note,
        )
    Console(width=160).print(table)
