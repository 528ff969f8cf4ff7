"""Training runs end to end (L3 behind ``memory-r1 sft`` / ``train`` / ``eval answer-agent``).

Importing this module has no side effects and does not import torch; every function does.

Contracts:

* :func:`load_policy` - ``model`` is anything :class:`~memory_r1.llm.hf.HFModel` loads (HF dir,
  catalogue name, GGUF path); LoRA (``peft``, all linear layers) unless ``lora_r is None``.
* :func:`run_sft` - examples from LoCoMo annotations of the **train split** (``roles``), plus
  the rows of ``teacher_jsonl`` when given; trains; ``out/metrics.jsonl``, ``out/tb/``,
  ``out/sft_loss.png``, ``out/checkpoint-<steps>``; returns ``out/final``, a plain HF
  checkpoint (safetensors, LoRA merged) that ``HFModel`` / ``--answer-agent`` /
  ``--memory-manager`` load.
* :func:`run_train` - ``answer-agent``: :class:`AnswerEnv` (``answer_k`` memories per speaker)
  over train-split banks from ``bank_source`` (:mod:`memory_r1.rl.episodes`: the untrained
  pipeline on ``bank_model`` in ``out/banks.sqlite``, or LoCoMo observations in
  ``out/banks-observations.sqlite``). ``memory-manager``: snapshots cached in
  ``out/snapshots.jsonl`` and :class:`ManagerEnv` rewarded by a frozen Answer Agent on
  ``answer_model``. Then :class:`Trainer` (``resume``: from ``latest_checkpoint(out)``),
  final ``checkpoint-<step>``, ``out/metrics.png``, ``out/tb/`` and ``out/final`` as above;
  returns ``out/final``. ``validate_every=N`` adds greedy validation on the validation split
  (conv-30; banks/snapshots built the same way, ``val_questions`` caps the episodes) at step
  0, every N steps and at the end: ``val_*`` columns, ``out/validation.json``, the best step
  in ``out/best`` (:mod:`memory_r1.rl.validate`).
* :func:`eval_answer_agent` - the same validation function on any model and split:
  ``out/predictions.jsonl`` and ``out/scores.json`` (``metrics.aggregate``, percent).

``dtype="auto"`` (the default) is :func:`memory_r1.llm.hf.resolve_precision`: bf16 weights on
CUDA; fp32 weights + bf16 autocast on a CPU with native bf16 (AVX512_BF16/AMX); fp32 elsewhere
(emulated bf16 is slower than fp32).
``micro_batch_size``: rows per forward/backward in updates (gradient accumulation: the same
update as the whole batch at once, lower peak memory); None = the whole (mini)batch.

Every non-trained LLM is built by :func:`memory_r1.rl.episodes.make_chat_model` (tests
monkeypatch it). Impossible settings raise :class:`~memory_r1.errors.ConfigError`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from memory_r1.config import ModelConfig
from memory_r1.errors import ConfigError

ROLES = ("answer-agent", "memory-manager")
ALGOS = ("ppo", "grpo")
DEFAULT_LORA_R = 16


def lora_rank(lora_r: int | None, full: bool) -> int | None:
    """``--lora-r R | --full`` -> the LoRA rank, or None for full fine-tuning."""
    if full and lora_r is not None:
        raise ConfigError("give either --lora-r or --full, not both")
    if lora_r is not None and lora_r < 1:
        raise ConfigError("--lora-r must be >= 1")
    return None if full else (lora_r or DEFAULT_LORA_R)


def load_policy(
    model: str,
    *,
    lora_r: int | None,
    value_head: bool = False,
    reference: bool = True,
    dtype: str = "auto",
    seed: int = 0,
) -> Any:
    """A :class:`Policy` over ``model`` loaded by ``HFModel`` (LoRA of rank ``lora_r`` if set;
    adapters initialised from ``seed``), with ``HFModel``'s precision (weights + autocast)."""
    from memory_r1.llm.hf import HFModel
    from memory_r1.rl.policy import Policy

    hf = HFModel(model, dtype=dtype)
    lora = None
    if lora_r is not None:
        from peft import LoraConfig

        lora = LoraConfig(
            r=lora_r,
            lora_alpha=2 * lora_r,
            lora_dropout=0.0,
            target_modules="all-linear",
            task_type="CAUSAL_LM",
        )
    return Policy(
        hf.model,
        hf.tokenizer,
        lora=lora,
        value_head=value_head,
        reference=reference,
        autocast=hf.autocast,
        seed=seed,
    )


def export_final(policy: Any, path: str | Path) -> Path:
    """Save the policy as a plain HF checkpoint (LoRA merged into a copy) at ``path``."""
    return policy.export(path)  # type: ignore[no-any-return]


def run_sft(
    model: str,
    out: str | Path,
    *,
    data: str | None = None,
    roles: Sequence[str] = ("extract", "manager", "answer"),
    teacher_jsonl: str | None = None,
    steps: int = 100,
    batch_size: int = 8,
    lr: float = 1e-5,
    lora_r: int | None = DEFAULT_LORA_R,
    embedder: str = "minilm",
    max_tokens: int | None = None,
    seed: int = 0,
    dtype: str = "auto",
    progress: bool = True,
    micro_batch_size: int | None = None,
    answer_k: int = 10,
) -> Path:
    """Memory-SFT on the train split (+ teacher rows); returns ``out/final``.

    Answer examples show the top ``answer_k`` memories per speaker of the observation bank
    (``out/banks-observations.sqlite``), retrieved as RL and ``eval answer-agent`` retrieve
    them: train with the ``--answer-k`` you will evaluate with.
    """
    from memory_r1.rl.sft import ROLES as SFT_ROLES
    from memory_r1.rl.sft import build_sft_examples, from_teacher_jsonl
    from memory_r1.rl.sft_train import sft_train
    from memory_r1.store import create_embedder

    bad = set(roles) - set(SFT_ROLES)
    if bad or not roles:
        raise ConfigError(f"--roles must be a subset of {','.join(SFT_ROLES)}, got {','.join(roles)}")
    from memory_r1.rl.episodes import answer_banks, split_convs

    if answer_k < 1:
        raise ConfigError("--answer-k must be >= 1")
    convs, emb = split_convs(data, "train"), create_embedder(embedder)
    store = answer_banks(convs, Path(out), emb, "observations") if "answer" in roles else None
    examples = build_sft_examples(convs, roles, seed, embedder=emb, answer_k=answer_k, answer_store=store)
    if teacher_jsonl:
        try:
            examples += [ex for ex in from_teacher_jsonl(teacher_jsonl) if ex.role in roles]
        except (OSError, ValueError) as e:
            raise ConfigError(f"--teacher-jsonl: {e}") from e
    if not examples:
        raise ConfigError("no SFT example for these roles")
    policy = load_policy(model, lora_r=lora_r, reference=False, dtype=dtype, seed=seed)
    try:
        sft_train(
            policy,
            examples,
            steps,
            batch_size,
            lr,
            out,
            seed=seed,
            max_tokens=max_tokens,
            progress=progress,
            micro_batch_size=micro_batch_size,
        )
    except ValueError as e:
        raise ConfigError(str(e)) from e
    return export_final(policy, Path(out) / "final")


@dataclass(frozen=True)
class RLOptions:
    """The RL recipe beyond model, data and budget (the CLI's ``train`` flags).

    ``reward``: ``em`` (the paper's), ``f1`` or ``em+f1`` (:mod:`memory_r1.rl.rewards`);
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
    from memory_r1.rl.grpo import GRPOConfig
    from memory_r1.rl.ppo import PPOConfig

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
            return GRPOConfig(
                group_size=8 if group_size is None else group_size, scale=options.scale, **common
            )  # type: ignore[arg-type]
        return PPOConfig(samples_per_prompt=group_size or 1, **common)  # type: ignore[arg-type]
    except ValueError as e:
        raise ConfigError(f"--algo {algo}: {e}") from e


def frozen_answer_model(
    model: str, *, backend: str | None = None, base_url: str | None = None, lora: str | None = None
) -> ModelConfig:
    """The frozen Answer Agent of Manager training, from an HF directory, a GGUF / catalogue
    name (+ a GGUF LoRA adapter) or an OpenAI-compatible endpoint.

    ``backend`` None picks it from ``model``: ``openai`` when ``base_url`` is given, ``hf``
    for a directory (a trained checkpoint), else ``llamacpp``. ``lora`` ``"shipped"``: the
    shipped Answer Agent's GGUF LoRA (checked by :func:`~memory_r1.llm.adapters.load_adapter`).
    """
    if lora == "shipped":
        from memory_r1.llm.adapters import load_adapter

        lora = str(load_adapter("answer").gguf)
    if backend is None:
        backend = "openai" if base_url else ("hf" if Path(model).expanduser().is_dir() else "llamacpp")
    if lora and backend != "llamacpp":
        raise ConfigError("--answer-lora is a GGUF LoRA adapter for the llamacpp backend")
    if backend == "llamacpp" and Path(model).expanduser().is_dir():
        raise ConfigError(
            f"{model} is an HF directory: the llamacpp backend needs a GGUF "
            "(use --answer-backend hf, or leave --answer-backend unset)"
        )
    return ModelConfig(
        backend=backend, model=model, base_url=base_url, options={"lora_path": lora} if lora else {}
    )


def _envs(
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

    The validation env never filters (it scores every question) and uses the same reward.
    """
    from memory_r1.rl import episodes as E

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


def _validator(role: str, env: Any, out: Path, limit: int | None, batch_size: int) -> Any:
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


def run_train(
    role: str,
    algo: str,
    model: str,
    out: str | Path,
    *,
    data: str | None = None,
    steps: int = 100,
    group_size: int | None = None,
    batch_size: int = 16,
    lr: float = 1e-6,
    beta: float = 0.01,
    lora_r: int | None = DEFAULT_LORA_R,
    embedder: str = "minilm",
    resume: bool = False,
    max_new_tokens: int | None = None,
    save_every: int = 0,
    seed: int = 0,
    bank_model: ModelConfig | None = None,
    answer_model: ModelConfig | None = None,
    dtype: str = "auto",
    bank_source: str = "pipeline",
    answer_k: int = 30,
    validate_every: int = 0,
    val_questions: int | None = None,
    progress: bool = True,
    micro_batch_size: int | None = None,
    options: RLOptions = RLOptions(),
    val_batch_size: int = 16,
) -> Path:
    """RL-train one agent (see the module docstring); returns ``out/final``.

    ``answer_model``: the frozen Answer Agent of Manager training (default: ``model`` itself,
    through :func:`frozen_answer_model`). ``max_new_tokens`` None: the agent's own budget.
    """
    from memory_r1.rl.episodes import split_convs
    from memory_r1.rl.trainer import TrainConfig, Trainer, latest_checkpoint, make_algorithm, plot_metrics
    from memory_r1.store import create_embedder

    if role not in ROLES:
        raise ConfigError(f"unknown agent {role!r}: choose one of {', '.join(ROLES)}")
    if val_questions is not None and val_questions < 1:
        raise ConfigError("--val-questions must be >= 1")
    acfg = algo_config(
        algo, group_size=group_size, lr=lr, beta=beta, micro_batch_size=micro_batch_size, options=options
    )
    try:
        tcfg = TrainConfig(
            steps=steps,
            prompts_per_step=batch_size,
            max_new_tokens=max_new_tokens,
            seed=seed,
            out_dir=str(out),
            save_every=save_every,
            validate_every=validate_every,
            progress=progress,
            temperature=options.temperature,
            dynamic_sampling=options.dynamic_sampling,
            max_draw_factor=options.max_draw_factor,
        )
    except ValueError as e:
        raise ConfigError(str(e)) from e
    out = Path(out)
    ckpt = latest_checkpoint(out) if out.exists() else None
    if not resume and (ckpt is not None or (out / "metrics.jsonl").exists()):
        raise ConfigError(f"{out} already holds a run: pass --resume or choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    train = split_convs(data, "train")
    val = split_convs(data, "validation") if validate_every else []
    bank_model = bank_model or ModelConfig()
    try:
        env, val_env = _envs(
            role,
            train,
            val,
            out,
            create_embedder(embedder),
            bank_source=bank_source,
            answer_k=answer_k,
            bank_model=bank_model,
            answer_model=answer_model or frozen_answer_model(model),
            options=options,
        )
    except ValueError as e:  # no episode in the data
        raise ConfigError(str(e)) from e
    if resume and ckpt is None:  # rows of a run that never checkpointed
        for name in ("metrics.jsonl", "validation.json"):
            (out / name).unlink(missing_ok=True)
    policy = load_policy(
        model, lora_r=lora_r, value_head=algo == "ppo", reference=beta > 0, dtype=dtype, seed=seed
    )
    validator = None
    if val_env is not None:
        validator = _validator(role, val_env, out, val_questions, val_batch_size)
    (out / "run_config.json").write_text(
        json.dumps(
            {
                "role": role,
                "algo": algo,
                "model": model,
                "steps": steps,
                "group_size": group_size,
                "batch_size": batch_size,
                "lr": lr,
                "beta": beta,
                "lora_r": lora_r,
                "seed": seed,
                "answer_k": answer_k,
                "bank_source": bank_source,
                "embedder": embedder,
                "dtype": dtype,
                "autocast": str(policy.autocast).removeprefix("torch.") if policy.autocast else None,
                "options": asdict(options),
                "algo_config": asdict(acfg),
                "train_config": asdict(tcfg),
            },
            indent=2,
            default=str,
        ),
        encoding="utf-8",
    )
    trainer = Trainer(make_algorithm(policy, acfg), env, tcfg, validator=validator)
    if resume and ckpt is not None:
        trainer.resume(ckpt)
    trainer.train()
    trainer.save(out / f"checkpoint-{trainer.step}")
    keys = ("reward_mean", "kl", "loss") + ((validator.key[0],) if validator else ())
    plot_metrics(out / "metrics.jsonl", out / "metrics.png", keys=keys)
    return export_final(policy, out / "final")


def _first_per_conversation(episodes: Sequence[Any], limit: int | None) -> list[Any]:
    """At most ``limit`` episodes per conversation (qid ``<sample_id>/q<i>``), order kept."""
    seen: dict[str, int] = {}
    kept = []
    for ep in episodes:
        conv = ep[1]["qid"].rsplit("/", 1)[0]
        seen[conv] = seen.get(conv, 0) + 1
        if limit is None or seen[conv] <= limit:
            kept.append(ep)
    return kept


def eval_answer_agent(
    model: str,
    out: str | Path,
    *,
    split: str = "validation",
    data: str | None = None,
    bank_source: str = "observations",
    answer_k: int = 30,
    max_questions: int | None = None,
    dtype: str = "auto",
    embedder: str = "minilm",
    bank_model: ModelConfig | None = None,
    batch_size: int = 16,
    progress: bool = True,
) -> dict[str, Any]:
    """Greedy Answer-Agent scores of ``model`` on ``split`` (the training validation function).

    ``max_questions``: at most that many questions per conversation (as ``eval locomo``).
    Writes ``out/predictions.jsonl`` (one row per question, metrics in [0, 1]) and
    ``out/scores.json`` (``{"scores": aggregate(percent=True), "config", ...}``); returns it.
    """
    from memory_r1.metrics import aggregate
    from memory_r1.rl import episodes as E
    from memory_r1.rl.monitor import ProgressBar
    from memory_r1.rl.validate import answer_validation
    from memory_r1.store import create_embedder

    if max_questions is not None and max_questions < 1:
        raise ConfigError("--max-questions must be >= 1")
    out = Path(out)
    convs = E.split_convs(data, split)
    store = E.answer_banks(convs, out, create_embedder(embedder), bank_source, bank_model)
    try:
        env = E.answer_env(convs, store, answer_k)
    except ValueError as e:
        raise ConfigError(str(e)) from e
    env.episodes = _first_per_conversation(env.episodes, max_questions)
    policy = load_policy(model, lora_r=None, reference=False, dtype=dtype)
    with ProgressBar(len(env.episodes), enabled=progress, description="answer") as bar:
        done = [0]

        def advance(n: int) -> None:
            done[0] += n
            bar.update(done[0])

        metrics, rows = answer_validation(policy, env, batch_size=batch_size, on_batch=advance)
    with open(out / "predictions.jsonl", "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    scores = {
        "scores": aggregate(rows, ("f1", "bleu1", "em"), percent=True),
        "format_failure_rate": metrics["val_format_failure_rate"],
        "config": {
            "model": model,
            "split": split,
            "bank_source": bank_source,
            "answer_k": answer_k,
            "max_questions": max_questions,
            "dtype": dtype,
            "dtype_resolved": str(policy.model.dtype).removeprefix("torch."),
            "autocast": str(policy.autocast).removeprefix("torch.") if policy.autocast else None,
            "embedder": embedder,
            "bank_model": None
            if bank_source != "pipeline" or bank_model is None
            else bank_model.kwargs() | {"backend": bank_model.backend},
        },
    }
    (out / "scores.json").write_text(json.dumps(scores, indent=2, default=str), encoding="utf-8")
    return scores


def eval_memory_manager(
    model: str | None,
    out: str | Path,
    *,
    answer_model: ModelConfig,
    split: str = "validation",
    data: str | None = None,
    bank_source: str = "observations",
    answer_k: int = 10,
    reward: str = "f1",
    max_episodes: int | None = None,
    dtype: str = "auto",
    embedder: str = "minilm",
    bank_model: ModelConfig | None = None,
    batch_size: int = 16,
) -> dict[str, Any]:
    """Greedy Memory-Manager reward of ``model`` on ``split``'s episodes beside the two trivial
    policies (ADD every fact / change nothing), scored by the frozen ``answer_model``.

    Also: ``winnable`` (share of episodes where ADD or NOOP earns a reward > 0: some
    operation list can win), ``decisive`` (ADD and NOOP earn different rewards: the reward
    depends on what the Manager does at t), and the operation mix. ``model`` None scores the
    trivial policies only. Writes ``out/episodes.jsonl`` and ``out/scores.json``.
    """
    from memory_r1.agents.answer import AnswerAgent
    from memory_r1.rl import episodes as E
    from memory_r1.rl.validate import manager_validation
    from memory_r1.store import create_embedder

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    convs = E.split_convs(data, split)
    snaps, emb = E.snapshots_for(
        convs, out, create_embedder(embedder), bank_source, bank_model or ModelConfig()
    )
    agent = AnswerAgent(E.make_chat_model(answer_model))
    try:
        env = E.manager_env(convs, snaps, agent, emb, answer_k, reward=reward)
    except ValueError as e:
        raise ConfigError(str(e)) from e
    n = len(env.episodes) if max_episodes is None else min(max_episodes, len(env.episodes))
    env.episodes = env.episodes[:n]
    start = time.perf_counter()
    trivial = env.trivial_rewards()
    trivial_s = time.perf_counter() - start
    add, noop = trivial["add"], trivial["noop"]
    result: dict[str, Any] = {
        "episodes": n,
        "skipped": env.skipped,
        "trivial": {"add": sum(add) / n, "noop": sum(noop) / n},
        "winnable": sum(a > 0 or b > 0 for a, b in zip(add, noop)) / n,
        "decisive": sum(a != b for a, b in zip(add, noop)) / n,
        "add_beats_noop": sum(a > b for a, b in zip(add, noop)) / n,
        "facts": sum(len(e.snapshot.facts) for e in env.episodes),
        "trivial_seconds": trivial_s,
    }
    rows: list[dict[str, Any]] = [
        {
            "episode": i,
            "dia_id": e.snapshot.turn.dia_id,
            "questions": [qa.qid for qa in e.qas],
            "add": add[i],
            "noop": noop[i],
        }
        for i, e in enumerate(env.episodes)
    ]
    if model is not None:
        policy = load_policy(model, lora_r=None, reference=False, dtype=dtype)
        start = time.perf_counter()
        metrics, vrows = manager_validation(policy, env, batch_size=batch_size)
        result["model"] = {**metrics, "counts": dict(env.op_counts), "seconds": time.perf_counter() - start}
        for row, v in zip(rows, vrows):
            row.update(raw=v["raw"], reward=v["reward"])
    result["config"] = {
        "model": model,
        "split": split,
        "bank_source": bank_source,
        "answer_model": answer_model.kwargs() | {"backend": answer_model.backend},
        "answer_k": answer_k,
        "reward": reward,
        "max_episodes": max_episodes,
        "embedder": embedder,
    }
    with open(out / "episodes.jsonl", "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    (out / "scores.json").write_text(json.dumps(result, indent=2, default=str), encoding="utf-8")
    return result
