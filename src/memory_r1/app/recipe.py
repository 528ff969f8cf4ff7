"""The pieces of an RL run: the recipe flags, the algorithm config, environments, validator.

Every non-trained LLM is built by :func:`memory_r1.rl.envs.builders.make_chat_model` (tests
monkeypatch it). Impossible settings raise :class:`~memory_r1.errors.ConfigError`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from memory_r1.config import ModelConfig
from memory_r1.errors import ConfigError

ROLES = ("answer-agent", "memory-manager")
ALGOS = ("ppo", "grpo")


@dataclass(frozen=True)
class RLOptions:
    """The RL recipe beyond model, data and budget (the CLI's ``train`` flags).

    ``reward``: ``em`` (the paper's), ``f1`` or ``em+f1`` (:mod:`memory_r1.rl.envs.rewards`);
    ``temperature``: rollout sampling temperature (paper 1.0); ``dynamic_sampling``: drop
    groups whose rewards tie and draw more prompts, up to ``max_draw_factor`` x the batch;
    ``require_evidence``: Answer-Agent episodes only for questions whose evidence is among the
    shown memories; ``agg`` / ``scale`` / ``epochs`` / ``minibatches``: the loss aggregation,
    GRPO's advantage scale, and the update's passes over each batch.
    """

    reward: str = "em"
    temperature: float = 1.0
    dynamic_sampling: bool = False
    max_draw_factor: float = 3.0
    require_evidence: bool = False
    agg: str | None = None  # None: the algorithm's default
    scale: str = "group"
    epochs: int = 1
    minibatches: int = 1


def algo_config(
    algo: str,
    *,
    group_size: int | None,
    lr: float,
    beta: float,
    micro_batch_size: int | None = None,
    options: RLOptions = RLOptions(),
) -> Any:
    """``GRPOConfig`` (G = ``group_size``, default 8) or ``PPOConfig`` (samples per prompt)."""
    from memory_r1.rl.algorithms.grpo import GRPOConfig
    from memory_r1.rl.algorithms.ppo import PPOConfig

    if algo not in ALGOS:
        raise ConfigError(f"unknown --algo {algo!r}: choose one of {', '.join(ALGOS)}")
    common: dict[str, Any] = {
        "lr": lr,
        "beta": beta,
        "micro_batch_size": micro_batch_size,
        "num_epochs": options.epochs,
        "num_minibatches": options.minibatches,
    }
    if options.agg is not None:
        common["agg"] = options.agg
    try:
        if algo == "grpo":
            group = 8 if group_size is None else group_size
            return GRPOConfig(group_size=group, scale=options.scale, **common)  # type: ignore[arg-type]
        return PPOConfig(samples_per_prompt=group_size or 1, **common)
    except ValueError as e:
        raise ConfigError(f"--algo {algo}: {e}") from e


def build_envs(
    role: str,
    train: Sequence[Any],
    val: Sequence[Any],
    out: Path,
    emb: Any,
    *,
    bank_source: str,
    answer_k: int,
    bank_model: ModelConfig,
    answer_model: ModelConfig,
    options: RLOptions,
) -> tuple[Any, Any | None]:
    """(training env, validation env or None): banks / snapshots for both splits built at once.

    ``answer-agent``: :class:`AnswerEnv` (``answer_k`` memories per speaker) over banks from
    ``bank_source`` (:mod:`memory_r1.rl.envs.builders`: the untrained pipeline on ``bank_model`` in
    ``out/banks.sqlite``, or LoCoMo observations in ``out/banks-observations.sqlite``).
    ``memory-manager``: snapshots cached in ``out/snapshots.jsonl`` and :class:`ManagerEnv`
    rewarded by a frozen Answer Agent on ``answer_model``. The validation env never filters
    (it scores every question) and uses the same reward.
    """
    from memory_r1.rl.envs import builders as E

    if role == "answer-agent":
        store = E.answer_banks([*train, *val], out, emb, bank_source, bank_model)
        env = E.answer_env(
            train, store, answer_k, reward=options.reward, require_evidence=options.require_evidence
        )
        return env, (E.answer_env(val, store, answer_k, reward=options.reward) if val else None)
    from memory_r1.agents.answer import AnswerAgent

    snaps, emb = E.snapshots_for([*train, *val], out, emb, bank_source, bank_model)
    agent = AnswerAgent(E.make_chat_model(answer_model))
    return (
        E.manager_env(train, snaps, agent, emb, answer_k, reward=options.reward),
        E.manager_env(val, snaps, agent, emb, answer_k, reward=options.reward) if val else None,
    )


def make_validator(role: str, env: Any, out: Path, limit: int | None, batch_size: int) -> Any:
    """Greedy validation of ``role`` on ``env`` (at most ``limit`` episodes), best step -> out/best."""
    from memory_r1.rl import validate as V

    if role == "answer-agent":
        return V.Validator(
            lambda p: V.answer_validation(p, env, max_questions=limit, batch_size=batch_size),
            out,
            V.ANSWER_KEY,
        )
    return V.Validator(
        lambda p: V.manager_validation(p, env, max_episodes=limit, batch_size=batch_size), out, V.MANAGER_KEY
    )
