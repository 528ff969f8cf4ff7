"""Training runs end to end (L3 orchestration behind ``memory-r1 sft`` / ``memory-r1 train``).

Importing this module has no side effects and does not import torch; every function does.

Contracts:

* :func:`load_policy` - ``model`` is anything :class:`~memory_r1.llm.hf.HFModel` loads (HF dir,
  catalogue name, GGUF path); LoRA (``peft``, all linear layers) unless ``lora_r is None``.
* :func:`run_sft` - examples from LoCoMo annotations of the **train split** (``roles``), plus
  the rows of ``teacher_jsonl`` when given; trains; ``out/metrics.jsonl``, ``out/sft_loss.png``,
  ``out/checkpoint-<steps>``; returns ``out/final``, a plain HF checkpoint (safetensors, LoRA
  merged) that ``HFModel`` / ``--answer-agent`` / ``--memory-manager`` load.
* :func:`run_train` - ``answer-agent``: :class:`AnswerEnv` over train-split banks in
  ``out/banks.sqlite`` (ingested by the untrained pipeline on ``bank_model``; resumable: turns
  already marked are not redone, and no LLM is loaded when every turn is). ``memory-manager``:
  snapshots cached in ``out/snapshots.jsonl`` (pipeline bank in ``out/snapshot_banks.sqlite``)
  and :class:`ManagerEnv` rewarded by a frozen Answer Agent on ``answer_model``. Then
  :class:`Trainer` (``resume``: from ``latest_checkpoint(out)``), final ``checkpoint-<step>``,
  ``out/metrics.png`` and ``out/final`` as above; returns ``out/final``.
* Injection point: :func:`make_chat_model` builds every non-trained LLM (bank building, the
  frozen Answer Agent); tests monkeypatch it to return a ``FakeChatModel``.

Impossible settings raise :class:`~memory_r1.errors.ConfigError` (the CLI prints them cleanly).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from memory_r1.config import ModelConfig
from memory_r1.errors import ConfigError

ROLES = ("answer-agent", "memory-manager")
ALGOS = ("ppo", "grpo")
DEFAULT_LORA_R = 16


def make_chat_model(cfg: ModelConfig) -> Any:
    """The ``ChatModel`` for ``cfg`` (through the backend registry); monkeypatch in tests."""
    from memory_r1.llm import create_model

    return create_model(cfg.backend, **cfg.kwargs())


def lora_rank(lora_r: int | None, full: bool) -> int | None:
    """``--lora-r R | --full`` -> the LoRA rank, or None for full fine-tuning."""
    if full and lora_r is not None:
        raise ConfigError("give either --lora-r or --full, not both")
    if lora_r is not None and lora_r < 1:
        raise ConfigError("--lora-r must be >= 1")
    return None if full else (lora_r or DEFAULT_LORA_R)


def load_policy(model: str, *, lora_r: int | None, value_head: bool = False,
                reference: bool = True, dtype: str = "float32") -> Any:
    """A :class:`Policy` over ``model`` loaded by ``HFModel`` (LoRA of rank ``lora_r`` if set)."""
    from memory_r1.llm.hf import HFModel
    from memory_r1.rl.policy import Policy

    hf = HFModel(model, dtype=dtype)
    lora = None
    if lora_r is not None:
        from peft import LoraConfig

        lora = LoraConfig(r=lora_r, lora_alpha=2 * lora_r, lora_dropout=0.0,
                          target_modules="all-linear", task_type="CAUSAL_LM")
    return Policy(hf.model, hf.tokenizer, lora=lora, value_head=value_head, reference=reference)


def export_final(policy: Any, path: str | Path) -> Path:
    """Save the policy as a plain HF checkpoint (LoRA merged into a copy) at ``path``."""
    import copy

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    model = policy.model
    if policy.is_peft:
        model = copy.deepcopy(model).merge_and_unload()
    model.save_pretrained(path, safe_serialization=True)
    policy.tokenizer.save_pretrained(path)
    return path


def _train_convs(data: str | None) -> list[Any]:
    from memory_r1.data.locomo import load_locomo, split_conversations

    convs = split_conversations(load_locomo(data), "train")
    if not convs:
        raise ConfigError(f"{data or 'the LoCoMo file'} has no train-split conversation (conv-26)")
    return convs


def run_sft(model: str, out: str | Path, *, data: str | None = None,
            roles: Sequence[str] = ("extract", "manager", "answer"),
            teacher_jsonl: str | None = None, steps: int = 100, batch_size: int = 8,
            lr: float = 1e-5, lora_r: int | None = DEFAULT_LORA_R, embedder: str = "hash",
            max_tokens: int | None = None, seed: int = 0) -> Path:
    """Memory-SFT on the train split (+ teacher rows); returns ``out/final``."""
    from memory_r1.rl.sft import ROLES as SFT_ROLES, build_sft_examples, from_teacher_jsonl, sft_train
    from memory_r1.store import create_embedder

    bad = set(roles) - set(SFT_ROLES)
    if bad or not roles:
        raise ConfigError(f"--roles must be a subset of {','.join(SFT_ROLES)}, got {','.join(roles)}")
    examples = build_sft_examples(_train_convs(data), roles, seed,
                                  embedder=create_embedder(embedder))
    if teacher_jsonl:
        try:
            examples += [ex for ex in from_teacher_jsonl(teacher_jsonl) if ex.role in roles]
        except (OSError, ValueError) as e:
            raise ConfigError(f"--teacher-jsonl: {e}") from e
    if not examples:
        raise ConfigError("no SFT example for these roles")
    policy = load_policy(model, lora_r=lora_r, reference=False)
    try:
        sft_train(policy, examples, steps, batch_size, lr, out, seed=seed, max_tokens=max_tokens)
    except ValueError as e:
        raise ConfigError(str(e)) from e
    return export_final(policy, Path(out) / "final")


def algo_config(algo: str, *, group_size: int | None, lr: float, beta: float) -> Any:
    """``GRPOConfig`` (G = ``group_size``, default 8) or ``PPOConfig`` (samples per prompt)."""
    from memory_r1.rl.grpo import GRPOConfig
    from memory_r1.rl.ppo import PPOConfig

    if algo not in ALGOS:
        raise ConfigError(f"unknown --algo {algo!r}: choose one of {', '.join(ALGOS)}")
    try:
        if algo == "grpo":
            return GRPOConfig(group_size=8 if group_size is None else group_size, lr=lr, beta=beta)
        return PPOConfig(samples_per_prompt=group_size or 1, lr=lr, beta=beta)
    except ValueError as e:
        raise ConfigError(f"--algo {algo}: {e}") from e


def _pipeline(store_path: Path, embedder: Any, bank_model: ModelConfig) -> Any:
    """The untrained pipeline (one model per role, as ``build_models``) over ``store_path``."""
    from memory_r1.agents.answer import AnswerAgent
    from memory_r1.agents.extract import FactExtractor
    from memory_r1.agents.manager import MemoryManager
    from memory_r1.agents.pipeline import MemoryR1Pipeline
    from memory_r1.store import open_store

    shared = bank_model.backend != "llamacpp"
    first = make_chat_model(bank_model)
    m = [first] + [first if shared else make_chat_model(bank_model) for _ in range(2)]
    return MemoryR1Pipeline(open_store(store_path, embedder), FactExtractor(m[0]),
                            MemoryManager(m[1]), AnswerAgent(m[2]))


def answer_env(convs: Sequence[Any], out: Path, embedder: Any, bank_model: ModelConfig) -> Any:
    """:class:`AnswerEnv` on banks in ``out/banks.sqlite`` (built/resumed only when incomplete)."""
    from memory_r1.rl.envs import AnswerEnv
    from memory_r1.store import open_store

    path = out / "banks.sqlite"
    store = open_store(path, embedder)
    complete = all({t.dia_id for t in c.turns()} <= store.markers(c.sample_id) for c in convs)
    if complete:
        return AnswerEnv(convs, store=store, split=None)
    store.close()
    return AnswerEnv(convs, pipeline=_pipeline(path, embedder, bank_model), split=None)


def manager_env(convs: Sequence[Any], out: Path, embedder: Any, bank_model: ModelConfig,
                answer_model: ModelConfig) -> Any:
    """:class:`ManagerEnv` on snapshots cached in ``out/snapshots.jsonl``; frozen Answer Agent."""
    from memory_r1.agents.answer import AnswerAgent
    from memory_r1.rl.envs import ManagerEnv
    from memory_r1.rl.snapshots import build_snapshots, load_snapshots
    from memory_r1.store.sqlite import SQLiteStore

    cache = out / "snapshots.jsonl"
    cached = load_snapshots(cache) if cache.exists() else []
    have = {(s.sample_id, s.turn.dia_id) for s in cached}
    missing = [c for c in convs if any((c.sample_id, t.dia_id) not in have for t in c.turns())]
    snaps = [s for s in cached if s.sample_id not in {c.sample_id for c in missing}]
    if missing:
        pipeline = _pipeline(out / "snapshot_banks.sqlite", embedder, bank_model)
        for conv in missing:
            snaps += build_snapshots(conv, pipeline, cache)
    agent = AnswerAgent(make_chat_model(answer_model))
    return ManagerEnv(snaps, convs, agent, lambda: SQLiteStore(":memory:", embedder))


def run_train(role: str, algo: str, model: str, out: str | Path, *, data: str | None = None,
              steps: int = 100, group_size: int | None = None, batch_size: int = 16,
              lr: float = 1e-6, beta: float = 0.01, lora_r: int | None = DEFAULT_LORA_R,
              embedder: str = "minilm", resume: bool = False, max_new_tokens: int = 256,
              save_every: int = 0, seed: int = 0, bank_model: ModelConfig | None = None,
              answer_model: ModelConfig | None = None) -> Path:
    """RL-train one agent (see the module docstring); returns ``out/final``."""
    from memory_r1.rl.trainer import Trainer, TrainConfig, latest_checkpoint, make_algorithm, plot_metrics
    from memory_r1.store import create_embedder

    if role not in ROLES:
        raise ConfigError(f"unknown agent {role!r}: choose one of {', '.join(ROLES)}")
    acfg = algo_config(algo, group_size=group_size, lr=lr, beta=beta)
    try:
        tcfg = TrainConfig(steps=steps, prompts_per_step=batch_size, max_new_tokens=max_new_tokens,
                           seed=seed, out_dir=str(out), save_every=save_every)
    except ValueError as e:
        raise ConfigError(str(e)) from e
    out = Path(out)
    ckpt = latest_checkpoint(out) if out.exists() else None
    if not resume and (ckpt is not None or (out / "metrics.jsonl").exists()):
        raise ConfigError(f"{out} already holds a run: pass --resume or choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    convs, emb = _train_convs(data), create_embedder(embedder)
    bank_model = bank_model or ModelConfig()
    try:
        if role == "answer-agent":
            env = answer_env(convs, out, emb, bank_model)
        else:
            env = manager_env(convs, out, emb, bank_model, answer_model or bank_model)
    except ValueError as e:  # no episode in the data
        raise ConfigError(str(e)) from e
    if resume and ckpt is None:
        (out / "metrics.jsonl").unlink(missing_ok=True)  # rows of a run that never checkpointed
    policy = load_policy(model, lora_r=lora_r, value_head=algo == "ppo", reference=beta > 0)
    trainer = Trainer(make_algorithm(policy, acfg), env, tcfg)
    if resume and ckpt is not None:
        trainer.resume(ckpt)
    trainer.train()
    trainer.save(out / f"checkpoint-{trainer.step}")
    plot_metrics(out / "metrics.jsonl", out / "metrics.png")
    return export_final(policy, out / "final")
