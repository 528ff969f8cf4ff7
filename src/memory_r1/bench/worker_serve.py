"""The worker side of the JSON-lines protocol that :mod:`memory_r1.bench.worker` speaks (L3).

Standard library only, and it imports nothing of ``memory_r1``: the Mem0 and A-Mem workers load
it while running in their own venvs as ``<venv python> -I <worker script>``, where neither
``memory_r1`` nor the script's folder is importable (the workers put this folder on
``sys.path`` for that one import).

:func:`serve` answers one request per stdin line ``{"id", "op", ...args}`` with one reply per
stdout line, ``{"id", "ok": true, "result"}`` from ``worker.op_<op>(**args)`` or
``{"id", "ok": false, "error"}``; an exception never ends the loop, ``close`` does. The
library's stdout is redirected to stderr (the worker log), so nothing but replies reaches the
pipe. :class:`LogCapture` keeps what a library logged during one call.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import traceback
from collections.abc import Callable
from typing import Any


class LogCapture(logging.Handler):
    """Keeps WARNING+ records (thread-safe: a library may log from a pool); ``take`` drains them."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[dict[str, str]] = []
        self._guard = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        with self._guard:
            self.records.append(
                {"logger": record.name, "level": record.levelname, "message": record.getMessage()[:2000]}
            )

    def take(self) -> list[dict[str, str]]:
        with self._guard:
            out, self.records = self.records, []
        return out


def serve(make_worker: Callable[[], Any]) -> None:
    """Run the request loop on stdin / stdout for the worker ``make_worker()`` builds."""
    protocol = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
    os.dup2(2, 1)  # library prints go to the log, never into the protocol stream
    sys.stdout = sys.stderr
    logging.basicConfig(
        level=logging.WARNING, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    worker = make_worker()
    for line in sys.stdin:
        if not line.strip():
            continue
        rid, op = None, ""
        try:
            request = json.loads(line)
            rid, op = request.get("id"), str(request.get("op"))
            args = {k: v for k, v in request.items() if k not in ("id", "op")}
            reply = {"id": rid, "ok": True, "result": getattr(worker, f"op_{op}")(**args)}
        except Exception as e:
            traceback.print_exc()
            reply = {"id": rid, "ok": False, "error": f"{type(e).__name__}: {e}"}
        protocol.write(json.dumps(reply, default=str) + "\n")
        if reply["ok"] and op == "close":
            break
