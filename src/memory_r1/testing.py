"""Test doubles shipped with the package (fast unit tests only; never the only test of a path).

``FakeChatModel`` replays queued replies (or calls a function of the prompt) and records every
prompt it was given, so tests can assert on what a model saw.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

from memory_r1.llm.base import Prompt, Sampling
from memory_r1.types import Completion


class FakeChatModel:
    """A ``ChatModel`` with canned replies.

    >>> m = FakeChatModel(["hello"])
    >>> m.complete(Prompt("sys", "hi"), Sampling()).text
    'hello'
    """

    def __init__(
        self,
        replies: list[str] | None = None,
        *,
        reply_fn: Callable[[Prompt, Sampling], str] | None = None,
        name: str = "fake",
        chat: bool = True,
        context_window: int | None = None,
    ) -> None:
        self.name = name
        self.chat = chat
        self.context_window = context_window
        self._queue: deque[str] = deque(replies or [])
        self._reply_fn = reply_fn
        self.calls: list[tuple[Prompt, Sampling]] = []

    def enqueue(self, *replies: str) -> None:
        self._queue.extend(replies)

    def complete(self, prompt: Prompt, sampling: Sampling) -> Completion:
        start = time.perf_counter()
        self.calls.append((prompt, sampling))
        if self._queue:
            text = self._queue.popleft()
        elif self._reply_fn is not None:
            text = self._reply_fn(prompt, sampling)
        else:
            raise AssertionError("FakeChatModel: no reply queued")
        n_in = len((prompt.system + prompt.user).split())
        return Completion(
            text=text,
            prompt_tokens=n_in,
            completion_tokens=len(text.split()),
            seconds=time.perf_counter() - start,
        )
