"""A library worker in its own venv, spoken to in JSON lines over stdin/stdout (L3).

Mem0 and A-Mem each run as ``<venv python> -I <worker script>``: one request per line
``{"id", "op", ...args}``, one reply per line ``{"id", "ok", "result" | "error"}``. The worker's
stderr goes to ``log_path``, whose tail is quoted when the worker dies.
"""

from __future__ import annotations

import json
import subprocess
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from memory_r1.errors import ModelError


class WorkerClient:
    """The worker subprocess; ``request`` is serialised (one request in flight)."""

    def __init__(
        self, label: str, script: Path, python: Path, env: Mapping[str, str], log_path: Path
    ) -> None:
        self.label = label
        self.log_path = log_path
        with log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                [str(python), "-I", str(script)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                env=dict(env),
                text=True,
                encoding="utf-8",
                bufsize=1,
            )
        self._lock = threading.Lock()
        self._next = 0

    def request(self, op: str, **args: Any) -> Any:
        with self._lock:
            self._next += 1
            line = json.dumps({"id": self._next, "op": op, **args})
            try:
                assert self._proc.stdin is not None and self._proc.stdout is not None
                self._proc.stdin.write(line + "\n")
                self._proc.stdin.flush()
                answer = self._proc.stdout.readline()
            except OSError:  # a dead worker: reported with its log below
                answer = ""
            if not answer:
                self._proc.wait(timeout=10)
                tail = self.log_path.read_text(errors="replace")[-1500:]
                raise ModelError(
                    f"{self.label} worker exited ({self._proc.returncode}) during {op!r}: {tail}"
                )
            reply = json.loads(answer)
        if not reply.get("ok"):
            raise ModelError(
                f"{self.label} worker {op!r} failed: {reply.get('error')} (log: {self.log_path})"
            )
        return reply["result"]

    def close(self) -> None:
        """Ask the worker to exit (killed after 30 s), then close both pipes."""
        if self._proc.poll() is None:
            try:
                self.request("close")
                self._proc.wait(timeout=30)
            except (ModelError, subprocess.TimeoutExpired, ValueError):
                self._proc.kill()
                self._proc.wait()
        for pipe in (self._proc.stdin, self._proc.stdout):
            if pipe is not None:
                pipe.close()
