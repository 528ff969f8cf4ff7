"""Answer rewards: the reported metric, scored on the parsed answer (L3).

The reward **is** the metric: the answer is read with :func:`memory_r1.agents.answer.parse_answer` (what the evaluation path scores) and compared with
:func:`memory_r1.metrics.exact_match` / :func:`~memory_r1.metrics.token_f1`; nothing is
re-implemented here, so training and evaluation cannot drift apart.

One training-only rule: an output without an ``Answer:`` marker earns
0 and is counted as a format failure, even if its whole text happens to equal the gold answer
(evaluation would score it; RL must not teach the model to drop the marker).

Reward functions follow TRL's contract: keyword lists (``completions``, dataset columns such as
``answers``), a ``**kwargs`` tail for whatever else the caller passes, ``list[float]`` back.
:func:`score_answers` returns the same rewards with the format-failure count.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from memory_r1.agents.answer import parse_answer
from memory_r1.metrics import exact_match, token_f1

Reward = Literal["em", "f1", "em+f1"]
REWARDS: tuple[str, ...] = ("em", "f1", "em+f1")


def _em_f1(pred: Any, gold: Any) -> float:
    return 0.5 * (exact_match(pred, gold) + token_f1(pred, gold))


_METRICS: dict[str, Callable[[Any, Any], float]] = {"em": exact_match, "f1": token_f1, "em+f1": _em_f1}


@dataclass(frozen=True)
class RewardStats:
    """Rewards in [0, 1], one per completion, and how many lacked an ``Answer:`` marker."""

    rewards: list[float]
    format_failures: int

    @property
    def format_failure_rate(self) -> float:
        return self.format_failures / len(self.rewards) if self.rewards else 0.0


def score_answers(completions: Sequence[str], answers: Sequence[Any], metric: Reward = "em") -> RewardStats:
    """Score each completion's parsed answer against its gold answer with ``metric``:
    ``"em"`` (exact match, the paper's reward), ``"f1"`` (Mem0's token F1, dense: partial
    answers earn partial reward) or ``"em+f1"`` (their mean: F1's density, with a bonus for
    the exact answer).

    >>> s = score_answers(["**Answer:** Paris", "Paris", "**Answer:** Rome"], ["paris"] * 3)
    >>> s.rewards, s.format_failures
    ([1.0, 0.0, 0.0], 1)
    """
    if len(completions) != len(answers):
        raise ValueError(
            f"{len(completions)} completions but {len(answers)} answers: "
            "pass one gold answer per completion (repeat it for a group)"
        )
    if metric not in _METRICS:
        raise ValueError(f"unknown reward {metric!r}: choose one of {', '.join(REWARDS)}")
    score = _METRICS[metric]
    rewards, failures = [], 0
    for text, gold in zip(completions, answers):
        parsed = parse_answer(text)
        if not parsed.has_marker:
            failures += 1
            rewards.append(0.0)
        else:
            rewards.append(float(score(parsed.answer, gold)))
    return RewardStats(rewards, failures)


def answer_reward(completions: Sequence[str], answers: Sequence[Any], **kwargs: Any) -> list[float]:
    """Exact match of the parsed answer (paper Eq. 7); 0 without an ``Answer:`` marker.

    >>> answer_reward(completions=["- memory\\n**Answer:** The Louvre.", "Louvre"],
    ...               answers=["louvre", "louvre"])
    [1.0, 0.0]
    """
    return score_answers(completions, answers, "em").rewards


def f1_reward(completions: Sequence[str], answers: Sequence[Any], **kwargs: Any) -> list[float]:
    """Mem0 token F1 of the parsed answer; 0 without an ``Answer:`` marker.

    >>> f1_reward(completions=["**Answer:** in Paris", "**Answer:**"], answers=["Paris"] * 2)
    [0.6666666666666666, 0.0]
    """
    return score_answers(completions, answers, "f1").rewards
