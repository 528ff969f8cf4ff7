"""Memory-SFT training (L3): behaviour cloning on :class:`~memory_r1.rl.sft.data.SFTExample` rows.

The paper gives no Memory-SFT recipe; this is plain supervised
fine-tuning on the same prompts the pipeline and RL use, so RL starts from a policy that
already emits the expected formats.

:func:`sft_train`: token-mean cross-entropy on completion tokens only (prompt masked), via
:meth:`Policy.forward` (same left-pad / right-pad layout as rollouts, so LoRA or full FT as the
policy was built), AdamW, ``metrics.jsonl`` rows readable by ``monitor.read_metrics`` /
``plot_metrics`` (and TensorBoard scalars under ``tb/``), a progress bar unless
``progress=False``, and ``checkpoint-<step>/policy`` + ``trainer_state.pt`` as the RL trainer lays
them out (``latest_checkpoint`` finds them; the state holds the step, the optimizer and
``kind: "sft"``).
``micro_batch_size``: forward + backward on that many examples at a time (each chunk padded to
its own width), gradients accumulated, one AdamW step per batch; every chunk's loss is divided
by the *batch's* completion-token count, so the update equals the whole-batch one.
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from memory_r1.rl.algorithms.accumulation import micro_slices
from memory_r1.rl.algorithms.policy import Policy
from memory_r1.rl.monitor import MetricsLog, ProgressBar, plot_metrics
from memory_r1.rl.sft.data import ROLES, SFTExample, completion_text

Pairs = Sequence[tuple[list[int], list[int]]]  # (prompt ids, completion ids + EOS) per example


def _encode(policy: Policy, examples: Sequence[SFTExample]) -> list[tuple[list[int], list[int]]]:
    tok = policy.tokenizer
    out = []
    for ex in examples:
        prompt = tok(policy.render(ex.prompt), add_special_tokens=not policy.chat)["input_ids"]
        completion = tok(completion_text(ex), add_special_tokens=False)["input_ids"]
        out.append((list(prompt), [*list(completion), policy.eos_ids[0]]))
    return out


def _collate(pairs: Pairs, pad: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Prompts left-padded, completions right-padded: the
    :class:`~memory_r1.rl.algorithms.rollout_batch.Batch` layout."""
    p = max(len(a) for a, _ in pairs)
    t = max(len(b) for _, b in pairs)
    ids = [[pad] * (p - len(a)) + a + b + [pad] * (t - len(b)) for a, b in pairs]
    att = [[0] * (p - len(a)) + [1] * (len(a) + len(b)) + [0] * (t - len(b)) for a, b in pairs]
    cm = [[1.0] * len(b) + [0.0] * (t - len(b)) for _, b in pairs]
    return (
        torch.tensor(ids, device=device),
        torch.tensor(att, device=device),
        torch.tensor(cm, device=device),
    )


def _loss(policy: Policy, pairs: Pairs, n_total: int | None = None) -> tuple[torch.Tensor, int]:
    """(summed completion NLL / ``n_total`` (default: these pairs' token count), token count)."""
    ids, att, cm = _collate(pairs, int(policy.tokenizer.pad_token_id), policy.device)
    logp, _ = policy.forward(ids, att, cm)
    n = int(cm.sum().item())
    return -logp.sum() / max(n if n_total is None else n_total, 1), n


@torch.no_grad()
def sft_loss(policy: Policy, examples: Sequence[SFTExample], batch_size: int = 8) -> float:
    """Token-mean cross-entropy of the targets (no update)."""
    pairs = _encode(policy, examples)
    total, count = 0.0, 0
    for i in range(0, len(pairs), batch_size):
        loss, n = _loss(policy, pairs[i : i + batch_size])
        total, count = total + loss.item() * n, count + n
    return total / max(count, 1)


def _draw(order: list[int], size: int, n: int, rng: random.Random) -> list[int]:
    """``size`` indices popped from the end of ``order``, which is refilled with a fresh
    shuffle of ``range(n)`` whenever it runs out (one epoch per refill)."""
    idx: list[int] = []
    while len(idx) < size:
        if not order:
            order.extend(range(n))
            rng.shuffle(order)
        idx.append(order.pop())
    return idx


def _update(
    policy: Policy,
    opt: torch.optim.Optimizer,
    params: list[torch.nn.Parameter],
    pairs: Pairs,
    micro_batch_size: int | None,
    max_grad_norm: float,
) -> tuple[float, int]:
    """One AdamW step on ``pairs``, forward + backward per micro-batch; ``(loss, tokens)``."""
    n = sum(len(completion) for _, completion in pairs)  # real target tokens
    opt.zero_grad(set_to_none=True)
    total = 0.0
    for sl in micro_slices(len(pairs), micro_batch_size):
        loss, _ = _loss(policy, pairs[sl], n_total=n)  # this chunk's share
        loss.backward()
        total += loss.item()
    if max_grad_norm > 0:
        torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
    opt.step()
    return total, n


def _fitting(
    policy: Policy, examples: Sequence[SFTExample], max_tokens: int | None
) -> tuple[list[tuple[SFTExample, tuple[list[int], list[int]]]], int]:
    """The examples whose prompt + completion fit ``max_tokens``, each with its token ids, and
    how many were dropped; raises when none fits."""
    encoded = list(zip(examples, _encode(policy, examples)))
    kept = [(ex, p) for ex, p in encoded if max_tokens is None or len(p[0]) + len(p[1]) <= max_tokens]
    if not kept:
        raise ValueError(f"no example fits max_tokens={max_tokens} (of {len(encoded)})")
    return kept, len(encoded) - len(kept)


def _role_mix(batch: Sequence[SFTExample]) -> dict[str, int]:
    """``n_<role>``: how many examples of each role the batch holds."""
    return {f"n_{r}": sum(ex.role == r for ex in batch) for r in ROLES}


def sft_train(
    policy: Policy,
    examples: Sequence[SFTExample],
    steps: int,
    batch_size: int = 8,
    lr: float = 1e-5,
    out_dir: str | Path | None = None,
    *,
    seed: int = 0,
    weight_decay: float = 0.0,
    max_grad_norm: float = 1.0,
    max_tokens: int | None = None,
    save_every: int = 0,
    plot: bool = True,
    progress: bool = True,
    tensorboard: bool = True,
    micro_batch_size: int | None = None,
) -> list[float]:
    """``steps`` AdamW updates on shuffled minibatches (epochs re-shuffled); returns the losses.

    ``max_tokens`` drops examples whose prompt + completion is longer (count logged as
    ``skipped``). With ``out_dir``: ``metrics.jsonl`` (step, loss, tokens, lr, step_s, role mix)
    and the same scalars in TensorBoard under ``tb/`` (unless ``tensorboard=False``),
    ``checkpoint-<step>`` every ``save_every`` steps and at the end, ``sft_loss.png``.
    ``progress``: a rich bar with step n/N, the last loss and the ETA. ``micro_batch_size``:
    examples per forward/backward (None: the whole batch at once); same update, lower peak
    memory.
    """
    if steps < 1 or batch_size < 1:
        raise ValueError("steps and batch_size must be >= 1")
    if micro_batch_size is not None and micro_batch_size < 1:
        raise ValueError("micro_batch_size must be >= 1 (or None for the whole batch)")
    kept, skipped = _fitting(policy, examples, max_tokens)
    torch.manual_seed(seed)
    rng = random.Random(seed)
    params = list(policy.actor_parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    out = Path(out_dir) if out_dir is not None else None
    log = MetricsLog(out, tensorboard=tensorboard)  # appends, like the RL trainer's log
    order: list[int] = []
    history: list[float] = []
    with ProgressBar(steps, enabled=progress, description="sft") as bar:
        for step in range(1, steps + 1):
            tick = time.perf_counter()
            idx = _draw(order, min(batch_size, len(kept)), len(kept), rng)
            loss, n = _update(policy, opt, params, [kept[i][1] for i in idx], micro_batch_size, max_grad_norm)
            history.append(loss)
            bar.update(step, f"loss {loss:.4f}")
            row = {"step": step, "loss": loss, "tokens": n, "lr": lr, "step_s": time.perf_counter() - tick}
            log.write({**row, "skipped": skipped, **_role_mix([kept[i][0] for i in idx])})
            if out is not None and ((save_every and step % save_every == 0) or step == steps):
                save_checkpoint(policy, opt, step, out / f"checkpoint-{step}")
    log.close()
    if out is not None and plot:
        plot_metrics(out / "metrics.jsonl", out / "sft_loss.png", keys=("loss",))
    return history


def save_checkpoint(policy: Policy, optimizer: torch.optim.Optimizer, step: int, path: str | Path) -> Path:
    """``path/policy`` (``Policy.save``) + ``path/trainer_state.pt`` (step, optimizer)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    policy.save(path / "policy")
    torch.save({"step": step, "optimizer": optimizer.state_dict(), "kind": "sft"}, path / "trainer_state.pt")
    return path
