"""Lenient JSON for model output (L2 helper): fences, prose around the value, single quotes,
cut-off lists. Nothing here raises on bad input: failures come back as a reason string."""

from __future__ import annotations

import ast
import json
import re
from typing import Any

_FENCE = re.compile(r"```[a-zA-Z]*\s*(.*?)(?:```|$)", re.DOTALL)


def _span_end(s: str, start: int) -> int | None:
    """End (exclusive) of the bracketed value opening at ``start``; None if it never closes."""
    depth, quote, escaped = 0, "", False
    for i in range(start, len(s)):
        c = s[i]
        if quote:
            if escaped:
                escaped = False
            elif c == "\\":
                escaped = True
            elif c == quote:
                quote = ""
        elif c in "\"'":
            quote = c
        elif c in "[{":
            depth += 1
        elif c in "]}":
            depth -= 1
            if depth == 0:
                return i + 1
    return None


def _loads(s: str) -> Any:
    """JSON, else a Python literal (small models write single-quoted dicts); ValueError if neither."""
    try:
        return json.loads(s)
    except ValueError:
        pass
    if "'" not in s:  # literal_eval would also glue '"a" "b"' into "ab": only for quotes
        raise ValueError("not JSON")
    try:
        return ast.literal_eval(s)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as e:
        raise ValueError(str(e)) from None


def load_json(text: str) -> tuple[Any, str | None]:
    """Best-effort JSON value from model output: code fences stripped, prose around it ignored.

    Returns ``(value, None)`` or ``(None, reason)``; reason is ``"empty output"``,
    ``"no JSON found"``, ``"truncated JSON"`` or ``"malformed JSON"``.
    """
    m = _FENCE.search(text)
    body = (m.group(1) if m else text).strip()
    if not body:
        return None, "empty output"
    try:
        return json.loads(body), None
    except ValueError:
        pass
    starts = [i for i, c in enumerate(body) if c in "[{"][:20]
    if not starts:
        return None, "no JSON found"
    done = 0
    for start in starts:
        if start < done:  # nested in a span that failed: a lone inner item is not the answer
            continue
        end = _span_end(body, start)
        if end is None:
            return None, "truncated JSON"
        try:
            return _loads(body[start:end]), None
        except ValueError:
            done = end  # e.g. prose "{see below}" before the real object
    return None, "malformed JSON"


def salvage_items(text: str) -> tuple[list[Any], bool]:
    """Items of the first array in broken output, one by one: (objects or raw strings, truncated).

    A malformed item comes back as its raw text (it becomes one INVALID op); a cut-off tail sets
    ``truncated``.
    """
    m = re.search(r"\"memory\"\s*:\s*\[", text) or re.search(r"\[", text)
    if m is None:
        return [], False
    items: list[Any] = []
    i = m.end()
    while i < len(text):
        while i < len(text) and text[i] in " \t\r\n,":
            i += 1
        if i >= len(text) or text[i] != "{":
            return items, i >= len(text)  # "]" or garbage ends the list; EOF means cut off
        end = _span_end(text, i)
        if end is None:
            return items, True
        try:
            items.append(_loads(text[i:end]))
        except ValueError:
            items.append(text[i:end])
        i = end
    return items, True
