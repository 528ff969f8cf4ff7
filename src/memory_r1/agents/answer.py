"""Answer Agent (L2): question + 2 x 30 retrieved memories -> distilled memories + short answer.

Paper §3: Mem0's ``ANSWER_PROMPT`` plus (9) list the memories found useful and (10) answer after
``**Answer:**``, in one generation. ``distill=False`` is the ablation without the selection list.
Memories are shown in the order given (the caller retrieves them by descending similarity with
:func:`memory_r1.agents.context.answer_memories`), as ``timestamp: text`` lines.

``AnswerResult.raw`` is ``prompt.response_prefix + completion.text`` (the distilled prompt
prefills the selection heading); the answer marker is never in the prefix, so
``parse_answer(completion.text)`` gives the same answer and marker flag (RL can use either).
:meth:`AnswerAgent.answer_prompts` answers many prompts in one batched call where the backend
batches (transformers): the path validation and ``eval answer-agent`` take, with the same
prompts, sampling and parser as :meth:`AnswerAgent.answer`.

Output contract: ``**Memories selected as relevant:**``, bullets, ``**Answer:** <short
answer>``. :func:`parse_answer` reads the answer with :func:`memory_r1.metrics.extract_answer`,
so the RL reward and the reported metric see the same string.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from memory_r1.llm.base import ChatModel, Prompt, Sampling, complete_many
from memory_r1.metrics import extract_answer, has_answer_marker
from memory_r1.types import AnswerResult, Memory

# ---------------------------------------- prompt and parser

_ANSWER_RULES = """\
You are an intelligent memory assistant. Answer a question about a conversation between two \
speakers using their memories. Each memory line is "timestamp: memory".
Instructions:
1. Use the memories of both speakers; look for direct evidence.
2. Use the timestamps to turn relative times ("last year", "two months ago") into dates, months \
or years.
3. If memories contradict each other, trust the most recent one.
4. Do not confuse people named in a memory with the speaker who owns it.
5. The answer should be less than 5-6 words.
"""

ANSWER_SYSTEM = (
    _ANSWER_RULES
    + """\
6. First list the memories you found useful under **Memories selected as relevant:**
7. Then give the final answer after **Answer:**"""
)

ANSWER_SYSTEM_PLAIN = _ANSWER_RULES + "6. Give only the final answer after **Answer:**"

SELECTED_HEADING = "**Memories selected as relevant:**"

_EXAMPLE_Q = (
    "Memories for user Ana:\n10:02 am on 4 April, 2019: Ana started a pottery class.\n"
    "11:40 am on 9 April, 2019: Ana bought a red kayak.\n\n"
    "Memories for user Ben:\n3:15 pm on 5 April, 2019: Ben named his sailboat Kestrel.\n\n"
    "Question: What did Ben name his boat?"
)
# The answer is invented and is neither a date nor a likely LoCoMo answer: copied, it scores 0.
ANSWER_EXAMPLES: tuple[tuple[str, str], ...] = (
    (
        _EXAMPLE_Q,
        f"{SELECTED_HEADING}\n- 3:15 pm on 5 April, 2019: Ben named his sailboat Kestrel.\n\n"
        "**Answer:** Kestrel",
    ),
)
ANSWER_EXAMPLES_PLAIN: tuple[tuple[str, str], ...] = ((_EXAMPLE_Q, "**Answer:** Kestrel"),)

# The blank line before **Answer:** is deliberate: SmolLM2 ends its list with one and only
# then writes the marker (3/3 markers with it, 0/3 without, in a hand check).
# Distilled output spans lines, so it stops only where a new example would start
# ("**Question:**" included); parse_answer cuts the answer at its first line.
ANSWER_STOPS: tuple[str, ...] = ("Question:", "\nMemories for user")
ANSWER_STOPS_PLAIN: tuple[str, ...] = ("\n",)
PER_SPEAKER = 30  # memories retrieved per speaker (paper: 2 x 30 = 60)


def render_memory(m: Memory) -> str:
    """``"{timestamp}: {text}"`` on one line (no timestamp -> the text alone)."""
    text = " ".join(m.text.split())
    return f"{m.timestamp}: {text}" if m.timestamp else text


def answer_prompt(
    question: str,
    speaker_a: str,
    memories_a: Sequence[Memory],
    speaker_b: str,
    memories_b: Sequence[Memory],
    *,
    distill: bool = True,
) -> Prompt:
    """Both speakers' memory blocks, every memory given, in the order given (how many is the
    retrieval's choice: :func:`memory_r1.agents.context.answer_memories`).

    The distilled prompt prefills the selection heading, so the model starts the list at once;
    the prefix never holds the answer marker, so the completion text alone still carries it.
    """

    def block(name: str, mems: Sequence[Memory]) -> str:
        lines = [render_memory(m) for m in mems] or ["(none)"]
        return f"Memories for user {name}:\n" + "\n".join(lines)

    user = f"{block(speaker_a, memories_a)}\n\n{block(speaker_b, memories_b)}\n\nQuestion: {question}"
    if distill:
        return Prompt(ANSWER_SYSTEM, user, ANSWER_EXAMPLES, response_prefix=SELECTED_HEADING + "\n")
    return Prompt(ANSWER_SYSTEM_PLAIN, user, ANSWER_EXAMPLES_PLAIN)


def answer_sampling(distill: bool = True) -> Sampling:
    if distill:
        return Sampling(max_tokens=160, stop=ANSWER_STOPS)
    return Sampling(max_tokens=32, stop=ANSWER_STOPS_PLAIN)


@dataclass(frozen=True)
class AnswerParse:
    answer: str
    selected: list[str]
    has_marker: bool


_BULLET = re.compile(r"^\s*(?:[-*•+]|\d+[.)])\s+")
_HEADING = "memories selected"


def _is_list_line(line: str) -> bool:
    return bool(_BULLET.match(line)) or _HEADING in line.lower()


def parse_answer(text: str) -> AnswerParse:
    """Answer, selected memories and marker presence from an Answer Agent output.

    ``answer`` is :func:`extract_answer` (text after the last ``Answer:`` marker, bold optional),
    cut to its first non-empty line when a marker exists (what follows is rambling). Without a
    marker it is the whole text stripped, except that a selection heading and bullet lines are
    left out when present (a distilled output that forgot the marker: its list is not the
    answer). ``selected``: the bullet lines after the selection heading and before the last
    marker line, bullets stripped (un-bulleted lines count only under a heading).
    """
    lines = text.splitlines()
    marker_lines = [i for i, line in enumerate(lines) if has_answer_marker(line)]
    marked = bool(marker_lines)
    answer = extract_answer(text)
    if marked:
        first = next((ln for ln in answer.splitlines() if ln.strip()), "")
        answer = first.strip().strip("*").strip()
    else:
        rest = [ln.strip() for ln in lines if ln.strip() and not _is_list_line(ln)]
        if len(rest) < sum(1 for ln in lines if ln.strip()):
            answer = " ".join(rest).strip("*").strip()
    body = lines[: marker_lines[-1]] if marked else lines
    heads = [i for i, line in enumerate(body) if _HEADING in line.lower()]
    body = body[heads[-1] + 1 :] if heads else body
    bullets = [ln for ln in body if _BULLET.match(ln)]
    body = bullets if bullets or not heads else body  # an un-bulleted list only under a heading
    selected = [_BULLET.sub("", ln).strip().strip("*").strip() for ln in body]
    return AnswerParse(answer, [s for s in selected if s], marked)


# ---------------------------------------- the agent


class AnswerAgent:
    def __init__(self, model: ChatModel, distill: bool = True) -> None:
        self.model = model
        self.distill = distill

    @property
    def sampling(self) -> Sampling:
        """Greedy, with the agent's token budget and stop strings (RL samples with these too)."""
        return answer_sampling(self.distill)

    def build_prompt(
        self,
        question: str,
        speaker_a: str,
        memories_a: Sequence[Memory],
        speaker_b: str,
        memories_b: Sequence[Memory],
    ) -> Prompt:
        return answer_prompt(question, speaker_a, memories_a, speaker_b, memories_b, distill=self.distill)

    def answer(
        self,
        question: str,
        speaker_a: str,
        memories_a: Sequence[Memory],
        speaker_b: str,
        memories_b: Sequence[Memory],
    ) -> AnswerResult:
        prompt = self.build_prompt(question, speaker_a, memories_a, speaker_b, memories_b)
        return self.answer_prompts([prompt])[0]

    def answer_prompts(self, prompts: Sequence[Prompt]) -> list[AnswerResult]:
        """Answer prompts built by :meth:`build_prompt` (or ``agents.context.answer_context``)."""
        out = []
        for prompt, completion in zip(prompts, complete_many(self.model, prompts, self.sampling)):
            raw = prompt.response_prefix + completion.text
            parsed = parse_answer(raw)
            out.append(AnswerResult(parsed.answer, parsed.selected, raw, parsed.has_marker, completion))
        return out
