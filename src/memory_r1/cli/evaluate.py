"""``memory-r1 eval locomo | answer-agent | memory-manager``."""

from __future__ import annotations

from typing import Any

import click

from memory_r1.cli.options import (
    Decorator,
    apply,
    backend_choice,
    bank_model_options,
    dtype_option,
    embedder_option,
    judge_options,
    locomo_data_option,
    model_options,
    run_app,
)
from memory_r1.config import DEFAULT_MODEL


@click.group("eval")
def eval_group() -> None:
    """Evaluate on a benchmark."""


def register(cli: click.Group) -> None:
    cli.add_command(eval_group)


def _split_option(default: str, choices: list[str]) -> Any:
    return click.option("--split", type=click.Choice(choices), default=default, show_default=True)


def _agent_eval_options(out_help: str, bank_help: str) -> Decorator:
    """``--out``, ``--split``, ``--data`` and ``--bank-source`` of ``eval answer-agent`` and
    ``eval memory-manager`` (after their ``--model``)."""
    opts: list[Decorator] = [
        click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help=out_help),
        _split_option("validation", ["validation", "train", "test"]),
        locomo_data_option(),
        click.option(
            "--bank-source",
            type=click.Choice(["observations", "pipeline"]),
            default="observations",
            show_default=True,
            help=bank_help,
        ),
    ]
    return lambda f: apply(f, opts)


def _answer_k_option(default: int) -> Any:
    return click.option(
        "--answer-k", type=int, default=default, show_default=True, help="Memories retrieved per speaker."
    )


@eval_group.command("locomo")
@locomo_data_option()
@_split_option("test", ["train", "validation", "test"])
@click.option(
    "--conversation",
    "-c",
    "conversations",
    multiple=True,
    help="Only these sample_ids (repeatable), e.g. -c conv-44.",
)
@click.option(
    "--max-sessions", type=int, default=None, help="Ingest only the first N sessions of each conversation."
)
@click.option(
    "--max-turns", type=int, default=None, help="Ingest only the first N turns of each conversation."
)
@click.option("--max-questions", type=int, default=None, help="At most N questions per conversation.")
@click.option(
    "--all-questions",
    is_flag=True,
    help="With session/turn limits, also ask questions whose evidence was not ingested.",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Run folder (default $MEMORY_R1_RUNS or runs/, then locomo-<split>-<model>). Re-running resumes it.",
)
@click.option("--fresh", is_flag=True, help="Delete the run folder's previous results first.")
@click.option(
    "--judge-model", default=None, help="LLM-as-judge model (same forms as --model); off by default."
)
@judge_options
@click.option("--no-progress", is_flag=True)
@model_options
def eval_locomo(**options: Any) -> None:
    """Build memory banks for LoCoMo conversations, answer their questions, score them."""
    from memory_r1.app.locomo import LocomoRun, run_locomo
    from memory_r1.eval.report import render_table

    _, (scores, out) = run_app(LocomoRun.from_options, run_locomo, options)
    click.echo(render_table(scores))
    click.echo(f"\nwrote {out}/predictions.jsonl, scores.json, report.md")


@eval_group.command("answer-agent")
@click.option(
    "--model", required=True, help="Answer Agent: HF checkpoint dir or catalogue name (transformers backend)."
)
@_agent_eval_options(
    "Folder for predictions.jsonl, scores.json and the banks.",
    "Banks replayed from LoCoMo observations, or built by the untrained pipeline.",
)
@bank_model_options(
    "pipeline banks: backend of the bank-building model.", "pipeline banks: the bank-building model."
)
@click.option("--base-url", default=None, help="OpenAI-compatible endpoint for an openai bank backend.")
@_answer_k_option(30)
@click.option("--max-questions", type=int, default=None, help="At most N questions per conversation.")
@click.option(
    "--batch-size", type=int, default=16, show_default=True, help="Prompts per greedy decoding call."
)
@dtype_option(
    "auto: bfloat16 weights on CUDA; float32 weights + bfloat16 autocast on a CPU "
    "with native bf16; else float32."
)
@embedder_option()
@click.option("--no-progress", is_flag=True)
def eval_answer_agent_cmd(**options: Any) -> None:
    """Greedy Answer-Agent F1/BLEU-1/EM on a split, as the training validation scores it."""
    from memory_r1.app.evaluate import AnswerEvalRun, eval_answer_agent
    from memory_r1.eval.report import render_table

    run, scores = run_app(AnswerEvalRun.from_options, eval_answer_agent, options)
    click.echo(render_table(scores))
    o = scores["scores"]["overall"]
    click.echo(f"\noverall F1 {o['f1']:.2f}  BLEU-1 {o['bleu1']:.2f}  EM {o['em']:.2f}  (n={o['n']})")
    click.echo(f"wrote {run.out}/predictions.jsonl, scores.json")


@eval_group.command("memory-manager")
@click.option(
    "--model",
    default=None,
    help="Memory Manager: HF checkpoint dir or catalogue name "
    "(transformers backend; with --lora a GGUF / catalogue name on llama.cpp); "
    "omit to score the trivial policies only.",
)
@click.option(
    "--lora",
    default=None,
    help="GGUF LoRA over a GGUF --model, run on llama.cpp with the pipeline's grammar, as "
    "inference runs it; 'shipped' = the shipped memory adapter.",
)
@_agent_eval_options(
    "Folder for episodes.jsonl and scores.json.",
    "Episodes over the teacher bank (winnable), or the untrained pipeline's snapshots.",
)
@click.option(
    "--answer-model",
    default=DEFAULT_MODEL,
    show_default=True,
    help="Frozen Answer Agent: GGUF / catalogue name (llamacpp), HF dir, or served name.",
)
@click.option(
    "--answer-lora",
    default=None,
    help="GGUF LoRA over --answer-model; 'shipped' = the shipped answer adapter.",
)
@click.option("--answer-backend", type=backend_choice(), default=None)
@click.option("--base-url", default=None, help="OpenAI-compatible endpoint for an openai Answer Agent.")
@_answer_k_option(10)
@click.option("--reward", type=click.Choice(["em", "f1", "em+f1"]), default="f1", show_default=True)
@click.option("--max-episodes", type=int, default=None, help="Score only the first N episodes.")
@dtype_option()
@embedder_option()
def eval_memory_manager_cmd(**options: Any) -> None:
    """Memory-Manager reward on a split's episodes beside always-ADD and always-NOOP."""
    from memory_r1.app.evaluate import ManagerEvalRun, eval_memory_manager

    run, r = run_app(ManagerEvalRun.from_options, eval_memory_manager, options)
    click.echo(
        f"{r['episodes']} episodes ({r['facts']} facts): winnable {100 * r['winnable']:.1f} %, "
        f"decisive {100 * r['decisive']:.1f} %"
    )
    click.echo(f"mean reward: always-ADD {r['trivial']['add']:.4f}  always-NOOP {r['trivial']['noop']:.4f}")
    if "model" in r:
        m = r["model"]
        click.echo(
            f"{run.model}: {m['val_reward']:.4f}  invalid {100 * m['val_invalid_rate']:.1f} %  ops {m['counts']}"
        )
    click.echo(f"wrote {run.out}/episodes.jsonl, scores.json")
