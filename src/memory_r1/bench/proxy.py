"""A loopback OpenAI-compatible proxy that meters an external memory system's LLM use (L3).

A library such as Mem0 talks to "OpenAI" by itself; to run it on *our* backbone and embedder and
still count what it spends, it is pointed at :class:`LLMProxy` (``http://127.0.0.1:P/v1``):

* ``POST /v1/chat/completions`` is forwarded unchanged (plus ``inject`` defaults, below) to an
  upstream OpenAI-compatible server: a ``python -m llama_cpp.server`` on the backbone GGUF
  (:class:`LlamaCppServer`) or the backbone's own endpoint. Every forwarded call is counted with
  its wall seconds and the ``usage`` prompt / completion tokens of the reply (:class:`ProxyStats`).
* ``POST /v1/embeddings`` is answered here by one of our embedders (``hash``, ``minilm``), so
  the client needs no torch. ``dimensions`` is ignored (the embedder's width is fixed);
  ``encoding_format`` ``float`` and ``base64`` are both served.
* ``GET /v1/models`` lists the served model name (some clients probe it).

``adapt`` (optional, default none) rewrites a request before anything else, for a client that
sends what the upstream cannot take (A-Mem's ``response_format`` ``json_schema``, which
llama_cpp.server rejects, becomes its ``json_object`` + ``schema``); ``inject`` then fills request
fields the client cannot send: for llama.cpp upstreams the system
passes :func:`llamacpp_sampling`, the settings our in-process backend uses (no repeat penalty,
no min-p, top-k 1 at temperature 0, off otherwise), so "temperature 0" means plain greedy
decoding on both paths (llama_cpp.server's own defaults are repeat_penalty 1.1, top_k 40).

Failure accounting: an upstream that cannot be reached answers 502 and bumps
``ProxyStats.unreachable`` (a systemic failure the caller should stop on); an upstream HTTP error
is passed through unchanged and counted in ``http_errors`` (the client deals with it).
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from memory_r1.errors import ModelError

Inject = Callable[[Mapping[str, Any]], Mapping[str, Any]]


def llamacpp_sampling(body: Mapping[str, Any]) -> dict[str, Any]:
    """llama.cpp-only fields matching ``llm.llamacpp``: greedy at temperature 0, no penalties."""
    greedy = float(body.get("temperature", 1.0) or 0.0) <= 0.0
    return {"repeat_penalty": 1.0, "min_p": 0.0, "top_k": 1 if greedy else 0}


@dataclass
class ProxyStats:
    """Counters since the proxy started; subtract two snapshots for one step's share."""

    calls: int = 0  # chat completions forwarded (failed ones included)
    seconds: float = 0.0  # wall time of those calls, upstream round trip
    prompt_tokens: int = 0
    completion_tokens: int = 0
    http_errors: int = 0  # upstream answered >= 400
    unreachable: int = 0  # upstream could not be reached (502 to the client)
    embed_calls: int = 0
    embed_texts: int = 0

    def __sub__(self, other: ProxyStats) -> ProxyStats:
        return ProxyStats(**{f.name: getattr(self, f.name) - getattr(other, f.name) for f in fields(self)})


def _v1_root(url: str) -> str:
    root = url.rstrip("/")
    return root[: -len("/v1")] if root.endswith("/v1") else root


class LLMProxy:
    """``/v1/chat/completions`` -> ``upstream``; ``/v1/embeddings`` from ``embedder``.

    ``upstream`` is a base URL (with or without ``/v1``); ``api_key`` replaces the client's
    Authorization header upstream (the client only ever holds a dummy key). Use as a context
    manager, or ``start()`` / ``close()``. Thread-safe; ``stats()`` returns a snapshot.
    """

    def __init__(
        self,
        upstream: str | None,
        embedder: Any | None = None,
        *,
        model: str = "backbone",
        api_key: str | None = None,
        inject: Inject | None = None,
        timeout: float = 600.0,
        transport: httpx.BaseTransport | None = None,
        adapt: Inject | None = None,
    ) -> None:
        self.upstream = _v1_root(upstream) if upstream else None
        self.embedder = embedder
        self.model = model
        self.inject = inject
        self.adapt = adapt
        self._stats = ProxyStats()
        self._lock = threading.Lock()
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        # trust_env=False: a proxy variable in the environment must not reroute loopback traffic.
        self._client = httpx.Client(
            base_url=self.upstream or "http://upstream.invalid",
            headers=headers,
            timeout=timeout,
            transport=transport,
            trust_env=False,
        )
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> LLMProxy:
        if self._server is None:
            self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
            self._server.daemon_threads = True
            self._thread = threading.Thread(target=self._server.serve_forever, name="llm-proxy", daemon=True)
            self._thread.start()
        return self

    @property
    def url(self) -> str:
        """``http://127.0.0.1:P/v1``, the base URL to give an OpenAI client."""
        if self._server is None:
            raise RuntimeError("proxy not started")
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        self._client.close()

    def __enter__(self) -> LLMProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def stats(self) -> ProxyStats:
        with self._lock:
            return ProxyStats(**{f.name: getattr(self._stats, f.name) for f in fields(ProxyStats)})

    # -- the two endpoints (called from handler threads) ---------------------------------------
    def chat(self, body: dict[str, Any]) -> tuple[int, bytes]:
        if self.adapt is not None:
            body = dict(self.adapt(body))
        for key, value in (self.inject(body) if self.inject else {}).items():
            body.setdefault(key, value)  # what the client sent wins
        start = time.perf_counter()
        usage: dict[str, Any] = {}
        status, unreachable = 502, False
        try:
            if self.upstream is None:
                raise httpx.ConnectError("no upstream configured")
            resp = self._client.post("/v1/chat/completions", json=body)
            status, payload = resp.status_code, resp.content
            if status < 400:
                with contextlib.suppress(ValueError, AttributeError):  # not JSON: the client reports it
                    usage = json.loads(payload).get("usage") or {}
        except httpx.TransportError as e:
            unreachable = True
            payload = json.dumps(
                {"error": {"message": f"proxy: upstream unreachable: {e}", "type": "upstream_unreachable"}}
            ).encode()
        with self._lock:
            s = self._stats
            s.calls += 1
            s.seconds += time.perf_counter() - start
            s.prompt_tokens += int(usage.get("prompt_tokens") or 0)
            s.completion_tokens += int(usage.get("completion_tokens") or 0)
            s.unreachable += unreachable
            s.http_errors += (status >= 400) and not unreachable
        return status, payload

    def embeddings(self, body: dict[str, Any]) -> tuple[int, bytes]:
        texts = body.get("input")
        if isinstance(texts, str):
            texts = [texts]
        if self.embedder is None or not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            msg = "no embedder" if self.embedder is None else "input must be a string or a list of strings"
            return 400, json.dumps({"error": {"message": f"proxy: {msg}"}}).encode()
        vectors = np.asarray(self.embedder.embed(texts), dtype=np.float32)  # `dimensions` ignored
        b64 = body.get("encoding_format") == "base64"
        data = [
            {
                "object": "embedding",
                "index": i,
                "embedding": base64.b64encode(v.astype("<f4").tobytes()).decode() if b64 else v.tolist(),
            }
            for i, v in enumerate(vectors)
        ]
        with self._lock:
            self._stats.embed_calls += 1
            self._stats.embed_texts += len(texts)
        reply = {
            "object": "list",
            "data": data,
            "model": body.get("model") or self.embedder.name,
            "usage": {"prompt_tokens": 0, "total_tokens": 0},
        }
        return 200, json.dumps(reply).encode()

    def models(self) -> tuple[int, bytes]:
        return 200, json.dumps({"object": "list", "data": [{"id": self.model, "object": "model"}]}).encode()


def _handler(proxy: LLMProxy) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: the OpenAI client reuses connections

        def _reply(self, status: int, payload: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def do_GET(self) -> None:
            if self.path.rstrip("/") == "/v1/models":
                self._reply(*proxy.models())
            else:
                self._reply(404, b'{"error": {"message": "not found"}}')

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            try:
                body = json.loads(self.rfile.read(length) or b"{}")
                if not isinstance(body, dict):
                    raise ValueError("body is not a JSON object")
            except ValueError as e:
                self._reply(400, json.dumps({"error": {"message": f"proxy: bad JSON: {e}"}}).encode())
                return
            path = self.path.split("?")[0].rstrip("/")
            if path == "/v1/chat/completions":
                self._reply(*proxy.chat(body))
            elif path == "/v1/embeddings":
                self._reply(*proxy.embeddings(body))
            else:
                self._reply(404, b'{"error": {"message": "not found"}}')

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


def _die_with_parent() -> None:
    """In the child, before exec: on Linux, get SIGTERM when the parent dies, so a killed
    benchmark (SIGTERM/SIGKILL, where ``atexit`` never runs) leaves no server behind. Linux
    ties this to the *thread* that forked: start servers from a thread that outlives them
    (the bench runner builds systems on its main thread)."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        except OSError:
            pass


class LlamaCppServer:
    """``python -m llama_cpp.server`` on one GGUF, bound to 127.0.0.1, log in ``log_path``.

    ``command`` is the exact argv (recorded in run configs). Started by ``start()``, which waits
    until ``/v1/models`` answers (``ModelError`` with the log tail if the server dies or takes
    longer than ``startup_timeout`` seconds); stopped by ``close()``, or at interpreter exit.
    ``n_threads=None`` uses every CPU this process may run on, as the in-process backend does;
    on a CPU shared with other jobs pass 1: llama.cpp's threads spin on barriers, and two of
    them on two busy cores ran ~20x slower here than one.
    """

    def __init__(
        self,
        gguf: str | Path,
        log_path: Path,
        *,
        n_ctx: int = 8192,
        n_threads: int | None = None,
        python: str = sys.executable,
        extra_args: Sequence[str] = (),
        startup_timeout: float = 180.0,
    ) -> None:
        threads = n_threads or len(os.sched_getaffinity(0))
        self.port = _free_port()
        self.command = [
            python,
            "-m",
            "llama_cpp.server",
            "--model",
            str(gguf),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--n_ctx",
            str(n_ctx),
            "--n_threads",
            str(threads),
            "--n_threads_batch",
            str(threads),
            *extra_args,
        ]
        self.log_path = log_path
        self.startup_timeout = startup_timeout
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> LlamaCppServer:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        # A file, not a pipe: the server logs ~200 kB while loading and would block on a full pipe.
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                self.command,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                preexec_fn=_die_with_parent,
            )
        atexit.register(self.close)  # never leave a server behind a crashed or finished run
        deadline = time.monotonic() + self.startup_timeout
        while True:
            if self._proc.poll() is not None:
                raise ModelError(f"llama_cpp.server exited {self._proc.returncode}: {self._log_tail()}")
            try:
                if httpx.get(f"{self.url}/models", timeout=2, trust_env=False).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                self.close()
                raise ModelError(
                    f"llama_cpp.server did not answer within {self.startup_timeout:.0f} s: {self._log_tail()}"
                )
            time.sleep(0.25)

    def _log_tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-1500:]
        except OSError:
            return "(no log)"

    def close(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None
        atexit.unregister(self.close)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
