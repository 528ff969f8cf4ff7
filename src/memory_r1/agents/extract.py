"""Fact extraction (L2): one LoCoMo utterance -> self-contained facts (paper Alg. 3, step 1).

Mem0's ``FACT_RETRIEVAL_PROMPT`` adapted to one turn with its session date-time (the paper,
default 2: turn = one utterance, so evidence ids map 1:1). The prompt and parser are below,
beside the agent.

Failure contract: an output that cannot be parsed is returned as ``error`` with ``facts == []``;
the turn's own text is NOT used as a fallback fact (that would hide the failure and store raw
chit-chat). The pipeline records the error as one INVALID op and counts it. A truncated list
returns the complete facts salvaged *and* an error, so a caller may keep them or not.

Output contract: ``{"facts": [str, ...]}``. :func:`parse_facts` returns ``(facts, error)``:
unparseable output is ``([], error)``, never a bare ``[]``; a truncated list gives the
complete facts salvaged *and* an error.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from memory_r1.agents.jsonrepair import load_json
from memory_r1.llm.base import ChatModel, Prompt, Sampling
from memory_r1.types import Completion, Turn

# ---------------------------------------- prompt and parser

EXTRACT_SYSTEM = """\
You extract facts worth remembering from one message of a conversation between two people.
- Write each fact as a short, self-contained sentence that names the speaker; "you" is the \
person the speaker is talking to, named in the message header.
- Keep personal details, preferences, plans, events, relationships, work, hobbies and what a \
shared photo shows.
- Turn relative dates ("yesterday", "last week") into dates using the message date when obvious.
- Greetings and small talk have no facts: {"facts": []}.
Return only JSON: {"facts": ["...", "..."]}"""

EXTRACT_EXAMPLES: tuple[tuple[str, str], ...] = (
    (
        "Date: 9:30 am on 14 March, 2019\nOmar (talking to Priya): Yesterday I finally repaired "
        "my grandfather's old radio! [shares a photo of a wooden radio on a workbench]",
        '{"facts": ["Omar repaired his grandfather\'s old radio on 13 March, 2019", '
        '"Omar shared a photo of a wooden radio on a workbench"]}',
    ),
    (
        "Date: 4:05 pm on 2 July, 2020\nPriya (talking to Omar): Haha, thanks! Talk to you soon.",
        '{"facts": []}',
    ),
)

FACTS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"facts": {"type": "array", "items": {"type": "string"}, "maxItems": 4}},
    "required": ["facts"],
}

# JSON never holds a blank line, so "\n\n" only cuts prose after the object.
EXTRACT_STOPS: tuple[str, ...] = ("\n\n",)


def extract_prompt(turn: Turn) -> Prompt:
    """One utterance with its session date-time (for resolving relative dates) and, where the
    turn knows it, the person spoken to, so "you" gets a name that is not the examples'."""
    date = f"Date: {turn.date_time}\n" if turn.date_time else ""
    message = turn.render()
    if turn.listener:
        message = f"{turn.speaker} (talking to {turn.listener}){message[len(turn.speaker) :]}"
    return Prompt(EXTRACT_SYSTEM, date + message, EXTRACT_EXAMPLES)


def extract_sampling(constrained: bool = True) -> Sampling:
    return Sampling(max_tokens=128, stop=EXTRACT_STOPS, json_schema=FACTS_SCHEMA if constrained else None)


def _as_fact(item: Any) -> str:
    if isinstance(item, dict):  # {"fact": ...} / {"text": ...} from chatty models
        item = item.get("fact", item.get("text", ""))
    return " ".join(str(item).split()) if item is not None else ""


def _unquote(s: str) -> str:
    try:
        return str(json.loads(f'"{s}"'))
    except ValueError:
        return s


def parse_facts(text: str) -> tuple[list[str], str | None]:
    """``(facts, error)``: ``{"facts": [...]}``, a bare list or one string; deduplicated in order.

    ``[]`` with error None means the model said "nothing worth keeping". Unparseable output is
    ``([], reason)``; a truncated list is ``(complete facts, "truncated ...")``.
    """
    value, error = load_json(text)
    facts: list[Any] | None = None
    if error is None:
        if isinstance(value, dict):
            value = value.get("facts", next(iter(value.values()), None) if len(value) == 1 else None)
        if isinstance(value, str):
            value = [value]
        if isinstance(value, list):
            facts = value
        else:
            error = 'no "facts" list'
    if facts is None:
        # Regex fallback: the complete quoted strings after "facts": [ (a cut-off list included).
        m = re.search(r"facts[\"']?\s*:\s*\[(.*)", text, re.DOTALL)
        if m is None:
            return [], error
        body, closed = m.group(1).split("]", 1)[0], "]" in m.group(1)
        facts = [_unquote(s) for s in re.findall(r'"((?:[^"\\]|\\.)*)"', body)]
        if closed and not facts and body.strip():
            return [], error  # e.g. single quotes broken by an apostrophe: not "no facts"
        if not closed:
            error = f"truncated JSON; kept {len(facts)} complete facts"
        else:
            error = None
    out: list[str] = []
    for item in facts:
        fact = _as_fact(item)
        if fact and fact not in out:
            out.append(fact)
    return out, error


# ---------------------------------------- the agent


@dataclass(frozen=True)
class ExtractResult:
    """``facts`` (maybe empty = nothing worth keeping), ``error`` (None = parsed) and the raw call."""

    facts: list[str]
    error: str | None
    completion: Completion


class FactExtractor:
    """``extract(turn)`` with one model call; ``constrained`` asks for JSON-schema decoding."""

    def __init__(self, model: ChatModel, constrained: bool = True) -> None:
        self.model = model
        self.constrained = constrained

    def build_prompt(self, turn: Turn) -> Prompt:
        return extract_prompt(turn)

    def extract(self, turn: Turn) -> ExtractResult:
        completion = self.model.complete(self.build_prompt(turn), extract_sampling(self.constrained))
        facts, error = parse_facts(completion.text)
        return ExtractResult(facts, error, completion)
