"""The one exception tree of memory-r1.

    MemoryR1Error                 base; the CLI turns it into a clean message
    ├── DataError                 a malformed or wrong input file (names the file and the field)
    ├── ConfigError               an impossible combination of settings (says what to change)
    ├── InvalidInput              a request the memory API cannot carry out as given (a 400 / 422)
    ├── AccessDenied              a scope outside what the caller may touch (a 403)
    ├── ModelError                an LLM backend failed (load, HTTP, generation)
    │   └── UnknownModelError     a model or backend name that no registry knows (also a KeyError)
    └── StoreError                the memory store refused an operation (closed store, blank text)
        └── NotFoundError         no such live memory for this owner (unknown, deleted or another's)

Malformed *model output* is never an exception: it becomes an ``INVALID`` operation, recorded
in the history table and counted (see the parsers of ``agents.extract``, ``agents.manager``, ``agents.answer``).
"""

from __future__ import annotations


class MemoryR1Error(Exception):
    """Base class for every error memory-r1 raises on purpose."""


class DataError(MemoryR1Error):
    """A data file is missing, malformed or not what it claims to be."""

    def __init__(self, path: object, field: str, problem: str) -> None:
        self.path = str(path)
        self.field = field
        self.problem = problem
        super().__init__(f"{self.path}: field {field!r}: {problem}")


class ConfigError(MemoryR1Error):
    """Settings that cannot work together; the message says what to change."""


class InvalidInput(MemoryR1Error, ValueError):
    """A request the memory API cannot carry out as given; the message says what is wrong."""


class AccessDenied(MemoryR1Error, PermissionError):
    """The caller may not touch that owner's memories (e.g. an API key scoped to others)."""


class ModelError(MemoryR1Error):
    """An LLM or embedding backend failed."""


class UnknownModelError(ModelError, KeyError):
    """A name no registry knows."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class StoreError(MemoryR1Error):
    """The memory store refused an operation."""


class NotFoundError(StoreError, LookupError):
    """No live memory with that id in the caller's scope: unknown, deleted, or another
    owner's (the message does not say which, so no scope learns of another's ids)."""
