"""Prompts beside their parsers (L2): fact extraction, Memory Manager, Answer Agent.

Every prompt is short on purpose: the offline models are 135M-270M parameters and read prompts
at ~200-500 tok/s on CPU, so each system prompt stays under ~250 tokens and few-shot examples
are tiny, invented and outside LoCoMo's answer space (small models copy example answers).

Output contracts (parsers never raise and never turn a failure into silence):

* extraction -> ``{"facts": [str, ...]}``. :func:`parse_facts` returns ``(facts, error)``:
  unparseable output is ``([], error)``, never a bare ``[]``; a truncated list gives the
  complete facts salvaged *and* an error.
* manager -> ``{"memory": [{"id", "text", "event", "old_memory"?}]}`` over small integer ids
  (:class:`IdMap`). :func:`parse_operations` returns one :class:`Op` per item with real ids,
  one INVALID op per bad item (the others kept), or a single INVALID op for unusable output.
* answer -> ``**Memories selected as relevant:**``, bullets, ``**Answer:** <short answer>``.
  :func:`parse_answer` reads the answer with :func:`memory_r1.metrics.extract_answer`, so the
  RL reward and the reported metric see the same string.

Deviation from Mem0's update prompt: one item per new fact (unchanged memories may be left out)
and ``"id": null`` for ADD, which saves decode tokens and invented ids. Mem0-style outputs that
re-list every old memory as NONE still parse (NOOP ops). JSON prompts have no response prefix:
a grammar-constrained decoder must produce the whole object itself.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from memory_r1.agents.jsonrepair import load_json, salvage_items
from memory_r1.llm.base import Prompt, Sampling
from memory_r1.metrics import extract_answer, has_answer_marker
from memory_r1.types import Memory, Op, OpKind, Turn

# --------------------------------------------------------------------------- fact extraction

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


# ----------------------------------------------------------------------------- memory manager

MANAGER_SYSTEM = """\
You are a smart memory manager. Compare each new fact with the existing memories and \
choose one operation:
1. ADD: the fact is new information. {"id": null, "text": "Likes tea", "event": "ADD"}
2. UPDATE: a memory is about the same thing but the fact differs or has more detail; keep its id \
and the more informative text. "0": "Likes cricket" + "Plays cricket with friends" -> \
{"id": "0", "text": "Plays cricket with friends", "event": "UPDATE", "old_memory": "Likes cricket"}
3. DELETE: the fact contradicts a memory. "1": "Loves cheese pizza" + "Dislikes cheese pizza" \
-> {"id": "1", "text": "Loves cheese pizza", "event": "DELETE"}
4. NONE: the fact is already in memory or irrelevant. "2": "Name is John" + "Name is John" -> \
{"id": "2", "text": "Name is John", "event": "NONE"}
Use only ids of existing memories. Return only JSON: {"memory": [one item per new fact]}"""

MANAGER_EXAMPLES: tuple[tuple[str, str], ...] = (
    (
        'Existing memories: [{"id": "0", "text": "Omar likes jazz"}, '
        '{"id": "1", "text": "Omar lives in Lyon"}]\n'
        'New facts: ["Omar likes jazz and blues", "Omar has a parrot"]',
        '{"memory": [{"id": "0", "text": "Omar likes jazz and blues", "event": "UPDATE", '
        '"old_memory": "Omar likes jazz"}, {"id": null, "text": "Omar has a parrot", '
        '"event": "ADD"}]}',
    ),
)

MANAGER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "memory": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {  # order matters to grammars: id, text, event, old_memory
                    "id": {"type": ["string", "null"]},
                    "text": {"type": "string"},
                    "event": {"type": "string", "enum": ["ADD", "UPDATE", "DELETE", "NONE"]},
                    "old_memory": {"type": "string"},
                },
                "required": ["id", "text", "event"],
            },
            "maxItems": 8,
        }
    },
    "required": ["memory"],
}

MANAGER_STOPS: tuple[str, ...] = ("\n\n",)

_EVENTS = {
    "ADD": OpKind.ADD,
    "UPDATE": OpKind.UPDATE,
    "DELETE": OpKind.DELETE,
    "NONE": OpKind.NOOP,
    "NOOP": OpKind.NOOP,
    "NO-OP": OpKind.NOOP,
    "NO_OP": OpKind.NOOP,
}


class IdMap:
    """Real memory ids <-> ``"0", "1", ...`` in prompt order (Mem0's anti-hallucination remap).

    Deleted and repeated memories are dropped; small id ``str(i)`` is ``memories[i]``.
    """

    def __init__(self, memories: Iterable[Memory]) -> None:
        seen: dict[str, Memory] = {}
        for m in memories:
            if not m.deleted and m.id not in seen:
                seen[m.id] = m
        self.memories: tuple[Memory, ...] = tuple(seen.values())
        self._small = {m.id: str(i) for i, m in enumerate(self.memories)}

    def __len__(self) -> int:
        return len(self.memories)

    def small(self, real_id: str) -> str:
        return self._small[real_id]

    def memory(self, small_id: Any) -> Memory | None:
        """The memory behind a model-written id (``"0"``, ``0``, ``" 00 "``), or None."""
        if isinstance(small_id, bool) or small_id is None:
            return None
        s = str(small_id).strip()
        if not (s.isascii() and s.isdigit()) or int(s) >= len(self.memories):
            return None
        return self.memories[int(s)]

    def real(self, small_id: Any) -> str | None:
        m = self.memory(small_id)
        return m.id if m is not None else None

    def to_json(self) -> str:
        return json.dumps(
            [{"id": str(i), "text": m.text} for i, m in enumerate(self.memories)], ensure_ascii=False
        )


def manager_prompt(facts: Sequence[str], idmap: IdMap) -> Prompt:
    user = f"Existing memories: {idmap.to_json()}\nNew facts: {json.dumps(list(facts), ensure_ascii=False)}"
    return Prompt(MANAGER_SYSTEM, user, MANAGER_EXAMPLES)


def manager_sampling(constrained: bool = True, max_items: int | None = None) -> Sampling:
    """``max_items`` narrows the schema's list (the manager passes facts + 1): a grammar that
    allows 8 items lets Gemma 270M ramble to the token limit (36 s on CPU for one turn)."""
    schema: dict[str, Any] | None = MANAGER_SCHEMA if constrained else None
    if schema is not None and max_items is not None:
        # minItems 1: with facts to place, an empty list is never a valid answer.
        items = dict(schema["properties"]["memory"], minItems=1, maxItems=max(1, min(max_items, 8)))
        schema = dict(schema, properties={"memory": items})
    return Sampling(max_tokens=256, stop=MANAGER_STOPS, json_schema=schema)


def _invalid(reason: str, item: Any) -> Op:
    raw = item if isinstance(item, str) else json.dumps(item, ensure_ascii=False, default=str)
    return Op(OpKind.INVALID, error=reason, raw=raw)


def _same(a: str, b: str) -> bool:
    return " ".join(a.casefold().split()) == " ".join(b.casefold().split())


def _item_op(item: Any, idmap: IdMap, touched: set[str], added: list[str]) -> Op:
    """One output item -> one Op (INVALID with a reason when the item is unusable)."""
    if not isinstance(item, dict):
        return _invalid("malformed item", item)
    if "event" not in item:
        return _invalid("missing event", item)
    kind = _EVENTS.get(str(item["event"]).strip().upper())
    if kind is None:
        return _invalid(f"unknown event {item['event']!r}", item)
    raw_text = item.get("text")
    text = " ".join(str(raw_text).split()) if isinstance(raw_text, (str, int, float)) else ""
    has_id = item.get("id") not in (None, "")
    mem = idmap.memory(item.get("id"))
    if kind is OpKind.ADD:  # any id the model gave an ADD is meaningless: the store assigns one
        if not text:
            return _invalid("ADD without text", item)
        dup = next((m for m in idmap.memories if _same(m.text, text)), None)
        if dup is not None or any(_same(a, text) for a in added):
            # Exact duplicates are the commonest small-model error; storing them twice is noise.
            return Op(OpKind.NOOP, text=text, memory_id=dup.id if dup else None)
        added.append(text)
        return Op(OpKind.ADD, text=text)
    if kind is OpKind.NOOP and not has_id:
        return Op(OpKind.NOOP, text=text)  # a fact judged irrelevant: no memory involved
    if mem is None:
        return _invalid(f"{kind.value} with {'unknown' if has_id else 'missing'} id", item)
    if kind is OpKind.NOOP:
        return Op(OpKind.NOOP, text=mem.text, memory_id=mem.id)
    if mem.id in touched:  # a second UPDATE/DELETE of one memory would fail or undo the first
        return _invalid(f"second {kind.value} of id {idmap.small(mem.id)}", item)
    if kind is OpKind.UPDATE:
        if not text:
            return _invalid("UPDATE without text", item)
        if _same(text, mem.text):
            return Op(OpKind.NOOP, text=mem.text, memory_id=mem.id)
        touched.add(mem.id)
        # old_text comes from the store, not the model's "old_memory" (it may be invented).
        return Op(OpKind.UPDATE, text=text, memory_id=mem.id, old_text=mem.text)
    touched.add(mem.id)
    return Op(OpKind.DELETE, text=mem.text, memory_id=mem.id, old_text=mem.text)


def parse_operations(text: str, idmap: IdMap, facts: Sequence[str]) -> list[Op]:
    """Manager output -> Ops with real ids, in output order.

    * ADD: ``memory_id`` None (a given id is ignored); a text equal to a shown memory or an
      earlier ADD becomes NOOP (of that memory, or None).
    * UPDATE / DELETE: need a shown id; UPDATE needs text (the same text -> NOOP);
      ``old_text`` is the stored text. A second UPDATE/DELETE of one id is INVALID.
    * NONE / NOOP: NOOP of the memory; with no id (null, "", absent) a NOOP with memory_id None
      (the fact was judged irrelevant); an id that was never shown is INVALID.
    * Events are case-insensitive; anything else is INVALID with a reason and the item's JSON.
    * Unusable output (empty, no list, no item) -> one INVALID op with the raw text; an empty
      list while ``facts`` is non-empty is also INVALID ("no decision is not a decision").
    """
    value, error = load_json(text)
    items: list[Any] | None = None
    truncated = False
    if error is None:
        if isinstance(value, dict) and "event" in value:
            value = [value]  # one bare item
        elif isinstance(value, dict):
            lists = [v for v in value.values() if isinstance(v, list)]
            value = value.get("memory", lists[0] if len(lists) == 1 else None)
        items = value if isinstance(value, list) else None
        error = None if items is not None else 'no "memory" list'
    if items is None:
        items, truncated = salvage_items(text)
        if not items:
            return [Op(OpKind.INVALID, error=f"unparseable manager output: {error}", raw=text)]
    if not items and facts:
        return [Op(OpKind.INVALID, error=f"empty operation list for {len(facts)} facts", raw=text)]
    touched: set[str] = set()
    added: list[str] = []
    ops = [_item_op(item, idmap, touched, added) for item in items]
    if truncated:
        ops.append(Op(OpKind.INVALID, error="truncated output: last item lost", raw=text))
    return ops


# ------------------------------------------------------------------------------- answer agent

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
