"""``memory-r1 train``: RL-train the Answer Agent or the Memory Manager end to end.

:func:`run_train` builds the environments of :func:`memory_r1.app.recipe.build_envs` over the
train split, then :class:`Trainer` (``resume``: from ``latest_checkpoint(out)``), final
``checkpoint-<step>``, ``out/metrics.png``, ``out/tb/``, ``out/run_config.json`` and
``out/final`` (a plain HF checkpoint, LoRA merged); returns ``out/final``.
``validate_every=N`` adds greedy validation on the validation split (conv-30; banks/snapshots
built the same way, ``val_questions`` caps the episodes) at step 0, every N steps and at the
end: ``val_*`` columns, ``out/validation.json``, the best step in ``out/best``
(:mod:`memory_r1.rl.validate`). ``micro_batch_size``: rollouts per forward/backward in updates
(gradient accumulation: the same update, lower peak memory); None = the whole (mini)batch.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from memory_r1.app import policy as P
from memory_r1.app.common import DEFAULT_LORA_R, frozen_answer_model, lora_rank, same_named
from memory_r1.app.recipe import ROLES, RLOptions, algo_config, build_envs, make_validator
from memory_r1.config import ModelConfig
from memory_r1.errors import ConfigError


@dataclass(frozen=True)
class TrainRun:
    """One ``memory-r1 train`` run.

    ``answer_model``: the frozen Answer Agent of Manager training (None: ``model`` itself,
    through :func:`~memory_r1.app.common.frozen_answer_model`). ``max_new_tokens`` None: the
    agent's own budget.
    """

    role: str
    algo: str
    model: str
    out: str
    data: str | None = None
    steps: int = 100
    group_size: int | None = None
    batch_size: int = 16
    lr: float = 1e-6
    beta: float = 0.01
    lora_r: int | None = DEFAULT_LORA_R
    embedder: str = "minilm"
    resume: bool = False
    max_new_tokens: int | None = None
    save_every: int = 0
    seed: int = 0
    bank_model: ModelConfig = field(default_factory=ModelConfig)
    answer_model: ModelConfig | None = None
    dtype: str = "auto"
    bank_source: str = "pipeline"
    answer_k: int = 30
    validate_every: int = 0
    val_questions: int | None = None
    progress: bool = True
    micro_batch_size: int | None = None
    options: RLOptions = field(default_factory=RLOptions)
    val_batch_size: int = 16

    @classmethod
    def from_options(cls, **o: Any) -> TrainRun:
        """From the ``train`` command's click parameters (``--lr`` None: 1e-6)."""
        base_url, answer_backend = o["base_url"], o["answer_backend"]
        bank = ModelConfig(backend=o["bank_backend"], model=o["bank_model"], base_url=base_url)
        answer = frozen_answer_model(
            o["answer_model"] or o["model"],
            backend=answer_backend,
            base_url=base_url if answer_backend == "openai" else None,
            lora=o["answer_lora"],
        )
        options = RLOptions(**same_named(RLOptions, o))
        return cls(
            **{
                **same_named(cls, o),
                "role": o["agent"],
                "out": o["out_dir"],
                "lr": 1e-6 if o["lr"] is None else o["lr"],
                "lora_r": lora_rank(o["lora_r"], o["full"]),
                "bank_model": bank,
                "answer_model": answer,
                "options": options,
                "progress": not o["no_progress"],
            }
        )


def _configs(run: TrainRun) -> tuple[Any, Any]:
    """(algorithm config, trainer config); impossible settings raise ConfigError."""
    from memory_r1.rl.algorithms.trainer import TrainConfig

    if run.role not in ROLES:
        raise ConfigError(f"unknown agent {run.role!r}: choose one of {', '.join(ROLES)}")
    if run.val_questions is not None and run.val_questions < 1:
        raise ConfigError("--val-questions must be >= 1")
    acfg = algo_config(
        run.algo,
        group_size=run.group_size,
        lr=run.lr,
        beta=run.beta,
        micro_batch_size=run.micro_batch_size,
        options=run.options,
    )
    try:
        tcfg = TrainConfig(
            steps=run.steps,
            prompts_per_step=run.batch_size,
            max_new_tokens=run.max_new_tokens,
            seed=run.seed,
            out_dir=str(run.out),
            save_every=run.save_every,
            validate_every=run.validate_every,
            progress=run.progress,
            temperature=run.options.temperature,
            dynamic_sampling=run.options.dynamic_sampling,
            max_draw_factor=run.options.max_draw_factor,
        )
    except ValueError as e:
        raise ConfigError(str(e)) from e
    return acfg, tcfg


def _environments(run: TrainRun, out: Path) -> tuple[Any, Any | None]:
    """(training env, validation env or None) over the train / validation splits."""
    from memory_r1.rl.envs.builders import split_convs
    from memory_r1.store import create_embedder

    train = split_convs(run.data, "train")
    val = split_convs(run.data, "validation") if run.validate_every else []
    try:
        return build_envs(
            run.role,
            train,
            val,
            out,
            create_embedder(run.embedder),
            bank_source=run.bank_source,
            answer_k=run.answer_k,
            bank_model=run.bank_model,
            answer_model=run.answer_model or frozen_answer_model(run.model),
            options=run.options,
        )
    except ValueError as e:  # no episode in the data
        raise ConfigError(str(e)) from e


def _write_run_config(run: TrainRun, out: Path, policy: Any, acfg: Any, tcfg: Any) -> None:
    config = {
        "role": run.role,
        "algo": run.algo,
        "model": run.model,
        "steps": run.steps,
        "group_size": run.group_size,
        "batch_size": run.batch_size,
        "lr": run.lr,
        "beta": run.beta,
        "lora_r": run.lora_r,
        "seed": run.seed,
        "answer_k": run.answer_k,
        "bank_source": run.bank_source,
        "embedder": run.embedder,
        "dtype": run.dtype,
        "autocast": str(policy.autocast).removeprefix("torch.") if policy.autocast else None,
        "options": asdict(run.options),
        "algo_config": asdict(acfg),
        "train_config": asdict(tcfg),
    }
    (out / "run_config.json").write_text(json.dumps(config, indent=2, default=str), encoding="utf-8")


def run_train(run: TrainRun) -> Path:
    """RL-train one agent (see the module docstring); returns ``out/final``."""
    from memory_r1.rl.algorithms.trainer import Trainer, latest_checkpoint, make_algorithm
    from memory_r1.rl.monitor import plot_metrics

    acfg, tcfg = _configs(run)
    out = Path(run.out)
    ckpt = latest_checkpoint(out) if out.exists() else None
    if not run.resume and (ckpt is not None or (out / "metrics.jsonl").exists()):
        raise ConfigError(f"{out} already holds a run: pass --resume or choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    env, val_env = _environments(run, out)
    if run.resume and ckpt is None:  # rows of a run that never checkpointed
        for name in ("metrics.jsonl", "validation.json"):
            (out / name).unlink(missing_ok=True)
    policy = P.load_policy(
        run.model,
        lora_r=run.lora_r,
        value_head=run.algo == "ppo",
        reference=run.beta > 0,
        dtype=run.dtype,
        seed=run.seed,
    )
    validator = None
    if val_env is not None:
        validator = make_validator(run.role, val_env, out, run.val_questions, run.val_batch_size)
    _write_run_config(run, out, policy, acfg, tcfg)
    trainer = Trainer(make_algorithm(policy, acfg), env, tcfg, validator=validator)
    if run.resume and ckpt is not None:
        trainer.resume(ckpt)
    trainer.train()
    trainer.save(out / f"checkpoint-{trainer.step}")
    keys = ("reward_mean", "kl", "loss") + ((validator.key[0],) if validator else ())
    plot_metrics(out / "metrics.jsonl", out / "metrics.png", keys=keys)
    return P.export_final(policy, out / "final")
