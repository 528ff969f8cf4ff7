"""The ``memory-r1`` command line (L4). Library errors become clean ``ClickException``s."""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import click

from memory_r1.config import DEFAULT_MODEL, ModelConfig, SystemConfig
from memory_r1.errors import ConfigError, MemoryR1Error


def _fail(err: MemoryR1Error) -> click.ClickException:
    return click.ClickException(str(err))


@click.group()
@click.version_option(package_name="memory-r1")
def main() -> None:
    """Memory-R1: a memory bank run by a learned Memory Manager and Answer Agent."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@main.group("eval")
def eval_group() -> None:
    """Evaluate on a benchmark."""


def model_options(f):
    opts = [
        click.option(
            "--backend",
            type=click.Choice(["llamacpp", "openai", "hf"]),
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
        click.option("--embedder", default="minilm", show_default=True, help="minilm | hash"),
        click.option("--no-distill", is_flag=True, help="Answer without the memory-selection step."),
        click.option("--unconstrained", is_flag=True, help="No schema-constrained decoding."),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


def system_config(store_path: str, **o: Any) -> tuple[SystemConfig, dict[str, Any] | None]:
    """The pipeline's config and the shipped adapters it uses (None: ``--untrained``, or no
    role on the default model through llama.cpp)."""
    from memory_r1.agents.system import with_shipped_adapters

    llm = ModelConfig(backend=o["backend"], model=o["model"], base_url=o["base_url"])
    ckpt = lambda p: ModelConfig(backend="hf", model=p) if p else None  # noqa: E731
    cfg = SystemConfig(
        llm=llm,
        manager_llm=ckpt(o["manager_ckpt"]),
        answer_llm=ckpt(o["answer_ckpt"]),
        embedder=o["embedder"],
        store_path=store_path,
        distill=not o["no_distill"],
        constrained=not o["unconstrained"],
    )
    if o["untrained"]:
        return (cfg if o["answer_k"] is None else replace(cfg, answer_k=o["answer_k"])), None
    return with_shipped_adapters(cfg, o["answer_k"])


@eval_group.command("locomo")
@click.option(
    "--data",
    type=click.Path(dir_okay=False),
    default=None,
    help="LoCoMo JSON (default: ../shared/data/locomo10.json or $MEMORY_R1_LOCOMO).",
)
@click.option(
    "--split", type=click.Choice(["train", "validation", "test"]), default="test", show_default=True
)
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
    help="Run folder (default runs/locomo-<split>-<model>). Re-running resumes it.",
)
@click.option("--fresh", is_flag=True, help="Delete the run folder's previous results first.")
@click.option(
    "--judge-model", default=None, help="LLM-as-judge model (same forms as --model); off by default."
)
@click.option("--judge-backend", type=click.Choice(["llamacpp", "openai", "hf"]), default="llamacpp")
@click.option("--judge-base-url", default=None)
@click.option("--judge-runs", type=int, default=1, show_default=True)
@click.option("--no-progress", is_flag=True)
@model_options
def eval_locomo(
    data: str | None,
    split: str,
    conversations: tuple[str, ...],
    max_sessions: int | None,
    max_turns: int | None,
    max_questions: int | None,
    all_questions: bool,
    out_dir: str | None,
    fresh: bool,
    judge_model: str | None,
    judge_backend: str,
    judge_base_url: str | None,
    judge_runs: int,
    no_progress: bool,
    **model_opts: Any,
) -> None:
    """Build memory banks for LoCoMo conversations, answer their questions, score them."""
    from memory_r1.data.locomo import load_locomo, select
    from memory_r1.eval.report import render_table
    from memory_r1.eval.runner import EvalLimits, LocomoEval

    try:
        convs = load_locomo(data)
        chosen = select(convs, split=None if conversations else split, sample_ids=conversations or None)
        model_tag = Path(model_opts["model"]).stem if model_opts["model"] else "model"
        out = Path(out_dir or f"runs/locomo-{split}-{model_tag}")
        cfg, adapters = system_config(str(out / "store.sqlite"), **model_opts)
        if adapters and not out_dir:  # the trained system never resumes an untrained run
            out = out.with_name(out.name + "-trained")
            cfg = replace(cfg, store_path=str(out / "store.sqlite"))
        if fresh and out.exists():
            for name in (
                "store.sqlite",
                "store.sqlite-wal",
                "store.sqlite-shm",
                "ingest.jsonl",
                "predictions.jsonl",
                "scores.json",
                "report.md",
                "run.json",
            ):
                (out / name).unlink(missing_ok=True)
        out.mkdir(parents=True, exist_ok=True)
        _check_same_system(out, adapters)
        from memory_r1.agents.system import build_models, build_pipeline

        t0 = time.perf_counter()
        models = build_models(cfg)
        pipeline = build_pipeline(cfg, models)
        judge = None
        if judge_model:
            from memory_r1.eval.judge import Judge
            from memory_r1.llm import create_model

            jm = ModelConfig(backend=judge_backend, model=judge_model, base_url=judge_base_url)
            judge = Judge(create_model(jm.backend, **jm.kwargs()), runs=judge_runs)
        run_config = {
            "split": split,
            "conversations": [c.sample_id for c in chosen],
            "data": {"path": str(data or "default"), "sha256": _data_sha256(data)},
            "system": _describe(cfg, models),
            "adapters": adapters,
            "judge": judge.describe() if judge else None,
            "load_s": round(time.perf_counter() - t0, 2),
            "argv": sys.argv[1:],
        }
        limits = EvalLimits(
            max_sessions=max_sessions,
            max_turns=max_turns,
            max_questions=max_questions,
            answerable_only=not all_questions,
        )
        runner = LocomoEval(pipeline, out, judge=judge, progress=not no_progress, run_config=run_config)
        scores = runner.run(chosen, limits)
    except MemoryR1Error as err:
        raise _fail(err) from err
    click.echo(render_table(scores))
    click.echo(f"\nwrote {out}/predictions.jsonl, scores.json, report.md")


def _check_same_system(out: Path, adapters: dict[str, Any] | None) -> None:
    """Refuse to resume a run folder that another system (trained / untrained) started."""
    try:
        before = json.loads((out / "run.json").read_text()).get("adapters")
    except (OSError, ValueError):
        return
    sha = lambda a: {k: v.get("sha256") for k, v in (a or {}).items()}  # noqa: E731
    if sha(before) != sha(adapters):
        raise ConfigError(
            f"{out} holds a run of another system (adapters {sha(before) or 'none'}, "
            f"now {sha(adapters) or 'none'}): pass --fresh or another --out"
        )


def _data_sha256(data: str | None) -> str | None:
    from memory_r1.data.locomo import default_path, sha256_of

    try:
        return sha256_of(data or default_path())
    except OSError:
        return None


def _describe(cfg: SystemConfig, models: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "embedder": cfg.embedder,
        "related_k": cfg.related_k,
        "answer_k": cfg.answer_k,
        "distill": cfg.distill,
        "constrained": cfg.constrained,
    }
    for role, m in models.items():
        describe = getattr(m, "describe", None)
        out[f"{role}_model"] = describe() if callable(describe) else {"name": m.name}
    return out


# ------------------------------------------------------------------------------------- training


def _training_options(f):
    opts = [
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
        click.option(
            "--data",
            type=click.Path(dir_okay=False),
            default=None,
            help="LoCoMo JSON (default: ../shared/data/locomo10.json or $MEMORY_R1_LOCOMO).",
        ),
        click.option("--steps", type=int, default=100, show_default=True),
        click.option("--lr", type=float, default=None, help="Learning rate (sft 1e-5, RL 1e-6 by default)."),
        click.option("--lora-r", type=int, default=None, help="LoRA rank (default 16)."),
        click.option("--full", is_flag=True, help="Full fine-tuning instead of LoRA."),
        click.option("--embedder", default="minilm", show_default=True, help="minilm | hash"),
        click.option(
            "--dtype",
            type=click.Choice(["auto", "bfloat16", "float32", "float16"]),
            default="auto",
            show_default=True,
            help="Weights dtype. auto: bfloat16 weights on CUDA; on a CPU with native bf16 "
            "(AVX512_BF16/AMX) float32 weights + bfloat16 autocast for prefill and training "
            "passes; else float32. An explicit dtype: those weights, no autocast.",
        ),
        click.option(
            "--micro-batch-size",
            type=click.IntRange(min=1),
            default=None,
            help="Rows per forward/backward (sft: examples; train: rollouts); gradients accumulate "
            "to the same update; lowers peak memory (default: the whole batch at once).",
        ),
        click.option("--no-progress", is_flag=True, help="No progress bar (logs to files, CI)."),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


@main.command("sft")
@_training_options
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
def sft_cmd(
    model: str,
    out_dir: str,
    data: str | None,
    steps: int,
    lr: float | None,
    lora_r: int | None,
    full: bool,
    embedder: str,
    dtype: str,
    micro_batch_size: int | None,
    no_progress: bool,
    roles: str,
    teacher_jsonl: str | None,
    batch_size: int,
    max_tokens: int | None,
    answer_k: int,
) -> None:
    """Memory-SFT: clone LoCoMo train-split annotations (conv-26), the warm start before RL."""
    from memory_r1.rl import run

    try:
        final = run.run_sft(
            model,
            out_dir,
            data=data,
            roles=[r.strip() for r in roles.split(",") if r.strip()],
            teacher_jsonl=teacher_jsonl,
            steps=steps,
            batch_size=batch_size,
            lr=1e-5 if lr is None else lr,
            lora_r=run.lora_rank(lora_r, full),
            embedder=embedder,
            max_tokens=max_tokens,
            dtype=dtype,
            micro_batch_size=micro_batch_size,
            progress=not no_progress,
            answer_k=answer_k,
        )
    except MemoryR1Error as err:
        raise _fail(err) from err
    click.echo(f"wrote {out_dir}/metrics.jsonl, tb/, sft_loss.png; model: {final}")


@main.command("train")
@click.argument("agent", type=click.Choice(["answer-agent", "memory-manager"]))
@click.option("--algo", type=click.Choice(["ppo", "grpo"]), required=True)
@_training_options
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
@click.option(
    "--bank-backend",
    type=click.Choice(["llamacpp", "openai", "hf"]),
    default="llamacpp",
    show_default=True,
    help="Backend of the untrained pipeline that builds banks/snapshots.",
)
@click.option("--bank-model", default=DEFAULT_MODEL, show_default=True)
@click.option(
    "--answer-backend",
    type=click.Choice(["llamacpp", "openai", "hf"]),
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
def train_cmd(
    agent: str,
    algo: str,
    model: str,
    out_dir: str,
    data: str | None,
    steps: int,
    lr: float | None,
    lora_r: int | None,
    full: bool,
    embedder: str,
    dtype: str,
    micro_batch_size: int | None,
    no_progress: bool,
    group_size: int | None,
    batch_size: int,
    beta: float,
    max_new_tokens: int | None,
    save_every: int,
    resume: bool,
    bank_backend: str,
    bank_model: str,
    answer_backend: str | None,
    answer_model: str | None,
    answer_lora: str | None,
    base_url: str | None,
    bank_source: str,
    answer_k: int,
    validate_every: int,
    val_questions: int | None,
    val_batch_size: int,
    reward: str,
    temperature: float,
    dynamic_sampling: bool,
    max_draw_factor: float,
    require_evidence: bool,
    agg: str | None,
    epochs: int,
    minibatches: int,
) -> None:
    """RL-train the Answer Agent or the Memory Manager with PPO or GRPO on the train split."""
    from memory_r1.rl import run

    try:
        banks = ModelConfig(backend=bank_backend, model=bank_model, base_url=base_url)
        answer = run.frozen_answer_model(
            answer_model or model,
            backend=answer_backend,
            base_url=base_url if answer_backend == "openai" else None,
            lora=answer_lora,
        )
        options = run.RLOptions(
            reward=reward,
            temperature=temperature,
            dynamic_sampling=dynamic_sampling,
            max_draw_factor=max_draw_factor,
            require_evidence=require_evidence,
            agg=agg,
            epochs=epochs,
            minibatches=minibatches,
        )
        final = run.run_train(
            agent,
            algo,
            model,
            out_dir,
            data=data,
            steps=steps,
            group_size=group_size,
            batch_size=batch_size,
            lr=1e-6 if lr is None else lr,
            beta=beta,
            lora_r=run.lora_rank(lora_r, full),
            embedder=embedder,
            resume=resume,
            max_new_tokens=max_new_tokens,
            save_every=save_every,
            bank_model=banks,
            answer_model=answer,
            dtype=dtype,
            bank_source=bank_source,
            answer_k=answer_k,
            validate_every=validate_every,
            val_questions=val_questions,
            micro_batch_size=micro_batch_size,
            progress=not no_progress,
            options=options,
            val_batch_size=val_batch_size,
        )
    except MemoryR1Error as err:
        raise _fail(err) from err
    best = ", best/ and validation.json" if validate_every else ""
    click.echo(f"wrote {out_dir}/metrics.jsonl, tb/, metrics.png{best}; model: {final}")


@eval_group.command("answer-agent")
@click.option(
    "--model", required=True, help="Answer Agent: HF checkpoint dir or catalogue name (transformers backend)."
)
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False),
    help="Folder for predictions.jsonl, scores.json and the banks.",
)
@click.option(
    "--split", type=click.Choice(["validation", "train", "test"]), default="validation", show_default=True
)
@click.option(
    "--data",
    type=click.Path(dir_okay=False),
    default=None,
    help="LoCoMo JSON (default: ../shared/data/locomo10.json or $MEMORY_R1_LOCOMO).",
)
@click.option(
    "--bank-source",
    type=click.Choice(["observations", "pipeline"]),
    default="observations",
    show_default=True,
    help="Banks replayed from LoCoMo observations, or built by the untrained pipeline.",
)
@click.option(
    "--bank-backend",
    type=click.Choice(["llamacpp", "openai", "hf"]),
    default="llamacpp",
    show_default=True,
    help="pipeline banks: backend of the bank-building model.",
)
@click.option(
    "--bank-model", default=DEFAULT_MODEL, show_default=True, help="pipeline banks: the bank-building model."
)
@click.option("--base-url", default=None, help="OpenAI-compatible endpoint for an openai bank backend.")
@click.option("--answer-k", type=int, default=30, show_default=True, help="Memories retrieved per speaker.")
@click.option("--max-questions", type=int, default=None, help="At most N questions per conversation.")
@click.option(
    "--batch-size", type=int, default=16, show_default=True, help="Prompts per greedy decoding call."
)
@click.option(
    "--dtype",
    type=click.Choice(["auto", "bfloat16", "float32", "float16"]),
    default="auto",
    show_default=True,
    help="auto: bfloat16 weights on CUDA; float32 weights + bfloat16 autocast on a CPU "
    "with native bf16; else float32.",
)
@click.option("--embedder", default="minilm", show_default=True, help="minilm | hash")
@click.option("--no-progress", is_flag=True)
def eval_answer_agent_cmd(
    model: str,
    out_dir: str,
    split: str,
    data: str | None,
    bank_source: str,
    bank_backend: str,
    bank_model: str,
    base_url: str | None,
    answer_k: int,
    max_questions: int | None,
    batch_size: int,
    dtype: str,
    embedder: str,
    no_progress: bool,
) -> None:
    """Greedy Answer-Agent F1/BLEU-1/EM on a split, as the training validation scores it."""
    from memory_r1.eval.report import render_table
    from memory_r1.rl import run

    try:
        banks = ModelConfig(backend=bank_backend, model=bank_model, base_url=base_url)
        scores = run.eval_answer_agent(
            model,
            out_dir,
            split=split,
            data=data,
            bank_source=bank_source,
            answer_k=answer_k,
            max_questions=max_questions,
            dtype=dtype,
            embedder=embedder,
            bank_model=banks,
            batch_size=batch_size,
            progress=not no_progress,
        )
    except MemoryR1Error as err:
        raise _fail(err) from err
    click.echo(render_table(scores))
    o = scores["scores"]["overall"]
    click.echo(f"\noverall F1 {o['f1']:.2f}  BLEU-1 {o['bleu1']:.2f}  EM {o['em']:.2f}  (n={o['n']})")
    click.echo(f"wrote {out_dir}/predictions.jsonl, scores.json")


@eval_group.command("memory-manager")
@click.option(
    "--model",
    default=None,
    help="Memory Manager: HF checkpoint dir or catalogue name "
    "(transformers backend); omit to score the trivial policies only.",
)
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False),
    help="Folder for episodes.jsonl and scores.json.",
)
@click.option(
    "--split", type=click.Choice(["validation", "train", "test"]), default="validation", show_default=True
)
@click.option(
    "--data",
    type=click.Path(dir_okay=False),
    default=None,
    help="LoCoMo JSON (default: ../shared/data/locomo10.json or $MEMORY_R1_LOCOMO).",
)
@click.option(
    "--bank-source",
    type=click.Choice(["observations", "pipeline"]),
    default="observations",
    show_default=True,
    help="Episodes over the teacher bank (winnable), or the untrained pipeline's snapshots.",
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
@click.option("--answer-backend", type=click.Choice(["llamacpp", "openai", "hf"]), default=None)
@click.option("--base-url", default=None, help="OpenAI-compatible endpoint for an openai Answer Agent.")
@click.option("--answer-k", type=int, default=10, show_default=True, help="Memories retrieved per speaker.")
@click.option("--reward", type=click.Choice(["em", "f1", "em+f1"]), default="f1", show_default=True)
@click.option("--max-episodes", type=int, default=None, help="Score only the first N episodes.")
@click.option(
    "--dtype",
    type=click.Choice(["auto", "bfloat16", "float32", "float16"]),
    default="auto",
    show_default=True,
)
@click.option("--embedder", default="minilm", show_default=True, help="minilm | hash")
def eval_memory_manager_cmd(
    model: str | None,
    out_dir: str,
    split: str,
    data: str | None,
    bank_source: str,
    answer_model: str,
    answer_lora: str | None,
    answer_backend: str | None,
    base_url: str | None,
    answer_k: int,
    reward: str,
    max_episodes: int | None,
    dtype: str,
    embedder: str,
) -> None:
    """Memory-Manager reward on a split's episodes beside always-ADD and always-NOOP."""
    from memory_r1.rl import run

    try:
        answer = run.frozen_answer_model(
            answer_model, backend=answer_backend, base_url=base_url, lora=answer_lora
        )
        r = run.eval_memory_manager(
            model,
            out_dir,
            answer_model=answer,
            split=split,
            data=data,
            bank_source=bank_source,
            answer_k=answer_k,
            reward=reward,
            max_episodes=max_episodes,
            dtype=dtype,
            embedder=embedder,
        )
    except MemoryR1Error as err:
        raise _fail(err) from err
    click.echo(
        f"{r['episodes']} episodes ({r['facts']} facts): winnable {100 * r['winnable']:.1f} %, "
        f"decisive {100 * r['decisive']:.1f} %"
    )
    click.echo(f"mean reward: always-ADD {r['trivial']['add']:.4f}  always-NOOP {r['trivial']['noop']:.4f}")
    if "model" in r:
        m = r["model"]
        click.echo(
            f"{model}: {m['val_reward']:.4f}  invalid {100 * m['val_invalid_rate']:.1f} %  ops {m['counts']}"
        )
    click.echo(f"wrote {out_dir}/episodes.jsonl, scores.json")


@main.command("export")
@click.argument("kind", type=click.Choice(["adapter"]))
@click.option(
    "--model", "trained", required=True, help="Trained checkpoint: HF dir (merged) or a PEFT adapter dir."
)
@click.option("--base", default=DEFAULT_MODEL, show_default=True, help="The base it was trained over.")
@click.option("--rank", type=int, default=8, show_default=True, help="LoRA rank of the export (SVD).")
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False),
    help="Adapter folder: adapter.gguf, adapter_model.safetensors, adapter_config.json, cards.",
)
@click.option(
    "--name",
    type=click.Choice(["memory", "answer"]),
    default=None,
    help="Write card.json + CARD.md for this shipped adapter name.",
)
@click.option(
    "--answer-k", type=int, default=None, help="Card: memories per speaker the Answer Agent was trained with."
)
@click.option(
    "--scores",
    "scores_file",
    type=click.Path(dir_okay=False, exists=True),
    multiple=True,
    help="Card: JSON files of validation scores to embed (repeatable).",
)
@click.option("--command", "commands", multiple=True, help="Card: a command that made it (repeatable).")
def export_cmd(
    kind: str,
    trained: str,
    base: str,
    rank: int,
    out_dir: str,
    name: str | None,
    answer_k: int | None,
    scores_file: tuple[str, ...],
    commands: tuple[str, ...],
) -> None:
    """Export a trained checkpoint as a LoRA adapter (GGUF for llama.cpp + PEFT) with its card."""
    from memory_r1.rl.adapter_export import export_adapter, write_card

    try:
        summary = export_adapter(trained, base, out_dir, rank)
        if name:
            scores = {}
            for f in scores_file:
                try:
                    scores[Path(f).parent.name + "/" + Path(f).name] = json.loads(Path(f).read_text())
                except ValueError as e:
                    raise ConfigError(f"{f}: not JSON ({e})") from e
            role = {"memory": "fact extraction + Memory Manager", "answer": "Answer Agent"}[name]
            write_card(
                out_dir,
                name=name,
                role=role,
                base_model=base,
                rank=rank,
                summary=summary,
                pipeline={"answer_k": answer_k} if answer_k else {},
                scores=scores,
                commands=list(commands),
                trained_from=trained,
            )
    except (MemoryR1Error, KeyError, ValueError) as err:
        raise click.ClickException(str(err)) from err
    click.echo(json.dumps(summary, indent=2))


# ``memory-r1 bench ...``: registered last, because memory_r1.bench.cli imports this module.
from memory_r1.bench.cli import bench  # noqa: E402

main.add_command(bench)


if __name__ == "__main__":  # pragma: no cover
    main()
