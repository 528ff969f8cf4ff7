"""One training loop for PPO and GRPO (L3): rollouts as a generator, the update apart from it.

::

    for batch in rollouts(env, algo, cfg, rng):     # sample -> score -> prepare (no grad)
        stats = algo.step(batch)                     # minibatch epochs of clipped updates
        log(stats); maybe save(checkpoint)

An :class:`Env` hands out prompts and scores completions; it knows nothing of torch. The
generator is lazy, so batch ``k + 1`` is sampled only after update ``k``: a checkpoint taken
between the two (weights, optimizer, step, every RNG state) resumes to the very same run.

``accelerate`` places the policy on its device and runs ``backward`` (mixed-precision
scaling). Multi-process DDP/FSDP is not wired yet: it needs ``prepare_model`` and an unwrapped
model for ``generate``. Metrics go to ``<out_dir>/metrics.jsonl``, one JSON object per step,
and to TensorBoard under ``<out_dir>/tb/`` (:mod:`memory_r1.rl.monitor`, whose
:func:`~memory_r1.rl.monitor.plot_metrics` draws the JSONL). A rich progress bar shows step
n/N, the last reward and the ETA unless ``progress=False``.

Validation (``validate_every=N`` and a :class:`~memory_r1.rl.validate.Validator`): greedy
validation before the first update (a row with ``step`` 0), after every N-th update and after
the last one; its ``val_*`` metrics join that step's row, and the validator keeps
``validation.json`` and the best step in ``<out_dir>/best``. Greedy decoding draws no random
numbers, so validating does not change the training run.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch

from memory_r1.llm.base import Prompt
from memory_r1.rl.algorithms.grpo import GRPO, GRPOConfig
from memory_r1.rl.algorithms.policy import Policy
from memory_r1.rl.algorithms.ppo import PPO, PPOConfig
from memory_r1.rl.algorithms.rollout_batch import Batch
from memory_r1.rl.monitor import MetricsLog, ProgressBar

if TYPE_CHECKING:
    from accelerate import Accelerator

    from memory_r1.rl.validate import Validator

Algorithm = PPO | GRPO


class Env(Protocol):
    """A single-turn environment. ``prompts`` returns ``(prompt, meta)`` pairs, the prompt as a
    :class:`Prompt` (rendered with the policy's chat template) or as final text; ``score``
    returns one reward per completion (higher is better), ``metas`` aligned with
    ``completions`` (each prompt's meta repeated for its samples). An env may also define
    ``stats() -> dict[str, float]``, read after each ``score`` (e.g. format failures)."""

    def prompts(self, batch_size: int, rng: random.Random) -> Sequence[tuple[str | Prompt, Any]]: ...

    def score(self, completions: list[str], metas: list[Any]) -> list[float]: ...


@dataclass(frozen=True)
class TrainConfig:
    """The loop's settings; rollouts per step = ``prompts_per_step x samples_per_prompt``."""

    steps: int = 100
    prompts_per_step: int = 16  # x G=8 = the paper's batch of 128
    max_new_tokens: int | None = None  # None: the env's ``budget`` (the agent's, at inference)
    temperature: float = 1.0  # the paper samples at 1.0 in training
    # Dynamic sampling (groups of G > 1 only): a group whose rewards all tie has no gradient,
    # so it is dropped and fresh prompts are drawn until the step holds ``prompts_per_step``
    # informative groups, or ``max_draw_factor x prompts_per_step`` prompts were drawn.
    dynamic_sampling: bool = False
    max_draw_factor: float = 3.0
    seed: int = 0
    out_dir: str | None = None  # metrics.jsonl and checkpoint-<step>/ go here
    save_every: int = 0  # 0 = only when save() is called
    validate_every: int = 0  # 0 = never; else at step 0, every N steps and at the end
    progress: bool = True  # a rich progress bar on the terminal
    tensorboard: bool = True  # scalars under <out_dir>/tb/ besides metrics.jsonl

    def __post_init__(self) -> None:
        if self.steps < 1 or self.prompts_per_step < 1 or (self.max_new_tokens or 1) < 1:
            raise ValueError("steps, prompts_per_step and max_new_tokens must be >= 1")
        if self.max_draw_factor < 1:
            raise ValueError("max_draw_factor must be >= 1 (1 = no extra prompts drawn)")
        if self.temperature <= 0:
            raise ValueError("temperature must be > 0 in training: greedy rollouts do not explore")
        if self.save_every < 0 or (self.save_every and self.out_dir is None):
            raise ValueError("save_every needs out_dir (and must be >= 0)")
        if self.validate_every < 0:
            raise ValueError("validate_every must be >= 0 (0 switches validation off)")


def make_algorithm(policy: Policy, cfg: PPOConfig | GRPOConfig) -> Algorithm:
    """The algorithm object for a config (the config type picks PPO or GRPO)."""
    return PPO(policy, cfg) if isinstance(cfg, PPOConfig) else GRPO(policy, cfg)


def _informative(rewards: torch.Tensor, n: int) -> torch.Tensor:
    """Per group of ``n`` rows: whether its rewards differ (a tied group has no gradient)."""
    grouped = rewards.view(-1, n)
    return (grouped != grouped[:, :1]).any(1)


def rollouts(env: Env, algo: Algorithm, cfg: TrainConfig, rng: random.Random) -> Iterator[Batch]:
    """Endless prepared batches: prompts -> samples -> rewards -> advantages (no gradients).

    Rollouts stop where the agent stops at inference (the env's ``stops``) within the env's
    ``budget`` (unless ``cfg.max_new_tokens``). With ``cfg.dynamic_sampling`` (and groups)
    tied groups are dropped and more prompts drawn (see :class:`TrainConfig`). Logged per
    step: ``prompts_drawn``, ``draws``, ``informative_frac`` (share of the drawn groups whose
    rewards differ) and the env's stats averaged over the draws.
    """
    policy, n = algo.policy, algo.samples_per_prompt
    stops = tuple(getattr(env, "stops", ()))
    budget = cfg.max_new_tokens or int(getattr(env, "budget", 256))
    dynamic = cfg.dynamic_sampling and n > 1
    limit = int(cfg.max_draw_factor * cfg.prompts_per_step) if dynamic else cfg.prompts_per_step
    stats_fn = getattr(env, "stats", None)
    while True:
        parts: list[Batch] = []
        kept = drawn = informative = draws = 0
        env_stats: dict[str, float] = {}
        last: Batch | None = None
        while kept < cfg.prompts_per_step and drawn < limit:
            want = min(cfg.prompts_per_step - kept, limit - drawn)
            items = env.prompts(want, rng)
            texts = [policy.render(p) if isinstance(p, Prompt) else p for p, _ in items]
            batch = policy.generate(texts, n, budget, cfg.temperature, stops)
            batch.metas = [meta for _, meta in items for _ in range(n)]
            rewards = env.score(batch.completions, batch.metas)
            batch.rewards = torch.tensor(rewards, dtype=torch.float32, device=policy.device)
            for k, v in (stats_fn() if stats_fn is not None else {}).items():
                env_stats[k] = env_stats.get(k, 0.0) + v * want
            drawn, draws, last = drawn + want, draws + 1, batch
            good = _informative(batch.rewards, n) if n > 1 else torch.ones(want, dtype=torch.bool)
            informative += int(good.sum())
            if dynamic and not bool(good.all()):
                rows = good.repeat_interleave(n).nonzero().squeeze(1)
                batch = batch.select(rows) if len(rows) else None  # type: ignore[assignment]
            if batch is not None:
                parts.append(batch)
                kept += len(batch) // n
        assert last is not None
        batch = Batch.cat(parts, int(policy.tokenizer.pad_token_id)) if parts else last
        batch.info.update({k: v / drawn for k, v in env_stats.items()})
        batch.info.update(
            {"prompts_drawn": float(drawn), "draws": float(draws), "informative_frac": informative / drawn}
        )
        algo.prepare(batch)
        yield batch


class Trainer:
    """Runs ``algo`` on ``env`` for ``cfg.steps`` updates; save/resume; metrics; validation.

    ``validator`` (a :class:`~memory_r1.rl.validate.Validator`) is required when
    ``cfg.validate_every > 0`` and unused otherwise.
    """

    def __init__(
        self,
        algo: Algorithm,
        env: Env,
        cfg: TrainConfig,
        accelerator: Accelerator | None = None,
        validator: Validator | None = None,
    ) -> None:
        from accelerate import Accelerator
        from accelerate.utils import set_seed

        if cfg.validate_every and validator is None:
            raise ValueError("validate_every > 0 needs a validator (rl.validate.Validator)")
        self.algo, self.env, self.cfg = algo, env, cfg
        self.validator = validator if cfg.validate_every else None
        self.accelerator = accelerator or Accelerator()
        algo.policy.to(self.accelerator.device)
        algo.optimizer = self.accelerator.prepare_optimizer(algo.optimizer)
        algo.backward = self.accelerator.backward
        algo.clip = self.accelerator.clip_grad_norm_  # unscales fp16 gradients before clipping
        set_seed(cfg.seed)  # python, numpy, torch: the sampler draws from torch's global RNG
        self.rng = random.Random(cfg.seed)  # the environment's own stream of prompts
        self.step = 0
        self.out_dir = Path(cfg.out_dir) if cfg.out_dir else None
        self.log = MetricsLog(
            self.out_dir, tensorboard=cfg.tensorboard, main_process=self.accelerator.is_main_process
        )

    def train(self, steps: int | None = None) -> list[dict[str, float]]:
        """Update until ``self.step == steps`` (default ``cfg.steps``); returns the logged rows
        (with validation on, a fresh run's first row is the step-0 validation)."""
        target = steps or self.cfg.steps
        history: list[dict[str, float]] = []
        if self.step >= target:
            return history
        with ProgressBar(target, self.step, enabled=self.cfg.progress) as bar:
            if self.validator is not None and self.step == 0:
                row = {"step": 0, **self._validate(bar)}
                history.append(row)
                self.log.write(row)
            tick = time.perf_counter()
            for batch in rollouts(self.env, self.algo, self.cfg, self.rng):
                rollout_s = time.perf_counter() - tick
                stats = self.algo.step(batch)
                self.step += 1
                row = {
                    "step": self.step,
                    **self._batch_stats(batch),
                    **batch.info,
                    **stats,
                    "rollout_s": rollout_s,
                    "update_s": time.perf_counter() - tick - rollout_s,
                }
                every = self.cfg.validate_every
                if self.validator is not None and (self.step % every == 0 or self.step >= target):
                    row.update(self._validate(bar))
                history.append(row)
                self.log.write(row)
                bar.update(self.step, self._status(row))
                if self.cfg.save_every and self.step % self.cfg.save_every == 0:
                    assert self.out_dir is not None
                    self.save(self.out_dir / f"checkpoint-{self.step}")
                if self.step >= target:
                    break
                tick = time.perf_counter()
        self.log.close()
        return history

    def _validate(self, bar: ProgressBar) -> dict[str, float]:
        assert self.validator is not None
        bar.note("validating...")
        tick = time.perf_counter()
        metrics = self.validator.run(self.algo.policy, self.step)
        return {**metrics, "val_s": time.perf_counter() - tick}

    def _status(self, row: dict[str, float]) -> str:
        """The bar's text: last reward, and the validator's first metric once there is one."""
        text = f"reward {row['reward_mean']:.3f}"
        best = self.validator.best if self.validator is not None else None
        if best is not None:
            key = self.validator.key[0]  # type: ignore[union-attr]
            text += f"  best {key} {best[key]:.2f} (step {best['step']})"
        return text

    @staticmethod
    def _batch_stats(batch: Batch) -> dict[str, float]:
        assert batch.rewards is not None
        return {
            "reward_mean": batch.rewards.mean().item(),
            "reward_std": batch.rewards.std().item() if len(batch) > 1 else 0.0,
            "completion_len": batch.completion_mask.sum(1).mean().item(),
        }

    # -- checkpoints ----------------------------------------------------------------------------

    def save(self, path: str | Path) -> Path:
        """``path/policy`` (``save_pretrained``, safetensors) + ``path/trainer_state.pt``."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.algo.policy.save(path / "policy")
        state = {
            "step": self.step,
            "optimizer": self.algo.optimizer.state_dict(),
            "env_rng": self.rng.getstate(),
            "python_rng": random.getstate(),
            "numpy_rng": np.random.get_state(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            "config": asdict(self.cfg),
        }
        torch.save(state, path / "trainer_state.pt")
        return path

    def resume(self, path: str | Path) -> None:
        """Restore a :meth:`save` into this trainer, built as the saved one was (same base model,
        configs and env); the next :meth:`train` continues exactly where that run stood."""
        path = Path(path)
        self.algo.policy.load(path / "policy")
        # Our own file; weights_only=False because it holds Python and NumPy RNG states.
        state = torch.load(path / "trainer_state.pt", weights_only=False)
        self.algo.optimizer.load_state_dict(state["optimizer"])
        self.step = int(state["step"])
        self.rng.setstate(state["env_rng"])
        random.setstate(state["python_rng"])
        np.random.set_state(state["numpy_rng"])
        torch.set_rng_state(state["torch_rng"])
        if state["cuda_rng"] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        # A crashed run may have logged (and validated) beyond its checkpoint: drop those rows,
        # so metrics.jsonl and validation.json hold each step once.
        self.log.truncate(self.step)
        if self.validator is not None:
            self.validator.restore(self.step)


def latest_checkpoint(out_dir: str | Path) -> Path | None:
    """The ``checkpoint-<step>`` folder with the highest step under ``out_dir``, if any."""
    found = [p for p in Path(out_dir).glob("checkpoint-*") if p.name.split("-")[-1].isdigit()]
    return max(found, key=lambda p: int(p.name.split("-")[-1]), default=None)
