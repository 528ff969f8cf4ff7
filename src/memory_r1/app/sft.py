"""``memory-r1 sft``: Memory-SFT on the train split, the warm start before RL.

Examples from LoCoMo annotations of the **train split** (``roles``), plus the rows of
``teacher_jsonl`` when given; trains; ``out/metrics.jsonl``, ``out/tb/``, ``out/sft_loss.png``,
``out/checkpoint-<steps>``; returns ``out/final``, a plain HF checkpoint (safetensors, LoRA
merged) that ``HFModel`` / ``--answer-agent`` / ``--memory-manager`` load.
``micro_batch_size``: examples per forward/backward (gradient accumulation: the same update as
the whole batch at once, lower peak memory); None = the whole batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from memory_r1.app import policy as P
from memory_r1.app.common import DEFAULT_LORA_R, lora_rank, same_named
from memory_r1.errors import ConfigError


@dataclass(frozen=True)
class SftRun:
    """One ``memory-r1 sft`` run."""

    model: str
    out: str
    data: str | None = None
    roles: tuple[str, ...] = ("extract", "manager", "answer")
    teacher_jsonl: str | None = None
    steps: int = 100
    batch_size: int = 8
    lr: float = 1e-5
    lora_r: int | None = DEFAULT_LORA_R
    embedder: str = "minilm"
    max_tokens: int | None = None
    seed: int = 0
    dtype: str = "auto"
    progress: bool = True
    micro_batch_size: int | None = None
    answer_k: int = 10

    @classmethod
    def from_options(cls, **o: Any) -> SftRun:
        """From the ``sft`` command's click parameters (``--lr`` None: 1e-5)."""
        return cls(
            **{
                **same_named(cls, o),
                "out": o["out_dir"],
                "roles": tuple(r.strip() for r in o["roles"].split(",") if r.strip()),
                "lr": 1e-5 if o["lr"] is None else o["lr"],
                "lora_r": lora_rank(o["lora_r"], o["full"]),
                "progress": not o["no_progress"],
            }
        )


def _examples(run: SftRun) -> list[Any]:
    """SFT examples of ``run.roles``: train-split annotations, then the teacher rows.

    Answer examples show the top ``answer_k`` memories per speaker of the observation bank
    (``out/banks-observations.sqlite``), retrieved as RL and ``eval answer-agent`` retrieve
    them: train with the ``--answer-k`` you will evaluate with.
    """
    from memory_r1.rl.envs.builders import answer_banks, split_convs
    from memory_r1.rl.sft.data import ROLES as SFT_ROLES
    from memory_r1.rl.sft.data import build_sft_examples, from_teacher_jsonl
    from memory_r1.store import create_embedder

    roles = run.roles
    bad = set(roles) - set(SFT_ROLES)
    if bad or not roles:
        raise ConfigError(f"--roles must be a subset of {','.join(SFT_ROLES)}, got {','.join(roles)}")
    if run.answer_k < 1:
        raise ConfigError("--answer-k must be >= 1")
    convs, emb = split_convs(run.data, "train"), create_embedder(run.embedder)
    store = answer_banks(convs, Path(run.out), emb, "observations") if "answer" in roles else None
    examples = build_sft_examples(
        convs, roles, run.seed, embedder=emb, answer_k=run.answer_k, answer_store=store
    )
    if run.teacher_jsonl:
        try:
            examples += [ex for ex in from_teacher_jsonl(run.teacher_jsonl) if ex.role in roles]
        except (OSError, ValueError) as e:
            raise ConfigError(f"--teacher-jsonl: {e}") from e
    if not examples:
        raise ConfigError("no SFT example for these roles")
    return examples


def run_sft(run: SftRun) -> Path:
    """Memory-SFT on the train split (+ teacher rows); returns ``out/final``."""
    from memory_r1.rl.sft.train import sft_train

    examples = _examples(run)
    policy = P.load_policy(run.model, lora_r=run.lora_r, reference=False, dtype=run.dtype, seed=run.seed)
    try:
        sft_train(
            policy,
            examples,
            run.steps,
            run.batch_size,
            run.lr,
            run.out,
            seed=run.seed,
            max_tokens=run.max_tokens,
            progress=run.progress,
            micro_batch_size=run.micro_batch_size,
        )
    except ValueError as e:
        raise ConfigError(str(e)) from e
    return P.export_final(policy, Path(run.out) / "final")
