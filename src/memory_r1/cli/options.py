"""Options and helpers the ``memory-r1`` command modules share (they import this; it imports none
of them)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from memory_r1.config import DEFAULT_MODEL
from memory_r1.errors import MemoryR1Error
from memory_r1.llm import available_backends

Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]
R = TypeVar("R")
T = TypeVar("T")


def fail(err: MemoryR1Error) -> click.ClickException:
    """A library error as a clean command-line error (no traceback)."""
    return click.ClickException(str(err))


def run_app(build: Callable[..., R], go: Callable[[R], T], options: dict[str, Any]) -> tuple[R, T]:
    """``run = build(**options)`` (a command's click parameters) and ``go(run)``: both, with a
    library error as a clean command-line error."""
    try:
        run = build(**options)
        return run, go(run)
    except MemoryR1Error as err:
        raise fail(err) from err


def backend_choice() -> click.Choice:
    """The LLM backends :func:`memory_r1.llm.available_backends` knows (plugins included)."""
    return click.Choice(list(available_backends()))


def apply(f: Callable[..., Any], opts: list[Decorator]) -> Callable[..., Any]:
    """``opts`` applied to ``f`` so that they list in the given order."""
    for opt in reversed(opts):
        f = opt(f)
    return f


def locomo_data_option() -> Decorator:
    return click.option(
        "--data",
        type=click.Path(dir_okay=False),
        default=None,
        help="LoCoMo JSON (default: ../shared/data/locomo10.json or $MEMORY_R1_LOCOMO).",
    )


def embedder_option() -> Decorator:
    return click.option("--embedder", default="minilm", show_default=True, help="minilm | hash")


def dtype_option(help: str | None = None) -> Decorator:
    return click.option(
        "--dtype",
        type=click.Choice(["auto", "bfloat16", "float32", "float16"]),
        default="auto",
        show_default=True,
        help=help,
    )


def bank_model_options(backend_help: str, model_help: str | None = None) -> Decorator:
    """``--bank-backend`` / ``--bank-model``: the untrained pipeline model that builds banks."""
    opts: list[Decorator] = [
        click.option(
            "--bank-backend", type=backend_choice(), default="llamacpp", show_default=True, help=backend_help
        ),
        click.option("--bank-model", default=DEFAULT_MODEL, show_default=True, help=model_help),
    ]
    return lambda f: apply(f, opts)


def judge_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """``--judge-backend`` / ``--judge-base-url`` / ``--judge-runs`` (after ``--judge-model``)."""
    return apply(
        f,
        [
            click.option("--judge-backend", type=backend_choice(), default="llamacpp"),
            click.option("--judge-base-url", default=None),
            click.option("--judge-runs", type=int, default=1, show_default=True),
        ],
    )


def model_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """The backbone and agent-checkpoint options of ``eval locomo`` and ``bench``."""
    return apply(
        f,
        [
            click.option(
                "--backend",
                type=backend_choice(),
                default="llamacpp",
                show_default=True,
                help="LLM backend for every agent.",
            ),
            click.option(
                "--model",
                default=DEFAULT_MODEL,
                show_default=True,
                help="Catalogue name (smollm2-135m, gemma3-270m), GGUF path, HF dir, or served model name.",
            ),
            click.option(
                "--base-url", default=None, help="OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1."
            ),
            click.option(
                "--answer-agent",
                "answer_ckpt",
                default=None,
                help="Answer Agent checkpoint (HF dir) run through the transformers backend.",
            ),
            click.option(
                "--memory-manager",
                "manager_ckpt",
                default=None,
                help="Memory Manager checkpoint (HF dir) run through the transformers backend.",
            ),
            click.option(
                "--untrained",
                is_flag=True,
                help="The base model for every role, without the shipped trained adapters.",
            ),
            click.option(
                "--answer-k",
                type=int,
                default=None,
                help="Memories retrieved per speaker (default: the trained Answer Agent's, "
                "10; untrained: 30, the paper's).",
            ),
            embedder_option(),
            click.option("--no-distill", is_flag=True, help="Answer without the memory-selection step."),
            click.option("--unconstrained", is_flag=True, help="No schema-constrained decoding."),
        ],
    )


def training_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """The options ``sft`` and ``train`` share."""
    return apply(
        f,
        [
            click.option(
                "--model",
                required=True,
                help="Base model to train: HF dir, catalogue name or GGUF path (loaded by transformers).",
            ),
            click.option(
                "--out",
                "out_dir",
                required=True,
                type=click.Path(file_okay=False),
                help="Run folder: metrics.jsonl, PNG, checkpoint-<step>/, final/ (plain HF checkpoint).",
            ),
            locomo_data_option(),
            click.option("--steps", type=int, default=100, show_default=True),
            click.option(
                "--lr", type=float, default=None, help="Learning rate (sft 1e-5, RL 1e-6 by default)."
            ),
            click.option("--lora-r", type=int, default=None, help="LoRA rank (default 16)."),
            click.option("--full", is_flag=True, help="Full fine-tuning instead of LoRA."),
            embedder_option(),
            dtype_option(
                "Weights dtype. auto: bfloat16 weights on CUDA; on a CPU with native bf16 "
                "(AVX512_BF16/AMX) float32 weights + bfloat16 autocast for prefill and training "
                "passes; else float32. An explicit dtype: those weights, no autocast."
            ),
            click.option(
                "--micro-batch-size",
                type=click.IntRange(min=1),
                default=None,
                help="Rows per forward/backward (sft: examples; train: rollouts); gradients accumulate "
                "to the same update; lowers peak memory (default: the whole batch at once).",
            ),
            click.option("--no-progress", is_flag=True, help="No progress bar (logs to files, CI)."),
        ],
    )
