"""Memory-SFT (L3): behaviour cloning on teacher trajectories, the warm start before RL.

Paper §9 item 10 (Memory-SFT baseline). Untrained small models answer NONE/ADD for everything
and ramble, so RL starts from a policy cloned on teacher outputs, using the *same prompts* as the
pipeline and RL (``agents.formats``).

Data contract: an :class:`SFTExample` is ``(role, prompt, target)``, ``role`` in ``ROLES``;
``target`` is the whole output as the role's parser reads it (``parse_facts``,
``parse_operations`` with ``example.idmap``, ``parse_answer``), the prompt's
``response_prefix`` included; training is on :func:`completion_text` (target minus that prefix,
which the rendered prompt already holds) plus EOS. Two sources:

* :func:`build_sft_examples` - from LoCoMo's own annotations, no teacher model:

  - ``extract``: per turn, the session-observation facts whose ``dia_id`` is that turn ->
    ``{"facts": [...]}``; turns without facts -> ``{"facts": []}``, kept with probability
    ``empty_ratio`` so they do not dominate.
  - ``manager``: observation facts replayed in turn order into an in-memory SQLite bank
    (``HashEmbedder`` unless given; owner = speaker). One example per (turn, speaker): related =
    deduplicated union of the top-``top_k`` memories of that speaker per fact (Mem0); per fact
    NONE (of the memory) when a related memory has the same normalised text or cosine >=
    ``none_threshold`` (0.95: near-identical wording only; a bag-of-words embedder scores
    reworded facts far lower), NONE with ``"id": null`` for a repeat inside the turn, else ADD;
    ADDs are then applied. Deviation: LoCoMo has no UPDATE/DELETE labels, so these targets
    never teach UPDATE or DELETE (a teacher model via :func:`from_teacher_jsonl` can).
  - ``answer``: per QA of categories 1-4 whose evidence turns have observation facts: those
    facts as memories (owner = speaker, timestamp = session date-time) plus up to
    ``distractors`` other facts per speaker of the same conversation, shuffled; target =
    ``SELECTED_HEADING``, bullets of the evidence memories, a blank line, ``**Answer:** gold``.
    QAs whose evidence has no observation fact are skipped.

* :func:`from_teacher_jsonl` - rows ``{role, system, user, target}`` (optional ``examples``
  ``[[user, assistant], ...]`` and ``response_prefix``; when absent and ``system`` is the role's
  standard prompt, the standard few-shot examples / prefix are used), e.g. EM-filtered outputs
  of a stronger model over an OpenAI-compatible endpoint.

:func:`sft_train`: token-mean cross-entropy on completion tokens only (prompt masked), via
:meth:`Policy.forward` (same left-pad / right-pad layout as rollouts, so LoRA or full FT as the
policy was built), AdamW, ``metrics.jsonl`` rows readable by ``trainer.read_metrics`` /
``plot_metrics`` and ``checkpoint-<step>/policy`` + ``trainer_state.pt`` as the RL trainer lays
them out (``latest_checkpoint`` finds them; the state holds step + optimizer only).
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import torch

from memory_r1.agents import formats as F
from memory_r1.llm.base import Prompt
from memory_r1.rl.policy import Policy
from memory_r1.rl.trainer import plot_metrics
from memory_r1.types import Conversation, Memory, Turn

ROLES = ("extract", "manager", "answer")
_STANDARD: dict[str, tuple[str, tuple[tuple[str, str], ...], str]] = {
    "extract": (F.EXTRACT_SYSTEM, F.EXTRACT_EXAMPLES, ""),
    "manager": (F.MANAGER_SYSTEM, F.MANAGER_EXAMPLES, ""),
    "answer": (F.ANSWER_SYSTEM, F.ANSWER_EXAMPLES, F.SELECTED_HEADING + "\n"),
}


@dataclass(frozen=True)
class SFTExample:
    role: str
    prompt: Prompt
    target: str
    idmap: F.IdMap | None = field(default=None, compare=False)  # manager: to parse the target
    meta: Mapping[str, Any] = field(default_factory=dict, compare=False)


def completion_text(ex: SFTExample) -> str:
    """The tokens to train on: ``target`` without the prompt's prefilled ``response_prefix``."""
    pre = ex.prompt.response_prefix
    return ex.target[len(pre):] if pre and ex.target.startswith(pre) else ex.target


def _norm(text: str) -> str:
    return " ".join(text.casefold().split()).rstrip(".")


def _facts_by_turn(conv: Conversation) -> dict[str, list[tuple[str, str]]]:
    """dia_id -> [(speaker, fact), ...] from the session observations."""
    out: dict[str, list[tuple[str, str]]] = {}
    for per_speaker in conv.observations.values():
        for speaker, pairs in per_speaker.items():
            for fact, dia in pairs:
                if fact.strip():
                    out.setdefault(dia, []).append((speaker, " ".join(fact.split())))
    return out


def extract_examples(conv: Conversation, rng: random.Random, empty_ratio: float = 0.2
                     ) -> list[SFTExample]:
    facts = _facts_by_turn(conv)
    out = []
    for turn in conv.turns():
        got = [f for _, f in facts.get(turn.dia_id, [])]
        if not got and rng.random() >= empty_ratio:
            continue
        target = json.dumps({"facts": got}, ensure_ascii=False)
        out.append(SFTExample("extract", F.extract_prompt(turn), target,
                              meta={"dia_id": turn.dia_id, "facts": got}))
    return out


def manager_examples(conv: Conversation, embedder: Any | None = None, top_k: int = 5,
                     none_threshold: float = 0.95) -> list[SFTExample]:
    from memory_r1.store.embedders import HashEmbedder
    from memory_r1.store.sqlite import SQLiteStore

    facts = _facts_by_turn(conv)
    out: list[SFTExample] = []
    with SQLiteStore(":memory:", embedder or HashEmbedder()) as store:
        bank = conv.sample_id
        for turn in conv.turns():
            by_speaker: dict[str, list[str]] = {}
            for speaker, fact in facts.get(turn.dia_id, []):
                by_speaker.setdefault(speaker, []).append(fact)
            for speaker, new in by_speaker.items():
                hits = store.search_many(bank, new, owner=speaker, k=top_k)
                idmap = F.IdMap(h.memory for hs in hits for h in hs)
                items: list[dict[str, Any]] = []
                seen: set[str] = set()
                for fact, fact_hits in zip(new, hits):
                    dup = next((h.memory for h in fact_hits if _norm(h.memory.text) == _norm(fact)
                                or h.score >= none_threshold), None)
                    if dup is not None:
                        items.append({"id": idmap.small(dup.id), "text": dup.text, "event": "NONE"})
                    elif _norm(fact) in seen:
                        items.append({"id": None, "text": fact, "event": "NONE"})
                    else:
                        items.append({"id": None, "text": fact, "event": "ADD"})
                    seen.add(_norm(fact))
                target = json.dumps({"memory": items}, ensure_ascii=False)
                out.append(SFTExample("manager", F.manager_prompt(new, idmap), target, idmap,
                                      meta={"dia_id": turn.dia_id, "owner": speaker, "facts": new}))
                adds = [{"text": it["text"], "owner": speaker, "timestamp": turn.date_time}
                        for it in items if it["event"] == "ADD"]
                if adds:
                    store.add_many(bank, adds)
    return out


def answer_examples(conv: Conversation, rng: random.Random, distractors: int = 10,
                    categories: Iterable[int] = (1, 2, 3, 4)) -> list[SFTExample]:
    by_turn: dict[str, Turn] = {t.dia_id: t for t in conv.turns()}
    mems: dict[str, list[Memory]] = {}  # dia_id -> memories
    for dia, pairs in _facts_by_turn(conv).items():
        ts = by_turn[dia].date_time if dia in by_turn else ""
        mems[dia] = [Memory(f"{dia}#{i}", fact, spk, ts, 0.0, 0.0)
                     for i, (spk, fact) in enumerate(pairs)]
    pool = [m for dia in mems for m in mems[dia]]
    cats = set(categories)
    out = []
    for qa in conv.qa:
        if qa.category not in cats or not qa.answer.strip():
            continue
        evidence = [m for dia in qa.evidence for m in mems.get(dia, [])]
        if not evidence:
            continue
        shown: dict[str, list[Memory]] = {}
        for spk in conv.speakers:
            own = [m for m in evidence if m.owner == spk]
            others = [m for m in pool if m.owner == spk and m not in evidence]
            picked = own + rng.sample(others, min(distractors, len(others)))
            rng.shuffle(picked)
            shown[spk] = picked
        a, b = conv.speakers
        prompt = F.answer_prompt(qa.question, a, shown[a], b, shown[b])
        bullets = "\n".join(f"- {F.render_memory(m)}" for m in evidence)
        target = f"{F.SELECTED_HEADING}\n{bullets}\n\n**Answer:** {qa.answer}"
        out.append(SFTExample("answer", prompt, target, meta={"qid": qa.qid, "answer": qa.answer}))
    return out


def build_sft_examples(convs: Sequence[Conversation], roles: Sequence[str] = ROLES, seed: int = 0,
                       *, empty_ratio: float = 0.2, embedder: Any | None = None, top_k: int = 5,
                       none_threshold: float = 0.95, distractors: int = 10) -> list[SFTExample]:
    """Teacher examples from LoCoMo annotations for ``convs`` (use the training split only)."""
    bad = set(roles) - set(ROLES)
    if bad:
        raise ValueError(f"unknown roles {sorted(bad)}; expected a subset of {ROLES}")
    rng = random.Random(seed)
    out: list[SFTExample] = []
    for conv in convs:
        if "extract" in roles:
            out += extract_examples(conv, rng, empty_ratio)
        if "manager" in roles:
            out += manager_examples(conv, embedder, top_k, none_threshold)
        if "answer" in roles:
            out += answer_examples(conv, rng, distractors)
    return out


def from_teacher_jsonl(path: str | Path) -> list[SFTExample]:
    """Examples from ``{role, system, user, target}`` JSONL rows (see the module docstring)."""
    out = []
    with open(path, encoding="utf-8") as f:
        rows = [(n, json.loads(line)) for n, line in enumerate(f, 1) if line.strip()]
    for n, row in rows:
        role = row.get("role")
        if role not in ROLES or not all(isinstance(row.get(k), str) for k in
                                        ("system", "user", "target")):
            raise ValueError(f"{path}:{n}: need role in {ROLES} and string system/user/target")
        system, examples, prefix = _STANDARD[role]
        standard = row["system"] == system
        shots = row.get("examples")
        prompt = Prompt(row["system"], row["user"],
                        tuple((str(u), str(a)) for u, a in shots) if shots is not None
                        else (examples if standard else ()),
                        row.get("response_prefix", prefix if standard else ""))
        out.append(SFTExample(role, prompt, row["target"], meta={"line": n}))
    return out


# ------------------------------------------------------------------------------------ training

def _encode(policy: Policy, examples: Sequence[SFTExample]) -> list[tuple[list[int], list[int]]]:
    tok = policy.tokenizer
    out = []
    for ex in examples:
        prompt = tok(policy.render(ex.prompt), add_special_tokens=not policy.chat)["input_ids"]
        completion = tok(completion_text(ex), add_special_tokens=False)["input_ids"]
        out.append((list(prompt), list(completion) + [policy.eos_ids[0]]))
    return out


def _collate(pairs: Sequence[tuple[list[int], list[int]]], pad: int, device: torch.device
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Prompts left-padded, completions right-padded: the :class:`Batch` layout."""
    p = max(len(a) for a, _ in pairs)
    t = max(len(b) for _, b in pairs)
    ids = [[pad] * (p - len(a)) + a + b + [pad] * (t - len(b)) for a, b in pairs]
    att = [[0] * (p - len(a)) + [1] * (len(a) + len(b)) + [0] * (t - len(b)) for a, b in pairs]
    cm = [[1.0] * len(b) + [0.0] * (t - len(b)) for _, b in pairs]
    return (torch.tensor(ids, device=device), torch.tensor(att, device=device),
            torch.tensor(cm, device=device))


def _loss(policy: Policy, pairs: Sequence[tuple[list[int], list[int]]]) -> tuple[torch.Tensor, int]:
    ids, att, cm = _collate(pairs, int(policy.tokenizer.pad_token_id), policy.device)
    logp, _ = policy.forward(ids, att, cm)
    n = int(cm.sum().item())
    return -logp.sum() / max(n, 1), n


@torch.no_grad()
def sft_loss(policy: Policy, examples: Sequence[SFTExample], batch_size: int = 8) -> float:
    """Token-mean cross-entropy of the targets (no update)."""
    pairs = _encode(policy, examples)
    total, count = 0.0, 0
    for i in range(0, len(pairs), batch_size):
        loss, n = _loss(policy, pairs[i:i + batch_size])
        total, count = total + loss.item() * n, count + n
    return total / max(count, 1)


def sft_train(policy: Policy, examples: Sequence[SFTExample], steps: int, batch_size: int = 8,
              lr: float = 1e-5, out_dir: str | Path | None = None, *, seed: int = 0,
              weight_decay: float = 0.0, max_grad_norm: float = 1.0, max_tokens: int | None = None,
              save_every: int = 0, plot: bool = True) -> list[float]:
    """``steps`` AdamW updates on shuffled minibatches (epochs re-shuffled); returns the losses.

    ``max_tokens`` drops examples whose prompt + completion is longer (count logged as
    ``skipped``). With ``out_dir``: ``metrics.jsonl`` (step, loss, tokens, lr, step_s, role mix),
    ``checkpoint-<step>`` every ``save_every`` steps and at the end, ``sft_loss.png``.
    """
    if steps < 1 or batch_size < 1:
        raise ValueError("steps and batch_size must be >= 1")
    encoded = list(zip(examples, _encode(policy, examples)))
    kept = [(ex, p) for ex, p in encoded
            if max_tokens is None or len(p[0]) + len(p[1]) <= max_tokens]
    if not kept:
        raise ValueError(f"no example fits max_tokens={max_tokens} (of {len(encoded)})")
    torch.manual_seed(seed)
    rng = random.Random(seed)
    params = list(policy.actor_parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    out = Path(out_dir) if out_dir is not None else None
    if out is not None:  # appends, like the RL trainer's log
        out.mkdir(parents=True, exist_ok=True)
    order: list[int] = []
    history: list[float] = []
    for step in range(1, steps + 1):
        tick = time.perf_counter()
        idx = []
        while len(idx) < min(batch_size, len(kept)):
            if not order:
                order = list(range(len(kept)))
                rng.shuffle(order)
            idx.append(order.pop())
        loss, n = _loss(policy, [kept[i][1] for i in idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
        opt.step()
        history.append(loss.item())
        if out is not None:
            row = {"step": step, "loss": history[-1], "tokens": n, "lr": lr,
                   "step_s": time.perf_counter() - tick, "skipped": len(encoded) - len(kept),
                   **{f"n_{r}": sum(kept[i][0].role == r for i in idx) for r in ROLES}}
            with open(out / "metrics.jsonl", "a", encoding="utf-8") as f:
                f.write(json.dumps(row) + "\n")
            if (save_every and step % save_every == 0) or step == steps:
                save_checkpoint(policy, opt, step, out / f"checkpoint-{step}")
    if out is not None and plot:
        plot_metrics(out / "metrics.jsonl", out / "sft_loss.png", keys=("loss",))
    return history


def save_checkpoint(policy: Policy, optimizer: torch.optim.Optimizer, step: int,
                    path: str | Path) -> Path:
    """``path/policy`` (``Policy.save``) + ``path/trainer_state.pt`` (step, optimizer)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    policy.save(path / "policy")
    torch.save({"step": step, "optimizer": optimizer.state_dict(), "kind": "sft"},
               path / "trainer_state.pt")
    return path
