"""``memory-r1 sft`` and ``memory-r1 train``: the options; :mod:`memory_r1.app` runs them."""

from __future__ import annotations

from typing import Any

import click

from memory_r1.cli.options import backend_choice, bank_model_options, run_app, training_options


def register(cli: click.Group) -> None:
    cli.add_command(sft_cmd)
    cli.add_command(train_cmd)


@click.command("sft")
@training_options
@click.option(
    "--roles",
    default="extract,manager,answer",
    show_default=True,
    help="Comma-separated subset of extract,manager,answer.",
)
@click.option(
    "--teacher-jsonl",
    type=click.Path(dir_okay=False),
    default=None,
    help="Extra {role, system, user, target} rows from a teacher model.",
)
@click.option("--batch-size", type=int, default=8, show_default=True)
@click.option("--max-tokens", type=int, default=None, help="Skip examples longer than this.")
@click.option(
    "--answer-k",
    type=int,
    default=10,
    show_default=True,
    help="answer role: memories per speaker in each prompt (train with the k you evaluate with).",
)
def sft_cmd(**options: Any) -> None:
    """Memory-SFT: clone LoCoMo train-split annotations (conv-26), the warm start before RL."""
    from memory_r1.app.sft import SftRun, run_sft

    run, final = run_app(SftRun.from_options, run_sft, options)
    click.echo(f"wrote {run.out}/metrics.jsonl, tb/, sft_loss.png; model: {final}")


@click.command("train")
@click.argument("agent", type=click.Choice(["answer-agent", "memory-manager"]))
@click.option("--algo", type=click.Choice(["ppo", "grpo"]), required=True)
@training_options
@click.option(
    "--group-size",
    type=int,
    default=None,
    help="Samples per prompt (GRPO group G, default 8; PPO default 1).",
)
@click.option("--batch-size", type=int, default=16, show_default=True, help="Prompts per step.")
@click.option("--beta", type=float, default=0.01, show_default=True, help="KL coefficient (0: no reference).")
@click.option(
    "--max-new-tokens",
    type=int,
    default=None,
    help="Rollout token budget (default: the agent's own at inference, 160 for the Answer Agent).",
)
@click.option(
    "--save-every", type=int, default=0, show_default=True, help="Checkpoint every N steps (0: at the end)."
)
@click.option("--resume", is_flag=True, help="Continue from the latest checkpoint in --out.")
@bank_model_options("Backend of the untrained pipeline that builds banks/snapshots.")
@click.option(
    "--answer-backend",
    type=backend_choice(),
    default=None,
    help="memory-manager: backend of the frozen Answer Agent (default: hf for an HF "
    "directory, openai with --base-url, else llamacpp).",
)
@click.option(
    "--answer-model",
    default=None,
    help="memory-manager: frozen Answer Agent: HF dir, GGUF / catalogue name, or served name "
    "(default: the --model being trained).",
)
@click.option(
    "--answer-lora",
    default=None,
    help="memory-manager: a GGUF LoRA adapter over a GGUF --answer-model (llamacpp); "
    "'shipped' = the shipped answer adapter.",
)
@click.option("--base-url", default=None, help="OpenAI-compatible endpoint for openai backends.")
@click.option(
    "--bank-source",
    type=click.Choice(["pipeline", "observations"]),
    default="pipeline",
    show_default=True,
    help="Banks: built by the untrained pipeline (--bank-model) or replayed from "
    "LoCoMo's session observations (no LLM, seconds; memory-manager: winnable "
    "teacher banks).",
)
@click.option(
    "--answer-k",
    type=int,
    default=30,
    show_default=True,
    help="Memories retrieved per speaker for Answer prompts (paper 30; 5-10 for CPU runs).",
)
@click.option(
    "--validate-every",
    type=int,
    default=0,
    show_default=True,
    help="Greedy validation on conv-30 at step 0, every N steps and at the end; best step -> out/best (0: off).",
)
@click.option(
    "--val-questions",
    type=int,
    default=None,
    help="Validate on at most this many episodes (default: all, 81 questions for answer-agent).",
)
@click.option(
    "--val-batch-size", type=int, default=16, show_default=True, help="Prompts per validation decoding call."
)
@click.option(
    "--reward",
    type=click.Choice(["em", "f1", "em+f1"]),
    default="em",
    show_default=True,
    help="em: the paper's exact match; f1: Mem0 token F1 (dense); em+f1: their mean.",
)
@click.option(
    "--temperature", type=float, default=1.0, show_default=True, help="Rollout sampling temperature."
)
@click.option(
    "--dynamic-sampling",
    is_flag=True,
    help="Drop groups whose rewards tie and draw fresh prompts until the batch is full.",
)
@click.option(
    "--max-draw-factor",
    type=float,
    default=3.0,
    show_default=True,
    help="Dynamic sampling: draw at most this many times --batch-size prompts per step.",
)
@click.option(
    "--require-evidence",
    is_flag=True,
    help="answer-agent: train only on questions whose evidence is among the shown memories.",
)
@click.option(
    "--agg",
    type=click.Choice(["token-mean", "seq-mean-token-mean", "dr-grpo"]),
    default=None,
    help="Loss aggregation (default: GRPO seq-mean-token-mean, PPO token-mean).",
)
@click.option(
    "--epochs", type=int, default=1, show_default=True, help="Update passes over each rollout batch."
)
@click.option(
    "--minibatches", type=int, default=1, show_default=True, help="Minibatches per pass (groups kept whole)."
)
def train_cmd(**options: Any) -> None:
    """RL-train the Answer Agent or the Memory Manager with PPO or GRPO on the train split."""
    from memory_r1.app.train import TrainRun, run_train

    run, final = run_app(TrainRun.from_options, run_train, options)
    best = ", best/ and validation.json" if run.validate_every else ""
    click.echo(f"wrote {run.out}/metrics.jsonl, tb/, metrics.png{best}; model: {final}")
