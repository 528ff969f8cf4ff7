"""The Memory Manager's RL environment (paper section 4 and section 9 item 5), torch-free.

:class:`ManagerEnv` - one episode per cached turn (:mod:`memory_r1.rl.envs.snapshots`) that has
linked questions (:func:`~memory_r1.rl.envs.evidence.link_questions`: a QA links to turn t when
its repaired ``evidence`` holds t's ``dia_id``) and facts; turns without a link, and turns with
no facts (nothing to decide), are skipped and counted in ``skipped``. Prompt = the Manager
prompt over the turn's facts and the memories related to them in the snapshot bank (top
``related_k`` per fact, same speaker; :func:`memory_r1.agents.context.manager_context`).

Reward: parse the completion with the episode's :class:`~memory_r1.agents.manager.IdMap`;
**any INVALID op gives 0** (the lowest reward; no partial credit, so the policy is pushed to a
fully valid output; a bank with valid ops applied would blur this). Otherwise apply the ops to
a *copy* of the snapshot bank, let the frozen Answer Agent answer every linked question from
the top ``answer_k`` memories per speaker of the updated copy
(:func:`memory_r1.agents.context.answer_context`), and return the mean reward. Every
(episode, op list) is scored once and cached for the whole run (``reward_of``;
``stats()["cache_hits"]``), and so is every Answer-Agent prompt (an op list that leaves a
question's top-k memories unchanged costs no call); ``trivial_rewards`` scores the two trivial
policies (ADD everything, change nothing) on the same episodes.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from memory_r1.agents.context import answer_context, manager_context
from memory_r1.agents.manager import IdMap, manager_sampling, parse_operations
from memory_r1.llm.base import Prompt
from memory_r1.rl.envs.answer import Render, rendered
from memory_r1.rl.envs.evidence import CATEGORIES, link_questions
from memory_r1.rl.envs.rewards import REWARDS, Reward, score_answers
from memory_r1.rl.envs.snapshots import Snapshot
from memory_r1.types import QA, Conversation, Op, OpKind

if TYPE_CHECKING:
    from memory_r1.agents.answer import AnswerAgent
    from memory_r1.store.base import MemoryStore

log = logging.getLogger(__name__)

OP_KINDS = tuple(k.value for k in OpKind)


@dataclass
class ManagerEpisode:
    """A linked turn: its snapshot, questions, the base bank (never written) and the id map."""

    snapshot: Snapshot
    qas: list[QA]
    store: MemoryStore
    idmap: IdMap
    prompt: Prompt


class ManagerEnv:
    """Memory Manager episodes over bank snapshots, rewarded by a frozen Answer Agent.

    ``store_factory()`` returns an empty store (e.g. ``lambda: SQLiteStore(":memory:",
    embedder)``); each episode fills one with its snapshot (bank ``"snapshot"``) once, and each
    scoring applies ops to ``store.copy_to_memory()`` (part of the ``MemoryStore`` protocol).
    Prompts come from
    :func:`memory_r1.agents.context.manager_context` and the frozen agent's from
    :func:`~memory_r1.agents.context.answer_context`, as at inference. ``reward``: the
    frozen agent's answers scored as :class:`~memory_r1.rl.envs.answer.AnswerEnv` scores them
    (mean over the linked questions). Metas: ``{"episode", "dia_id"}``.
    """

    BANK = "snapshot"

    def __init__(
        self,
        snapshots: Sequence[Snapshot],
        convs: Sequence[Conversation],
        answer_agent: AnswerAgent,
        store_factory: Callable[[], MemoryStore],
        *,
        related_k: int = 5,
        answer_k: int = 30,
        categories: Sequence[int] = CATEGORIES,
        render: Render | None = None,
        reward: Reward = "em",
    ) -> None:
        if reward not in REWARDS:
            raise ValueError(f"reward must be one of {REWARDS}, got {reward!r}")
        self.answer_agent, self.store_factory = answer_agent, store_factory
        self.answer_k, self.render, self.reward = answer_k, render, reward
        sampling = manager_sampling(constrained=False)
        self.stops, self.budget = sampling.stop, sampling.max_tokens
        links = link_questions(convs, categories)
        self.episodes: list[ManagerEpisode] = []
        self.skipped = {"unlinked": 0, "no_facts": 0}
        for snap in snapshots:
            qas = links.get((snap.sample_id, snap.turn.dia_id), [])
            if not qas:
                self.skipped["unlinked"] += 1
            elif not snap.facts:
                self.skipped["no_facts"] += 1
            else:
                self.episodes.append(self._episode(snap, qas, related_k))
        log.info("ManagerEnv: %d episodes, skipped %s", len(self.episodes), self.skipped)
        if not self.episodes:
            raise ValueError(f"ManagerEnv: no linked turn with facts (skipped {self.skipped})")
        self._last: dict[str, float] = {}
        self._cache: dict[tuple[int, tuple[Any, ...]], float] = {}
        self._answers: dict[Prompt, str] = {}  # Answer-Agent prompt -> raw answer
        self._hits = 0
        self.op_counts: dict[str, int] = {}

    def _fill(self, snap: Snapshot) -> MemoryStore:
        store = self.store_factory()
        if snap.memories:
            store.add_many(
                self.BANK,
                [{"text": m.text, "owner": m.owner, "timestamp": m.timestamp} for m in snap.memories],
            )
        return store

    def _episode(self, snap: Snapshot, qas: list[QA], related_k: int) -> ManagerEpisode:
        store = self._fill(snap)
        prompt, idmap = manager_context(store, self.BANK, list(snap.facts), snap.turn.speaker, related_k)
        return ManagerEpisode(snap, qas, store, idmap, prompt)

    def __len__(self) -> int:
        return len(self.episodes)

    def prompts(self, batch_size: int, rng: random.Random) -> list[tuple[str | Prompt, Any]]:
        picks = [rng.randrange(len(self.episodes)) for _ in range(batch_size)]
        return [
            (
                rendered(self.episodes[i].prompt, self.render),
                {"episode": i, "dia_id": self.episodes[i].snapshot.turn.dia_id},
            )
            for i in picks
        ]

    def copy_bank(self, ep: ManagerEpisode) -> MemoryStore:
        """A writable copy of the episode's bank; the base store is never written."""
        return ep.store.copy_to_memory()

    def valid_ops(self, ep: ManagerEpisode, completion: str) -> list[Op] | None:
        """The completion's ops (real ids), or None when any op is INVALID (reward 0)."""
        ops = parse_operations(completion, ep.idmap, list(ep.snapshot.facts))
        return None if not ops or any(op.kind is OpKind.INVALID for op in ops) else ops

    def _answer_reward(self, ep: ManagerEpisode, ops: list[Op]) -> float:
        turn = ep.snapshot.turn
        bank = self.copy_bank(ep)
        try:
            bank.apply_turn(self.BANK, ops, owner=turn.speaker, timestamp=turn.date_time)
            prompts = [
                answer_context(
                    bank,
                    self.BANK,
                    qa.question,
                    ep.snapshot.speakers,
                    self.answer_k,
                    distill=self.answer_agent.distill,
                )[0]
                for qa in ep.qas
            ]
        finally:
            bank.close()
        todo = [p for p in dict.fromkeys(prompts) if p not in self._answers]
        if todo:  # an op list that leaves a question's retrieved memories as they were reuses it
            self._answers.update(zip(todo, (r.raw for r in self.answer_agent.answer_prompts(todo))))
        raws = [self._answers[p] for p in prompts]
        rewards = score_answers(raws, [qa.answer for qa in ep.qas], self.reward).rewards
        return sum(rewards) / len(rewards)

    def reward_of(self, i: int, ops: list[Op]) -> float:
        """The reward of applying ``ops`` in episode ``i``, cached across calls and steps."""
        key = (i, tuple((op.kind, op.text, op.memory_id) for op in ops))
        if key not in self._cache:
            self._cache[key] = self._answer_reward(self.episodes[i], ops)
        else:
            self._hits += 1
        return self._cache[key]

    def score(self, completions: list[str], metas: list[Any]) -> list[float]:
        rewards, invalid, hits, keys = [], 0, self._hits, set()
        mix = dict.fromkeys(OP_KINDS, 0)
        for text, meta in zip(completions, metas):
            ep = self.episodes[meta["episode"]]
            parsed = parse_operations(text, ep.idmap, list(ep.snapshot.facts))
            for op in parsed:
                mix[op.kind.value] += 1
            ops = self.valid_ops(ep, text)
            if ops is None:
                rewards.append(0.0)
                invalid += 1
                continue
            keys.add((meta["episode"], tuple((op.kind, op.text, op.memory_id) for op in ops)))
            rewards.append(self.reward_of(meta["episode"], ops))
        n = max(len(completions), 1)
        total = max(sum(mix.values()), 1)
        self._last = {
            "invalid_rate": invalid / n,
            "distinct_op_lists": float(len(keys)),
            "cache_hits": float(self._hits - hits),
            **{f"op_{k.lower()}": v / total for k, v in mix.items()},
        }
        self.op_counts = mix
        return rewards

    def trivial_rewards(self, episodes: Sequence[int] | None = None) -> dict[str, list[float]]:
        """Per episode, the reward of the two trivial policies: ``add`` (ADD every fact) and
        ``noop`` (change nothing). Cached like any op list, so training reuses them."""
        idx = range(len(self.episodes)) if episodes is None else episodes
        out: dict[str, list[float]] = {"add": [], "noop": []}
        for i in idx:
            facts = self.episodes[i].snapshot.facts
            out["add"].append(self.reward_of(i, [Op(OpKind.ADD, text=f) for f in facts]))
            out["noop"].append(self.reward_of(i, [Op(OpKind.NOOP, text=f) for f in facts]))
        return out

    def stats(self) -> dict[str, float]:
        return dict(self._last)
