"""``memory-r1 bench``: compare memory systems on one benchmark with one backbone.

``memory-r1 bench locomo | longmemeval | msc`` run :func:`memory_r1.bench.runner.run_bench`
and print one row per system (overall F1 / BLEU-1 / EM (/ J), bank size, seconds per turn and
per question). Backbone and agent-checkpoint options are ``eval locomo``'s own
(:func:`memory_r1.cli.options.model_options`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import click

from memory_r1.app.bench import names
from memory_r1.app.common import data_sha256
from memory_r1.cli.options import Decorator, apply, fail, judge_options, locomo_data_option, model_options
from memory_r1.errors import MemoryR1Error
from memory_r1.types import Conversation


@click.group("bench")
def bench() -> None:
    """Benchmark several memory systems with the same backbone LLM and embedder."""


def register(cli: click.Group) -> None:
    cli.add_command(bench)


def bench_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """The options every ``bench`` command shares (plus ``eval locomo``'s model options)."""
    opts: list[Decorator] = [
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
        judge_options,
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
    return model_options(apply(f, opts))


@bench.command("locomo")
@locomo_data_option()
@click.option(
    "--split", type=click.Choice(["test", "validation", "train", "all"]), default="test", show_default=True
)
@bench_options
def bench_locomo(data: str | None, split: str, **o: Any) -> None:
    """LoCoMo categories 1-4 (adversarial excluded), as the Memory-R1 tables."""
    from memory_r1.data.locomo import load_locomo, select

    try:
        convs = load_locomo(data)
        ids = names(o["conversations"])
        chosen = (
            select(convs, sample_ids=ids) if ids else select(convs, split=None if split == "all" else split)
        )
    except MemoryR1Error as err:
        raise fail(err) from err
    info = {
        "benchmark": "locomo",
        "split": None if ids else split,
        "data": {"path": str(data or "default"), "sha256": data_sha256(data)},
    }
    _run(chosen, (1, 2, 3, 4), info, **o)


def _file_command(name: str, data_help: str) -> Decorator:
    """``bench <name>`` reading a required ``--data`` file, then :func:`bench_options`."""
    data = click.option("--data", type=click.Path(exists=True, dir_okay=False), required=True, help=data_help)
    return lambda f: bench.command(name)(data(bench_options(f)))


@_file_command("longmemeval", "LongMemEval JSON (e.g. longmemeval_s.json).")
def bench_longmemeval(data: str, **o: Any) -> None:
    """LongMemEval: every question type (string categories)."""
    from memory_r1.data.longmemeval import load_longmemeval

    _run_file("longmemeval", data, load_longmemeval, **o)


@_file_command("msc", "Multi-Session Chat file, as memory_r1.data.msc reads it.")
def bench_msc(data: str, **o: Any) -> None:
    """Multi-Session Chat: every question type (string categories)."""
    from memory_r1.data.msc import load_msc

    _run_file("msc", data, load_msc, **o)


def _run_file(benchmark: str, data: str, load: Callable[[str], list[Conversation]], **o: Any) -> None:
    from memory_r1.data.locomo import select, sha256_of

    try:
        chosen = select(load(data), sample_ids=names(o["conversations"]))
    except MemoryR1Error as err:
        raise fail(err) from err
    _run(chosen, None, {"benchmark": benchmark, "data": {"path": data, "sha256": sha256_of(data)}}, **o)


def _run(
    convs: Sequence[Conversation], categories: tuple[int, ...] | None, info: dict[str, Any], **o: Any
) -> None:
    from memory_r1.app.bench import BenchRun, run_benchmark
    from memory_r1.bench.systems import SYSTEMS

    run = BenchRun.from_options(**o)
    unknown = run.unknown_systems()
    if unknown:
        raise click.BadParameter(f"unknown {unknown}; known: {', '.join(SYSTEMS)}", param_hint="--systems")
    try:
        results = run_benchmark(run, convs, categories, info)
    except MemoryR1Error as err:
        raise fail(err) from err
    render_results(results)
    out = run.out
    click.echo(f"\nwrote {out}/<system>/ (predictions.jsonl, scores.json, report.md) and {out}/results.json")


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
