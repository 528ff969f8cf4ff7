"""Memory Manager (L2): new facts + related memories -> ADD / UPDATE / DELETE / NOOP ops.

Paper §2 (Alg. 3, step 3): Mem0's ``DEFAULT_UPDATE_MEMORY_PROMPT`` over memories whose ids are
remapped to ``"0", "1", ...`` (:class:`~memory_r1.agents.manager.IdMap`) and mapped back after.
Pure: no store access. The caller retrieves ``related`` and applies the returned ops.

Every unusable output or item becomes an ``INVALID`` op (counted in ``n_invalid``); nothing is
dropped silently. :meth:`MemoryManager.build_prompt` is public so RL rollouts render exactly the
prompt the pipeline uses and parse with :func:`~memory_r1.agents.manager.parse_operations`.

Output contract: ``{"memory": [{"id", "text", "event", "old_memory"?}]}`` over small integer
ids (:class:`IdMap`). :func:`parse_operations` returns one :class:`Op` per item with real ids,
one INVALID op per bad item (the others kept), or a single INVALID op for unusable output.

Deviation from Mem0's update prompt: one item per new fact (unchanged memories may be left out)
and ``"id": null`` for ADD, which saves decode tokens and invented ids. Mem0-style outputs that
re-list every old memory as NONE still parse (NOOP ops). JSON prompts have no response prefix:
a grammar-constrained decoder must produce the whole object itself.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from memory_r1.agents.jsonrepair import load_json, salvage_items
from memory_r1.llm.base import ChatModel, Prompt, Sampling
from memory_r1.types import Completion, Memory, Op, OpKind

# ---------------------------------------- prompt and parser

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


def manager_sampling(constrained: bool = True, n_facts: int | None = None) -> Sampling:
    """``n_facts`` narrows the schema's list to one item per fact, plus one for a DELETE beside
    an ADD: fewer items would drop a fact unseen (32 of 296 turns of conv-30 did, before
    ``minItems``), and a grammar that allows 8 items lets Gemma 270M ramble to the token limit
    (36 s on CPU for one turn)."""
    schema: dict[str, Any] | None = MANAGER_SCHEMA if constrained else None
    if schema is not None and n_facts is not None:
        n = max(1, min(n_facts, 7))
        items = dict(schema["properties"]["memory"], minItems=n, maxItems=n + 1)
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
    * Fewer items than ``facts``: one INVALID op per missing item, naming a fact that no item's
      text matches (the prompt asks for one item per fact; a missing one is a dropped fact).
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
    return ops + _missing(facts, ops, len(items) + truncated)


def _missing(facts: Sequence[str], ops: Sequence[Op], n_items: int) -> list[Op]:
    """INVALID ops for the facts an output with fewer than one item per fact left without one."""
    n_missing = len(facts) - n_items
    if n_missing <= 0:
        return []
    texts = [op.text for op in ops if op.text]
    unmatched = [f for f in facts if not any(_same(f, t) or f.casefold() in t.casefold() for t in texts)]
    named = (unmatched or list(facts))[-n_missing:]
    named = [*named, *([named[-1]] * (n_missing - len(named)))]
    return [Op(OpKind.INVALID, error="no operation for a fact", raw=f) for f in named]


# ---------------------------------------- the agent


@dataclass(frozen=True)
class ManagerResult:
    """Ops with real memory ids; ``completion`` is None when no call was made (no facts)."""

    ops: list[Op]
    completion: Completion | None
    n_invalid: int


class MemoryManager:
    """``decide(facts, related)``; ``constrained`` asks the backend for JSON-schema decoding."""

    def __init__(self, model: ChatModel, constrained: bool = True) -> None:
        self.model = model
        self.constrained = constrained

    def build_prompt(self, facts: Sequence[str], related: Sequence[Memory]) -> tuple[Prompt, IdMap]:
        """The manager prompt and the id map needed to parse its answer."""
        idmap = IdMap(related)
        return manager_prompt(facts, idmap), idmap

    def decide(self, facts: Sequence[str], related: Sequence[Memory]) -> ManagerResult:
        """One model call (none if ``facts`` is empty) -> parsed ops, INVALID ones included."""
        if not facts:
            return ManagerResult([], None, 0)
        prompt, idmap = self.build_prompt(facts, related)
        sampling = manager_sampling(self.constrained, n_facts=len(facts))
        completion = self.model.complete(prompt, sampling)
        ops = parse_operations(completion.text, idmap, facts)
        return ManagerResult(ops, completion, sum(op.kind is OpKind.INVALID for op in ops))
