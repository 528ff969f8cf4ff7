"""LLM-as-a-Judge (the paper's J) over any ``ChatModel`` (L3).

Protocol, as in Mem0's harness (which Memory-R1's Fig. 12 reuses): one user message built from
:data:`JUDGE_PROMPT`, temperature 0, a JSON answer whose ``"label"`` is ``CORRECT`` or ``WRONG``;
score 1 iff the label is exactly ``"CORRECT"``. Here the JSON is also schema-constrained
(``reasoning`` first, then ``label``) where the backend supports it.

Deviation: :data:`JUDGE_PROMPT` is our own wording of the six parts of Mem0's ``ACCURACY_PROMPT``
(task, inputs, context, generous-grading guidance incl. dates, the filled-in item, output
format), not a verbatim copy; its sha256 is recorded by :meth:`Judge.describe`, with the model,
so judged numbers can be compared only under the same pinned prompt and model.

Unparseable judge output scores 0 and is counted (``JudgeResult.failures``), never hidden.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from memory_r1.errors import ConfigError
from memory_r1.llm.base import ChatModel, Prompt, Sampling, complete_many

JUDGE_PROMPT = """\
Your job is to grade an answer to a question as either CORRECT or WRONG. You are given:
    (1) a question, asked by one user of another user,
    (2) a gold (ground-truth) answer,
    (3) a generated answer,
and you must label the generated answer CORRECT or WRONG.

The questions ask about something one user should know about the other user from their earlier \
conversations. The gold answer is usually short and names the topic in question, for example:
Question: Do you remember what I bought the last time I visited Hawaii?
Gold answer: A shell necklace
The generated answer may be much longer. Grade generously: if it is about the same thing as the \
gold answer, label it CORRECT.

For questions about time, the gold answer is a specific date, month, year or period. The \
generated answer may be longer or use relative references (such as "last Tuesday" or "next \
month"). Grade generously: if it points to the same date or period as the gold answer, label it \
CORRECT, even when the format differs (for example "May 7th" and "7 May").

Now grade this item:
Question: {question}
Gold answer: {gold_answer}
Generated answer: {generated_answer}

First give a one-sentence explanation of your reasoning, then the label CORRECT or WRONG. Never \
use both labels in your answer, or the evaluation breaks.

Reply with JSON only, in the form {{"reasoning": "<one sentence>", "label": "CORRECT" or "WRONG"}}.
"""

#: Constrained-decoding schema: reasoning first, so the label is decided after it.
JUDGE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "reasoning": {"type": "string"},
        "label": {"type": "string", "enum": ["CORRECT", "WRONG"]},
    },
    "required": ["reasoning", "label"],
}

LABELS = ("CORRECT", "WRONG")


@dataclass(frozen=True)
class Verdict:
    """One judge call. ``label`` is ``"CORRECT"``/``"WRONG"``, or None when unparseable."""

    label: str | None
    raw: str
    reasoning: str | None = None

    @property
    def ok(self) -> bool:
        return self.label is not None

    @property
    def score(self) -> float:
        return 1.0 if self.label == "CORRECT" else 0.0


@dataclass(frozen=True)
class JudgeResult:
    """The verdict on one answer, over ``len(verdicts)`` runs.

    ``score`` is the mean per-run score in [0, 1] (a failed run counts 0); ``label`` the
    majority label of the parsed runs (ties -> ``"WRONG"``), None when no run parsed; ``raw``
    the first run's output; ``ok`` True iff every run parsed; ``failures`` the unparsed runs.
    """

    score: float
    label: str | None
    raw: str
    ok: bool
    failures: int
    verdicts: tuple[Verdict, ...]

    @classmethod
    def of(cls, verdicts: Sequence[Verdict]) -> JudgeResult:
        labels = Counter(v.label for v in verdicts if v.ok)
        label = None
        if labels:
            label = "CORRECT" if labels["CORRECT"] > labels["WRONG"] else "WRONG"
        failures = sum(not v.ok for v in verdicts)
        return cls(
            score=sum(v.score for v in verdicts) / len(verdicts),
            label=label,
            raw=verdicts[0].raw,
            ok=failures == 0,
            failures=failures,
            verdicts=tuple(verdicts),
        )


_FENCE = re.compile(r"```(?:json)?\s*(.*?)\s*```", re.DOTALL | re.IGNORECASE)
_LABEL = re.compile(r"""["']?label["']?\s*:\s*["']?(CORRECT|WRONG)\b""", re.IGNORECASE)


def _json_candidates(text: str) -> Iterable[str]:
    yield text.strip()
    yield from _FENCE.findall(text)
    start, end = text.find("{"), text.rfind("}")
    if 0 <= start < end:
        yield text[start : end + 1]


def parse_verdict(text: str) -> Verdict:
    """Parse one judge output: JSON, then fenced JSON, then the first ``{...}``, then a regex.

    >>> parse_verdict('{"reasoning": "same city", "label": "CORRECT"}').score
    1.0
    >>> parse_verdict("no idea").label is None
    True
    """
    for candidate in _json_candidates(text):
        try:
            data = json.loads(candidate)
        except (json.JSONDecodeError, ValueError):
            continue
        if isinstance(data, dict) and "label" in data:
            label = data["label"]
            reasoning = data.get("reasoning")
            return Verdict(
                label=label if label in LABELS else None,  # exact, as Mem0 compares it
                raw=text,
                reasoning=reasoning if isinstance(reasoning, str) else None,
            )
    m = _LABEL.search(text)
    if m and m.group(1) in LABELS:  # the regex fallback keeps Mem0's exact upper-case labels
        return Verdict(label=m.group(1), raw=text)
    return Verdict(label=None, raw=text)


class Judge:
    """Grades generated answers against gold answers with ``model``.

    ``runs > 1`` averages independent samples and needs ``temperature > 0`` (each run gets its
    own seed); with greedy decoding every run would repeat the first.
    """

    def __init__(
        self,
        model: ChatModel,
        runs: int = 1,
        temperature: float = 0.0,
        max_tokens: int = 128,
    ) -> None:
        if runs < 1:
            raise ConfigError(f"judge runs must be >= 1, got {runs}")
        if runs > 1 and temperature <= 0:
            raise ConfigError(
                f"judge runs={runs} at temperature 0 repeats one greedy verdict; "
                "set a temperature > 0 or use runs=1"
            )
        self.model = model
        self.runs = runs
        self.temperature = temperature
        self.max_tokens = max_tokens

    def prompt(self, question: str, gold: Any, generated: str) -> Prompt:
        user = JUDGE_PROMPT.format(question=question, gold_answer=str(gold), generated_answer=str(generated))
        return Prompt(system="", user=user)

    def _sampling(self, run: int) -> Sampling:
        return Sampling(
            max_tokens=self.max_tokens,
            temperature=self.temperature,
            seed=run,
            json_schema=JUDGE_SCHEMA,
        )

    def judge(self, question: str, gold: Any, generated: str) -> JudgeResult:
        """One answer, ``runs`` calls."""
        return self.judge_many([(question, gold, generated)])[0]

    def judge_many(self, items: Sequence[tuple[str, Any, str]]) -> list[JudgeResult]:
        """Many (question, gold, generated) triples; batched per run where the backend can."""
        prompts = [self.prompt(q, g, a) for q, g, a in items]
        per_run = [complete_many(self.model, prompts, self._sampling(run)) for run in range(self.runs)]
        return [
            JudgeResult.of([parse_verdict(per_run[r][i].text) for r in range(self.runs)])
            for i in range(len(items))
        ]

    def describe(self) -> dict[str, Any]:
        """What to record beside judged scores."""
        return {
            "model": getattr(self.model, "name", type(self.model).__name__),
            "runs": self.runs,
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            "prompt_sha256": hashlib.sha256(JUDGE_PROMPT.encode("utf-8")).hexdigest(),
        }
