"""Plain data types and the memory-system protocol shared by every layer (L0: stdlib only).

Ids: ``Turn.dia_id`` is LoCoMo's ``"D{session}:{i}"``; ``Memory.id`` is an opaque string
(a UUID4 hex) assigned by the store; agents never show it to a model (they remap to small
integers, see ``agents.manager.IdMap``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Protocol

#: Category ids as stored by LoCoMo, labelled with Mem0's / the Memory-R1 tables' names.
CATEGORY_NAMES: Mapping[int, str] = {
    1: "single-hop",
    2: "temporal",
    3: "multi-hop",
    4: "open-domain",
    5: "adversarial",
}


@dataclass(frozen=True)
class Turn:
    """One utterance of a LoCoMo conversation."""

    dia_id: str
    speaker: str
    text: str
    session: int
    date_time: str  # the session's date-time string, e.g. "1:56 pm on 8 May, 2023"
    blip_caption: str | None = None
    listener: str | None = None  # the other speaker, where the dataset has two (LoCoMo)

    def render(self) -> str:
        """The utterance as a model sees it: ``Speaker: text [shares a photo of ...]`` (captions already read "a photo of ...")."""
        text = self.text
        if self.blip_caption:
            text = f"{text} [shares {self.blip_caption}]".strip()
        return f"{self.speaker}: {text}"


@dataclass(frozen=True)
class Session:
    index: int
    date_time: str
    turns: tuple[Turn, ...]


@dataclass(frozen=True)
class QA:
    """A question with its gold answer (always a string; LoCoMo's int answers are ``str()``-ed).

    ``category`` is LoCoMo's int id (1-5, named by :data:`CATEGORY_NAMES`) or, for other
    datasets, a string that is its own display name (LongMemEval's ``question_type`` such as
    ``"multi-session"`` or ``"abstention"``, MSC's ``"msc"``).
    """

    sample_id: str
    index: int  # position in the conversation's original ``qa`` list (stable id with sample_id)
    question: str
    answer: str
    category: int | str
    evidence: tuple[str, ...] = ()

    @property
    def category_name(self) -> str:
        if isinstance(self.category, str):
            return self.category
        return CATEGORY_NAMES[self.category]

    @property
    def qid(self) -> str:
        return f"{self.sample_id}/q{self.index}"


@dataclass(frozen=True)
class Conversation:
    sample_id: str
    speaker_a: str
    speaker_b: str
    sessions: tuple[Session, ...]
    qa: tuple[QA, ...]
    #: LoCoMo's generated session observations: session index -> speaker -> ((fact, dia_id), ...)
    observations: Mapping[int, Mapping[str, tuple[tuple[str, str], ...]]] = field(default_factory=dict)

    @property
    def speakers(self) -> tuple[str, str]:
        return (self.speaker_a, self.speaker_b)

    def turns(self) -> list[Turn]:
        return [t for s in self.sessions for t in s.turns]


class OpKind(str, Enum):  # noqa: UP042 - StrEnum would change f-string output
    """Memory operations. ``NOOP`` is the paper's name for Mem0's ``NONE``."""

    ADD = "ADD"
    UPDATE = "UPDATE"
    DELETE = "DELETE"
    NOOP = "NOOP"
    INVALID = "INVALID"


@dataclass(frozen=True)
class Op:
    """One memory operation as decided by a Memory Manager, ids already mapped back.

    ``memory_id`` is the store's real id for UPDATE/DELETE/NOOP on an existing entry, None for
    ADD. ``INVALID`` carries the reason and the raw model output in ``error``/``raw``.
    """

    kind: OpKind
    text: str = ""
    memory_id: str | None = None
    old_text: str | None = None
    error: str | None = None
    raw: str | None = None


@dataclass(frozen=True)
class Memory:
    """One entry of the memory bank. Times are Unix seconds (float)."""

    id: str
    text: str
    owner: str  # the speaker / user whose memory this is; search filters on it
    timestamp: str  # the session date-time the fact belongs to (LoCoMo's string), may be ""
    created_at: float
    updated_at: float
    metadata: Mapping[str, Any] = field(default_factory=dict)
    deleted: bool = False


@dataclass(frozen=True)
class Hit:
    """A search result. ``score`` is cosine similarity in [-1, 1]: higher = more similar."""

    memory: Memory
    score: float


@dataclass(frozen=True)
class HistoryRow:
    """One row of the append-only history log: every operation, INVALID and NOOP included."""

    id: int
    bank: str
    memory_id: str | None
    event: OpKind
    old_text: str | None
    new_text: str | None
    owner: str | None
    created_at: float
    detail: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class TurnResult:
    """What ingesting one turn did: the extracted facts, the operations, and the LLM use."""

    dia_id: str
    facts: list[str] = field(default_factory=list)
    ops: list[Op] = field(default_factory=list)
    llm_seconds: float = 0.0
    llm_calls: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    history: list[HistoryRow] = field(default_factory=list)  # the rows the store wrote

    @property
    def n_invalid(self) -> int:
        return sum(op.kind is OpKind.INVALID for op in self.ops)


@dataclass(frozen=True)
class Completion:
    """What a backend returns. ``text`` excludes the prompt's ``response_prefix``."""

    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str = "stop"
    seconds: float = 0.0  # wall time of the call, measured by the backend
    meta: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class AnswerResult:
    """``answer`` is what metrics score; ``has_marker`` False is a format failure in RL."""

    answer: str
    selected: list[str]
    raw: str
    has_marker: bool
    completion: Completion


class MemorySystem(Protocol):
    """A memory system the eval and bench runners drive (``MemoryR1Pipeline`` is one).

    ``ingest_turn`` returns the turn's :class:`TurnResult` (LLM calls and tokens of the turn);
    ``answer`` returns ``(AnswerResult, retrieval seconds)``; ``done_turns`` the dia_ids already
    ingested into ``bank`` (resume); ``bank_size`` the live memories (or stored items) of
    ``bank``, recorded in ``scores.json`` when the system has the method. An ``AnswerResult``
    may carry an ``extra`` mapping (a subclass field); its items are added to the prediction row
    (e.g. the full-context baseline's ``truncated_turns``). A system may expose ``version``
    (e.g. Mem0's) and ``describe()``, which the bench run config records.
    """

    name: str

    def done_turns(self, bank: str) -> set[str]: ...

    def ingest_turn(self, bank: str, turn: Turn) -> TurnResult: ...

    def answer(self, bank: str, question: str, speakers: tuple[str, str]) -> tuple[AnswerResult, float]: ...

    def bank_size(self, bank: str) -> int: ...

    def close(self) -> None: ...
